# -*- test-case-name: rustpbx_py.test.test_sdp -*-
"""
SDP (RFC 8866) as the B2BUA sees it: parsed just enough to rewrite the
addresses, ports, codecs and directions of an offer or answer, and written
back with everything else exactly as it came.

Why byte-exact: phones and trunks put things in SDP that no table here knows
(ICE candidates, DTLS fingerprints, vendor attributes, odd spacing), and an
anchored call must pass them on unchanged.  So every line this module does
not model is kept as a C{(type, value)} pair in its original order, and the
lines it does model (C{v=}, C{o=}, C{s=}, C{c=}, C{m=}) keep their original
text and position until a field of theirs is changed.  For an SDP with CRLF
line ends, C{bytes(SessionDescription.parse(x)) == x}.

Leniencies (each has a test): LF-only line ends (some SIP stacks and most
hand-written SDP) are read and written back with CRLF; a missing final line
end and blank lines at the end are accepted (and not written back); C{t=} is
not required; C{m=} lines without formats are read.  Anything else that does
not follow the grammar raises L{SdpError} (the B2BUA answers 488), and no
other exception: the parser is fuzzed in the tests.
"""

from __future__ import annotations

import copy as _copy
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Union

__all__ = [
    "SdpError",
    "Connection",
    "Origin",
    "MediaDescription",
    "SessionDescription",
    "STATIC_PAYLOAD_TYPES",
    "DIRECTIONS",
    "answer_direction",
    "parse",
]


class SdpError(ValueError):
    """An SDP body that does not follow RFC 8866 (the B2BUA answers 488)."""


#: RFC 3551 section 6's static payload types: pt -> (encoding, clock, channels).
#: G.722 says 8000 although it samples at 16 kHz (an error kept for
#: compatibility, RFC 3551 section 4.5.2).
STATIC_PAYLOAD_TYPES: Dict[int, Tuple[str, int, int]] = {
    0: ("PCMU", 8000, 1),
    3: ("GSM", 8000, 1),
    4: ("G723", 8000, 1),
    5: ("DVI4", 8000, 1),
    6: ("DVI4", 16000, 1),
    7: ("LPC", 8000, 1),
    8: ("PCMA", 8000, 1),
    9: ("G722", 8000, 1),
    10: ("L16", 44100, 2),
    11: ("L16", 44100, 1),
    12: ("QCELP", 8000, 1),
    13: ("CN", 8000, 1),
    14: ("MPA", 90000, 1),
    15: ("G728", 8000, 1),
    16: ("DVI4", 11025, 1),
    17: ("DVI4", 22050, 1),
    18: ("G729", 8000, 1),
    25: ("CelB", 90000, 1),
    26: ("JPEG", 90000, 1),
    28: ("nv", 90000, 1),
    31: ("H261", 90000, 1),
    32: ("MPV", 90000, 1),
    33: ("MP2T", 90000, 1),
    34: ("H263", 90000, 1),
}

#: The RFC 3264 direction attributes.
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")

_TYPE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_DIGITS = frozenset("0123456789")


def _int(text: str, what: str, low: int = 0, high: int = 2**63) -> int:
    """A decimal integer in [low, high]; SdpError naming C{what} otherwise."""
    if not text or not (set(text) <= _DIGITS) or len(text) > 20:
        raise SdpError(f"{what}: expected a decimal number, got {text!r}")
    value = int(text)
    if not low <= value <= high:
        raise SdpError(f"{what}: {value} is out of range {low}..{high}")
    return value


@dataclass
class Connection:
    """A C{c=} line: C{IN IP4 192.0.2.1} (the address may carry C{/ttl})."""

    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = ""
    _raw: Optional[Tuple[str, Tuple[str, str, str]]] = field(default=None, repr=False, compare=False)

    @classmethod
    def parse(cls, value: str) -> "Connection":
        parts = value.split()
        if len(parts) != 3:
            raise SdpError(f"c= line: expected 'nettype addrtype address', got {value!r}")
        conn = cls(*parts)
        conn._raw = (value, (conn.nettype, conn.addrtype, conn.address))
        return conn

    def value(self) -> str:
        current = (self.nettype, self.addrtype, self.address)
        if self._raw is not None and self._raw[1] == current:
            return self._raw[0]
        return " ".join(current)


@dataclass
class Origin:
    """An C{o=} line: username, session id and version, and the address."""

    username: str = "-"
    sess_id: str = "0"
    sess_version: str = "0"
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "0.0.0.0"
    _raw: Optional[Tuple[str, tuple]] = field(default=None, repr=False, compare=False)

    def _fields(self) -> tuple:
        return (self.username, self.sess_id, self.sess_version, self.nettype, self.addrtype, self.address)

    @classmethod
    def parse(cls, value: str) -> "Origin":
        parts = value.split()
        if len(parts) != 6:
            raise SdpError(
                "o= line: expected 'username sess-id sess-version nettype addrtype address', "
                f"got {value!r}"
            )
        origin = cls(*parts)
        origin._raw = (value, origin._fields())
        return origin

    def value(self) -> str:
        current = self._fields()
        if self._raw is not None and self._raw[1] == current:
            return self._raw[0]
        return " ".join(current)


def _attr_split(value: str) -> Tuple[str, str]:
    """An a= value split into name and value ('' for a flag attribute)."""
    name, sep, rest = value.partition(":")
    return name.rstrip(), rest


class _Lines:
    """The attribute helpers shared by session and media level: both keep
    their unmodelled lines in C{self.lines}."""

    lines: List[Tuple[str, str]]

    def attributes(self, name: str) -> List[str]:
        """The values of every C{a=name[:value]} line in order; a flag
        attribute (C{a=sendrecv}) gives C{''}."""
        out = []
        for kind, value in self.lines:
            if kind == "a":
                aname, aval = _attr_split(value)
                if aname == name:
                    out.append(aval)
        return out

    def attribute(self, name: str) -> Optional[str]:
        """The first C{a=name} value (C{''} for a flag), None if absent."""
        for kind, value in self.lines:
            if kind == "a":
                aname, aval = _attr_split(value)
                if aname == name:
                    return aval
        return None

    def has_attribute(self, name: str) -> bool:
        return self.attribute(name) is not None

    def set_attribute(self, name: str, value: Optional[str] = None) -> None:
        """Make C{a=name[:value]} the only line of that name: the first
        one is replaced where it stands, later ones removed; appended at the
        end when there was none.  C{value=None} writes a flag attribute."""
        text = name if value is None else f"{name}:{value}"
        new: List[Tuple[str, str]] = []
        done = False
        for kind, old in self.lines:
            if kind == "a" and _attr_split(old)[0] == name:
                if not done:
                    new.append(("a", text))
                    done = True
                continue
            new.append((kind, old))
        if not done:
            new.append(("a", text))
        self.lines[:] = new

    def add_attribute(self, name: str, value: Optional[str] = None) -> None:
        """Append one more C{a=name[:value]} line (multi-valued attributes)."""
        self.lines.append(("a", name if value is None else f"{name}:{value}"))

    def remove_attribute(self, name: str) -> None:
        """Remove every C{a=name} line."""
        self.lines[:] = [
            (kind, value) for kind, value in self.lines if not (kind == "a" and _attr_split(value)[0] == name)
        ]

    def _direction_line(self) -> Optional[str]:
        found = None
        for kind, value in self.lines:
            if kind == "a" and value.rstrip() in DIRECTIONS:
                found = value.rstrip()
        return found

    def _set_direction(self, direction: str) -> None:
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, not {direction!r}")
        new: List[Tuple[str, str]] = []
        done = False
        for kind, value in self.lines:
            if kind == "a" and value.rstrip() in DIRECTIONS:
                if not done:
                    new.append(("a", direction))
                    done = True
                continue
            new.append((kind, value))
        if not done:
            new.append(("a", direction))
        self.lines[:] = new


def _emit(out: List[str], lines: List[Tuple[str, str]], specials: List[Tuple[int, int, str]]) -> None:
    """Write C{lines} with the modelled C{specials} (position, order, text)
    put back before the line they originally preceded."""
    specials = sorted(specials)
    j = 0
    for i, (kind, value) in enumerate(lines):
        while j < len(specials) and specials[j][0] <= i:
            out.append(specials[j][2])
            j += 1
        out.append(f"{kind}={value}")
    while j < len(specials):
        out.append(specials[j][2])
        j += 1


@dataclass
class MediaDescription(_Lines):
    """
    One C{m=} section.  C{lines} holds every media-level line but the C{m=}
    and the first C{c=}, in order, e.g. C{("b", "AS:64")},
    C{("a", "rtpmap:0 PCMU/8000")}, C{("a", "sendrecv")}.
    """

    media: str = "audio"
    port: int = 0
    port_count: Optional[int] = None
    proto: str = "RTP/AVP"
    formats: List[str] = field(default_factory=list)
    connection: Optional[Connection] = None
    lines: List[Tuple[str, str]] = field(default_factory=list)
    _raw: Optional[Tuple[str, tuple]] = field(default=None, repr=False, compare=False)
    #: how many of C{lines} preceded the c= line when parsed.
    _cpos: Optional[int] = field(default=None, repr=False, compare=False)

    def _fields(self) -> tuple:
        return (self.media, self.port, self.port_count, self.proto, tuple(self.formats))

    @classmethod
    def parse_mline(cls, value: str) -> "MediaDescription":
        parts = value.split()
        if len(parts) < 3:
            raise SdpError(f"m= line: expected 'media port proto fmt ...', got {value!r}")
        media, port_text, proto = parts[:3]
        formats = parts[3:]
        port_text, slash, count_text = port_text.partition("/")
        port = _int(port_text, "m= line port", 0, 65535)
        port_count = _int(count_text, "m= line port count", 1, 65535) if slash else None
        if "RTP/" in proto.upper():
            for fmt in formats:
                _int(fmt, f"m= line payload type {fmt!r}", 0, 127)
        m = cls(media=media, port=port, port_count=port_count, proto=proto, formats=formats)
        m._raw = (value, m._fields())
        return m

    def mline(self) -> str:
        """The C{m=} value, as received if nothing in it changed."""
        current = self._fields()
        if self._raw is not None and self._raw[1] == current:
            return self._raw[0]
        port = str(self.port) if self.port_count is None else f"{self.port}/{self.port_count}"
        return " ".join([self.media, port, self.proto] + list(self.formats))

    def _write(self, out: List[str]) -> None:
        out.append("m=" + self.mline())
        specials = []
        if self.connection is not None:
            pos = self._cpos
            if pos is None:
                # RFC 8866 order: m, i, c, b, k, a.
                pos = 0
                while pos < len(self.lines) and self.lines[pos][0] == "i":
                    pos += 1
            specials.append((pos, 0, "c=" + self.connection.value()))
        _emit(out, self.lines, specials)

    @property
    def direction(self) -> str:
        """The media-level direction attribute (the last one if several),
        C{"sendrecv"} when there is none (RFC 3264 section 5.1); see
        L{SessionDescription.direction_of} for the session-level fallback.
        Setting it replaces the first direction line where it stands."""
        return self._direction_line() or "sendrecv"

    @direction.setter
    def direction(self, value: str) -> None:
        self._set_direction(value)

    def rtpmap(self) -> Dict[int, Tuple[str, int, int]]:
        """pt -> (encoding, clock rate, channels) for every well-formed
        C{a=rtpmap} and every static payload type of the m-line that has
        none (RFC 3551), in the m-line's order then the others."""
        maps: Dict[int, Tuple[str, int, int]] = {}
        for value in self.attributes("rtpmap"):
            parsed = _parse_rtpmap(value)
            if parsed is not None and parsed[0] not in maps:
                maps[parsed[0]] = parsed[1]
        out: Dict[int, Tuple[str, int, int]] = {}
        for fmt in self.formats:
            if fmt.isdigit():
                pt = int(fmt)
                if pt in maps:
                    out[pt] = maps[pt]
                elif pt in STATIC_PAYLOAD_TYPES:
                    out[pt] = STATIC_PAYLOAD_TYPES[pt]
        for pt, value in maps.items():
            out.setdefault(pt, value)
        return out

    def fmtp(self, pt: int) -> Optional[str]:
        """The C{a=fmtp:<pt>} parameters, None if there is none."""
        prefix = str(pt)
        for value in self.attributes("fmtp"):
            head, _, params = value.partition(" ")
            if head == prefix:
                return params.strip()
        return None

    def payload_types(self) -> List[int]:
        """The m-line's formats as payload type numbers (RTP profiles)."""
        return [int(fmt) for fmt in self.formats if fmt.isdigit()]

    @property
    def rejected(self) -> bool:
        """Port 0: a stream refused in an answer, or disabled in an offer
        (RFC 3264 sections 6 and 8.2)."""
        return self.port == 0

    def reject(self) -> None:
        """Refuse this stream in an answer: port 0, formats kept (the
        m-line must still list at least one, RFC 3264 section 6)."""
        self.port = 0
        self.port_count = None


def _parse_rtpmap(value: str) -> Optional[Tuple[int, Tuple[str, int, int]]]:
    """C{96 opus/48000/2} -> (96, ("opus", 48000, 2)); None if malformed."""
    head, _, rest = value.strip().partition(" ")
    parts = rest.strip().split("/")
    if not head.isdigit() or len(parts) not in (2, 3) or not parts[0]:
        return None
    if not parts[1].isdigit() or (len(parts) == 3 and not parts[2].isdigit()):
        return None
    pt = int(head)
    clock = int(parts[1])
    channels = int(parts[2]) if len(parts) == 3 else 1
    if pt > 127 or clock == 0 or channels == 0:
        return None
    return pt, (parts[0], clock, channels)


@dataclass
class SessionDescription(_Lines):
    """
    A whole SDP body.  C{lines} holds the session-level lines other than
    C{v=}, C{o=}, C{s=} and C{c=} (i, u, e, p, b, t, r, z, k, a, and any
    unknown type) in order; C{media} the m-sections.
    """

    version: int = 0
    origin: Origin = field(default_factory=Origin)
    session_name: str = "-"
    connection: Optional[Connection] = None
    lines: List[Tuple[str, str]] = field(default_factory=lambda: [("t", "0 0")])
    media: List[MediaDescription] = field(default_factory=list)
    _vraw: Optional[Tuple[str, int]] = field(default=None, repr=False, compare=False)
    #: (type -> how many of C{lines} preceded it) for o=, s= and c= as parsed.
    _pos: Dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, data: Union[bytes, bytearray, memoryview, str]) -> "SessionDescription":
        """Parse an SDP body; L{SdpError} (and nothing else) if malformed."""
        if isinstance(data, str):
            text = data
        else:
            try:
                text = bytes(data).decode("utf-8", "surrogateescape")
            except (TypeError, ValueError) as e:  # pragma: no cover - bytes() of bytes-likes
                raise SdpError(f"SDP body is not bytes: {e}") from None
        if "\0" in text:
            raise SdpError("SDP body contains a NUL octet")
        raw_lines = text.replace("\r\n", "\n").split("\n")
        # A final line end gives one empty element; blank lines at the end
        # (some gateways append an extra CRLF) are dropped.
        while raw_lines and raw_lines[-1] in ("", "\r"):
            raw_lines.pop()
        if not raw_lines:
            raise SdpError("SDP body is empty")
        if raw_lines[-1].endswith("\r"):  # a body ending in a bare CR
            raw_lines[-1] = raw_lines[-1][:-1]
        sdp = cls.__new__(cls)
        sdp.version = 0
        sdp.origin = None  # type: ignore[assignment]
        sdp.session_name = None  # type: ignore[assignment]
        sdp.connection = None
        sdp.lines = []
        sdp.media = []
        sdp._vraw = None
        sdp._pos = {}
        current: Optional[MediaDescription] = None
        if "\r" in text:
            for number, line in enumerate(raw_lines, 1):
                if "\r" in line:
                    raise SdpError(f"SDP line {number}: a CR inside the line")
        for number, line in enumerate(raw_lines, 1):
            if len(line) < 2 or line[1] != "=" or line[0] not in _TYPE_CHARS:
                raise SdpError(f"SDP line {number}: expected '<type>=<value>', got {line[:40]!r}")
            kind, value = line[0], line[2:]
            if number == 1:
                if kind != "v":
                    raise SdpError(f"SDP must start with v=, not {line[:40]!r}")
                sdp.version = _int(value, "v= line")
                sdp._vraw = (value, sdp.version)
                continue
            if kind == "v":
                raise SdpError(f"SDP line {number}: a second v= line")
            if kind == "m":
                current = MediaDescription.parse_mline(value)
                sdp.media.append(current)
                continue
            if current is not None:
                if kind == "c" and current.connection is None:
                    current.connection = Connection.parse(value)
                    current._cpos = len(current.lines)
                    continue
                if kind == "c":
                    Connection.parse(value)  # validated; a further c= (layered multicast) is kept as is
                elif kind == "a" and (not value or value.startswith(_CHECKED_PREFIXES)):
                    _check_attribute(value, number)
                elif kind in "os":
                    raise SdpError(f"SDP line {number}: {kind}= inside a media section")
                current.lines.append((kind, value))
                continue
            if kind == "o":
                if sdp.origin is not None:
                    raise SdpError(f"SDP line {number}: a second o= line")
                sdp.origin = Origin.parse(value)
                sdp._pos["o"] = len(sdp.lines)
            elif kind == "s":
                if sdp.session_name is not None:
                    raise SdpError(f"SDP line {number}: a second s= line")
                sdp.session_name = value
                sdp._pos["s"] = len(sdp.lines)
            elif kind == "c":
                if sdp.connection is not None:
                    raise SdpError(f"SDP line {number}: a second session-level c= line")
                sdp.connection = Connection.parse(value)
                sdp._pos["c"] = len(sdp.lines)
            else:
                if kind == "a" and (not value or value.startswith(_CHECKED_PREFIXES)):
                    _check_attribute(value, number)
                sdp.lines.append((kind, value))
        if sdp.origin is None:
            raise SdpError("SDP has no o= line")
        if sdp.session_name is None:
            raise SdpError("SDP has no s= line")
        return sdp

    def __bytes__(self) -> bytes:
        """The body with CRLF line ends; unchanged lines as received."""
        out: List[str] = []
        if self._vraw is not None and self._vraw[1] == self.version:
            out.append("v=" + self._vraw[0])
        else:
            out.append(f"v={self.version}")
        specials = [
            (self._pos.get("o", 0), 0, "o=" + self.origin.value()),
            (self._pos.get("s", 0), 1, "s=" + self.session_name),
        ]
        if self.connection is not None:
            pos = self._pos.get("c")
            if pos is None:
                # RFC 8866 order: v, o, s, i, u, e, p, c, b, t, ...
                pos = 0
                while pos < len(self.lines) and self.lines[pos][0] in "iuep":
                    pos += 1
            specials.append((pos, 2, "c=" + self.connection.value()))
        _emit(out, self.lines, specials)
        for m in self.media:
            m._write(out)
        out.append("")
        return "\r\n".join(out).encode("utf-8", "surrogateescape")

    def copy(self) -> "SessionDescription":
        """A deep copy: changing it leaves this one as it is.  (By hand:
        the lines are tuples of str, shared safely; deepcopy is 5x slower.)"""
        new = _copy.copy(self)
        new.origin = _copy.copy(self.origin)
        new.connection = _copy.copy(self.connection)
        new.lines = list(self.lines)
        new._pos = dict(self._pos)
        media = []
        for m in self.media:
            mc = _copy.copy(m)
            mc.formats = list(m.formats)
            mc.lines = list(m.lines)
            mc.connection = _copy.copy(m.connection)
            media.append(mc)
        new.media = media
        return new

    def address(self, m: MediaDescription) -> Optional[str]:
        """The address media of C{m} goes to: its c= else the session's
        (without a multicast C{/ttl} suffix)."""
        conn = m.connection or self.connection
        if conn is None:
            return None
        return conn.address.split("/", 1)[0]

    def direction_of(self, m: MediaDescription) -> str:
        """C{m}'s direction: its own attribute, else the session-level one,
        else C{"sendrecv"} (RFC 3264 section 5.1)."""
        return m._direction_line() or self._direction_line() or "sendrecv"

    def is_hold(self, m: MediaDescription) -> bool:
        """Whether C{m} puts the other side on hold: C{sendonly} or
        C{inactive} (RFC 3264 section 8.4), or the RFC 2543 way some old
        phones still use, a connection address of 0.0.0.0."""
        return self.direction_of(m) in ("sendonly", "inactive") or self.address(m) == "0.0.0.0"


#: RFC 3264 section 6.1: the direction an answer takes for each offered one.
_ANSWER_DIRECTION = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}


def answer_direction(offered: str, wanted: str = "sendrecv") -> str:
    """The direction to answer an C{offered} one with, for an answerer that
    would like C{wanted}: the intersection of both (RFC 3264 section 6.1),
    e.g. an offer C{sendonly} (hold) answered C{recvonly}."""
    if offered not in _ANSWER_DIRECTION or wanted not in _ANSWER_DIRECTION:
        raise ValueError(f"directions are {', '.join(DIRECTIONS)}; got {offered!r}, {wanted!r}")
    mirrored = _ANSWER_DIRECTION[offered]
    send = "send" in mirrored and wanted in ("sendrecv", "sendonly")
    recv = "recv" in mirrored and wanted in ("sendrecv", "recvonly")
    return {(True, True): "sendrecv", (True, False): "sendonly", (False, True): "recvonly"}.get((send, recv), "inactive")


#: The a= values L{_check_attribute} looks at: rtpmap, fmtp, and names
#: that are empty or start with blanks.
_CHECKED_PREFIXES = ("rtpmap", "fmtp", ":", " ", "\t")


def _check_attribute(value: str, number: int) -> None:
    """The attributes whose syntax the media plane relies on are checked
    when parsed, so later code can trust them."""
    name, rest = _attr_split(value)
    if not name:
        raise SdpError(f"SDP line {number}: a= line without an attribute name")
    if name == "rtpmap" and _parse_rtpmap(rest) is None:
        raise SdpError(f"SDP line {number}: a=rtpmap: expected '<pt> <encoding>/<clock>[/<channels>]', got {rest!r}")
    if name == "fmtp":
        head = rest.partition(" ")[0]
        if not head:
            raise SdpError(f"SDP line {number}: a=fmtp without a format")


def parse(data: Union[bytes, bytearray, memoryview, str]) -> SessionDescription:
    """Shorthand for L{SessionDescription.parse}."""
    return SessionDescription.parse(data)
