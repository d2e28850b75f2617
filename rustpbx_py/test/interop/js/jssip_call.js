// Two JsSIP user agents in node, driven by the interop tests: both register
// (digest, password users) over the WebSocket URL given, then the first calls
// the second, which answers; the caller hangs up once the call is confirmed.
// Prints one JSON line with what happened and exits 0 when every step did.
//
// Node has no WebRTC: a signalling-only RTCPeerConnection stands in, offering
// and answering a fixed audio SDP, so JsSIP's own SIP code (REGISTER, digest,
// INVITE, ACK, BYE over RFC 7118) runs unchanged.  The PBX relays SDP as is.
//
// Usage: node jssip_call.js '{"url": "ws://127.0.0.1:PORT/ws", "domain": "127.0.0.1",
//   "caller": ["alice", "secret"], "callee": ["bob", "secret"], "call": true}'

'use strict';

const WebSocket = require('ws');

global.window = global;
global.WebSocket = WebSocket;

function sdp(user, port) {
  return [
    'v=0',
    `o=${user} 1 1 IN IP4 127.0.0.1`,
    's=-',
    'c=IN IP4 127.0.0.1',
    't=0 0',
    `m=audio ${port} RTP/AVP 0 101`,
    'a=rtpmap:0 PCMU/8000',
    'a=rtpmap:101 telephone-event/8000',
    'a=sendrecv',
    '',
  ].join('\r\n');
}

let nextPort = 40000;

class SignallingOnlyPeerConnection {
  constructor() {
    this.iceGatheringState = 'complete';
    this.iceConnectionState = 'new';
    this.signalingState = 'stable';
    this.localDescription = null;
    this.remoteDescription = null;
    this.port = (nextPort += 2);
  }
  addEventListener() {}
  removeEventListener() {}
  getSenders() { return []; }
  getReceivers() { return []; }
  addTrack() {}
  close() { this.signalingState = 'closed'; }
  createOffer() { return Promise.resolve({ type: 'offer', sdp: sdp('offerer', this.port) }); }
  createAnswer() { return Promise.resolve({ type: 'answer', sdp: sdp('answerer', this.port) }); }
  setLocalDescription(desc) { this.localDescription = desc; return Promise.resolve(); }
  setRemoteDescription(desc) {
    if (!desc || !/^v=0/.test(desc.sdp || '')) {
      return Promise.reject(new Error('not an SDP: ' + JSON.stringify(desc)));
    }
    this.remoteDescription = desc;
    return Promise.resolve();
  }
}

global.RTCPeerConnection = SignallingOnlyPeerConnection;
global.RTCSessionDescription = class { constructor(init) { Object.assign(this, init); } };

const JsSIP = require('jssip');

const options = JSON.parse(process.argv[2]);
const result = { version: JsSIP.version, registered: [], steps: [] };
const stream = { getTracks: () => [], getAudioTracks: () => [], getVideoTracks: () => [] };

function finish(code, why) {
  if (why) result.error = why;
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(code);
}

setTimeout(() => finish(1, 'timed out'), options.timeout_ms || 20000);

function makeUA([user, password]) {
  const socket = new JsSIP.WebSocketInterface(options.url);
  const ua = new JsSIP.UA({
    sockets: [socket],
    uri: `sip:${user}@${options.domain}`,
    password,
    register: true,
    session_timers: false,
    user_agent: `JsSIP ${JsSIP.version} (node interop test)`,
  });
  return new Promise((resolve, reject) => {
    ua.on('registered', (e) => {
      result.registered.push({ user, status: e.response.status_code });
      resolve(ua);
    });
    ua.on('registrationFailed', (e) => reject(new Error(`${user}: registration failed: ${e.cause} ${e.response ? e.response.status_code : ''}`)));
    ua.start();
  });
}

async function main() {
  const caller = await makeUA(options.caller);
  const callee = await makeUA(options.callee);
  if (!options.call) {
    return finish(0);
  }
  const calleeEnded = new Promise((resolve) => {
    callee.on('newRTCSession', (e) => {
      if (e.originator !== 'remote') return;
      const session = e.session;
      result.steps.push('callee: INVITE from ' + e.request.from.uri.user);
      result.callee_offer = e.request.body;
      session.on('ended', (ev) => { result.steps.push('callee: ended by ' + ev.originator); resolve(); });
      session.on('failed', (ev) => { result.steps.push('callee: failed ' + ev.cause); resolve(); });
      session.answer({ mediaStream: stream });
    });
  });
  const callerDone = new Promise((resolve, reject) => {
    const session = caller.call(`sip:${options.callee[0]}@${options.domain}`, {
      mediaStream: stream,
      eventHandlers: {
        progress: () => result.steps.push('caller: progress'),
        confirmed: () => {
          result.steps.push('caller: confirmed');
          result.caller_answer = session.connection.remoteDescription.sdp;
          setTimeout(() => session.terminate(), 300);
        },
        ended: (ev) => { result.steps.push('caller: ended by ' + ev.originator); resolve(); },
        failed: (ev) => reject(new Error(`call failed: ${ev.cause} ${ev.message ? ev.message.status_code : ''}`)),
      },
    });
  });
  await callerDone;
  await calleeEnded;
  caller.stop();
  callee.stop();
  setTimeout(() => finish(0), 300);
}

main().catch((e) => finish(1, String(e && e.message || e)));
