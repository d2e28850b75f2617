# -*- test-case-name: rustpbx_py.test.test_dtmf -*-
"""
RFC 4733 telephone events (DTMF digits in RTP) relayed between legs that
number them differently.

The two legs of an anchored call each negotiate their own
C{telephone-event} payload type (101 on one phone, 96 on a trunk) and, with
Opus on one side, their own clock: C{telephone-event/48000} beside
C{opus/48000}, C{telephone-event/8000} beside G.711 (RFC 4733 section
2.1: an event stream uses the clock of the audio it goes with).  Relaying
a digit from one leg to the other therefore means rewriting the payload
type, mapping the RTP timestamp onto the other leg's timeline, and scaling
the duration field of every event block, which counts in clock ticks.

L{TimestampMap} is the timeline mapping; the relay shares one per
direction between the audio (when it transcodes) and the events, so the
digits stay where they were in the audio.  L{DtmfTranslator} rewrites
whole RTP packets; L{translate_event} only the payload.

Network input is untrusted: a malformed packet or payload gives None (and
a count), never an exception.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from typing import List, Optional

__all__ = ["TelephoneEvent", "parse_events", "write_events", "translate_event",
           "TimestampMap", "DtmfTranslator", "EVENT_NAMES"]

#: RFC 4733 section 3.2: events 0-15 are the DTMF digits, 16 is flash.
EVENT_NAMES = "0123456789*#ABCD"

#: The longest duration one event block can say (RFC 4733 section 2.5.2.3:
#: longer events are sent in segments; a scaled duration that would not fit
#: is capped here, which only a key held > 1.36 s on a 48 kHz leg reaches).
MAX_DURATION = 0xFFFF


@dataclass(frozen=True)
class TelephoneEvent:
    """One event block of an RFC 4733 payload (section 2.3)."""

    event: int  # 0-255; 0-9 * # A-D are DTMF (see EVENT_NAMES), 16 flash
    end: bool  # the E bit: the last packets of the event
    volume: int  # 0-63, -dBm0 (0 is loudest)
    duration: int  # in RTP clock ticks since the event's timestamp

    @property
    def name(self) -> str:
        """The DTMF key (C{"5"}, C{"#"}), C{"flash"}, or the event number."""
        if self.event < len(EVENT_NAMES):
            return EVENT_NAMES[self.event]
        return "flash" if self.event == 16 else str(self.event)


def parse_events(payload: bytes) -> Optional[List[TelephoneEvent]]:
    """
    The event blocks of a telephone-event payload (usually one; RFC 4733
    section 2.5.1.5 allows several), or None when it is not a non-empty
    multiple of 4 bytes.
    """
    if not payload or len(payload) % 4:
        return None
    events = []
    for offset in range(0, len(payload), 4):
        event, flags, duration = struct.unpack_from("!BBH", payload, offset)
        events.append(TelephoneEvent(event, bool(flags & 0x80), flags & 0x3F, duration))
    return events


def write_events(events: List[TelephoneEvent]) -> bytes:
    """The payload for C{events} (the R bit is always sent as 0)."""
    return b"".join(
        struct.pack("!BBH", e.event, (0x80 if e.end else 0) | (e.volume & 0x3F),
                    min(max(e.duration, 0), MAX_DURATION))
        for e in events)


def _scale(value: int, src_rate: int, dst_rate: int) -> int:
    return value if src_rate == dst_rate else value * dst_rate // src_rate


def translate_event(payload: bytes, src_rate: int = 8000, dst_rate: int = 8000) -> Optional[bytes]:
    """
    A telephone-event payload from a leg clocked at C{src_rate}, for a leg
    clocked at C{dst_rate}: each duration scaled (and capped at
    L{MAX_DURATION}).  None for a malformed payload.
    """
    if src_rate == dst_rate:
        return payload if payload and len(payload) % 4 == 0 else None
    events = parse_events(payload)
    if events is None:
        return None
    return write_events([TelephoneEvent(e.event, e.end, e.volume, _scale(e.duration, src_rate, dst_rate))
                         for e in events])


class TimestampMap:
    """
    Maps the RTP timestamps one leg sends onto the timeline of the other
    leg's stream: the first timestamp seen lands on C{dst_start} (random
    by default, RFC 3550 section 5.1) and later ones keep their distance,
    scaled by C{dst_rate / src_rate}.  Reordered packets (a timestamp
    before the anchor, by less than half the 32-bit range) map backwards.
    The anchor follows the stream, so wrap-around never matters however
    long the call.
    """

    def __init__(self, src_rate: int, dst_rate: int, dst_start: Optional[int] = None) -> None:
        self.src_rate = src_rate
        self.dst_rate = dst_rate
        self._src_base: Optional[int] = None
        self._dst_base = (int.from_bytes(os.urandom(4), "big") if dst_start is None else dst_start) & 0xFFFFFFFF
        # The anchor moves in whole multiples of this many source ticks,
        # so the scaled distance stays exact.
        self._step = src_rate // math.gcd(src_rate, dst_rate)

    def __call__(self, src_ts: int) -> int:
        if self._src_base is None:
            self._src_base = src_ts & 0xFFFFFFFF
        delta = (src_ts - self._src_base) & 0xFFFFFFFF
        if delta >= 0x80000000:
            delta -= 0x100000000
        dst = (self._dst_base + _scale(delta, self.src_rate, self.dst_rate)) & 0xFFFFFFFF
        if delta > 0x10000000:
            move = delta - delta % self._step
            self._src_base = (self._src_base + move) & 0xFFFFFFFF
            self._dst_base = (self._dst_base + _scale(move, self.src_rate, self.dst_rate)) & 0xFFFFFFFF
        return dst


class DtmfTranslator:
    """
    Rewrites the telephone-event RTP packets of one direction: payload
    type C{src_pt} -> C{dst_pt}, timestamps through C{timestamps} (a
    L{TimestampMap}; None keeps them, right when both legs share the clock
    and the audio is relayed untouched), durations scaled from C{src_rate}
    to C{dst_rate}.  Sequence numbers, SSRC and marker bit are the
    relay's to keep or rewrite like the audio's.

    @ivar relayed: packets translated.
    @ivar dropped: packets that were not valid RTP carrying valid events.
    """

    def __init__(self, src_pt: int, dst_pt: int, src_rate: int = 8000, dst_rate: int = 8000,
                 timestamps: Optional[TimestampMap] = None) -> None:
        if not (0 <= src_pt <= 127 and 0 <= dst_pt <= 127):
            raise ValueError(f"telephone-event payload types must be 0-127, got {src_pt} and {dst_pt}")
        if timestamps is None and src_rate != dst_rate:
            timestamps = TimestampMap(src_rate, dst_rate)
        self.src_pt = src_pt
        self.dst_pt = dst_pt
        self.src_rate = src_rate
        self.dst_rate = dst_rate
        self.timestamps = timestamps
        self.relayed = 0
        self.dropped = 0

    def matches(self, packet: bytes) -> bool:
        """Whether C{packet} is RTP with this direction's telephone-event payload type."""
        return len(packet) >= 12 and packet[1] & 0x7F == self.src_pt

    def translate(self, packet: bytes) -> Optional[bytes]:
        """The packet for the other leg, or None (counted) when it is not valid."""
        try:
            return self._translate(packet)
        except (struct.error, IndexError, TypeError, ValueError):
            self.dropped += 1
            return None

    def _translate(self, packet: bytes) -> Optional[bytes]:
        if len(packet) < 12 or packet[0] >> 6 != 2:
            raise ValueError("not RTP version 2")
        first, second, seq, ts = struct.unpack_from("!BBHI", packet)
        header_end = 12 + 4 * (first & 0x0F)
        if first & 0x10:  # header extension: 4-byte header, then length words
            header_end += 4 + 4 * struct.unpack_from("!H", packet, header_end + 2)[0]
        end = len(packet)
        if first & 0x20:  # padding: the last byte counts it
            end -= packet[-1]
        if end - header_end < 4:
            raise ValueError("no event block")
        payload = translate_event(packet[header_end:end], self.src_rate, self.dst_rate)
        if payload is None:
            raise ValueError("bad event payload")
        if self.timestamps is not None:
            ts = self.timestamps(ts)
        header = struct.pack("!BBHI", first & ~0x20, (second & 0x80) | self.dst_pt, seq, ts)
        self.relayed += 1
        return header + packet[8:header_end] + payload
