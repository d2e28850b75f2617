"""
Interop: aiortc, a WebRTC stack independent of both Chromium and ours (its
own ICE agent, DTLS and SRTP), as the browser leg of the built-in relay.
aiortc offers (440 Hz microphone), a plain RTP "desk phone" on loopback
answers and sends an 880 Hz PCMU tone; ICE-lite, DTLS-SRTP and rtcp-mux
must come up with aiortc as the controlling, DTLS-client side, and each end
must receive the other's tone.
"""

from __future__ import annotations

import json
import math
import os
import struct
import sys

from twisted.internet import defer, protocol, reactor, task
from twisted.trial.unittest import SkipTest, TestCase

from rustpbx_py.media.session import BuiltinEngine
from rustpbx_py.sip.sdp import SessionDescription
from rustpbx_py.test.media_wire import UdpPhone, free_range
from rustpbx_py.test.media_wire import media_policy
from rustpbx_py.test.test_media_session import sdp
from rustpbx_py.test.tones import strongest

PEER = os.path.join(os.path.dirname(__file__), "aiortc_peer.py")


def ulaw(sample: int) -> int:
    """One 16-bit sample -> G.711 mu-law (ITU-T G.711, the usual bias/segment form)."""
    sign = 0x80 if sample < 0 else 0
    magnitude = min(-sample if sign else sample, 32635) + 0x84
    exponent = max(0, min(7, magnitude.bit_length() - 8))
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def unulaw(byte: int) -> int:
    byte = ~byte & 0xFF
    magnitude = ((((byte & 0x0F) << 3) + 0x84) << ((byte >> 4) & 0x07)) - 0x84
    return -magnitude if byte & 0x80 else magnitude


class _Peer(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.lines = []
        self.buffer = b""
        self.waiting = []
        self.ended = defer.Deferred()
        self.errors = b""

    def outReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            self.lines.append(json.loads(line))
            waiting, self.waiting = self.waiting, []
            for d in waiting:
                d.callback(self.lines[-1])

    def errReceived(self, data: bytes) -> None:
        self.errors += data

    def next_line(self) -> defer.Deferred:
        d = defer.Deferred()
        self.waiting.append(d)
        d.addTimeout(30, reactor)
        return d

    def processEnded(self, reason) -> None:
        self.ended.callback(None)


class AiortcTests(TestCase):
    timeout = 90

    def setUp(self) -> None:
        try:
            import aiortc  # noqa: F401
        except ImportError:
            raise SkipTest("aiortc is not installed (make test installs the test extras)")
        start, end = free_range(40)
        self.engine = BuiltinEngine(reactor)
        self.policy = media_policy(rtp_start_port=start, rtp_end_port=end, codecs=("pcmu", "pcma"), rtp_timeout=30)
        self.addCleanup(self.engine.stop)

    @defer.inlineCallbacks
    def test_aiortc_calls_phone(self):
        """aiortc's offer goes through RelaySession.offer/answer; aiortc gets
        our WebRTC answer, its ICE and DTLS complete (state connected), it
        decodes the phone's 880 Hz and the phone receives aiortc's 440 Hz."""
        peer = _Peer()
        process = reactor.spawnProcess(peer, sys.executable, [sys.executable, PEER, "4"], env=os.environ)
        self.addCleanup(lambda: process.signalProcess("KILL") if peer.ended.called is False else None)
        line = yield peer.next_line()
        offer = SessionDescription.parse(line["offer"].replace("\r\n", "\n").replace("\n", "\r\n").encode())
        session = self.engine.session("aiortc", self.policy)
        self.addCleanup(session.close)
        phone = UdpPhone.listen(self)
        to_phone = yield session.offer("a", offer, None)
        to_peer = yield session.answer("b", sdp(*phone.address), None)
        process.write(json.dumps({"answer": bytes(to_peer).decode()}).encode() + b"\n")

        tone = bytes(ulaw(int(8000 * math.sin(2 * math.pi * 880 * i / 8000))) for i in range(8000))
        state = {"seq": 1, "ts": 0}
        target = ("127.0.0.1", to_phone.media[0].port)

        def send() -> None:
            offset = (state["ts"] % 8000)
            payload = (tone + tone)[offset:offset + 160]
            phone.port.write(struct.pack("!BBHII", 0x80, 0, state["seq"], state["ts"], 0x880) + payload, target)
            state["seq"] += 1
            state["ts"] += 160

        loop = task.LoopingCall(send)
        loop.start(0.02)
        self.addCleanup(lambda: loop.running and loop.stop())
        report = yield peer.next_line()
        loop.stop()
        yield peer.ended
        self.assertEqual((report["dtls"], report["ice"]), ("connected", "completed"), (report, peer.errors[-2000:]))
        self.assertGreater(report["frames"], 50, report)
        self.assertEqual(report["tone"], 880, report)
        payloads = [data[12:] for data, _ in phone.received if len(data) > 12]
        self.assertGreater(len(payloads), 50)
        self.assertEqual(session.stats()["a"]["remote"][1], offer.media[0].port)  # the ICE-selected pair
        samples = [unulaw(b) for payload in payloads[-50:] for b in payload]
        best, powers = strongest(samples, 8000, [440, 660, 880])
        self.assertEqual(best, 440, powers)
