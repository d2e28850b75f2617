# -*- test-case-name: rustpbx_py.test.test_media_rtp -*-
"""
RTP and RTCP headers (RFC 3550) and the receive statistics a relay keeps
per direction: packets, bytes, loss (expected less received, sequence
numbers extended across their 16-bit wrap) and interarrival jitter.

The relay calls L{ReceiveStats.update} once per packet, so it works on the
raw bytes with C{struct.unpack_from} and plain integers: no packet object
is built on the hot path.
"""

from __future__ import annotations

import struct
from typing import Iterator, NamedTuple, Optional

_HEADER = struct.Struct("!BBHII")
_FIELDS = struct.Struct("!BHII")     # from offset 1: M/PT, sequence, timestamp, SSRC
_RTCP_HEADER = struct.Struct("!BBH")
_REPORT_BLOCK = struct.Struct("!IIIII")

RTP_HEADER_SIZE = 12
MAX_DROPOUT = 3000
MAX_MISORDER = 100
SEQ_MOD = 1 << 16

# RTCP packet types (RFC 3550 section 12.1)
RTCP_SR = 200
RTCP_RR = 201
RTCP_SDES = 202
RTCP_BYE = 203


class RtpHeader(NamedTuple):
    """The fixed RTP header; built only off the hot path (tests, tools)."""
    version: int
    padding: bool
    extension: bool
    csrc_count: int
    marker: bool
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int


def is_rtp(data: bytes) -> bool:
    """
    Whether C{data} can be an RTP packet: version 2 and a full fixed
    header; RTCP (payload types 72-76 with the marker, RFC 5761 section
    4) is not RTP.
    """
    return len(data) >= RTP_HEADER_SIZE and data[0] >> 6 == 2 and not 192 <= data[1] <= 223


def is_rtcp(data: bytes) -> bool:
    """Whether C{data} can be an RTCP compound packet (version 2, SR..APP
    or a feedback type first)."""
    return len(data) >= 8 and data[0] >> 6 == 2 and 192 <= data[1] <= 223


def parse_header(data: bytes) -> RtpHeader:
    """
    The fixed header of the RTP packet C{data}.

    @raise ValueError: not an RTP version 2 packet.
    """
    if not is_rtp(data):
        raise ValueError("not an RTP version 2 packet")
    b0, b1, seq, ts, ssrc = _HEADER.unpack_from(data)
    return RtpHeader(b0 >> 6, bool(b0 & 0x20), bool(b0 & 0x10), b0 & 0x0F,
                     bool(b1 & 0x80), b1 & 0x7F, seq, ts, ssrc)


def payload_offset(data: bytes) -> int:
    """
    Where the payload of the RTP packet C{data} starts: after the fixed
    header, the CSRC list and the header extension (RFC 3550 5.3.1).

    @raise ValueError: the header runs past the end of the packet.
    """
    offset = RTP_HEADER_SIZE + 4 * (data[0] & 0x0F)
    if data[0] & 0x10:
        if len(data) < offset + 4:
            raise ValueError("RTP header extension truncated")
        offset += 4 + 4 * int.from_bytes(data[offset + 2:offset + 4], "big")
    if len(data) < offset:
        raise ValueError("RTP header truncated")
    return offset


def payload_of(data: bytes) -> bytes:
    """The payload of the RTP packet C{data}, padding (RFC 3550 5.1)
    removed."""
    offset = payload_offset(data)
    end = len(data)
    if data[0] & 0x20:
        end -= data[-1]
        if end < offset:
            raise ValueError("RTP padding longer than the payload")
    return data[offset:end]


def build_packet(payload_type: int, sequence: int, timestamp: int, ssrc: int,
                 payload: bytes, marker: bool = False) -> bytes:
    """An RTP packet with no CSRC, extension or padding."""
    return _HEADER.pack(0x80, (0x80 if marker else 0) | payload_type,
                        sequence & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc) + payload


class ReportBlock(NamedTuple):
    """One reception report of an RTCP SR or RR (RFC 3550 6.4.1)."""
    ssrc: int
    fraction_lost: int
    cumulative_lost: int
    highest_sequence: int
    jitter: int


def report_blocks(data: bytes) -> Iterator[ReportBlock]:
    """
    The reception reports in the RTCP compound packet C{data}: what the
    sender of C{data} says about the media it receives (so, from our side,
    the loss and jitter of what we sent it).  Truncated or malformed parts
    end the iteration quietly: RTCP is advisory.
    """
    offset = 0
    size = len(data)
    while offset + 4 <= size:
        b0, ptype, words = _RTCP_HEADER.unpack_from(data, offset)
        if b0 >> 6 != 2:
            return
        end = offset + 4 * (words + 1)
        if end > size:
            return
        count = b0 & 0x1F
        if ptype == RTCP_SR:
            first = offset + 28
        elif ptype == RTCP_RR:
            first = offset + 8
        else:
            offset = end
            continue
        for i in range(count):
            at = first + 24 * i
            if at + 24 > end:
                break
            ssrc, lost_word, highest, jitter, _lsr = _REPORT_BLOCK.unpack_from(data, at)
            cumulative = lost_word & 0xFFFFFF
            if cumulative & 0x800000:      # signed 24-bit (duplicates)
                cumulative -= 0x1000000
            yield ReportBlock(ssrc, lost_word >> 24, cumulative, highest, jitter)
        offset = end


class DirectionFigures:
    """
    What L{ReceiveStats} and L{SendStats} show alike: one direction's
    packets, bytes, loss and jitter (in clock-rate units, shown in
    milliseconds).
    """

    __slots__ = ()

    @property
    def jitter_ms(self) -> float:
        """The interarrival jitter in milliseconds."""
        return self.jitter * 1000.0 / self.jitter_rate

    def figures(self) -> dict:
        """The dictionary L{IMediaSession.stats} shows for a direction."""
        return {"packets": self.packets, "bytes": self.bytes, "lost": self.lost,
                "jitter_ms": round(self.jitter_ms, 3)}


class ReceiveStats(DirectionFigures):
    """
    RFC 3550 appendix A.1/A.3/A.8 receive statistics for one direction of
    one stream: the relay feeds it every packet it accepts.

    A new SSRC (a transfer, a re-INVITE to another device) restarts the
    sequence tracking; the loss counted for the earlier sources is kept.

    @ivar rates: payload type -> clock rate of the audio formats; the
        jitter is computed on those payload types only (telephone-event
        packets repeat their timestamp and would count as jitter).
    """

    __slots__ = ("packets", "bytes", "rates", "ssrc", "base_seq", "max_seq",
                 "cycles", "received", "bad_seq", "lost_before", "transit",
                 "jitter", "jitter_rate")

    def __init__(self, rates: Optional[dict[int, int]] = None) -> None:
        self.packets = 0
        self.bytes = 0
        self.rates = rates if rates is not None else dict(STATIC_AUDIO_RATES)
        self.ssrc = -1
        self.base_seq = 0
        self.max_seq = 0
        self.cycles = 0
        self.received = 0
        self.bad_seq = -1
        self.lost_before = 0
        self.transit = None
        self.jitter = 0.0           # in timestamp units, RFC 3550 A.8
        self.jitter_rate = 8000

    def update(self, data: bytes, arrival: float) -> None:
        """
        Count the RTP packet C{data} that arrived at C{arrival} (seconds,
        monotonic).  Packets too short to be RTP are counted in packets and
        bytes only.
        """
        self.packets += 1
        self.bytes += len(data)
        try:
            second, seq, ts, ssrc = _FIELDS.unpack_from(data, 1)
        except struct.error:
            return
        if ssrc == self.ssrc:
            max_seq = self.max_seq
            delta = (seq - max_seq) & 0xFFFF
            if delta < MAX_DROPOUT:
                if seq < max_seq:
                    self.cycles += SEQ_MOD
                self.max_seq = seq
            elif delta <= SEQ_MOD - MAX_MISORDER:
                # a jump: believe it when the next packet follows it
                if seq != self.bad_seq:
                    self.bad_seq = (seq + 1) & 0xFFFF
                    return
                self._restart(ssrc, seq)
                self.received -= 1
            # else a duplicate or a reordered packet: received, not newest
            self.received += 1
        else:
            self._restart(ssrc, seq)
        rate = self.rates.get(second & 0x7F)
        if rate is None:
            return
        if rate != self.jitter_rate:
            self.jitter_rate = rate
            self.transit = None
        transit = arrival * rate - ts
        previous = self.transit
        self.transit = transit
        if previous is not None:
            d = transit - previous
            if d < 0:
                d = -d
            if d < 0x7FFFFFFF:          # a timestamp wrap is not jitter
                self.jitter += (d - self.jitter) * 0.0625

    def _restart(self, ssrc: int, seq: int) -> None:
        if self.ssrc != -1:
            self.lost_before += self._lost_now()
        self.ssrc = ssrc
        self.base_seq = seq
        self.max_seq = seq
        self.cycles = 0
        self.received = 1
        self.bad_seq = -1
        self.transit = None

    def _lost_now(self) -> int:
        if self.ssrc == -1:
            return 0
        expected = self.cycles + self.max_seq - self.base_seq + 1
        return max(0, expected - self.received)

    @property
    def expected(self) -> int:
        """Packets the current source should have sent, by sequence
        number."""
        if self.ssrc == -1:
            return 0
        return self.cycles + self.max_seq - self.base_seq + 1

    @property
    def lost(self) -> int:
        """Packets lost (never negative: duplicates do not make up for
        losses of other sources)."""
        return self.lost_before + self._lost_now()


class SendStats(DirectionFigures):
    """
    What the relay sent one way: packets and bytes counted by the relay,
    and the loss and jitter the receiver reports back in its RTCP receiver
    reports (zero until it sends one).
    """

    __slots__ = ("packets", "bytes", "lost", "jitter", "jitter_rate")

    def __init__(self) -> None:
        self.packets = 0
        self.bytes = 0
        self.lost = 0
        self.jitter = 0
        self.jitter_rate = 8000

    def report(self, block: ReportBlock) -> None:
        """Take the figures of a reception report about this stream."""
        self.lost = max(0, block.cumulative_lost)
        self.jitter = block.jitter


# Clock rates of the static audio payload types (RFC 3551 table 4) the
# relay meets: PCMU, GSM, G723, PCMA, G722 (8000 by RFC 3551's erratum),
# G728, G729.
STATIC_AUDIO_RATES: dict[int, int] = {0: 8000, 3: 8000, 4: 8000, 8: 8000, 9: 8000,
                                      15: 8000, 18: 8000}
