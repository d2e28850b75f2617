// The PBX's browser phone: sign in as an extension (JsSIP over the
// WebSocket of the site that served this page), dial, answer, hang up,
// send digits (RFC 4733), mute; shows the registration and call state and
// the call's audio figures (getStats).  One call at a time: a second
// incoming call is refused with 486 Busy Here.
//
// window.phone holds the live state (registration, call state, figures)
// and restartIce(), which the page calls itself when ICE fails: the
// interop test reads and calls them, nothing else depends on them.
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);
  const STORE = 'rustpbx-phone';
  const phone = { registration: 'signed out', call: 'idle', peer: null, history: [], stats: null,
                  error: null, offer: null, answer: null, ice: null, iceRestarts: 0, ringing: false };
  window.phone = phone;

  let ua = null;
  let session = null;
  let statsTimer = null;
  let clockTimer = null;
  let started = 0;
  const hooked = new WeakSet();

  function defaults() {
    const wsPath = document.body.dataset.wsPath || '/ws';
    const scheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
    const params = new URLSearchParams(location.search);
    let saved = {};
    try { saved = JSON.parse(localStorage.getItem(STORE) || '{}'); } catch (e) { saved = {}; }
    return {
      user: params.get('user') || saved.user || '',
      domain: params.get('domain') || saved.domain || location.hostname,
      server: params.get('server') || saved.server || scheme + location.host + wsPath,
    };
  }

  function setRegistration(text, cls) {
    phone.registration = text;
    const badge = $('registration');
    badge.textContent = text;
    badge.className = 'badge ' + cls;
  }

  function setCall(state, peer) {
    phone.call = state;
    phone.history.push(state);
    if (peer !== undefined) phone.peer = peer;
    const el = $('call-state');
    el.textContent = state;
    el.className = 'state ' + state.split(' ')[0].replace(/[^a-z]/g, '');
    $('peer').textContent = phone.peer ? phone.peer : '';
    const active = session !== null;
    const incoming = state === 'incoming';
    ring(incoming);
    $('answer').hidden = !incoming;
    $('hangup').hidden = !active;
    $('hangup').textContent = incoming ? 'Decline' : 'Hang up';
    $('mute').hidden = !(active && !incoming);
    $('call').disabled = active || phone.registration !== 'registered';
    $('stats').hidden = phone.stats === null;
  }

  function showError(text) {
    phone.error = text;
    console.warn('phone:', text);
  }

  // -- audio figures --------------------------------------------------------

  async function figures(pc) {
    const out = { packetsReceived: 0, packetsSent: 0, bytesReceived: 0, codec: null, dtlsState: null };
    const codecs = {};
    let inCodec = null;
    (await pc.getStats()).forEach((s) => {
      if (s.type === 'codec') codecs[s.id] = s.mimeType;
      if (s.type === 'transport') out.dtlsState = s.dtlsState;
      if (s.type === 'inbound-rtp' && s.kind === 'audio') {
        out.packetsReceived += s.packetsReceived || 0;
        out.bytesReceived += s.bytesReceived || 0;
        inCodec = s.codecId;
      }
      if (s.type === 'outbound-rtp' && s.kind === 'audio') out.packetsSent += s.packetsSent || 0;
    });
    out.codec = codecs[inCodec] || null;
    return out;
  }

  function watch(pc) {
    stopWatching();
    statsTimer = setInterval(async () => {
      try {
        const f = await figures(pc);
        phone.stats = f;
        $('stats').hidden = false;
        $('codec').textContent = f.codec ? f.codec.replace('audio/', '') : '–';
        $('packets-in').textContent = f.packetsReceived;
        $('packets-out').textContent = f.packetsSent;
      } catch (e) { /* the connection closed under us */ }
    }, 1000);
    started = Date.now();
    clockTimer = setInterval(() => {
      const s = Math.floor((Date.now() - started) / 1000);
      $('duration').textContent = Math.floor(s / 60) + ':' + String(s % 60).padStart(2, '0');
    }, 1000);
  }

  function stopWatching() {
    if (statsTimer) clearInterval(statsTimer);
    if (clockTimer) clearInterval(clockTimer);
    statsTimer = clockTimer = null;
  }

  // -- ringing ----------------------------------------------------------------

  // An incoming call rings: a two-tone burst every 3 s made with WebAudio
  // (no sound file to ship).  The AudioContext is made on the Sign in
  // click, so the browser lets it play later.
  let audioContext = null;
  let ringTimer = null;

  function ringOnce() {
    if (!audioContext) return;
    const now = audioContext.currentTime;
    const gain = audioContext.createGain();
    gain.gain.setValueAtTime(0.0001, now);
    gain.gain.exponentialRampToValueAtTime(0.2, now + 0.05);
    gain.gain.setValueAtTime(0.2, now + 1.2);
    gain.gain.exponentialRampToValueAtTime(0.0001, now + 1.3);
    gain.connect(audioContext.destination);
    for (const hz of [440, 480]) {
      const tone = audioContext.createOscillator();
      tone.frequency.value = hz;
      tone.connect(gain);
      tone.start(now);
      tone.stop(now + 1.3);
    }
  }

  function ring(on) {
    if (ringTimer) { clearInterval(ringTimer); ringTimer = null; }
    phone.ringing = on;
    if (!on) return;
    ringOnce();
    ringTimer = setInterval(ringOnce, 3000);
  }

  // -- calls ----------------------------------------------------------------

  const MEDIA = { mediaConstraints: { audio: true, video: false },
                  // The PBX is ICE-lite with a host candidate: no STUN/TURN needed.
                  pcConfig: { iceServers: [] },
                  rtcOfferConstraints: { offerToReceiveAudio: true, offerToReceiveVideo: false } };

  function peerName(s) {
    const id = s.remote_identity;
    if (!id) return '';
    return id.display_name ? `${id.display_name} <${id.uri.user}>` : String(id.uri.user || id.uri);
  }

  function attach(s) {
    const hook = (pc) => {
      if (hooked.has(pc)) return;
      hooked.add(pc);
      pc.addEventListener('track', (e) => {
        const audio = $('remote-audio');
        audio.srcObject = e.streams[0] || new MediaStream([e.track]);
        audio.play().catch(() => {});
      });
      // The network changed under the call (Wi-Fi to mobile data, a new
      // address): restart ICE (a re-INVITE with new credentials) rather
      // than lose the call.  'disconnected' may heal by itself: wait a bit.
      let pending = null;
      pc.addEventListener('iceconnectionstatechange', () => {
        const state = pc.iceConnectionState;
        phone.ice = state;
        if (pending) { clearTimeout(pending); pending = null; }
        if (state === 'failed') restartIce();
        else if (state === 'disconnected') pending = setTimeout(restartIce, 3000);
      });
    };
    if (s.connection) hook(s.connection);
    s.on('peerconnection', (e) => hook(e.peerconnection));
    s.on('sdp', (e) => {
      if (e.originator === 'remote') phone[e.type] = e.sdp;
    });
    s.on('progress', () => setCall(s.direction === 'incoming' ? 'incoming' : 'ringing'));
    s.on('accepted', () => setCall('answered'));
    s.on('confirmed', () => {
      setCall('in call');
      if (s.connection) watch(s.connection);
    });
    const end = (e) => {
      if (session !== s) return;
      session = null;
      stopWatching();
      $('duration').textContent = '';
      $('mute').setAttribute('aria-pressed', 'false');
      $('mute').textContent = 'Mute';
      setCall(`ended (${e.originator === 'local' ? 'you' : e.originator}: ${e.cause})`);
    };
    s.on('ended', end);
    s.on('failed', end);
  }

  // A re-INVITE with new ICE credentials (RFC 8445 section 9); the PBX
  // answers with new ones of its own and media moves to the new path.
  function restartIce() {
    if (!session || !session.isEstablished()) return false;
    const ok = session.renegotiate({ rtcOfferConstraints: { iceRestart: true } });
    if (ok) phone.iceRestarts += 1;
    return ok;
  }
  phone.restartIce = restartIce;

  function dial(target) {
    target = target.trim();
    if (!ua || !target || session) return;
    phone.offer = phone.answer = phone.stats = null;
    try {
      session = ua.call(target, MEDIA);
    } catch (e) {
      showError('cannot call ' + target + ': ' + e.message);
      return;
    }
    attach(session);
    setCall('calling', target);
  }

  function incoming(s) {
    if (session) {
      s.terminate({ status_code: 486, reason_phrase: 'Busy Here' });
      return;
    }
    session = s;
    phone.offer = phone.answer = phone.stats = null;
    attach(s);
    setCall('incoming', peerName(s));
    if (navigator.vibrate) navigator.vibrate([300, 200, 300]);
  }

  // -- signing in -------------------------------------------------------------

  function signIn(user, password, domain, server) {
    if (!audioContext && window.AudioContext) {
      try { audioContext = new AudioContext(); } catch (e) { audioContext = null; }
    }
    if (typeof JsSIP === 'undefined') {
      showError('JsSIP did not load');
      setRegistration('JsSIP missing', 'error');
      return;
    }
    signOut();
    try {
      localStorage.setItem(STORE, JSON.stringify({ user, domain, server }));
    } catch (e) { /* private mode */ }
    const socket = new JsSIP.WebSocketInterface(server);
    ua = new JsSIP.UA({
      sockets: [socket],
      uri: `sip:${user}@${domain}`,
      password,
      register: true,
      session_timers: false,
      user_agent: 'rustpbx_py browser phone (JsSIP ' + JsSIP.version + ')',
    });
    ua.on('connecting', () => setRegistration('connecting', 'pending'));
    ua.on('disconnected', () => setRegistration('disconnected', 'error'));
    ua.on('registered', () => { setRegistration('registered', 'on'); setCall(phone.call); });
    ua.on('unregistered', () => setRegistration('signed out', 'off'));
    ua.on('registrationFailed', (e) => {
      const code = e.response ? ` ${e.response.status_code}` : '';
      setRegistration(`failed:${code} ${e.cause}`, 'error');
      showError('registration failed: ' + e.cause);
      const causes = JsSIP.C.causes;
      if (e.cause === causes.AUTHENTICATION_ERROR || e.cause === causes.REJECTED) {
        // wrong extension or password: back to the form (a network
        // failure is retried by JsSIP itself)
        signOut();
        $('dialer').hidden = true;
        $('login').hidden = false;
        $('password').focus();
      }
    });
    ua.on('newRTCSession', (e) => {
      if (e.originator === 'remote') incoming(e.session);
    });
    setRegistration('connecting', 'pending');
    ua.start();
    $('me').textContent = `${user}@${domain}`;
    $('login').hidden = true;
    $('dialer').hidden = false;
    setCall('idle', null);
    $('target').focus();
  }

  function signOut() {
    if (!ua) return;
    if (session) session.terminate();
    ua.stop();
    ua = null;
    session = null;
    stopWatching();
  }

  // -- the page ---------------------------------------------------------------

  function init() {
    if (!window.isSecureContext) $('insecure').hidden = false;
    const d = defaults();
    $('user').value = d.user;
    $('domain').value = d.domain;
    $('server').value = d.server;
    $('version').textContent = typeof JsSIP !== 'undefined' ? 'JsSIP ' + JsSIP.version : 'JsSIP not loaded';

    $('login').addEventListener('submit', (e) => {
      e.preventDefault();
      signIn($('user').value.trim(), $('password').value, $('domain').value.trim() || location.hostname,
             $('server').value.trim() || defaults().server);
      $('password').value = '';
    });
    $('dial').addEventListener('submit', (e) => {
      e.preventDefault();
      dial($('target').value);
    });
    $('keypad').addEventListener('click', (e) => {
      const key = e.target.closest('button');
      if (!key) return;
      const digit = key.dataset.key;
      if (session && phone.call === 'in call') {
        session.sendDTMF(digit, { transportType: 'RFC2833' });
      } else {
        $('target').value += digit;
      }
    });
    $('answer').addEventListener('click', () => {
      if (session && phone.call === 'incoming') session.answer(MEDIA);
    });
    $('hangup').addEventListener('click', () => {
      if (session) session.terminate();
    });
    $('mute').addEventListener('click', () => {
      if (!session) return;
      const muted = session.isMuted().audio;
      if (muted) session.unmute({ audio: true }); else session.mute({ audio: true });
      $('mute').setAttribute('aria-pressed', String(!muted));
      $('mute').textContent = muted ? 'Mute' : 'Unmute';
    });
    $('signout').addEventListener('click', () => {
      signOut();
      setRegistration('signed out', 'off');
      $('dialer').hidden = true;
      $('login').hidden = false;
    });
    window.addEventListener('beforeunload', signOut);
  }

  init();
})();
