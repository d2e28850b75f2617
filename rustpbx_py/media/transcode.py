# -*- test-case-name: rustpbx_py.test.test_transcode -*-
"""
Transcoding between the voice codecs the relay can bridge: Opus, G.722,
PCMU and PCMA, on 20 ms RTP frames.

The relay calls L{Transcoder.convert} with the payload of each RTP packet
one leg sends and gets back the payloads (zero or more, each one 20 ms
frame) to send to the other leg.  Decoding, resampling and encoding use
PyAV (FFmpeg's libavcodec and libswresample, with libopus): a maintained
codec library instead of hand-written DSP.  Decoder, resampler and encoder
keep their state from one frame to the next (Opus and G.722 are stateful,
and resampling needs the previous samples), and decoded audio waits in a
sample buffer until a whole 20 ms output frame is there, so any input
framing (10, 30, 60 ms packets, a lost packet) gives regular 20 ms output.

PCMU <-> PCMA has a shortcut: one 256-byte lookup table per direction
(C{bytes.translate}), which is what G.711's own conversion tables are and
costs well under a microsecond per frame.

G.729 is only ever relayed untouched: transcoding it needs a licence-free
encoder the platform does not ship in every build, and the codec policy
never picks it where a conversion would be needed, so L{Transcoder}
refuses it.

Payloads are untrusted input: a payload the decoder rejects (garbage, an
empty packet) is dropped and counted in L{Transcoder.dropped}, never an
exception out of L{Transcoder.convert}.
"""

from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional

import av

__all__ = ["TranscodeError", "Transcoder", "samples_per_frame", "can_transcode"]

# FFmpeg logs every payload it cannot decode: on the media path that is a
# log line per hostile packet.  The counters (Transcoder.dropped) say it
# instead.  PyAV >= 13 leaves FFmpeg's logging off already; 10 (Debian
# bookworm) forwards it at level VERBOSE.
if av.logging.get_level() is not None:
    av.logging.set_level(av.logging.PANIC)

#: One RTP frame, in milliseconds: the unit every output payload covers.
FRAME_MS = 20


class TranscodeError(ValueError):
    """A codec pair the transcoder cannot convert (G.729, unknown codec)."""


class _Format(NamedTuple):
    """How PyAV handles one RTP codec."""

    encoder: str  # libavcodec encoder name
    decoders: tuple  # libavcodec decoder names, the first available one is used
    audio_rate: int  # sample rate of the audio the codec carries
    clock_rate: int  # RTP timestamp clock (G.722: 8000 for 16 kHz audio, RFC 3551)


_FORMATS: Dict[str, _Format] = {
    "pcmu": _Format("pcm_mulaw", ("pcm_mulaw",), 8000, 8000),
    "pcma": _Format("pcm_alaw", ("pcm_alaw",), 8000, 8000),
    "g722": _Format("g722", ("g722",), 16000, 8000),
    # libopus's decoder gives s16 directly (FFmpeg's native one, fltp).
    "opus": _Format("libopus", ("libopus", "opus"), 48000, 48000),
}

#: Opus bit rate when the answer's fmtp does not cap it: wideband voice
#: that is transparent for speech.
OPUS_BIT_RATE = 32000


def _format(codec) -> _Format:
    name = getattr(codec, "name", str(codec)).lower()
    if name == "g729":
        raise TranscodeError(
            "G.729 is relayed untouched only: it cannot be transcoded "
            "(choose the same codec on both legs)")
    try:
        return _FORMATS[name]
    except KeyError:
        raise TranscodeError(
            f"cannot transcode codec {name!r}: supported are "
            f"{', '.join(sorted(_FORMATS))}") from None


def samples_per_frame(codec) -> int:
    """
    How far the RTP timestamp advances per 20 ms frame of C{codec}: 160
    for PCMU, PCMA and G.722 (whose RTP clock is 8000 Hz although it
    carries 16 kHz audio), 960 for Opus.
    """
    return _format(codec).clock_rate * FRAME_MS // 1000


def can_transcode(codec) -> bool:
    """Whether L{Transcoder} accepts C{codec} on this machine (Opus needs
    an FFmpeg built with libopus)."""
    try:
        fmt = _format(codec)
    except TranscodeError:
        return False
    available = av.codecs_available
    return fmt.encoder in available and any(d in available for d in fmt.decoders)


def _fmtp_params(fmtp: Optional[str]) -> Dict[str, str]:
    """C{key=value;key=value} (RFC 8866 fmtp parameters) as a dict."""
    params: Dict[str, str] = {}
    for part in (fmtp or "").split(";"):
        key, sep, value = part.strip().partition("=")
        if sep:
            params[key.strip().lower()] = value.strip()
    return params


def _g711_tables() -> tuple:
    """
    The PCMU -> PCMA and PCMA -> PCMU byte tables: each code decoded to
    its linear value (ITU-T G.711 expansion) and mapped to the code of the
    other law whose value is nearest (as FFmpeg's G.711 encoders round).
    """

    def ulaw_to_linear(u: int) -> int:
        u = ~u & 0xFF
        t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
        return (0x84 - t) if u & 0x80 else (t - 0x84)

    def alaw_to_linear(a: int) -> int:
        a ^= 0x55
        t = (a & 0x0F) << 4
        seg = (a & 0x70) >> 4
        if seg == 0:
            t += 8
        elif seg == 1:
            t += 0x108
        else:
            t = (t + 0x108) << (seg - 1)
        return t if a & 0x80 else -t

    def nearest(values: list, pcm: int) -> int:
        # ties (linear 0 between the two smallest codes) go to the same sign, 0 to +
        return min(range(256), key=lambda code: (abs(values[code] - pcm), (values[code] >= 0) != (pcm >= 0)))

    ulaw = [ulaw_to_linear(u) for u in range(256)]
    alaw = [alaw_to_linear(a) for a in range(256)]
    u2a = bytes(nearest(alaw, value) for value in ulaw)
    a2u = bytes(nearest(ulaw, value) for value in alaw)
    return u2a, a2u


ULAW_TO_ALAW, ALAW_TO_ULAW = _g711_tables()


class Transcoder:
    """
    Converts one direction of one call leg pair: payloads of C{src} in,
    payloads of C{dst} out, 20 ms each.  Create one per direction and keep
    it for the call (the codecs' state lives in it).

    @ivar dropped: payloads that could not be decoded (and were dropped).
    @ivar frames_in: payloads given to L{convert}.
    @ivar frames_out: payloads L{convert} returned.
    """

    def __init__(self, src, dst, src_fmtp: Optional[str] = None,
                 dst_fmtp: Optional[str] = None) -> None:
        self.src = src
        self.dst = dst
        self.dropped = 0
        self.frames_in = 0
        self.frames_out = 0
        src_fmt, dst_fmt = _format(src), _format(dst)
        for codec in (src, dst):
            if not can_transcode(codec):
                raise TranscodeError(
                    f"this FFmpeg build cannot transcode {getattr(codec, 'name', codec)!r}")
        self._table: Optional[bytes] = None
        self._identity = src_fmt == dst_fmt
        if (src_fmt.encoder, dst_fmt.encoder) == ("pcm_mulaw", "pcm_alaw"):
            self._table = ULAW_TO_ALAW
        elif (src_fmt.encoder, dst_fmt.encoder) == ("pcm_alaw", "pcm_mulaw"):
            self._table = ALAW_TO_ULAW
        if self._identity or self._table is not None:
            return
        self._decoder = self._open_decoder(src_fmt)
        self._encoder = self._open_encoder(dst_fmt, _fmtp_params(dst_fmtp))
        self._rate = dst_fmt.audio_rate
        self._frame_samples = dst_fmt.audio_rate * FRAME_MS // 1000
        self._frame_bytes = 2 * self._frame_samples
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=dst_fmt.audio_rate)
        self._pcm = bytearray()  # s16 mono samples at the encoder's rate, not yet encoded
        self._pts = 0

    @staticmethod
    def samples_per_frame(codec) -> int:
        """See L{samples_per_frame}: the RTP timestamp step of a 20 ms frame."""
        return samples_per_frame(codec)

    @staticmethod
    def _open_decoder(fmt: _Format):
        name = next(d for d in fmt.decoders if d in av.codecs_available)
        ctx = av.CodecContext.create(name, "r")
        ctx.sample_rate = fmt.audio_rate
        ctx.layout = "mono"  # a stereo Opus stream is downmixed by the decoder
        ctx.open()
        return ctx

    @staticmethod
    def _open_encoder(fmt: _Format, params: Dict[str, str]):
        ctx = av.CodecContext.create(fmt.encoder, "w")
        ctx.sample_rate = fmt.audio_rate
        ctx.format = "s16"
        ctx.layout = "mono"
        if fmt.encoder == "libopus":
            rate = OPUS_BIT_RATE
            cap = params.get("maxaveragebitrate", "")
            if cap.isdigit():
                rate = max(6000, min(rate, int(cap)))
            ctx.bit_rate = rate
            options = {"application": "voip", "frame_duration": str(FRAME_MS)}
            if params.get("useinbandfec") == "1":
                options["fec"] = "1"
                options["packet_loss"] = "5"
            ctx.options = options
        ctx.open()
        return ctx

    def convert(self, payload: bytes) -> List[bytes]:
        """
        One RTP payload of C{src} in; the C{dst} payloads it completes out
        (usually one; none while the resampler or a short input fills the
        first frame, or when C{payload} cannot be decoded; several for a
        60 ms Opus packet).
        """
        self.frames_in += 1
        if not payload:
            self.dropped += 1
            return []
        if type(payload) is not bytes:  # a memoryview or bytearray slice of a datagram
            payload = bytes(payload)
        if self._table is not None:
            self.frames_out += 1
            return [payload.translate(self._table)]
        if self._identity:
            self.frames_out += 1
            return [payload]
        try:
            frames = self._decoder.decode(av.Packet(payload))
            for frame in frames:
                frame.pts = None  # lost packets are gaps, not timing to compensate
                for out in self._resampler.resample(frame):
                    self._pcm += bytes(out.planes[0])[: 2 * out.samples]
            return self._encode()
        except Exception:  # PyAV raises several error types on hostile input
            self.dropped += 1
            return []

    def _encode(self) -> List[bytes]:
        payloads: List[bytes] = []
        size = self._frame_bytes
        while len(self._pcm) >= size:
            frame = av.AudioFrame(format="s16", layout="mono", samples=self._frame_samples)
            frame.sample_rate = self._rate
            frame.pts = self._pts
            self._pts += self._frame_samples
            frame.planes[0].update(bytes(self._pcm[:size]))
            del self._pcm[:size]
            for packet in self._encoder.encode(frame):
                payloads.append(bytes(packet))
        self.frames_out += len(payloads)
        return payloads
