"""
Tests for L{rustpbx_py.media.transcode}: a tone sent through a pair of
transcoders (there and back) comes out at the same frequency, output is
regular 20 ms frames whatever the input framing, and garbage payloads are
dropped and counted instead of raising.
"""

from __future__ import annotations

import os
import struct
from typing import List

import av
from twisted.trial.unittest import SynchronousTestCase

from rustpbx_py.media import transcode
from rustpbx_py.media.codecs import codec_by_name
from rustpbx_py.media.transcode import TranscodeError, Transcoder, samples_per_frame
from rustpbx_py.test.tones import strongest, tone_pcm

#: The frequencies a tone is told apart from.
CANDIDATES = [350, 440, 660, 880, 1200]

#: libavcodec names and audio rates for the tests' own encoding/decoding
#: (independent of the transcoder under test).
_AV = {"pcmu": ("pcm_mulaw", 8000), "pcma": ("pcm_alaw", 8000),
       "g722": ("g722", 16000), "opus": ("libopus", 48000)}


def encode_tone(name: str, hz: int, seconds: float, frame_ms: int = 20) -> List[bytes]:
    """C{seconds} of a C{hz} tone as C{name} RTP payloads of C{frame_ms}."""
    encoder, rate = _AV[name]
    ctx = av.CodecContext.create(encoder, "w")
    ctx.sample_rate, ctx.format, ctx.layout = rate, "s16", "mono"
    if name == "opus":
        ctx.bit_rate = 32000
        ctx.options = {"frame_duration": str(frame_ms)}
    ctx.open()
    pcm = tone_pcm(hz, seconds, rate)
    step = rate * frame_ms // 1000
    payloads = []
    for i in range(0, len(pcm) // 2 - step + 1, step):
        frame = av.AudioFrame(format="s16", layout="mono", samples=step)
        frame.sample_rate, frame.pts = rate, i
        frame.planes[0].update(pcm[2 * i:2 * (i + step)])
        payloads.extend(bytes(p) for p in ctx.encode(frame))
    return payloads


def decode(name: str, payloads: List[bytes]) -> List[int]:
    """The 16-bit samples of C{name} payloads (at the codec's audio rate)."""
    _, rate = _AV[name]
    ctx = av.CodecContext.create("opus" if name == "opus" else _AV[name][0], "r")
    ctx.sample_rate, ctx.layout = rate, "mono"
    ctx.open()
    resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
    samples: List[int] = []
    for payload in payloads:
        for frame in ctx.decode(av.Packet(payload)):
            frame.pts = None
            for out in resampler.resample(frame):
                data = bytes(out.planes[0])[: 2 * out.samples]
                samples.extend(struct.unpack(f"<{out.samples}h", data))
    return samples


class RoundTripTests(SynchronousTestCase):
    """A tone through src -> dst -> src is the same tone."""

    def round_trip(self, src: str, dst: str, hz: int = 440, seconds: float = 1.0) -> None:
        there = Transcoder(codec_by_name(src), codec_by_name(dst))
        back = Transcoder(codec_by_name(dst), codec_by_name(src))
        sent = encode_tone(src, hz, seconds)
        middle = [out for payload in sent for out in there.convert(payload)]
        final = [out for payload in middle for out in back.convert(payload)]
        # Every payload is one 20 ms frame of its codec, and little is held back.
        dst_size = {"pcmu": 160, "pcma": 160, "g722": 160}.get(dst)
        if dst_size:
            self.assertEqual({len(p) for p in middle}, {dst_size})
        self.assertGreaterEqual(len(middle), len(sent) - 2)
        self.assertGreaterEqual(len(final), len(sent) - 4)
        self.assertEqual((there.dropped, back.dropped), (0, 0))
        samples = decode(src, final)
        rate = _AV[src][1]
        tail = samples[-rate // 2:]  # the last 0.5 s, past codec start-up
        found, powers = strongest(tail, rate, CANDIDATES)
        self.assertEqual(found, hz, f"{src}->{dst}->{src}: {powers}")

    def test_pcmu_pcma(self) -> None:
        """PCMU -> PCMA -> PCMU keeps a 440 Hz tone."""
        self.round_trip("pcmu", "pcma", 440)

    def test_pcma_pcmu(self) -> None:
        """PCMA -> PCMU -> PCMA keeps an 880 Hz tone."""
        self.round_trip("pcma", "pcmu", 880)

    def test_g722_pcmu(self) -> None:
        """G.722 (16 kHz) -> PCMU -> G.722 keeps a 660 Hz tone (resampled both ways)."""
        self.round_trip("g722", "pcmu", 660)

    def test_pcmu_g722(self) -> None:
        """PCMU -> G.722 -> PCMU keeps a 440 Hz tone."""
        self.round_trip("pcmu", "g722", 440)

    def test_opus_pcmu(self) -> None:
        """Opus (48 kHz) -> PCMU -> Opus keeps an 880 Hz tone."""
        self.round_trip("opus", "pcmu", 880)

    def test_pcmu_opus(self) -> None:
        """PCMU -> Opus -> PCMU keeps a 1200 Hz tone."""
        self.round_trip("pcmu", "opus", 1200)

    def test_opus_g722(self) -> None:
        """Opus -> G.722 -> Opus keeps a 350 Hz tone."""
        self.round_trip("opus", "g722", 350)


class G711TableTests(SynchronousTestCase):
    """The PCMU <-> PCMA shortcut tables agree with FFmpeg's G.711."""

    def test_tables_match_ffmpeg(self) -> None:
        """
        Each of the 256 codes converted by table decodes (FFmpeg's G.711
        decoders) to the value nearest to the original code's: the code
        FFmpeg's encoder picks, or one exactly as near where the original
        value lies half-way between two codes (FFmpeg breaks those ties
        its own way).
        """
        for src, dst, table in (("pcmu", "pcma", transcode.ULAW_TO_ALAW),
                                ("pcma", "pcmu", transcode.ALAW_TO_ULAW)):
            linear = decode(src, [bytes(range(256))])
            dst_linear = decode(dst, [bytes(range(256))])
            enc = av.CodecContext.create(_AV[dst][0], "w")
            enc.sample_rate, enc.format, enc.layout = 8000, "s16", "mono"
            enc.open()
            frame = av.AudioFrame(format="s16", layout="mono", samples=256)
            frame.sample_rate, frame.pts = 8000, 0
            frame.planes[0].update(struct.pack("<256h", *linear))
            ffmpeg = b"".join(bytes(p) for p in enc.encode(frame))
            ties = 0
            for code in range(256):
                ours = abs(dst_linear[table[code]] - linear[code])
                theirs = abs(dst_linear[ffmpeg[code]] - linear[code])
                best = min(abs(v - linear[code]) for v in dst_linear)
                self.assertEqual(ours, best, f"{src}->{dst} code {code:#04x}")
                if table[code] != ffmpeg[code]:
                    self.assertEqual(ours, theirs, f"{src}->{dst} code {code:#04x}")
                    ties += 1
            self.assertLess(ties, 32, f"{src}->{dst}")

    def test_shortcut_is_a_translation(self) -> None:
        """PCMU -> PCMA keeps the frame size whatever it is (one payload out per payload in)."""
        t = Transcoder(codec_by_name("pcmu"), codec_by_name("pcma"))
        self.assertEqual(t.convert(b"\xff" * 240), [b"\xd5" * 240])  # µ-law +0 -> A-law +0
        self.assertEqual(t.convert(b"\x00\x80"), [bytes([transcode.ULAW_TO_ALAW[0], transcode.ULAW_TO_ALAW[0x80]])])


class FramingTests(SynchronousTestCase):
    """Input framing other than 20 ms still gives 20 ms output frames."""

    def test_30ms_pcmu_to_g722(self) -> None:
        """Ten 30 ms PCMU packets (300 ms) give fifteen 20 ms G.722 frames, give or take the resampler's delay."""
        t = Transcoder(codec_by_name("pcmu"), codec_by_name("g722"))
        out = [p for payload in encode_tone("pcmu", 440, 0.3, frame_ms=30) for p in t.convert(payload)]
        self.assertIn(len(out), (14, 15))
        self.assertEqual({len(p) for p in out}, {160})

    def test_60ms_opus_to_pcmu(self) -> None:
        """One 60 ms Opus packet gives (about) three 20 ms PCMU frames."""
        t = Transcoder(codec_by_name("opus"), codec_by_name("pcmu"))
        packets = encode_tone("opus", 440, 0.6, frame_ms=60)
        counts = [len(t.convert(p)) for p in packets]
        self.assertEqual(counts[2:], [3] * (len(counts) - 2))
        self.assertEqual(t.dropped, 0)

    def test_packet_loss_keeps_going(self) -> None:
        """Every other Opus packet lost: the remaining ones still convert (state kept, no error)."""
        t = Transcoder(codec_by_name("opus"), codec_by_name("pcma"))
        packets = encode_tone("opus", 440, 1.0)[::2]
        out = [p for payload in packets for p in t.convert(payload)]
        self.assertGreaterEqual(len(out), len(packets) - 1)
        self.assertEqual(t.dropped, 0)

    def test_opus_bit_rate_from_fmtp(self) -> None:
        """The answer's maxaveragebitrate caps the Opus encoder (smaller payloads)."""
        pcmu = encode_tone("pcmu", 440, 1.0)
        sizes = {}
        for fmtp in (None, "minptime=10;useinbandfec=1;maxaveragebitrate=12000"):
            t = Transcoder(codec_by_name("pcmu"), codec_by_name("opus"), dst_fmtp=fmtp)
            out = [p for payload in pcmu for p in t.convert(payload)]
            sizes[fmtp] = sum(map(len, out[-10:])) / 10
        self.assertLess(sizes["minptime=10;useinbandfec=1;maxaveragebitrate=12000"] * 1.5, sizes[None])


class GarbageTests(SynchronousTestCase):
    """Hostile or broken payloads are dropped and counted."""

    def test_garbage_opus(self) -> None:
        """
        Invalid Opus packets (RFC 6716 section 3.4: empty, code 3 without
        its frame count, zero frames, a code 2 length past the end, a frame
        over 1275 bytes): [] each, all counted; good frames convert after.
        """
        t = Transcoder(codec_by_name("opus"), codec_by_name("pcmu"))
        good = encode_tone("opus", 440, 0.2)
        bad = [b"", b"\xff", b"\x03\x00", b"\x02\xff\xff\xff", b"\x00" * 1300]
        for payload in bad:
            self.assertEqual(t.convert(payload), [])
        self.assertEqual(t.dropped, len(bad))
        out = [p for payload in good for p in t.convert(payload)]
        self.assertGreaterEqual(len(out), len(good) - 1)

    def test_random_payloads_never_raise(self) -> None:
        """A few hundred random payloads through every pair: never an exception, only lists of bytes."""
        names = ["pcmu", "pcma", "g722", "opus"]
        for src in names:
            for dst in names:
                t = Transcoder(codec_by_name(src), codec_by_name(dst))
                for size in (0, 1, 2, 3, 17, 160, 161, 1275, 4000):
                    out = t.convert(os.urandom(size))
                    self.assertIsInstance(out, list)
                    self.assertTrue(all(isinstance(p, bytes) for p in out))
                self.assertEqual(t.frames_in, 9)

    def test_buffer_types(self) -> None:
        """A memoryview or bytearray of the datagram converts like bytes (the relay may slice without copying)."""
        pcmu = encode_tone("pcmu", 440, 0.1)
        for pair in (("pcmu", "pcma"), ("pcmu", "g722"), ("pcmu", "pcmu")):
            plain, views, arrays = (Transcoder(*map(codec_by_name, pair)) for _ in range(3))
            expected = [p for payload in pcmu for p in plain.convert(payload)]
            self.assertTrue(expected)
            self.assertEqual([p for payload in pcmu for p in views.convert(memoryview(payload))], expected, pair)
            self.assertEqual([p for payload in pcmu for p in arrays.convert(bytearray(payload))], expected, pair)

    def test_empty_g711(self) -> None:
        """An empty PCMU payload is dropped too (no zero-length frame sent on)."""
        t = Transcoder(codec_by_name("pcmu"), codec_by_name("pcma"))
        self.assertEqual(t.convert(b""), [])
        self.assertEqual(t.dropped, 1)


class RefusalTests(SynchronousTestCase):
    """Pairs that cannot be transcoded are refused up front, clearly."""

    def test_g729_refused(self) -> None:
        """G.729 on either side: TranscodeError saying it is pass-through only."""
        for src, dst in (("g729", "pcmu"), ("pcma", "g729")):
            e = self.assertRaises(TranscodeError, Transcoder, codec_by_name(src), codec_by_name(dst))
            self.assertIn("G.729", str(e))
            self.assertIn("untouched", str(e))

    def test_unknown_refused(self) -> None:
        """telephone-event is not audio: refused, naming the supported codecs."""
        e = self.assertRaises(TranscodeError, Transcoder, codec_by_name("telephone-event"), codec_by_name("pcmu"))
        self.assertIn("telephone-event", str(e))
        self.assertIn("opus", str(e))

    def test_samples_per_frame(self) -> None:
        """RTP timestamp steps of 20 ms: G.722 counts at 8000 Hz (RFC 3551), Opus at 48000."""
        self.assertEqual([samples_per_frame(codec_by_name(n)) for n in ("pcmu", "pcma", "g722", "opus")],
                         [160, 160, 160, 960])
        self.assertEqual(Transcoder.samples_per_frame(codec_by_name("opus")), 960)
        self.assertRaises(TranscodeError, samples_per_frame, codec_by_name("g729"))
