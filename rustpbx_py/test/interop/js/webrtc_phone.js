// What the WebRTC pages (jssip_webrtc_call.html, jssip_webrtc_answer.html)
// share: their query parameters, the outcome left in window.result, the
// peer connection's figures, and a JsSIP UA (JsSIP bundled by the test as
// jssip.js) that registers ?user with ?password over the WebSocket URL in
// ?url=.
'use strict';
const params = new URLSearchParams(location.search);
const result = { steps: [], done: false };

function finish(error) {
  if (error) result.error = String(error);
  result.done = true;
  window.result = result;
  document.getElementById('log').textContent = JSON.stringify(result);
}

async function figures(pc) {
  const out = { packetsReceived: 0, packetsSent: 0, dtlsState: null, codec: null };
  const codecs = {};
  (await pc.getStats()).forEach((s) => {
    if (s.type === 'codec') codecs[s.id] = s.mimeType;
    if (s.type === 'transport') out.dtlsState = s.dtlsState;
    if (s.type === 'inbound-rtp' && s.kind === 'audio') { out.packetsReceived += s.packetsReceived; out.inCodec = s.codecId; }
    if (s.type === 'outbound-rtp' && s.kind === 'audio') out.packetsSent += s.packetsSent;
  });
  out.codec = codecs[out.inCodec] || null;
  delete out.inCodec;
  return out;
}

function userAgent() {
  const domain = params.get('domain') || '127.0.0.1';
  return new JsSIP.UA({
    sockets: [new JsSIP.WebSocketInterface(params.get('url'))],
    uri: `sip:${params.get('user')}@${domain}`,
    password: params.get('password'),
    register: true,
    session_timers: false,
  });
}

// Start the UA; resolves once registered (the step 'registered').
async function register(ua) {
  await new Promise((resolve, reject) => {
    ua.on('registered', resolve);
    ua.on('registrationFailed', (e) => reject(new Error('registration failed: ' + e.cause)));
    ua.start();
  });
  result.steps.push('registered');
}
