"""L{rustpbx_py.media.rtp}: RTP/RTCP headers and RFC 3550 receive statistics."""

import struct

from twisted.trial.unittest import SynchronousTestCase

from rustpbx_py.media.rtp import (
    ReceiveStats, SendStats, build_packet, is_rtcp, is_rtp, parse_header, payload_of,
    report_blocks,
)


def packet(seq: int, ts: int = 0, ssrc: int = 0x1234, pt: int = 0, marker: bool = False,
           payload: bytes = b"\xff" * 160) -> bytes:
    return build_packet(pt, seq, ts, ssrc, payload, marker)


def receiver_report(ssrc: int, blocks: list[tuple[int, int, int, int, int]]) -> bytes:
    """An RTCP RR from C{ssrc} with report blocks (ssrc, fraction, cumulative, highest, jitter)."""
    body = b"".join(struct.pack("!IIIIII", s, (f << 24) | (c & 0xFFFFFF), h, j, 0, 0)
                    for s, f, c, h, j in blocks)
    return struct.pack("!BBHI", 0x80 | len(blocks), 201, (8 + len(body)) // 4 - 1, ssrc) + body


class HeaderTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        """build_packet writes the fields parse_header reads back."""
        data = build_packet(8, 65535, 0xFFFFFFFF, 0xCAFEBABE, b"abc", marker=True)
        header = parse_header(data)
        self.assertEqual((header.version, header.marker, header.payload_type, header.sequence,
                          header.timestamp, header.ssrc), (2, True, 8, 65535, 0xFFFFFFFF, 0xCAFEBABE))
        self.assertEqual(payload_of(data), b"abc")

    def test_csrc_extension_padding(self) -> None:
        """The payload starts after the CSRC list and the extension; padding is removed."""
        header = bytes([0x80 | 0x20 | 0x10 | 1, 0, 0, 1]) + b"\0" * 8
        csrc = b"\0\0\0\1"
        extension = b"\xbe\xde\x00\x01" + b"\1\2\3\4"
        data = header + csrc + extension + b"PAYLOAD" + b"\0\0\3"
        self.assertEqual(payload_of(data), b"PAYLOAD")

    def test_truncated(self) -> None:
        """Short packets and headers longer than the packet are refused."""
        self.assertRaises(ValueError, parse_header, b"\x80\x00\x00")
        self.assertRaises(ValueError, payload_of, bytes([0x8F]) + b"\0" * 20)

    def test_rtp_or_rtcp(self) -> None:
        """RTCP (types 192-223 in the second byte) is told apart from RTP (RFC 5761)."""
        rr = receiver_report(1, [])
        self.assertTrue(is_rtcp(rr))
        self.assertFalse(is_rtp(rr))
        self.assertTrue(is_rtp(packet(1)))
        self.assertFalse(is_rtcp(packet(1)))
        self.assertFalse(is_rtp(b"\x00" * 20))


class ReportBlockTests(SynchronousTestCase):
    def test_receiver_report(self) -> None:
        """Report blocks of an RR are read; the cumulative loss is signed 24 bits."""
        rr = receiver_report(7, [(1, 25, 10, 70000, 80), (2, 0, -1, 5, 0)])
        blocks = list(report_blocks(rr))
        self.assertEqual([(b.ssrc, b.fraction_lost, b.cumulative_lost, b.highest_sequence, b.jitter)
                          for b in blocks], [(1, 25, 10, 70000, 80), (2, 0, -1, 5, 0)])

    def test_compound_with_sender_report(self) -> None:
        """In a compound SR + SDES packet, the SR's blocks are found and SDES skipped."""
        block = struct.pack("!IIIIII", 9, 3, 100, 16, 0, 0)
        sr = struct.pack("!BBHI", 0x81, 200, 12, 5) + b"\0" * 20 + block
        sdes = struct.pack("!BBHI", 0x81, 202, 2, 5) + b"\1\0\0\0"
        blocks = list(report_blocks(sr + sdes))
        self.assertEqual([(b.ssrc, b.cumulative_lost, b.jitter) for b in blocks], [(9, 3, 16)])

    def test_truncated_is_quiet(self) -> None:
        """A length field past the end stops the reading without an error."""
        rr = receiver_report(7, [(1, 0, 4, 1, 1)])
        self.assertEqual(list(report_blocks(rr[:-4])), [])
        self.assertEqual(list(report_blocks(b"\x00" * 12)), [])


class ReceiveStatsTests(SynchronousTestCase):
    def feed(self, stats: ReceiveStats, seqs, ssrc: int = 1, start: float = 0.0) -> None:
        for i, seq in enumerate(seqs):
            stats.update(packet(seq & 0xFFFF, ts=i * 160, ssrc=ssrc), start + i * 0.02)

    def test_no_loss(self) -> None:
        """An orderly stream: packets and bytes counted, nothing lost, no jitter."""
        stats = ReceiveStats()
        self.feed(stats, range(100, 150))
        self.assertEqual(stats.figures(), {"packets": 50, "bytes": 50 * 172, "lost": 0,
                                           "jitter_ms": 0.0})

    def test_loss_across_wrap(self) -> None:
        """Lost = expected - received, the sequence numbers extended across 65535 -> 0."""
        stats = ReceiveStats()
        seqs = [s for s in range(65500, 65536 + 40) if s not in (65530, 65535, 65537)]
        self.feed(stats, seqs)
        self.assertEqual(stats.expected, 76)
        self.assertEqual(stats.lost, 3)

    def test_reorder_and_duplicate(self) -> None:
        """A late packet is not a loss; a duplicate does not hide another loss forever but
        the count never goes negative."""
        stats = ReceiveStats()
        self.feed(stats, [1, 2, 4, 3, 5])
        self.assertEqual(stats.lost, 0)
        self.feed(stats, [5, 5, 5], start=1.0)
        self.assertEqual(stats.lost, 0)

    def test_big_jump_needs_confirmation(self) -> None:
        """A sequence jump (a restarted sender) is believed on the second packet that follows it."""
        stats = ReceiveStats()
        self.feed(stats, [1, 2, 3])
        stats.update(packet(30000, ssrc=1), 1.0)
        self.assertEqual(stats.max_seq, 3)
        stats.update(packet(30001, ssrc=1), 1.02)
        self.assertEqual((stats.base_seq, stats.max_seq, stats.lost), (30001, 30001, 0))
        self.assertEqual(stats.packets, 5)

    def test_new_ssrc_keeps_earlier_loss(self) -> None:
        """A new SSRC restarts the tracking; the loss of the first source is kept."""
        stats = ReceiveStats()
        self.feed(stats, [1, 2, 5])
        self.feed(stats, [900, 901], ssrc=2, start=1.0)
        self.assertEqual(stats.lost, 2)

    def test_jitter(self) -> None:
        """Packets 20 ms apart in timestamp but arriving 10/30 ms apart give the RFC 3550
        estimate (a running mean of |D|/16), in milliseconds."""
        stats = ReceiveStats()
        arrival = 0.0
        for i in range(400):
            arrival += 0.010 if i % 2 else 0.030
            stats.update(packet(i, ts=i * 160), arrival)
        self.assertAlmostEqual(stats.jitter_ms, 10.0, delta=0.05)

    def test_jitter_skips_events(self) -> None:
        """telephone-event (dynamic PT, not an audio rate) repeats its timestamp: no jitter."""
        stats = ReceiveStats()
        for i in range(20):
            stats.update(packet(i, ts=1000, pt=101), i * 0.05)
        self.assertEqual(stats.jitter_ms, 0.0)
        self.assertEqual(stats.lost, 0)

    def test_runt(self) -> None:
        """Datagrams shorter than an RTP header are counted, not parsed."""
        stats = ReceiveStats()
        stats.update(b"\x80\x00", 0.0)
        self.assertEqual((stats.packets, stats.bytes, stats.lost), (1, 2, 0))


class SendStatsTests(SynchronousTestCase):
    def test_report(self) -> None:
        """A reception report sets the out direction's loss and jitter (ms at 8 kHz)."""
        stats = SendStats()
        rr = receiver_report(7, [(1, 25, 12, 70000, 80)])
        for block in report_blocks(rr):
            stats.report(block)
        self.assertEqual(stats.figures(), {"packets": 0, "bytes": 0, "lost": 12, "jitter_ms": 10.0})
