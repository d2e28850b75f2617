"""
L{rustpbx_py.media.session}: the built-in engine's offer/answer model,
checked on the SDP it writes and on real UDP packets through the ports it
names (127.0.0.1), with a L{task.Clock} for rtp_timeout.
"""

import os
from dataclasses import replace

from twisted.internet import defer, reactor, task
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase
from zope.interface.verify import verifyObject

from rustpbx_py.interfaces import IMediaEngine, IMediaSession
from rustpbx_py.media import MediaError
from rustpbx_py.media.rtp import build_packet, parse_header, payload_of
from rustpbx_py.media.session import BuiltinEngine
from rustpbx_py.media.srtp import SdesKeys, parse_crypto, srtp_session
from rustpbx_py.media.transcode import ALAW_TO_ULAW, ULAW_TO_ALAW
from rustpbx_py.sip.sdp import SessionDescription
from rustpbx_py.test.media_wire import UdpPhone, free_range, media_policy, settle


def sdp(address: str, port: int, *extra: str, session: str = "", version: int = 1,
        media: str = "") -> SessionDescription:
    lines = ["v=0", f"o=phone 4242 {version} IN IP4 {address}", "s=call",
             f"c=IN IP4 {address}", "t=0 0", *([session] if session else []),
             f"m=audio {port} RTP/AVP 0 8 101", "a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000",
             "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-16", *extra]
    text = "\r\n".join(lines) + "\r\n" + media
    return SessionDescription.parse(text.encode())


class EngineTestCase(TestCase):
    """
    A L{BuiltinEngine} on the real reactor (real sockets on loopback) with
    a L{task.Clock} for its timers, and a L{MediaPolicy} (rtp_timeout 30) over a free port range
    of C{PORTS} ports with C{POLICY}'s changes; C{session()} opens a
    session named C{CALL_ID}.
    """

    PORTS = 40
    POLICY: dict = {}
    CALL_ID = "call-1"

    def setUp(self) -> None:
        start, end = free_range(self.PORTS)
        self.clock = task.Clock()
        self.engine = BuiltinEngine(reactor, clock=self.clock)
        self.policy = media_policy(rtp_start_port=start, rtp_end_port=end, **{"rtp_timeout": 30, **self.POLICY})
        self.addCleanup(self.engine.stop)

    def session(self, **changes):
        return self.engine.session(self.CALL_ID, replace(self.policy, **changes))


class SessionTests(EngineTestCase):
    PORTS = 60

    def result(self, d: defer.Deferred):
        return self.successResultOf(d)

    def connect(self, session, alice: UdpPhone, bob: UdpPhone, **bob_sdp):
        """alice (leg a) offers, bob (leg b) answers; returns (offer to b, answer to a)."""
        offer = self.result(session.offer("a", sdp("127.0.0.1", alice.address[1]), ("127.0.0.1", 5060)))
        answer = self.result(session.answer("b", sdp("127.0.0.1", bob_sdp.get("port", bob.address[1])),
                                            ("127.0.0.1", 5062)))
        return offer, answer

    def test_interfaces(self) -> None:
        """The engine and its sessions provide the interfaces the B2BUA drives."""
        verifyObject(IMediaEngine, self.engine)
        verifyObject(IMediaSession, self.session())

    def test_offer_names_pbx(self) -> None:
        """The offer to b names the PBX address and a port pair of the range facing b; the
        answer to a names another pair facing a; codecs and other lines are untouched."""
        session = self.session()
        offer = self.result(session.offer("a", sdp("192.168.1.20", 4000), ("198.51.100.1", 5060)))
        m = offer.media[0]
        self.assertEqual((offer.connection.address, offer.origin.address), ("127.0.0.1", "127.0.0.1"))
        self.assertEqual((offer.origin.username, offer.origin.sess_id), ("phone", "4242"))
        self.assertTrue(self.policy.rtp_start_port <= m.port < self.policy.rtp_end_port)
        self.assertEqual(m.port % 2, 0)
        self.assertEqual(m.formats, ["0", "8", "101"])
        self.assertEqual(m.fmtp(101), "0-16")
        answer = self.result(session.answer("b", sdp("10.0.0.5", 6000), ("10.0.0.5", 5060)))
        self.assertEqual(answer.connection.address, "127.0.0.1")
        self.assertNotEqual(answer.media[0].port, m.port)
        stream = session.streams[0]
        self.assertEqual(stream.sides["b"].pair.rtp_port, m.port)
        self.assertEqual(stream.sides["a"].pair.rtp_port, answer.media[0].port)
        self.assertEqual(stream.sides["a"].latch.target, ("192.168.1.20", 4000))
        self.assertEqual(stream.sides["b"].latch.target, ("10.0.0.5", 6000))

    def test_external_ip(self) -> None:
        """With external_ip the SDP names it (the sockets are still bound to local_ip)."""
        session = self.session(external_ip="203.0.113.10")
        offer = self.result(session.offer("a", sdp("192.168.1.20", 4000), None))
        self.assertEqual((offer.connection.address, offer.origin.address), ("203.0.113.10",) * 2)
        self.assertEqual(session.streams[0].sides["b"].pair.rtp.getHost().host, "127.0.0.1")

    def test_media_level_connection_and_rtcp(self) -> None:
        """A media-level c= and an a=rtcp (RFC 3605) are rewritten to the PBX's pair; ICE
        and rtcp-mux attributes are removed; the party's a=rtcp port is where its RTCP goes."""
        offer_in = sdp("192.168.1.20", 4000, "c=IN IP4 192.168.1.21", "a=rtcp:4011 IN IP4 192.168.1.22",
                       "a=ice-ufrag:abcd", "a=candidate:1 1 UDP 2130706431 192.168.1.20 4000 typ host",
                       "a=rtcp-mux", "a=sendrecv", session="a=ice-pwd:secretsecretsecret")
        session = self.session()
        offer = self.result(session.offer("a", offer_in, None))
        m = offer.media[0]
        self.assertEqual(m.connection.address, "127.0.0.1")
        self.assertEqual(m.attribute("rtcp"), f"{m.port + 1} IN IP4 127.0.0.1")
        for name in ("ice-ufrag", "candidate", "rtcp-mux"):
            self.assertIsNone(m.attribute(name))
        self.assertIsNone(offer.attribute("ice-pwd"))
        self.assertEqual(m.attribute("sendrecv"), "")
        side = session.streams[0].sides["a"]
        self.assertEqual(side.latch.target, ("192.168.1.21", 4000))
        self.assertEqual(side.rtcp_latch.target, ("192.168.1.22", 4011))

    def test_hold_passed_through(self) -> None:
        """a=sendonly and c=0.0.0.0 (RFC 2543 hold) reach the other leg as they are; the held
        party is sent nothing (no address)."""
        session = self.session()
        self.result(session.offer("a", sdp("192.168.1.20", 4000), None))
        self.result(session.answer("b", sdp("10.0.0.5", 6000), None))
        hold = sdp("0.0.0.0", 4000, "a=sendonly", version=2)
        offer = self.result(session.offer("a", hold, None))
        self.assertEqual(offer.connection.address, "0.0.0.0")
        self.assertEqual(offer.media[0].direction, "sendonly")
        self.assertIsNone(session.streams[0].sides["a"].latch.target)

    def test_port_zero_kept_and_unknown_transport_refused(self) -> None:
        """A stream offered with port 0 stays at 0 and gets no ports; a stream the relay
        cannot carry (TCP/BFCP) is refused with port 0; the answer keeps them at 0."""
        media = ("m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
                 "m=application 5070 TCP/BFCP *\r\n")
        session = self.session()
        offer = self.result(session.offer("a", sdp("192.168.1.20", 4000, media=media), None))
        self.assertEqual([m.port for m in offer.media][1:], [0, 0])
        self.assertEqual([s.allocated for s in session.streams], [True, False, False])
        answer_in = sdp("10.0.0.5", 6000, media="m=video 0 RTP/AVP 96\r\nm=application 0 TCP/BFCP *\r\n")
        answer = self.result(session.answer("b", answer_in, None))
        self.assertEqual([m.port for m in answer.media][1:], [0, 0])

    def test_answer_refusing_stream(self) -> None:
        """A stream the answerer refuses (port 0) is refused towards the offerer too."""
        media = "m=video 4002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
        session = self.session()
        offer = self.result(session.offer("a", sdp("192.168.1.20", 4000, media=media), None))
        self.assertNotEqual(offer.media[1].port, 0)
        answer_in = sdp("10.0.0.5", 6000, media="m=video 0 RTP/AVP 96\r\n")
        answer = self.result(session.answer("b", answer_in, None))
        self.assertEqual((answer.media[0].port != 0, answer.media[1].port), (True, 0))

    def test_nothing_to_relay(self) -> None:
        """An offer with no stream the relay can carry fails with 488."""
        offer_in = SessionDescription.parse(
            b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
            b"m=application 5070 TCP/BFCP *\r\n")
        failure = self.failureResultOf(self.session().offer("a", offer_in, None), MediaError)
        self.assertEqual(failure.value.status, 488)

    def test_reoffer_reuses_ports_and_versions(self) -> None:
        """A re-INVITE from either leg keeps the same PBX ports; the origin version sent to
        a leg goes up only when what it gets changed."""
        session = self.session()
        offer1 = self.result(session.offer("a", sdp("192.168.1.20", 4000), None))
        answer1 = self.result(session.answer("b", sdp("10.0.0.5", 6000), None))
        offer2 = self.result(session.offer("a", sdp("192.168.1.20", 4000, version=2), None))
        self.assertEqual((offer2.media[0].port, offer2.origin.sess_version), (offer1.media[0].port, "1"))
        offer3 = self.result(session.offer("a", sdp("192.168.1.20", 4000, "a=sendonly", version=3), None))
        self.assertEqual((offer3.media[0].port, offer3.origin.sess_version), (offer1.media[0].port, "2"))
        # the callee re-offers (offer from b): the offer to a names a's pair
        reoffer = self.result(session.offer("b", sdp("10.0.0.5", 6000, version=5), None))
        self.assertEqual(reoffer.media[0].port, answer1.media[0].port)
        self.assertEqual(reoffer.origin.sess_id, "4242")
        self.assertEqual(len(self.engine.allocators[(self.policy.rtp_start_port,
                                                     self.policy.rtp_end_port)].in_use), 2)

    def test_offerless_invite(self) -> None:
        """Offer in the callee's 2xx (leg b), answer in the caller's ACK (leg a)."""
        session = self.session()
        offer = self.result(session.offer("b", sdp("10.0.0.5", 6000), None))
        answer = self.result(session.answer("a", sdp("192.168.1.20", 4000), None))
        stream = session.streams[0]
        self.assertEqual(offer.media[0].port, stream.sides["a"].pair.rtp_port)
        self.assertEqual(answer.media[0].port, stream.sides["b"].pair.rtp_port)

    def test_second_pair_refused_releases_first(self) -> None:
        """When the pair facing a is bound but the range has none left for b, the offer fails
        with 503 and the pair facing a is closed again (nothing leaks)."""
        policy = replace(self.policy, rtp_end_port=self.policy.rtp_start_port + 5)   # 3 pairs
        first = self.engine.session("c1", policy)
        self.result(first.offer("a", sdp("10.0.0.1", 4000), None))
        allocator = self.engine.allocators[(policy.rtp_start_port, policy.rtp_end_port)]
        self.assertEqual(allocator.free, 1)
        second = self.engine.session("c2", policy)
        failure = self.failureResultOf(second.offer("a", sdp("10.0.0.2", 4000), None), MediaError)
        self.assertEqual(failure.value.status, 503)
        self.assertEqual(allocator.free, 1)
        self.assertEqual(len(self.engine.poller.handlers), 4)
        self.result(second.close())
        self.result(first.close())
        self.assertEqual((allocator.free, self.engine.poller.handlers), (3, {}))

    def test_full_range_503_without_leak(self) -> None:
        """When the range has room for one stream only, a second call gets MediaError(503)
        and keeps no port; closing the first call frees the whole range."""
        policy = replace(self.policy, rtp_end_port=self.policy.rtp_start_port + 3)
        first = self.engine.session("c1", policy)
        self.result(first.offer("a", sdp("10.0.0.1", 4000), None))
        allocator = self.engine.allocators[(policy.rtp_start_port, policy.rtp_end_port)]
        in_use = set(allocator.in_use)
        second = self.engine.session("c2", policy)
        failure = self.failureResultOf(second.offer("a", sdp("10.0.0.2", 4000), None), MediaError)
        self.assertEqual(failure.value.status, 503)
        self.assertEqual(allocator.in_use, in_use)
        self.result(first.close())
        self.assertEqual(allocator.in_use, set())

    def test_close(self) -> None:
        """close() frees the ports, fires with the final stats, and is idempotent; the
        session refuses offers afterwards."""
        session = self.session()
        self.result(session.offer("a", sdp("10.0.0.1", 4000), None))
        final = self.result(session.close())
        self.assertEqual(self.result(session.close()), final)
        self.assertEqual(final["a"]["in"]["packets"], 0)
        self.assertEqual(sum(len(a.in_use) for a in self.engine.allocators.values()), 0)
        self.assertNotIn(session, self.engine.sessions)
        self.failureResultOf(session.offer("a", sdp("10.0.0.1", 4000), None), MediaError)

    def test_stop_closes_sessions(self) -> None:
        """engine.stop() (service shutdown) closes every session."""
        sessions = [self.session() for _ in range(3)]
        for session in sessions:
            self.result(session.offer("a", sdp("10.0.0.1", 4000), None))
        self.engine.stop()
        self.assertTrue(all(s.closed for s in sessions))

    @defer.inlineCallbacks
    def test_audio_both_ways_and_stats(self):
        """Real packets: each phone sends to the address its peer's SDP named and gets the
        other's packets; stats() shows codec, addresses and counts per leg and direction."""
        alice, bob = UdpPhone.listen(self), UdpPhone.listen(self)
        session = self.session()
        offer, answer = self.connect(session, alice, bob)
        to_pbx_from_alice = (answer.connection.address, answer.media[0].port)
        to_pbx_from_bob = (offer.connection.address, offer.media[0].port)
        alice.send_rtp(to_pbx_from_alice, 20, marker_first=True, skip=(5,))
        bob.send_rtp(to_pbx_from_bob, 10, pt=8)
        yield bob.wait_for(19)
        yield alice.wait_for(10)
        stats = session.stats()
        self.assertEqual(stats["a"]["codec"], "pcmu")
        self.assertEqual(stats["a"]["local"], to_pbx_from_alice)
        self.assertEqual(stats["a"]["remote"], alice.address)
        self.assertEqual(stats["a"]["in"]["packets"], 19)
        self.assertEqual(stats["a"]["in"]["lost"], 1)
        self.assertEqual(stats["b"]["out"]["packets"], 19)
        self.assertEqual(stats["b"]["in"]["packets"], 10)
        self.assertEqual(stats["a"]["out"]["bytes"], 10 * 172)
        self.assertEqual(stats["b"]["remote"], bob.address)

    @defer.inlineCallbacks
    def test_ipv6(self):
        """A PBX on IPv6 (local_ip ::1): the SDP says IN IP6, sockets are bound there, packets
        flow, and the latched address in the stats is (host, port) like IPv4's."""
        try:
            alice, bob = UdpPhone.listen(self, "::1"), UdpPhone.listen(self, "::1")
        except Exception as e:
            raise SkipTest(f"no IPv6 loopback here: {e}")
        session = self.session(local_ip="::1")
        def six(port):
            return SessionDescription.parse(
                f"v=0\r\no=- 1 1 IN IP6 ::1\r\ns=-\r\nc=IN IP6 ::1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\n".encode())
        offer = self.result(session.offer("a", six(alice.address[1]), None))
        answer = self.result(session.answer("b", six(bob.address[1]), None))
        self.assertEqual((offer.connection.addrtype, offer.connection.address), ("IP6", "::1"))
        alice.send_rtp(("::1", answer.media[0].port), 2, marker_first=True)
        yield bob.wait_for(2)
        self.assertEqual(session.stats()["a"]["remote"], alice.address)

    @defer.inlineCallbacks
    def test_latching_through_nat(self):
        """Bob's SDP names an address nothing listens on (behind NAT): once Bob's packets
        arrive, Alice's reach Bob where they came from; the stats show the latched address."""
        alice, bob = UdpPhone.listen(self), UdpPhone.listen(self)
        session = self.session()
        offer, answer = self.connect(session, alice, bob, port=9)
        bob.send_rtp(("127.0.0.1", offer.media[0].port), 2)
        yield alice.wait_for(2)
        alice.send_rtp(("127.0.0.1", answer.media[0].port), 3)
        yield bob.wait_for(3)
        self.assertEqual(session.stats()["b"]["remote"], bob.address)

    @defer.inlineCallbacks
    def test_reinvite_reopens_latching(self):
        """After a re-offer from Bob, packets from Bob's new socket latch again and Alice's
        audio follows him there."""
        alice, bob, bob2 = UdpPhone.listen(self), UdpPhone.listen(self), UdpPhone.listen(self)
        session = self.session()
        offer, answer = self.connect(session, alice, bob)
        pbx_for_bob = ("127.0.0.1", offer.media[0].port)
        bob.send_rtp(pbx_for_bob, 2)
        yield alice.wait_for(2)
        bob2.send_rtp(pbx_for_bob, 2)
        yield settle()
        self.assertEqual(len(alice.received), 2)       # latched on bob: bob2 dropped
        self.result(session.offer("b", sdp("127.0.0.1", bob2.address[1], version=2), None))
        self.result(session.answer("a", sdp("127.0.0.1", alice.address[1], version=2), None))
        bob2.send_rtp(pbx_for_bob, 2)
        yield alice.wait_for(4)
        alice.send_rtp(("127.0.0.1", answer.media[0].port), 1)
        yield bob2.wait_for(1)


class TimeoutTests(EngineTestCase):
    PORTS = 20
    POLICY = {"rtp_timeout": 30}

    def setUp(self) -> None:
        super().setUp()
        self.fired = []

    def call(self, a_extra=(), b_extra=(), **changes):
        session = self.engine.session("call-t", replace(self.policy, **changes))
        session.on_timeout = lambda: self.fired.append(session.timed_out)
        self.successResultOf(session.offer("a", sdp("10.0.0.1", 4000, *a_extra), None))
        self.successResultOf(session.answer("b", sdp("10.0.0.2", 6000, *b_extra), None))
        return session

    @staticmethod
    def feed(session, leg: str, seq: int) -> None:
        """One RTP packet arriving on the PBX socket facing C{leg}."""
        side = session.streams[0].sides[leg]
        side.pair.rtp.protocol.datagramReceived(
            build_packet(0, seq, seq * 160, 1, b"\xff" * 160, seq == 0), side.latch.target)

    def test_silence_times_out_once(self) -> None:
        """No RTP at all after the answer: on_timeout is called once, after 30 s, not before."""
        session = self.call()
        self.clock.advance(29)
        self.assertEqual(self.fired, [])
        self.clock.advance(1)
        self.assertEqual(self.fired, ["a"])
        self.clock.advance(300)
        self.assertEqual(self.fired, ["a"])
        self.assertEqual(session.stats()["timeout"], "a")

    def test_one_silent_leg(self) -> None:
        """RTP from a only: b's silence ends the call (RustPBX: inactivity per leg)."""
        session = self.call()
        for second in range(31):
            self.feed(session, "a", second)
            self.clock.advance(1)
        self.assertEqual(self.fired, ["b"])

    def test_traffic_keeps_call(self) -> None:
        """RTP both ways every second: no timeout in ten minutes."""
        session = self.call()
        for second in range(600):
            self.feed(session, "a", second)
            self.feed(session, "b", second)
            self.clock.advance(1)
        self.assertEqual(self.fired, [])

    def test_hold_is_not_silence(self) -> None:
        """A leg that put itself inactive (or recvonly) sends nothing by design: its silence
        does not end the call."""
        session = self.call(a_extra=("a=inactive",), b_extra=("a=inactive",))
        self.clock.advance(120)
        self.assertEqual(self.fired, [])
        self.successResultOf(session.close())

    def test_one_way_hold_pauses(self) -> None:
        """a puts b on hold (sendonly / recvonly): even if a's phone plays nothing, no
        timeout; once a resumes (sendrecv both ways) the silence counts again."""
        session = self.call(a_extra=("a=sendonly",), b_extra=("a=recvonly",))
        self.clock.advance(120)
        self.assertEqual(self.fired, [])
        self.successResultOf(session.offer("a", sdp("10.0.0.1", 4000, version=2), None))
        self.successResultOf(session.answer("b", sdp("10.0.0.2", 6000, version=2), None))
        self.clock.advance(31)
        self.assertEqual(self.fired, ["a"])

    def test_rfc2543_hold_pauses(self) -> None:
        """c=0.0.0.0 (RFC 2543 hold, no direction attribute) pauses the watch too."""
        session = self.engine.session("call-h", self.policy)
        session.on_timeout = lambda: self.fired.append(session.timed_out)
        self.successResultOf(session.offer("a", sdp("0.0.0.0", 4000), None))
        self.successResultOf(session.answer("b", sdp("10.0.0.2", 6000), None))
        self.clock.advance(120)
        self.assertEqual(self.fired, [])

    def test_off(self) -> None:
        """rtp_timeout = 0: no timer at all."""
        self.call(rtp_timeout=0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_close_cancels(self) -> None:
        """Closing the session cancels the timer."""
        session = self.call()
        self.successResultOf(session.close())
        self.assertEqual(self.clock.getDelayedCalls(), [])


def stamped(packet: bytes, m) -> bytes:
    """C{packet} as the relay sends it to the party C{m} was written for:
    with the SSRC that m-line's a=ssrc announces."""
    ssrc = int(m.attribute("ssrc").split()[0])
    return packet[:8] + ssrc.to_bytes(4, "big") + packet[12:]


def srtp_sdp(address: str, port: int, keys: SdesKeys, version: int = 1, proto: str = "RTP/SAVP"):
    text = (f"v=0\r\no=phone 77 {version} IN IP4 {address}\r\ns=-\r\nc=IN IP4 {address}\r\nt=0 0\r\n"
            f"m=audio {port} {proto} 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
            f"a=crypto:{keys.attribute()}\r\n")
    return SessionDescription.parse(text.encode())


class SrtpTests(EngineTestCase):
    """SDES SRTP on each leg on its own: an SRTP phone can talk to a plain RTP phone."""

    CALL_ID = "call-s"

    @staticmethod
    def pbx_keys(m) -> SdesKeys:
        return parse_crypto(m.attribute("crypto"))

    @defer.inlineCallbacks
    def test_srtp_to_plain(self):
        """Alice offers RTP/SAVP, the trunk towards Bob is plain (srtp_b = False): Bob gets
        RTP/AVP without a=crypto and plain packets; Alice gets RTP/SAVP with the PBX's key
        under her tag, and Bob's packets protected with it."""
        alice, bob = UdpPhone.listen(self), UdpPhone.listen(self)
        alice_keys = SdesKeys.generate(tag=3)
        session = self.session(srtp_b=False)
        offer = self.successResultOf(session.offer("a", srtp_sdp("127.0.0.1", alice.address[1], alice_keys), None))
        self.assertEqual((offer.media[0].proto, offer.media[0].attribute("crypto")), ("RTP/AVP", None))
        answer = self.successResultOf(session.answer("b", sdp("127.0.0.1", bob.address[1]), None))
        m = answer.media[0]
        self.assertEqual(m.proto, "RTP/SAVP")
        pbx_keys = self.pbx_keys(m)
        self.assertEqual((pbx_keys.tag, pbx_keys.suite), (3, alice_keys.suite))
        self.assertNotEqual(pbx_keys.key, alice_keys.key)
        # alice -> bob: SRTP in, plain out
        protect = srtp_session(alice_keys, outbound=True)
        plain = [build_packet(0, 100 + i, 160 * i, 99, bytes([i]) * 160, i == 0) for i in range(3)]
        for packet in plain:
            alice.port.write(protect.protect(packet), ("127.0.0.1", m.port))
        yield bob.wait_for(3)
        self.assertEqual([data for data, _ in bob.received], [stamped(p, offer.media[0]) for p in plain])
        # bob -> alice: plain in, SRTP out with the PBX's key for alice
        bob.send_rtp(("127.0.0.1", offer.media[0].port), 2, marker_first=True)
        yield alice.wait_for(2)
        unprotect = srtp_session(pbx_keys, outbound=False)
        decrypted = [unprotect.unprotect(data) for data, _ in alice.received]
        self.assertEqual([parse_header(p).sequence for p in decrypted], [1000, 1001])
        self.assertEqual(payload_of(decrypted[0]), b"\xd5" * 160)

    @defer.inlineCallbacks
    def test_srtp_both_sides_different_keys(self):
        """srtp_b unset and Alice offers SRTP: Bob is offered SRTP too, with the PBX's own key
        (never Alice's); each side's packets are re-keyed on the way through."""
        alice, bob = UdpPhone.listen(self), UdpPhone.listen(self)
        alice_keys, bob_keys = SdesKeys.generate(), SdesKeys.generate()
        session = self.session()
        offer = self.successResultOf(session.offer("a", srtp_sdp("127.0.0.1", alice.address[1], alice_keys), None))
        to_bob = self.pbx_keys(offer.media[0])
        self.assertEqual(offer.media[0].proto, "RTP/SAVP")
        self.assertNotEqual(to_bob.key, alice_keys.key)
        answer = self.successResultOf(session.answer("b", srtp_sdp("127.0.0.1", bob.address[1], bob_keys), None))
        to_alice = self.pbx_keys(answer.media[0])
        packet = build_packet(0, 7, 0, 5, b"hello" * 10, True)
        alice.port.write(srtp_session(alice_keys, True).protect(packet), ("127.0.0.1", answer.media[0].port))
        bob.port.write(srtp_session(bob_keys, True).protect(packet), ("127.0.0.1", offer.media[0].port))
        yield bob.wait_for(1)
        yield alice.wait_for(1)
        self.assertEqual(srtp_session(to_bob, False).unprotect(bob.received[0][0]), stamped(packet, offer.media[0]))
        self.assertEqual(srtp_session(to_alice, False).unprotect(alice.received[0][0]),
                         stamped(packet, answer.media[0]))

    @defer.inlineCallbacks
    def test_forged_packets_dropped(self):
        """Packets that fail SRTP authentication are not relayed."""
        alice, bob = UdpPhone.listen(self), UdpPhone.listen(self)
        session = self.session(srtp_b=False)
        self.successResultOf(session.offer("a", srtp_sdp("127.0.0.1", alice.address[1], SdesKeys.generate()), None))
        answer = self.successResultOf(session.answer("b", sdp("127.0.0.1", bob.address[1]), None))
        alice.send_rtp(("127.0.0.1", answer.media[0].port), 3, marker_first=True)
        yield settle()
        self.assertEqual(bob.received, [])

    def test_plain_to_srtp_trunk(self):
        """A plain phone calling through a trunk that wants SRTP (srtp_b = True): Bob is
        offered RTP/SAVP with a PBX key, Alice's answer stays RTP/AVP without a=crypto."""
        session = self.session(srtp_b=True)
        offer = self.successResultOf(session.offer("a", sdp("10.0.0.1", 4000), None))
        self.assertEqual(offer.media[0].proto, "RTP/SAVP")
        self.pbx_keys(offer.media[0])
        answer = self.successResultOf(session.answer("b", srtp_sdp("10.0.0.2", 6000, SdesKeys.generate()), None))
        self.assertEqual((answer.media[0].proto, answer.media[0].attribute("crypto")), ("RTP/AVP", None))
        side = session.streams[0].sides["b"]
        self.assertIsNotNone(side.inbound)
        self.assertIsNotNone(side.outbound)
        self.assertIsNone(session.streams[0].sides["a"].inbound)

    def test_reoffer_same_key_keeps_srtp_state(self):
        """A re-INVITE repeating the same key keeps the SRTP sessions (replay window and
        rollover counter); a new key replaces the inbound one."""
        keys = SdesKeys.generate()
        session = self.session(srtp_b=False)
        self.successResultOf(session.offer("a", srtp_sdp("10.0.0.1", 4000, keys), None))
        self.successResultOf(session.answer("b", sdp("10.0.0.2", 6000), None))
        side = session.streams[0].sides["a"]
        inbound, outbound = side.inbound, side.outbound
        self.successResultOf(session.offer("a", srtp_sdp("10.0.0.1", 4000, keys, version=2), None))
        self.assertIs(side.inbound, inbound)
        self.assertIs(side.outbound, outbound)
        self.successResultOf(session.offer("a", srtp_sdp("10.0.0.1", 4000, SdesKeys.generate(), version=3), None))
        self.assertIsNot(side.inbound, inbound)
        self.assertIs(side.outbound, outbound)

    def test_savp_without_usable_crypto(self):
        """RTP/SAVP with no a=crypto the relay can use (DTLS-SRTP fingerprint only) is 488."""
        text = (b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
                b"m=audio 4000 RTP/SAVP 0\r\na=fingerprint:sha-256 AB:CD\r\n")
        failure = self.failureResultOf(self.session().offer("a", SessionDescription.parse(text), None),
                                       MediaError)
        self.assertEqual(failure.value.status, 488)


def codec_sdp(address: str, port: int, formats: str, *rtpmaps: str) -> SessionDescription:
    text = (f"v=0\r\no=phone 9 1 IN IP4 {address}\r\ns=-\r\nc=IN IP4 {address}\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP {formats}\r\n" + "".join(f"a=rtpmap:{r}\r\n" for r in rtpmaps))
    return SessionDescription.parse(text.encode())


class CodecTests(EngineTestCase):
    """The offer/answer codecs through codecs.plan_offer/choose_answer, and transcoding."""

    CALL_ID = "call-c"

    def test_allow_list(self) -> None:
        """performance: b is offered only what the list allows, in the list's order, with
        telephone-event kept; the answer to a names the codec b chose."""
        session = self.session(codecs=("pcma",))
        offer = self.successResultOf(session.offer("a", sdp("10.0.0.1", 4000), None))
        self.assertEqual(offer.media[0].formats, ["8", "101"])
        answer = self.successResultOf(session.answer(
            "b", codec_sdp("10.0.0.2", 6000, "8 101", "101 telephone-event/8000"), None))
        self.assertEqual(answer.media[0].formats, ["8", "101"])
        self.assertEqual(session.stats()["a"]["codec"], "pcma")
        self.assertIsNone(session.streams[0].sides["a"].translate)

    def test_nothing_allowed(self) -> None:
        """performance: an offer with nothing the list allows is refused with 488."""
        failure = self.failureResultOf(self.session(codecs=("g722",)).offer(
            "a", sdp("10.0.0.1", 4000), None), MediaError)
        self.assertEqual(failure.value.status, 488)

    @defer.inlineCallbacks
    def test_quality_transcodes_pcmu_pcma(self):
        """quality: a PCMU-only phone calls a PCMA-only trunk: b is offered PCMA, a is answered
        PCMU, and packets are transcoded both ways on the wire."""
        alice, bob = UdpPhone.listen(self), UdpPhone.listen(self)
        session = self.session(codecs=("pcma",), strategy="quality")
        offer = self.successResultOf(session.offer("a", codec_sdp("127.0.0.1", alice.address[1], "0"), None))
        self.assertEqual(offer.media[0].formats, ["8"])
        answer = self.successResultOf(session.answer("b", codec_sdp("127.0.0.1", bob.address[1], "8"), None))
        self.assertEqual(answer.media[0].formats, ["0"])
        stats = session.stats()
        self.assertEqual((stats["a"]["codec"], stats["b"]["codec"]), ("pcmu", "pcma"))
        payload = bytes(range(160))
        alice.send_rtp(("127.0.0.1", answer.media[0].port), 3, pt=0, payload=payload, marker_first=True)
        bob.send_rtp(("127.0.0.1", offer.media[0].port), 3, pt=8, payload=payload.translate(ULAW_TO_ALAW))
        yield bob.wait_for(3)
        yield alice.wait_for(3)
        self.assertEqual({parse_header(d).payload_type for d, _ in bob.received}, {8})
        self.assertEqual(payload_of(bob.received[0][0]), payload.translate(ULAW_TO_ALAW))
        self.assertEqual({parse_header(d).payload_type for d, _ in alice.received}, {0})
        self.assertFalse(session.streams[0].sides["a"].rtcp_relayed)


class RealOfferTests(EngineTestCase):
    """Every offer collected from real devices (rustpbx_py/test/data/sdp) through the engine."""

    DATA = os.path.join(os.path.dirname(__file__), "data", "sdp")

    # closed sockets are only closed on the next reactor turn: a range
    # large enough for every offer of the loop
    PORTS = 600
    POLICY = {"codecs": ("opus", "g722", "pcmu", "pcma", "g729")}

    def test_collected_offers(self) -> None:
        """Each plain RTP, SDES or WebRTC (DTLS-SRTP audio) offer comes out naming only
        the PBX for its relayed streams, without ICE, and parses again; offers the
        built-in relay cannot carry (nothing but refused streams) fail with 488, never
        otherwise."""
        names = sorted(n for n in os.listdir(self.DATA) if n.endswith(".sdp") and "answer" not in n)
        self.assertGreater(len(names), 20)
        carried = refused = 0
        for name in names:
            with open(os.path.join(self.DATA, name), "rb") as f:
                offer_in = SessionDescription.parse(f.read())
            session = self.engine.session(name, self.policy)
            d = session.offer("a", offer_in, None)
            self.addCleanup(session.close)
            if d.called and isinstance(d.result, Failure):
                failure = self.failureResultOf(d, MediaError)
                self.assertEqual(failure.value.status, 488, name)
                self.assertTrue(any(m.proto.startswith("UDP/TLS") or m.port == 0 or
                                    m.media != "audio" for m in offer_in.media), name)
                refused += 1
                continue
            offer = self.successResultOf(d)
            again = SessionDescription.parse(bytes(offer))
            for original, m in zip(offer_in.media, again.media):
                if m.port == 0:
                    continue
                self.assertEqual(again.address(m), "127.0.0.1", name)
                self.assertIsNone(m.attribute("candidate"), name)
                self.assertIsNone(m.attribute("rtcp-mux"), name)
                self.assertIsNone(m.attribute("fingerprint"), name)
                self.assertFalse(m.proto.startswith("UDP/TLS"), name)
                # the relay's own SSRC and the PBX's CNAME, nothing of the device's
                (ssrc,) = m.attributes("ssrc")
                self.assertEqual(ssrc.split()[1], f"cname:{self.engine.rtc_cname}", name)
                self.assertEqual(m.attributes("ssrc-group") + m.attributes("msid"), [], name)
                if original.proto in ("RTP/SAVP", "RTP/SAVPF"):
                    self.assertEqual(len(m.attributes("crypto")), 1, name)
            self.assertIsNone(again.attribute("ice-ufrag"), name)
            self.successResultOf(session.close())
            carried += 1
        self.assertGreater(carried, 15)


class SsrcTests(EngineTestCase):
    """
    C{a=ssrc:<n> cname:<rtc_cname>} in every SDP the engine writes for an
    anchored leg (not only towards browsers), and the relay keeping to it.
    """

    def test_every_sdp(self):
        """The offer to bob and the answer to alice each announce one SSRC
        of the relay with the engine's CNAME, in place of the phones' own;
        the two legs' SSRCs differ; a re-offer keeps them (the same
        streams), and a re-offer from bob announces the same SSRC to alice."""
        self.engine.rtc_cname = "pbx-cname"
        session = self.session()
        self.addCleanup(session.close)
        offer = self.successResultOf(session.offer("a", sdp("127.0.0.1", 41000, "a=ssrc:999 cname:alice"), None))
        answer = self.successResultOf(session.answer("b", sdp("127.0.0.1", 42000, "a=ssrc:888 cname:bob",
                                                              "a=ssrc-group:FID 888 889"), None))
        to_bob, to_alice = offer.media[0].attributes("ssrc"), answer.media[0].attributes("ssrc")
        self.assertEqual(len(to_bob), 1)
        self.assertEqual(len(to_alice), 1)
        self.assertEqual(to_bob[0].split()[1], "cname:pbx-cname")
        self.assertEqual(to_alice[0].split()[1], "cname:pbx-cname")
        self.assertNotEqual(to_bob[0].split()[0], to_alice[0].split()[0])
        self.assertEqual(answer.media[0].attributes("ssrc-group"), [])
        again = self.successResultOf(session.offer("a", sdp("127.0.0.1", 41000, "a=sendonly", version=2), None))
        self.assertEqual(again.media[0].attributes("ssrc"), to_bob)
        self.successResultOf(session.answer("b", sdp("127.0.0.1", 42000, "a=recvonly", version=2), None))
        from_bob = self.successResultOf(session.offer("b", sdp("127.0.0.1", 42000, version=3), None))
        self.assertEqual(from_bob.media[0].attributes("ssrc"), to_alice)

    @defer.inlineCallbacks
    def test_relay_sends_the_announced_ssrc(self):
        """RTP each phone gets carries the SSRC its SDP announced, whatever
        the other phone sends with (also after it changes its SSRC)."""
        alice, bob = UdpPhone.listen(self), UdpPhone.listen(self)
        session = self.session()
        self.addCleanup(session.close)
        offer = self.successResultOf(session.offer("a", sdp(*alice.address), None))
        answer = self.successResultOf(session.answer("b", sdp(*bob.address), None))
        alice.send_rtp(("127.0.0.1", answer.media[0].port), 2, ssrc=0x1234)
        alice.send_rtp(("127.0.0.1", answer.media[0].port), 2, ssrc=0x4321)
        bob.send_rtp(("127.0.0.1", offer.media[0].port), 2, ssrc=0x5678)
        yield bob.wait_for(4)
        yield alice.wait_for(2)
        announced_bob = int(offer.media[0].attribute("ssrc").split()[0])
        announced_alice = int(answer.media[0].attribute("ssrc").split()[0])
        self.assertEqual({parse_header(d).ssrc for d, _ in bob.received}, {announced_bob})
        self.assertEqual({parse_header(d).ssrc for d, _ in alice.received}, {announced_alice})


class SrtpTranscodingTests(EngineTestCase):
    POLICY = {"codecs": ("pcma",), "strategy": "quality", "srtp_b": False}

    @defer.inlineCallbacks
    def test_srtp_pcmu_to_plain_pcma(self):
        """Both hooks on one stream: an SRTP PCMU phone and a plain PCMA trunk. Alice's SRTP
        is unprotected, transcoded and sent plain to Bob; Bob's PCMA comes to Alice as
        SRTP-protected PCMU with the PBX's key."""
        alice, bob = UdpPhone.listen(self), UdpPhone.listen(self)
        alice_keys = SdesKeys.generate()
        session = self.engine.session("call-st", self.policy)
        text = (f"v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                f"m=audio {alice.address[1]} RTP/SAVP 0\r\na=crypto:{alice_keys.attribute()}\r\n")
        offer = self.successResultOf(session.offer("a", SessionDescription.parse(text.encode()), None))
        self.assertEqual((offer.media[0].proto, offer.media[0].formats), ("RTP/AVP", ["8"]))
        answer = self.successResultOf(session.answer("b", codec_sdp("127.0.0.1", bob.address[1], "8"), None))
        m = answer.media[0]
        self.assertEqual((m.proto, m.formats), ("RTP/SAVP", ["0"]))
        payload = bytes(range(160))
        protect = srtp_session(alice_keys, outbound=True)
        alice.port.write(protect.protect(build_packet(0, 1, 0, 9, payload, True)), ("127.0.0.1", m.port))
        yield bob.wait_for(1)
        self.assertEqual(parse_header(bob.received[0][0]).payload_type, 8)
        self.assertEqual(payload_of(bob.received[0][0]), payload.translate(ULAW_TO_ALAW))
        bob.send_rtp(("127.0.0.1", offer.media[0].port), 1, pt=8, payload=payload.translate(ULAW_TO_ALAW))
        yield alice.wait_for(1)
        clear = srtp_session(parse_crypto(m.attribute("crypto")), outbound=False).unprotect(alice.received[0][0])
        self.assertEqual(parse_header(clear).payload_type, 0)
        # u-law -> A-law -> u-law is exact except for a few codes the tables merge
        self.assertEqual(payload_of(clear), payload.translate(ULAW_TO_ALAW).translate(ALAW_TO_ULAW))
