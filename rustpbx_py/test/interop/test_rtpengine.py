"""
RtpengineEngine against a real userspace rtpengine on loopback: the SDP is
rewritten to rtpengine's address, RTP sent to the anchored ports reaches
the other side both ways, stats come from query, delete frees the call,
and a dead daemon is a 503 after the timeout.
"""

import re

from twisted.internet import defer, protocol, reactor, task
from twisted.trial.unittest import TestCase

from rustpbx_py.media import MediaError
from rustpbx_py.media.rtpengine import NgError, RtpengineEngine
from rustpbx_py.test.interop.rtpengine_daemon import start_rtpengine
from rustpbx_py.test.interop.support import free_udp_port, require_ipv6_loopback
from rustpbx_py.test.media_wire import media_policy


def sdp(port: int, formats: str = "0 8 101", ip: str = "127.0.0.1") -> bytes:
    return (f"v=0\r\no=phone 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP {formats}\r\na=rtpmap:101 telephone-event/8000\r\n"
            f"a=fmtp:101 0-15\r\na=sendrecv\r\n").encode()


def media(body: bytes):
    """(address, port, formats) of the first m=audio."""
    c = re.search(rb"c=IN IP4 (\S+)", body).group(1).decode()
    m = re.search(rb"m=audio (\d+) \S+ ([^\r\n]*)", body)
    return c, int(m.group(1)), m.group(2).decode().split()


class Phone(protocol.DatagramProtocol):
    """An RTP endpoint: counts what it receives."""

    noisy = False

    def __init__(self) -> None:
        self.received = []

    def datagramReceived(self, data, addr):
        self.received.append((data, addr))

    def send_rtp(self, addr, count: int, ssrc: int, pt: int = 0) -> None:
        for seq in range(count):
            header = bytes([0x80, pt]) + seq.to_bytes(2, "big") + (seq * 160).to_bytes(4, "big") + ssrc.to_bytes(4, "big")
            self.transport.write(header + b"\xd5" * 160, addr)


class RtpengineInteropTests(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        self.server = yield start_rtpengine(self)
        self.engine = RtpengineEngine(reactor, [self.server], timeout=1.0)
        self.addCleanup(self.engine.stop)
        self.phones = []
        for _ in range(2):
            phone = Phone()
            port = reactor.listenUDP(0, phone, interface="127.0.0.1")
            self.addCleanup(port.stopListening)
            self.phones.append((phone, port.getHost().port))

    @defer.inlineCallbacks
    def wait_for(self, predicate, seconds: float = 5.0):
        for _ in range(int(seconds / 0.05)):
            if predicate():
                return
            yield task.deferLater(reactor, 0.05, lambda: None)
        self.fail("condition not met in time")

    @defer.inlineCallbacks
    def test_offer_answer_rtp_delete(self):
        """Offer from a, answer from b: each side's SDP names rtpengine
        (127.0.0.1, a port of its range, not the phone's); RTP to those
        ports reaches the other phone both ways; query's figures count the
        packets; close() deletes the call (a later query: Unknown call-id)."""
        (pa, a_port), (pb, b_port) = self.phones
        session = self.engine.session("interop-1@test", media_policy(codecs=["pcma", "pcmu"]))
        to_b = yield session.offer("a", sdp(a_port), ("127.0.0.1", 5060))
        ip, b_facing, formats = media(to_b)
        self.assertEqual(ip, "127.0.0.1")
        low, high = self.rtpengine_ports
        self.assertTrue(low <= b_facing <= high, (b_facing, low, high))
        self.assertEqual(formats, ["8", "0", "101"])   # preference order applied
        to_a = yield session.answer("b", sdp(b_port, "8 101"), ("127.0.0.1", 5062))
        ip, a_facing, formats = media(to_a)
        self.assertEqual(ip, "127.0.0.1")
        self.assertTrue(low <= a_facing <= high, (a_facing, low, high))
        self.assertEqual(formats[0], "8")
        pa.send_rtp(("127.0.0.1", a_facing), 20, 0x1111, pt=8)
        pb.send_rtp(("127.0.0.1", b_facing), 15, 0x2222, pt=8)
        yield self.wait_for(lambda: len(pb.received) >= 20 and len(pa.received) >= 15)
        self.assertEqual({addr for _, addr in pb.received}, {("127.0.0.1", b_facing)})
        self.assertEqual({addr for _, addr in pa.received}, {("127.0.0.1", a_facing)})
        stats = yield session.close()
        self.assertEqual(stats["a"]["in"]["packets"], 20)
        self.assertEqual(stats["b"]["in"]["packets"], 15)
        self.assertEqual(stats["a"]["out"]["packets"], 15)
        self.assertEqual(stats["a"]["local"], ("127.0.0.1", a_facing))
        self.assertEqual(stats["a"]["remote"], ("127.0.0.1", a_port))
        self.assertEqual(stats["a"]["codec"], "pcma")
        client = self.engine.client
        e = yield self.assertFailure(client.request(client.daemons[0], {"command": "query", "call-id": "interop-1@test"}), NgError)
        self.assertIn("Unknown call-id", e.reason)
        again = yield session.close()
        self.assertEqual(again, stats)

    @defer.inlineCallbacks
    def test_transcoding_quality(self):
        """quality: a PCMA-only caller's offer to b leads with Opus and G.722
        (rtpengine transcodes); the answer to a stays PCMA."""
        (pa, a_port), (pb, b_port) = self.phones
        session = self.engine.session("interop-2@test", media_policy(codecs=["pcmu", "pcma", "opus", "g722"], strategy="quality"))
        to_b = yield session.offer("a", sdp(a_port, "8 101"), ("127.0.0.1", 5060))
        self.assertIn(b"opus/48000", to_b)
        _, _, formats = media(to_b)
        names = re.findall(rb"a=rtpmap:(\d+) ([^/]+)/", to_b)
        first = dict((k.decode(), v.decode()) for k, v in names).get(formats[0])
        self.assertEqual(first, "opus")
        to_a = yield session.answer("b", sdp(b_port, "0 101"), ("127.0.0.1", 5062))
        self.assertEqual(media(to_a)[2][0], "8")
        pa.send_rtp(("127.0.0.1", media(to_a)[1]), 10, 0x3333, pt=8)
        yield self.wait_for(lambda: len(pb.received) >= 5)
        self.assertEqual({d[1] for d, _ in pb.received}, {0})   # PCMA transcoded to PCMU
        yield session.close()

    @defer.inlineCallbacks
    def test_reoffer_from_b(self):
        """A re-offer from the callee (hold) goes through with swapped tags
        and keeps the same anchored port towards a."""
        (pa, a_port), (pb, b_port) = self.phones
        session = self.engine.session("interop-3@test", media_policy())
        yield session.offer("a", sdp(a_port), ("127.0.0.1", 5060))
        to_a = yield session.answer("b", sdp(b_port), ("127.0.0.1", 5062))
        hold = sdp(b_port).replace(b"a=sendrecv", b"a=sendonly")
        to_a2 = yield session.offer("b", hold, ("127.0.0.1", 5062))
        self.assertIn(b"a=sendonly", to_a2)
        self.assertEqual(media(to_a2)[1], media(to_a)[1])
        to_b2 = yield session.answer("a", sdp(a_port).replace(b"a=sendrecv", b"a=recvonly"), ("127.0.0.1", 5060))
        self.assertIn(b"a=recvonly", to_b2)
        yield session.close()

    @defer.inlineCallbacks
    def test_dead_daemon_fails_over(self):
        """With a silent address listed first for this Call-ID, the offer
        times out there and is anchored on the live daemon."""
        dead = f"udp:127.0.0.1:{free_udp_port()}"
        engine = RtpengineEngine(reactor, [dead, self.server], timeout=0.4)
        self.addCleanup(engine.stop)
        call_id = next(c for c in (f"fo-{i}" for i in range(100)) if str(engine.client.candidates(c)[0]) == dead)
        session = engine.session(call_id, media_policy())
        to_b = yield session.offer("a", sdp(self.phones[0][1]), ("127.0.0.1", 5060))
        self.assertEqual(str(session.daemon), self.server)
        self.assertIn(b"m=audio", to_b)
        yield session.close()
        lonely = RtpengineEngine(reactor, [dead], timeout=0.4)
        self.addCleanup(lonely.stop)
        f = yield self.assertFailure(lonely.session("x", media_policy()).offer("a", sdp(4000), None), MediaError)
        self.assertEqual(f.status, 503)

    @defer.inlineCallbacks
    def test_srtp_towards_b(self):
        """srtp_b = True: the offer to b is RTP/SAVP with SDES keys made by
        rtpengine; b's SRTP answer comes back to a as plain RTP/AVP."""
        (pa, a_port), (pb, b_port) = self.phones
        session = self.engine.session("interop-4@test", media_policy(srtp_b=True))
        to_b = yield session.offer("a", sdp(a_port), ("127.0.0.1", 5060))
        self.assertIn(b" RTP/SAVP ", to_b)
        crypto = re.findall(rb"a=crypto:(\d+) (\S+) inline:(\S+)", to_b)
        self.assertTrue(crypto, to_b)
        suites = {c[1] for c in crypto}
        self.assertIn(b"AES_CM_128_HMAC_SHA1_80", suites)
        self.assertFalse([s for s in suites if s.startswith((b"NULL", b"F8"))], suites)
        answer = sdp(b_port).replace(b"RTP/AVP", b"RTP/SAVP") + b"a=crypto:" + crypto[0][0] + b" " + crypto[0][1] + \
            b" inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVzcyAoZ\r\n"
        to_a = yield session.answer("b", answer, ("127.0.0.1", 5062))
        self.assertIn(b" RTP/AVP ", to_a)
        self.assertNotIn(b"a=crypto", to_a)
        yield session.close()

    @defer.inlineCallbacks
    def test_rtp_timeout(self):
        """rtp_timeout = 2 and no RTP after the answer: on_timeout is called
        once, within about a poll interval of the timeout."""
        (pa, a_port), (pb, b_port) = self.phones
        session = self.engine.session("interop-5@test", media_policy(rtp_timeout=2))
        fired = []
        session.on_timeout = lambda: fired.append(reactor.seconds())
        yield session.offer("a", sdp(a_port), ("127.0.0.1", 5060))
        yield session.answer("b", sdp(b_port), ("127.0.0.1", 5062))
        start = reactor.seconds()
        yield self.wait_for(lambda: fired, seconds=6)
        self.assertTrue(1.9 <= fired[0] - start <= 3.5, fired[0] - start)
        yield task.deferLater(reactor, 1.5, lambda: None)
        self.assertEqual(len(fired), 1)
        yield session.close()

    @defer.inlineCallbacks
    def test_webrtc_caller(self):
        """Chromium's offer (DTLS-SRTP, ICE, rtcp-mux, Opus) to a SIP phone:
        the phone gets plain RTP/AVP without ICE or fingerprint; Chromium
        gets rtpengine's DTLS fingerprint, an ICE-lite host candidate on
        its anchored port and rtcp-mux."""
        import os

        path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "sdp", "chromium-audio.sdp")
        with open(path, "rb") as f:
            browser = f.read()
        if b"\r\n" not in browser:
            browser = browser.replace(b"\n", b"\r\n")
        (pb, b_port) = self.phones[1]
        session = self.engine.session("interop-6@test", media_policy(codecs=["opus", "pcmu"]))
        to_b = yield session.offer("a", browser, ("127.0.0.1", 5060))
        self.assertIn(b" RTP/AVP ", to_b)
        for line in (b"a=fingerprint", b"a=candidate", b"a=ice-ufrag", b"a=rtcp-mux"):
            self.assertNotIn(line, to_b)
        to_a = yield session.answer("b", sdp(b_port, "0 101"), ("127.0.0.1", 5062))
        ip, port, formats = media(to_a)
        self.assertIn(b" UDP/TLS/RTP/SAVPF ", to_a)
        for line in (b"a=fingerprint:sha-256 ", b"a=setup:", b"a=ice-ufrag:", b"a=rtcp-mux"):
            self.assertIn(line, to_a)
        self.assertIn(f" 127.0.0.1 {port} typ host".encode(), to_a)
        yield session.close()


class Ipv6Tests(TestCase):
    """rtpengine reached over IPv6 and anchoring an IPv6 phone."""

    timeout = 30

    @defer.inlineCallbacks
    def test_ipv6_control_and_media(self):
        """The ng socket on [::1] (the engine opens its IPv6 control socket
        and matches answers from ::1); an offer and answer of phones on ::1
        (c=IN IP6) come back naming rtpengine's ::1 ports, and RTP flows
        both ways through them."""
        require_ipv6_loopback()
        server = yield start_rtpengine(self, interfaces=("::1",), ng_host="::1")
        self.assertTrue(server.startswith("udp:[::1]:"), server)
        engine = RtpengineEngine(reactor, [server], timeout=1.0)
        self.addCleanup(engine.stop)
        phones = []
        for _ in range(2):
            phone = Phone()
            port = reactor.listenUDP(0, phone, interface="::1")
            self.addCleanup(port.stopListening)
            phones.append((phone, port.getHost().port))
        (pa, a_port), (pb, b_port) = phones

        def sdp6(port):
            return sdp(port).replace(b"IN IP4 127.0.0.1", b"IN IP6 ::1")

        session = engine.session("v6@test", media_policy())
        to_b = yield session.offer("a", sdp6(a_port), ("::1", 5060))
        to_a = yield session.answer("b", sdp6(b_port), ("::1", 5062))
        for body in (to_b, to_a):
            self.assertIn(b"c=IN IP6 ::1", body)
        b_facing = int(re.search(rb"m=audio (\d+)", to_b).group(1))
        a_facing = int(re.search(rb"m=audio (\d+)", to_a).group(1))
        pa.send_rtp(("::1", a_facing), 10, 0x6666)
        pb.send_rtp(("::1", b_facing), 10, 0x7777)
        for _ in range(100):
            if len(pa.received) >= 10 and len(pb.received) >= 10:
                break
            yield task.deferLater(reactor, 0.05, lambda: None)
        self.assertEqual((len(pa.received), len(pb.received)), (10, 10))
        stats = yield session.close()
        self.assertEqual(stats["a"]["in"]["packets"], 10)
