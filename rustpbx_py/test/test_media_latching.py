"""L{rustpbx_py.media.latching}: which source a leg latches to, and when."""

from twisted.trial.unittest import SynchronousTestCase

from rustpbx_py.media.latching import Latch, RtcpLatch
from rustpbx_py.media.rtp import build_packet

SDP = ("192.168.1.20", 4000)      # what the phone behind NAT writes in its SDP
NAT = ("203.0.113.7", 61000)      # where its packets come from
OTHER = ("198.51.100.9", 5000)


def rtp(seq: int, marker: bool = False) -> bytes:
    return build_packet(0, seq, seq * 160, 42, b"\0" * 160, marker)


class LatchTests(SynchronousTestCase):
    def latch(self, probation: int = 6, enabled: bool = True) -> Latch:
        latch = Latch(enabled, probation)
        latch.reopen(SDP)
        return latch

    def test_sdp_address_until_latched(self) -> None:
        """Before any packet the leg is sent to at its SDP address."""
        latch = self.latch()
        self.assertEqual((latch.target, latch.latched, latch.remote), (SDP, None, SDP))

    def test_marker_commits(self) -> None:
        """A packet with the marker bit latches at once: the NAT address becomes the target."""
        latch = self.latch()
        self.assertTrue(latch.admit(rtp(10, marker=True), NAT))
        self.assertEqual((latch.latched, latch.target, latch.remote), (NAT, NAT, NAT))

    def test_consecutive_sequence_commits(self) -> None:
        """Two packets with consecutive sequence numbers from one source latch to it."""
        latch = self.latch()
        self.assertTrue(latch.admit(rtp(10), NAT))
        self.assertIsNone(latch.latched)
        self.assertEqual(latch.target, SDP)
        self.assertTrue(latch.admit(rtp(11), NAT))
        self.assertEqual(latch.latched, NAT)

    def test_consecutive_across_wrap(self) -> None:
        """65535 then 0 are consecutive."""
        latch = self.latch()
        latch.admit(rtp(65535), NAT)
        latch.admit(rtp(0), NAT)
        self.assertEqual(latch.latched, NAT)

    def test_interleaved_sources_not_consecutive(self) -> None:
        """Consecutive numbers from two different sources do not latch either of them."""
        latch = self.latch()
        latch.admit(rtp(10), NAT)
        latch.admit(rtp(11), OTHER)
        self.assertIsNone(latch.latched)

    def test_most_frequent_at_end_of_probation(self) -> None:
        """Without marker or consecutive numbers, the source seen most when the probation's
        packets are used up wins; the other's packet is refused from then on."""
        latch = self.latch(probation=5)
        self.assertTrue(latch.admit(rtp(1), OTHER))
        self.assertTrue(latch.admit(rtp(3), NAT))
        self.assertTrue(latch.admit(rtp(5), NAT))
        self.assertTrue(latch.admit(rtp(7), NAT))
        self.assertFalse(latch.admit(rtp(9), OTHER))    # fifth packet: NAT (3) beats OTHER (2)
        self.assertEqual(latch.latched, NAT)

    def test_tie_goes_to_earliest(self) -> None:
        """Equal counts at the end of probation: the source seen first wins."""
        latch = self.latch(probation=2)
        latch.admit(rtp(1), OTHER)
        latch.admit(rtp(9), NAT)
        self.assertEqual(latch.latched, OTHER)

    def test_probation_of_one(self) -> None:
        """latching_probation_max_packets = 1: the first packet's source is latched."""
        latch = self.latch(probation=1)
        self.assertTrue(latch.admit(rtp(7), NAT))
        self.assertEqual(latch.latched, NAT)

    def test_others_dropped_after_latch(self) -> None:
        """After the latch, another source's packets are refused and counted."""
        latch = self.latch()
        latch.admit(rtp(1, marker=True), NAT)
        self.assertFalse(latch.admit(rtp(2), OTHER))
        self.assertFalse(latch.admit(rtp(3), OTHER))
        self.assertEqual((latch.dropped, latch.target), (2, NAT))

    def test_non_rtp_during_probation(self) -> None:
        """A STUN keep-alive or garbage neither counts as a candidate nor is relayed."""
        latch = self.latch(probation=1)
        self.assertFalse(latch.admit(b"\x00\x01\x00\x00" + b"\0" * 16, OTHER))
        self.assertFalse(latch.admit(b"\x80", OTHER))
        self.assertIsNone(latch.latched)
        self.assertEqual(latch.dropped, 2)

    def test_reopen_same_address_keeps_target(self) -> None:
        """A re-INVITE with the same SDP address re-opens probation but keeps sending to the
        NAT address meanwhile; a packet from a new source may then latch."""
        latch = self.latch()
        latch.admit(rtp(1, marker=True), NAT)
        latch.reopen(SDP)
        self.assertEqual((latch.latched, latch.target), (None, NAT))
        latch.admit(rtp(50, marker=True), OTHER)
        self.assertEqual(latch.target, OTHER)

    def test_reopen_new_address(self) -> None:
        """A re-INVITE naming a new address sends there until a new latch."""
        latch = self.latch()
        latch.admit(rtp(1, marker=True), NAT)
        latch.reopen(OTHER)
        self.assertEqual((latch.latched, latch.target), (None, OTHER))

    def test_disabled(self) -> None:
        """Without latching every source is relayed and the SDP address stays the target."""
        latch = self.latch(enabled=False)
        for i in range(10):
            self.assertTrue(latch.admit(rtp(i, marker=True), NAT))
            self.assertTrue(latch.admit(rtp(i), OTHER))
        self.assertEqual((latch.latched, latch.target, latch.dropped), (None, SDP, 0))


class RtcpLatchTests(SynchronousTestCase):
    RR = bytes([0x80, 201, 0, 1]) + b"\0\0\0\1"

    def test_latch_to_rtp_host(self) -> None:
        """RTCP latches to the first RTCP source on the RTP's latched host; others are dropped."""
        latch = Latch(True, 6)
        latch.reopen(SDP)
        rtcp = RtcpLatch(latch)
        rtcp.reopen((SDP[0], SDP[1] + 1))
        latch.admit(rtp(1, marker=True), NAT)
        self.assertFalse(rtcp.admit(self.RR, OTHER))
        self.assertTrue(rtcp.admit(self.RR, (NAT[0], 61001)))
        self.assertEqual(rtcp.target, (NAT[0], 61001))
        self.assertFalse(rtcp.admit(self.RR, (NAT[0], 61003)))
        self.assertEqual(rtcp.dropped, 2)

    def test_disabled(self) -> None:
        """Without latching RTCP goes to the SDP's RTCP address, from anyone."""
        latch = Latch(False, 6)
        rtcp = RtcpLatch(latch)
        rtcp.reopen(("192.168.1.20", 4001))
        self.assertTrue(rtcp.admit(self.RR, OTHER))
        self.assertEqual(rtcp.target, ("192.168.1.20", 4001))
