"""
The MEDIA.md C{Codec} shape for the media tests until
L{rustpbx_py.media.codecs} lands (then the tests import it from there and
this file goes).
"""

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Codec:
    name: str
    encoding: str
    clock_rate: int
    channels: int
    static_pt: Optional[int]


_TABLE = {c.name: c for c in (
    Codec("pcmu", "PCMU", 8000, 1, 0), Codec("pcma", "PCMA", 8000, 1, 8),
    Codec("g722", "G722", 8000, 1, 9), Codec("g729", "G729", 8000, 1, 18),
    Codec("opus", "opus", 48000, 2, None), Codec("telephone-event", "telephone-event", 8000, 1, None))}


def codec_by_name(name: str) -> Codec:
    return _TABLE[name]
