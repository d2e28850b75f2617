"""
Tests for L{rustpbx_py.media.dtmf}: RFC 4733 event payloads parsed and
written, a digit relayed between legs with different payload types and
clocks (8000 Hz G.711 leg, 48000 Hz Opus leg), and malformed packets
dropped and counted.
"""

from __future__ import annotations

import struct

from twisted.trial.unittest import SynchronousTestCase

from rustpbx_py.media.dtmf import (
    MAX_DURATION,
    DtmfTranslator,
    TelephoneEvent,
    TimestampMap,
    parse_events,
    translate_event,
    write_events,
)


def event_packet(pt: int, seq: int, ts: int, event: int, end: bool, duration: int,
                 marker: bool = False, volume: int = 10, csrc: int = 0, extension: bytes = b"",
                 padding: int = 0) -> bytes:
    """An RTP packet carrying one telephone-event block, as phones send them."""
    first = 0x80 | csrc | (0x10 if extension else 0) | (0x20 if padding else 0)
    header = struct.pack("!BBHII", first, (0x80 if marker else 0) | pt, seq, ts, 0xDEADBEEF)
    header += b"\x00\x00\x00\x01" * csrc
    if extension:
        header += struct.pack("!HH", 0xBEDE, len(extension) // 4) + extension
    payload = struct.pack("!BBH", event, (0x80 if end else 0) | volume, duration)
    pad = (bytes(padding - 1) + bytes([padding])) if padding else b""
    return header + payload + pad


def digit(pt: int, ts: int, event: int, rate: int, seq: int = 100):
    """
    The packets a phone sends for one 100 ms key press (RFC 4733 section
    2.5.1): marker on the first, duration growing every 50 ms, then the
    end packet three times; all with the event's start timestamp.
    """
    step = rate // 20  # 50 ms
    packets = [event_packet(pt, seq, ts, event, False, step, marker=True),
               event_packet(pt, seq + 1, ts, event, False, 2 * step)]
    packets += [event_packet(pt, seq + 2 + i, ts, event, True, 2 * step) for i in range(3)]
    return packets


def fields(packet: bytes):
    """(marker, pt, seq, ts, [events]) of an event packet."""
    first, second, seq, ts = struct.unpack_from("!BBHI", packet)
    start = 12 + 4 * (first & 0x0F)
    if first & 0x10:
        start += 4 + 4 * struct.unpack_from("!H", packet, start + 2)[0]
    return bool(second & 0x80), second & 0x7F, seq, ts, parse_events(packet[start:])


class PayloadTests(SynchronousTestCase):
    """Event blocks in and out."""

    def test_parse(self) -> None:
        """A '#' end block at volume 10 lasting 800 ticks; two blocks packed in one payload (RFC 4733 2.5.1.5)."""
        self.assertEqual(parse_events(b"\x0b\x8a\x03\x20"), [TelephoneEvent(11, True, 10, 800)])
        self.assertEqual(parse_events(b"\x0b\x8a\x03\x20").pop().name, "#")
        two = parse_events(b"\x01\x0a\x00\xa0\x02\x0a\x00\x50")
        self.assertEqual([(e.name, e.duration) for e in two], [("1", 160), ("2", 80)])
        self.assertEqual(TelephoneEvent(16, False, 0, 0).name, "flash")
        self.assertEqual(TelephoneEvent(70, False, 0, 0).name, "70")

    def test_malformed(self) -> None:
        """Empty or not a multiple of 4 bytes: None."""
        for payload in (b"", b"\x01", b"\x01\x0a\x00", b"\x01\x0a\x00\xa0\x02"):
            self.assertIsNone(parse_events(payload))
            self.assertIsNone(translate_event(payload, 8000, 48000))
            self.assertIsNone(translate_event(payload, 8000, 8000))

    def test_write_round_trip(self) -> None:
        """write_events(parse_events(x)) == x with the reserved bit clear."""
        payload = b"\x05\x8a\x03\x20\x0c\x3f\xff\xff"
        self.assertEqual(write_events(parse_events(payload)), payload)
        self.assertEqual(write_events(parse_events(b"\x05\xca\x03\x20")), b"\x05\x8a\x03\x20")  # R bit dropped

    def test_scale_durations(self) -> None:
        """800 ticks at 8 kHz (100 ms) is 4800 at 48 kHz and back; each packed block is scaled."""
        self.assertEqual(translate_event(b"\x05\x0a\x03\x20", 8000, 48000), b"\x05\x0a\x12\xc0")
        self.assertEqual(translate_event(b"\x05\x0a\x12\xc0", 48000, 8000), b"\x05\x0a\x03\x20")
        two = translate_event(b"\x01\x0a\x00\xa0\x02\x8a\x00\x50", 8000, 48000)
        self.assertEqual([e.duration for e in parse_events(two)], [960, 480])
        self.assertEqual(translate_event(b"\x05\x0a\x03\x20", 8000, 8000), b"\x05\x0a\x03\x20")

    def test_long_event_capped(self) -> None:
        """A key held 2 s on an 8 kHz leg (16000 ticks) cannot say 96000 ticks at 48 kHz: capped at 0xFFFF."""
        out = translate_event(struct.pack("!BBH", 5, 10, 16000), 8000, 48000)
        self.assertEqual(parse_events(out)[0].duration, MAX_DURATION)


class TimestampMapTests(SynchronousTestCase):
    """The other leg's timeline."""

    def test_same_rate(self) -> None:
        """First timestamp lands on dst_start; distances kept."""
        m = TimestampMap(8000, 8000, dst_start=5000)
        self.assertEqual([m(1000), m(1160), m(1320), m(1000)], [5000, 5160, 5320, 5000])

    def test_scaled(self) -> None:
        """8 kHz -> 48 kHz multiplies distances by 6; 48 kHz -> 8 kHz divides."""
        up, down = TimestampMap(8000, 48000, dst_start=0), TimestampMap(48000, 8000, dst_start=100)
        self.assertEqual([up(7), up(167), up(7 + 800)], [0, 960, 4800])
        self.assertEqual([down(9), down(969), down(9 + 4800)], [100, 260, 900])

    def test_wrap_and_reorder(self) -> None:
        """Across the 32-bit wrap, and a packet older than the first one, map consistently."""
        m = TimestampMap(8000, 48000, dst_start=0xFFFFFF00)
        self.assertEqual(m(0xFFFFFFF0), 0xFFFFFF00)
        self.assertEqual(m(0x10), (0xFFFFFF00 + 0x20 * 6) & 0xFFFFFFFF)
        self.assertEqual(m(0xFFFFFFE0), 0xFFFFFF00 - 0x10 * 6)

    def test_long_call(self) -> None:
        """Thirteen hours at 48 kHz (past 2^31 ticks) in 20 ms steps of a coarse walk: still exact, never backwards."""
        m = TimestampMap(48000, 8000, dst_start=0)
        src = 123
        for hour in range(13):
            src_hour = 123 + hour * 3600 * 48000
            for second in range(0, 3600, 600):
                src = src_hour + second * 48000
                self.assertEqual(m(src & 0xFFFFFFFF), ((src - 123) // 6) & 0xFFFFFFFF)


class TranslatorTests(SynchronousTestCase):
    """Whole packets from one leg to the other."""

    def test_pt_rewrite_same_clock(self) -> None:
        """101 -> 96 at 8 kHz: only the payload type changes (marker, seq, ts, SSRC, payload kept)."""
        t = DtmfTranslator(101, 96)
        for packet in digit(101, 40000, 5, 8000):
            out = t.translate(packet)
            self.assertEqual(out[0], packet[0])
            self.assertEqual(out[1] & 0x7F, 96)
            self.assertEqual(out[1] & 0x80, packet[1] & 0x80)
            self.assertEqual(out[2:], packet[2:])
        self.assertEqual((t.relayed, t.dropped), (5, 0))

    def test_g711_leg_to_opus_leg(self) -> None:
        """
        Key 9 from an 8 kHz leg (PT 101) to a 48 kHz leg (PT 110), sharing
        the direction's TimestampMap with the audio: the audio frame at the
        same instant and the event get the same 48 kHz timestamp, every
        packet of the event keeps one timestamp, durations are x6.
        """
        ts_map = TimestampMap(8000, 48000, dst_start=1_000_000)
        t = DtmfTranslator(101, 110, 8000, 48000, timestamps=ts_map)
        audio_ts = ts_map(16000)  # the audio the relay transcoded before the digit
        outs = [fields(t.translate(p)) for p in digit(101, 16000 + 1600, 9, 8000)]
        self.assertEqual(audio_ts, 1_000_000)
        self.assertEqual({o[3] for o in outs}, {1_000_000 + 1600 * 6})
        self.assertEqual({o[1] for o in outs}, {110})
        self.assertEqual([o[4][0].duration for o in outs], [2400, 4800, 4800, 4800, 4800])
        self.assertEqual([o[4][0].end for o in outs], [False, False, True, True, True])
        self.assertEqual([o[0] for o in outs], [True, False, False, False, False])
        self.assertEqual({o[4][0].name for o in outs}, {"9"})

    def test_opus_leg_to_g711_leg(self) -> None:
        """The other way, 48 kHz PT 96 -> 8 kHz PT 101: durations / 6; a map of its own when none is given."""
        t = DtmfTranslator(96, 101, 48000, 8000)
        outs = [fields(t.translate(p)) for p in digit(96, 480000, 11, 48000)]
        self.assertEqual([o[4][0].duration for o in outs], [400, 800, 800, 800, 800])
        self.assertEqual(len({o[3] for o in outs}), 1)
        self.assertEqual({o[1] for o in outs}, {101})

    def test_csrc_extension_padding(self) -> None:
        """CSRCs and a header extension are kept; padding is removed (the payload is rewritten)."""
        t = DtmfTranslator(101, 96, 8000, 48000, timestamps=TimestampMap(8000, 48000, dst_start=0))
        packet = event_packet(101, 7, 500, 3, False, 160, csrc=2, extension=b"\x10\xaa\x00\x00", padding=4)
        out = t.translate(packet)
        marker, pt, seq, ts, events = fields(out)
        self.assertEqual((pt, seq, ts, events), (96, 7, 0, [TelephoneEvent(3, False, 10, 960)]))
        self.assertEqual(out[0], 0x80 | 0x10 | 2)  # no padding bit any more
        self.assertEqual(out[12:28], packet[12:28])  # CSRCs, extension

    def test_matches(self) -> None:
        """Only this direction's source payload type is taken."""
        t = DtmfTranslator(101, 96)
        self.assertTrue(t.matches(event_packet(101, 1, 1, 1, False, 1, marker=True)))
        self.assertFalse(t.matches(event_packet(0, 1, 1, 1, False, 1)))
        self.assertFalse(t.matches(b"\x80\x65"))

    def test_malformed_dropped(self) -> None:
        """Short, wrong version, bad block size, padding past the payload, truncated extension: None and counted."""
        t = DtmfTranslator(101, 96, 8000, 48000)
        good = event_packet(101, 1, 1, 1, False, 160)
        bad = [b"", good[:11], b"\x40" + good[1:], good + b"\x00",
               good[:12], event_packet(101, 1, 1, 1, False, 160, padding=8)[:-4] + b"\x00\x00\x00\x20",
               event_packet(101, 1, 1, 1, False, 1, extension=b"\x10\xaa\x00\x00")[:14],
               struct.pack("!BBHII", 0x90, 101, 1, 1, 1) + b"\xbe\xde\xff\xff" + b"\x00" * 4]
        for packet in bad:
            self.assertIsNone(t.translate(packet), packet)
        self.assertEqual((t.dropped, t.relayed), (len(bad), 0))
        self.assertIsNotNone(t.translate(good))

    def test_bad_payload_types(self) -> None:
        """Payload types outside 0-127 are a programming error, refused at construction."""
        self.assertRaises(ValueError, DtmfTranslator, 128, 96)
        self.assertRaises(ValueError, DtmfTranslator, 101, -1)
