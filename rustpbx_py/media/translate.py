# -*- test-case-name: rustpbx_py.test.test_media_translate -*-
"""
The relay's C{translate} hook for one direction of a stream whose legs
negotiated differently: packets from one leg rewritten into what the
other leg agreed to receive.

Three cases, cheapest first:

  - same codec, different payload type numbers (a dynamic Opus PT, a
    telephone-event PT 101 on one side and 96 on the other): the PT byte
    is rewritten, nothing else;
  - different codecs (C{codec_strategy = "quality"}): the audio payload
    goes through a L{Transcoder} (codec helper's PyAV code, 20 ms frames)
    and leaves in a stream of the PBX's own (SSRC, sequence numbers, and
    timestamps mapped onto the other leg's clock), and RFC 4733 events go
    through a L{DtmfTranslator} sharing that timestamp map, so digits stay
    in place in the audio;
  - anything else the leg sends (comfort noise, a codec not negotiated)
    is not relayed.
"""

from __future__ import annotations

import os
import struct
from typing import Optional

from rustpbx_py.media.codecs import CodecEntry
from rustpbx_py.media.dtmf import DtmfTranslator, TimestampMap
from rustpbx_py.media.rtp import build_packet, payload_offset

_SEQ = struct.Struct("!H")
_SSRC = struct.Struct("!I")


class Translation:
    """
    The C{translate} hook from C{src} (what the sending leg uses) to
    C{dst} (what the receiving leg uses); C{src_dtmf}/C{dst_dtmf} are the
    legs' telephone-event entries (None: that leg has none, digits are
    dropped).

    @ivar transcoder: the L{Transcoder}, or None when only payload types
        differ.
    @ivar dropped: packets not relayed (unknown payload type, undecodable).
    """

    def __init__(self, src: CodecEntry, dst: CodecEntry, src_dtmf: Optional[CodecEntry] = None,
                 dst_dtmf: Optional[CodecEntry] = None) -> None:
        self.src_pt = src.pt
        self.dst_pt = dst.pt
        self.dropped = 0
        self.transcoder = None
        self.timestamps: Optional[TimestampMap] = None
        if src.codec.name != dst.codec.name:
            from rustpbx_py.media.transcode import Transcoder, samples_per_frame
            self.transcoder = Transcoder(src.codec, dst.codec, src.fmtp, dst.fmtp)
            self.step = samples_per_frame(dst.codec)
            self.timestamps = TimestampMap(src.codec.clock_rate, dst.codec.clock_rate)
            random = os.urandom(6)
            self.ssrc = int.from_bytes(random[:4], "big")
            self.seq = int.from_bytes(random[4:], "big")
        self.dtmf: Optional[DtmfTranslator] = None
        if src_dtmf is not None and dst_dtmf is not None:
            same_clock = src_dtmf.codec.clock_rate == dst_dtmf.codec.clock_rate
            if not (same_clock and src_dtmf.pt == dst_dtmf.pt and self.transcoder is None):
                self.dtmf = DtmfTranslator(src_dtmf.pt, dst_dtmf.pt, src_dtmf.codec.clock_rate,
                                           dst_dtmf.codec.clock_rate, timestamps=self.timestamps)
        self.pass_dtmf_pt = src_dtmf.pt if (src_dtmf is not None and dst_dtmf is not None
                                            and self.dtmf is None) else None

    @staticmethod
    def needed(src: CodecEntry, dst: CodecEntry, src_dtmf: Optional[CodecEntry],
               dst_dtmf: Optional[CodecEntry]) -> bool:
        """Whether packets from src to dst need any rewriting (else the
        relay forwards them untouched, its fast path)."""
        if src.codec.name != dst.codec.name or src.pt != dst.pt:
            return True
        if src_dtmf is None or dst_dtmf is None:
            return False
        return src_dtmf.pt != dst_dtmf.pt or src_dtmf.codec.clock_rate != dst_dtmf.codec.clock_rate

    def __call__(self, packet: bytes) -> list[bytes]:
        pt = packet[1] & 0x7F
        if pt == self.src_pt:
            if self.transcoder is None:
                return [packet[:1] + bytes([(packet[1] & 0x80) | self.dst_pt]) + packet[2:]]
            return self._transcode(packet)
        if self.dtmf is not None and pt == self.dtmf.src_pt:
            out = self.dtmf.translate(packet)
            if out is None:
                self.dropped += 1
                return []
            if self.transcoder is not None:
                out = self._restamp(out)
            return [out]
        if pt == self.pass_dtmf_pt:
            return [self._restamp(packet) if self.transcoder is not None else packet]
        self.dropped += 1
        return []

    def _restamp(self, packet: bytes) -> bytes:
        """C{packet} in the PBX's outgoing stream: its sequence number and
        SSRC (the timestamp is already mapped)."""
        seq = self.seq
        self.seq = (seq + 1) & 0xFFFF
        return packet[:2] + _SEQ.pack(seq) + packet[4:8] + _SSRC.pack(self.ssrc) + packet[12:]

    def _transcode(self, packet: bytes) -> list[bytes]:
        try:
            start = payload_offset(packet)
        except ValueError:
            self.dropped += 1
            return []
        end = len(packet) - (packet[-1] if packet[0] & 0x20 else 0)
        frames = self.transcoder.convert(packet[start:end])
        if not frames:
            return []
        ts = self.timestamps(int.from_bytes(packet[4:8], "big"))
        marker = bool(packet[1] & 0x80)
        count = len(frames)
        out = []
        for k, frame in enumerate(frames):
            seq = self.seq
            self.seq = (seq + 1) & 0xFFFF
            out.append(build_packet(self.dst_pt, seq, ts - (count - 1 - k) * self.step, self.ssrc,
                                    frame, marker and k == 0))
        return out
