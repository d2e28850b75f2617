"""L{rustpbx_py.media.translate}: packets rewritten between legs that negotiated differently."""

import struct

from twisted.trial.unittest import SynchronousTestCase

from rustpbx_py.media.codecs import PCMA, PCMU, TELEPHONE_EVENT, CodecEntry
from rustpbx_py.media.rtp import build_packet, parse_header, payload_of
from rustpbx_py.media.transcode import ULAW_TO_ALAW
from rustpbx_py.media.translate import Translation

ULAW = CodecEntry(0, PCMU)
ALAW = CodecEntry(8, PCMA)
TE101 = CodecEntry(101, TELEPHONE_EVENT, "0-16")
TE96 = CodecEntry(96, TELEPHONE_EVENT, "0-16")


def event(digit: int, duration: int, end: bool = False) -> bytes:
    return struct.pack("!BBH", digit, (0x80 if end else 0) | 10, duration)


class TranslationTests(SynchronousTestCase):
    def test_not_needed(self) -> None:
        """Same codec, same payload types: no hook (the relay's fast path)."""
        self.assertFalse(Translation.needed(ULAW, ULAW, TE101, TE101))
        self.assertFalse(Translation.needed(ULAW, ULAW, TE101, None))
        self.assertTrue(Translation.needed(ULAW, ULAW, TE101, TE96))
        self.assertTrue(Translation.needed(ULAW, CodecEntry(96, PCMU), None, None))
        self.assertTrue(Translation.needed(ULAW, ALAW, None, None))

    def test_payload_type_only(self) -> None:
        """Same codec on other payload types: only the PT byte changes (marker kept)."""
        translate = Translation(ULAW, ULAW, TE101, TE96)
        audio = build_packet(0, 5, 800, 77, b"\xff" * 160, marker=True)
        self.assertEqual(translate(audio), [audio])
        digit = build_packet(101, 6, 800, 77, event(5, 160))
        [out] = translate(digit)
        header = parse_header(out)
        self.assertEqual((header.payload_type, header.sequence, header.timestamp, header.ssrc),
                         (96, 6, 800, 77))
        self.assertEqual(payload_of(out), event(5, 160))

    def test_transcode_ulaw_to_alaw(self) -> None:
        """PCMU -> PCMA: the payload is converted, the packet leaves in the PBX's own stream
        (its SSRC, consecutive sequence numbers, timestamps 160 apart), marker kept."""
        translate = Translation(ULAW, ALAW, TE101, TE101)
        payload = bytes(range(160))
        outs = [translate(build_packet(0, 100 + i, 1000 + 160 * i, 77, payload, marker=i == 0))[0]
                for i in range(3)]
        headers = [parse_header(p) for p in outs]
        self.assertEqual({h.payload_type for h in headers}, {8})
        self.assertEqual(len({h.ssrc for h in headers}), 1)
        self.assertNotEqual(headers[0].ssrc, 77)
        self.assertEqual([(h.sequence - headers[0].sequence) & 0xFFFF for h in headers], [0, 1, 2])
        self.assertEqual([(h.timestamp - headers[0].timestamp) & 0xFFFFFFFF for h in headers],
                         [0, 160, 320])
        self.assertEqual([h.marker for h in headers], [True, False, False])
        self.assertEqual(payload_of(outs[0]), payload.translate(ULAW_TO_ALAW))

    def test_dtmf_follows_transcoded_stream(self) -> None:
        """While transcoding, digits get the other leg's PT and the same stream's SSRC,
        sequence and timeline as the audio around them."""
        translate = Translation(ULAW, ALAW, TE101, TE96)
        [audio] = translate(build_packet(0, 1, 8000, 77, b"\xff" * 160))
        [digit] = translate(build_packet(101, 2, 8160, 77, event(1, 320)))
        a, d = parse_header(audio), parse_header(digit)
        self.assertEqual((d.payload_type, d.ssrc, (d.sequence - a.sequence) & 0xFFFF,
                          (d.timestamp - a.timestamp) & 0xFFFFFFFF), (96, a.ssrc, 1, 160))

    def test_other_payloads_dropped(self) -> None:
        """Comfort noise or an unnegotiated codec is not relayed, and counted."""
        translate = Translation(ULAW, ALAW)
        self.assertEqual(translate(build_packet(13, 1, 0, 1, b"\x40")), [])
        self.assertEqual(translate(build_packet(101, 2, 0, 1, event(1, 160))), [])
        self.assertEqual(translate.dropped, 2)
