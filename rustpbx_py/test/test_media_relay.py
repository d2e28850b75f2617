"""
L{rustpbx_py.media.relay}: RTP and RTCP relayed between two legs, on real
UDP sockets on 127.0.0.1 (the wire is what the relay is about).
"""

import struct

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from rustpbx_py.media.ports import PortAllocator
from rustpbx_py.media.relay import Leg, pair_legs
from rustpbx_py.media.rtp import build_packet, parse_header
from rustpbx_py.test.media_wire import UdpPhone, free_range, settle


def receiver_report(ssrc: int, lost: int, jitter: int) -> bytes:
    block = struct.pack("!IIIIII", 0x5151, lost & 0xFFFFFF, 1000, jitter, 0, 0)
    return struct.pack("!BBHI", 0x81, 201, 7, ssrc) + block


class RelayTests(TestCase):
    def setUp(self) -> None:
        start, end = free_range()
        self.allocator = PortAllocator(reactor, start, end)

    def stream(self, latching: bool = True, probation: int = 6) -> tuple[Leg, Leg]:
        legs = []
        for name in ("a", "b"):
            leg = Leg(name, latching, probation)
            pair = self.allocator.allocate(leg.protocols, "127.0.0.1")
            self.addCleanup(pair.release)
            leg.bind(pair, ("127.0.0.1", pair.rtp_port))
            legs.append(leg)
        pair_legs(*legs)
        return legs[0], legs[1]

    @staticmethod
    def rtp_of(leg: Leg) -> tuple[str, int]:
        return ("127.0.0.1", leg.pair.rtp_port)

    @staticmethod
    def rtcp_of(leg: Leg) -> tuple[str, int]:
        return ("127.0.0.1", leg.pair.rtcp_port)

    @defer.inlineCallbacks
    def test_both_ways_unchanged(self):
        """Packets from each phone reach the other byte for byte, from the PBX's port facing
        the receiver; packets and bytes are counted each way."""
        alice, bob = UdpPhone.listen(self), UdpPhone.listen(self)
        a, b = self.stream()
        a.latch.reopen(alice.address)
        b.latch.reopen(bob.address)
        alice.send_rtp(self.rtp_of(a), 10, marker_first=True)
        bob.send_rtp(self.rtp_of(b), 7, pt=8, ssrc=0x7777)
        yield bob.wait_for(10)
        yield alice.wait_for(7)
        self.assertEqual(bob.sequences(), list(range(1000, 1010)))
        self.assertEqual({addr for _, addr in bob.received}, {self.rtp_of(b)})
        self.assertEqual({addr for _, addr in alice.received}, {self.rtp_of(a)})
        self.assertEqual(parse_header(alice.received[0][0]).payload_type, 8)
        self.assertEqual((a.received.packets, a.received.bytes, b.sent.packets), (10, 1720, 10))
        self.assertEqual((b.received.packets, a.sent.packets), (7, 7))

    @defer.inlineCallbacks
    def test_simulated_nat(self):
        """Bob's SDP names an address where nobody listens (the private side of a NAT);
        his packets come from elsewhere.  With latching, Alice's RTP reaches Bob at the
        address his packets come from."""
        alice, bob = UdpPhone.listen(self), UdpPhone.listen(self)
        a, b = self.stream()
        a.latch.reopen(alice.address)
        b.latch.reopen(("127.0.0.1", 9))           # the SDP address: discard port
        alice.send_rtp(self.rtp_of(a), 3)
        yield settle()
        self.assertEqual(bob.received, [])          # sent to the SDP address: lost
        bob.send_rtp(self.rtp_of(b), 1, marker_first=True)
        yield alice.wait_for(1)
        self.assertEqual(b.latch.latched, bob.address)
        alice.send_rtp(self.rtp_of(a), 5)
        yield bob.wait_for(5)
        self.assertEqual(bob.sequences(), list(range(1003, 1008)))

    @defer.inlineCallbacks
    def test_other_source_dropped_after_latch(self):
        """After the latch, a third party's packets sent to Bob's PBX port are not relayed
        to Alice, and are counted as dropped."""
        alice, bob, mallory = UdpPhone.listen(self), UdpPhone.listen(self), UdpPhone.listen(self)
        a, b = self.stream()
        a.latch.reopen(alice.address)
        b.latch.reopen(bob.address)
        bob.send_rtp(self.rtp_of(b), 2)
        yield alice.wait_for(2)
        mallory.send_rtp(self.rtp_of(b), 4, marker_first=True)
        bob.send_rtp(self.rtp_of(b), 1)
        yield alice.wait_for(3)
        yield settle()
        self.assertEqual(len(alice.received), 3)
        self.assertEqual(b.latch.dropped, 4)
        self.assertEqual(b.received.packets, 3)

    @defer.inlineCallbacks
    def test_without_latching(self):
        """enable_latching = false: every source is relayed, and the leg is sent to at its
        SDP address even though its packets come from elsewhere."""
        alice, bob, bob_nat = UdpPhone.listen(self), UdpPhone.listen(self), UdpPhone.listen(self)
        a, b = self.stream(latching=False)
        a.latch.reopen(alice.address)
        b.latch.reopen(bob.address)
        bob_nat.send_rtp(self.rtp_of(b), 2, marker_first=True)
        yield alice.wait_for(2)
        alice.send_rtp(self.rtp_of(a), 2)
        yield bob.wait_for(2)
        self.assertEqual(bob_nat.received, [])

    @defer.inlineCallbacks
    def test_loss_counted(self):
        """Packets the phone never sent (sequence gaps) are counted lost on the way in."""
        alice, bob = UdpPhone.listen(self), UdpPhone.listen(self)
        a, b = self.stream()
        a.latch.reopen(alice.address)
        b.latch.reopen(bob.address)
        alice.send_rtp(self.rtp_of(a), 50, skip=(3, 10, 11))
        yield bob.wait_for(47)
        self.assertEqual(a.received.figures()["lost"], 3)
        self.assertEqual(a.received.figures()["packets"], 47)

    @defer.inlineCallbacks
    def test_rtcp_relayed_and_read(self):
        """RTCP goes RTCP port to RTCP port (SDP RTP port + 1 until latched); the receiver
        report of a leg sets the loss and jitter of what was sent to it."""
        alice, bob = UdpPhone.listen(self), UdpPhone.listen(self)
        alice_rtcp, bob_rtcp = UdpPhone.listen(self), UdpPhone.listen(self)
        a, b = self.stream()
        a.latch.reopen(alice.address)
        a.rtcp_latch.reopen(alice_rtcp.address)
        b.latch.reopen(bob.address)
        b.rtcp_latch.reopen(bob_rtcp.address)
        bob_rtcp.port.write(receiver_report(0x7777, lost=5, jitter=40), self.rtcp_of(b))
        received = yield alice_rtcp.wait_for(1)
        self.assertEqual(received[0], (receiver_report(0x7777, 5, 40), self.rtcp_of(a)))
        self.assertEqual(b.sent.figures()["lost"], 5)
        self.assertEqual(b.sent.figures()["jitter_ms"], 5.0)
        self.assertEqual(b.rtcp_latch.latched, bob_rtcp.address)

    @defer.inlineCallbacks
    def test_hooks(self):
        """inbound / outbound hooks (SRTP's place) see every packet; inbound returning None
        drops it; translate turns one packet into several for the peer."""
        alice, bob = UdpPhone.listen(self), UdpPhone.listen(self)
        a, b = self.stream()
        a.latch.reopen(alice.address)
        b.latch.reopen(bob.address)
        a.inbound = lambda data, addr: None if parse_header(data).sequence % 2 else data
        b.outbound = lambda data: data + b"TAG"
        alice.send_rtp(self.rtp_of(a), 4)
        yield bob.wait_for(2)
        self.assertEqual([data[-3:] for data, _ in bob.received], [b"TAG", b"TAG"])
        self.assertEqual(bob.sequences(), [1000, 1002])
        b.translate = lambda data: [build_packet(9, 1, 0, 1, b"x"), build_packet(9, 2, 160, 1, b"y")]
        bob.send_rtp(self.rtp_of(b), 1)
        yield alice.wait_for(2)
        self.assertEqual([data for data, _ in alice.received],
                         [build_packet(9, 1, 0, 1, b"x"), build_packet(9, 2, 160, 1, b"y")])

    @defer.inlineCallbacks
    def test_runts_dropped_without_latching(self):
        """Without latching anyone may send: datagrams too short to be RTP are dropped and
        counted before any hook sees them."""
        alice, bob, mallory = UdpPhone.listen(self), UdpPhone.listen(self), UdpPhone.listen(self)
        a, b = self.stream(latching=False)
        a.latch.reopen(alice.address)
        b.latch.reopen(bob.address)
        seen = []
        a.translate = lambda data: seen.append(data) or [data]
        for runt in (b"\x80", b"", b"\x80\x00\x00\x01"):
            mallory.port.write(runt, self.rtp_of(a))
        alice.send_rtp(self.rtp_of(a), 1)
        yield bob.wait_for(1)
        self.assertEqual((len(seen), a.latch.dropped, a.received.packets), (1, 3, 1))

    @defer.inlineCallbacks
    def test_nowhere_to_send(self):
        """A leg with no target yet (no answer, or c=0.0.0.0 hold) gets nothing, and the
        incoming side still counts what arrived."""
        alice = UdpPhone.listen(self)
        a, b = self.stream()
        a.latch.reopen(alice.address)
        b.latch.reopen(None)
        alice.send_rtp(self.rtp_of(a), 3)
        yield settle()
        self.assertEqual((a.received.packets, b.sent.packets), (3, 0))


def _legs(a_ssrc, a_source, b_ssrc, b_source):
    """Two stand-in legs for map_rtcp: what each stamps, what each party sends."""
    from types import SimpleNamespace

    def leg(ssrc, source):
        return SimpleNamespace(ssrc=None if ssrc is None else struct.pack("!I", ssrc),
                               received=SimpleNamespace(ssrc=source))

    return leg(a_ssrc, a_source), leg(b_ssrc, b_source)


class SsrcTests(TestCase):
    """
    Legs with their own SSRC (L{Leg.ssrc}, what the SDP announces to each
    party): RTP is stamped with it, RTCP is mapped so that each party's
    reports still name the streams it knows.
    """

    setUp = RelayTests.setUp
    stream = RelayTests.stream
    rtp_of = staticmethod(RelayTests.rtp_of)
    rtcp_of = staticmethod(RelayTests.rtcp_of)

    @defer.inlineCallbacks
    def test_rtp_stamped(self):
        """What reaches Bob carries b's SSRC and what reaches Alice a's;
        everything else in the packets is as sent."""
        alice, bob = UdpPhone.listen(self), UdpPhone.listen(self)
        a, b = self.stream()
        a.ssrc, b.ssrc = struct.pack("!I", 0xA0A0A0A0), struct.pack("!I", 0xB0B0B0B0)
        a.latch.reopen(alice.address)
        b.latch.reopen(bob.address)
        alice.send_rtp(self.rtp_of(a), 3, marker_first=True, ssrc=0x1111)
        bob.send_rtp(self.rtp_of(b), 2, ssrc=0x7777)
        yield bob.wait_for(3)
        yield alice.wait_for(2)
        self.assertEqual({parse_header(d).ssrc for d, _ in bob.received}, {0xB0B0B0B0})
        self.assertEqual({parse_header(d).ssrc for d, _ in alice.received}, {0xA0A0A0A0})
        self.assertEqual(bob.sequences(), [1000, 1001, 1002])
        self.assertTrue(parse_header(bob.received[0][0]).marker)
        self.assertEqual((a.received.ssrc, b.received.ssrc), (0x1111, 0x7777))

    @defer.inlineCallbacks
    def test_rtcp_mapped(self):
        """Alice's SR (her own SSRC, a report block about what she receives
        from a) and SDES reach Bob naming b's SSRC as the sender and Bob's
        own SSRC in the report block; the CNAME text is untouched."""
        alice, bob = UdpPhone.listen(self), UdpPhone.listen(self)
        a, b = self.stream()
        a.ssrc, b.ssrc = struct.pack("!I", 0xA0A0A0A0), struct.pack("!I", 0xB0B0B0B0)
        a.latch.reopen(alice.address)
        b.latch.reopen(bob.address)
        alice.send_rtp(self.rtp_of(a), 1, ssrc=0x1111)
        bob.send_rtp(self.rtp_of(b), 1, ssrc=0x7777)
        yield bob.wait_for(1)
        yield alice.wait_for(1)
        alice_rtcp, bob_rtcp = UdpPhone.listen(self), UdpPhone.listen(self)
        a.rtcp_latch.reopen(alice_rtcp.address)
        b.rtcp_latch.reopen(bob_rtcp.address)
        block = struct.pack("!IIIIII", 0xA0A0A0A0, 0, 1000, 3, 0, 0)
        sr = struct.pack("!BBHIIIIII", 0x81, 200, 12, 0x1111, 1, 2, 3, 4, 5) + block
        sdes = struct.pack("!BBHIBB", 0x81, 202, 3, 0x1111, 1, 5) + b"alice" + b"\x00"
        alice_rtcp.port.write(sr + sdes, self.rtcp_of(a))
        yield bob_rtcp.wait_for(1)
        data = bob_rtcp.received[0][0]
        self.assertEqual(len(data), len(sr + sdes))
        self.assertEqual(struct.unpack_from("!I", data, 4)[0], 0xB0B0B0B0)     # SR sender
        self.assertEqual(struct.unpack_from("!I", data, 28)[0], 0x7777)        # about bob's stream
        self.assertEqual(data[8:28], sr[8:28])                                 # sender info as sent
        self.assertEqual(struct.unpack_from("!I", data, len(sr) + 4)[0], 0xB0B0B0B0)
        self.assertEqual(data[len(sr) + 8:], sdes[8:])


class MapRtcpTests(TestCase):
    """L{map_rtcp} on its own: each packet type it maps, and bad shapes left alone."""

    def test_bye_and_feedback(self):
        """BYE's SSRC list and RTPFB/PSFB sender and media SSRCs are mapped."""
        from rustpbx_py.media.relay import map_rtcp

        leg, peer = _legs(0xA, 0x1111, 0xB, 0x7777)
        bye = struct.pack("!BBHI", 0x81, 203, 1, 0x1111)
        pli = struct.pack("!BBHII", 0x81, 206, 2, 0x1111, 0xA)
        out = map_rtcp(bye + pli, leg, peer)
        self.assertEqual(struct.unpack("!I", out[4:8])[0], 0xB)
        self.assertEqual(struct.unpack("!II", out[12:20]), (0xB, 0x7777))

    def test_unknown_ssrcs_and_garbage(self):
        """SSRCs the mapping does not know stay; truncated or non-RTCP data
        comes back unchanged (the relay never drops RTCP for its shape);
        with no stamping at all the data is returned as is."""
        from rustpbx_py.media.relay import map_rtcp

        leg, peer = _legs(0xA, 0x1111, 0xB, 0x7777)
        rr = struct.pack("!BBHI", 0x80, 201, 1, 0x4242)
        self.assertEqual(map_rtcp(rr, leg, peer), rr)
        for junk in (b"", b"\x81\xc8", b"\x81\xc8\x00\x20" + b"\x00" * 8, b"\x00" * 16):
            self.assertEqual(map_rtcp(junk, leg, peer), junk)
        plain_leg, plain_peer = _legs(None, 0x1111, None, 0x7777)
        sr = struct.pack("!BBHI", 0x80, 201, 1, 0x1111)
        self.assertIs(map_rtcp(sr, plain_leg, plain_peer), sr)
