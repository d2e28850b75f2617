"""
Pure tones for audio tests, and finding which tone a signal holds.

A test sends a known tone through a codec, a transcoder or a phone and
checks that the same frequency comes out: the Goertzel algorithm (one DFT
bin per candidate frequency) measures each candidate's power, no numpy
needed.  Used by the transcoding tests and the real-phone interop tests.
"""

from __future__ import annotations

import math
import struct
from typing import Dict, Optional, Sequence, Tuple


def tone_pcm(hz: float, seconds: float, rate: int, amplitude: int = 8000) -> bytes:
    """C{seconds} of a pure tone as 16-bit little-endian mono samples."""
    count = int(rate * seconds)
    return struct.pack(f"<{count}h", *(
        int(amplitude * math.sin(2 * math.pi * hz * i / rate)) for i in range(count)))


def goertzel(samples: Sequence[int], rate: int, hz: float) -> float:
    """The power of C{samples} at C{hz} (one DFT bin)."""
    k = 2 * math.cos(2 * math.pi * hz / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + k * s1 - s2, s1
    return s1 * s1 + s2 * s2 - k * s1 * s2


def strongest(samples: Sequence[int], rate: int, candidates: Sequence[int],
              ratio: float = 100.0, floor: float = 1e9) -> Tuple[Optional[int], Dict[int, float]]:
    """
    Which of C{candidates} C{samples} hold: the one whose power is at least
    C{floor} and C{ratio} times any other's, else None; with every
    candidate's power (for failure messages).
    """
    powers = {hz: goertzel(samples, rate, hz) for hz in candidates}
    best = max(powers, key=powers.get)
    others = max((p for hz, p in powers.items() if hz != best), default=0.0)
    if powers[best] < floor or powers[best] < ratio * others:
        return None, powers
    return best, powers
