# -*- test-case-name: rustpbx_py.test.test_sip_message -*-
"""
SIP requests and responses (RFC 3261 section 7 and 25): parse and serialise.

The parser keeps every header line as it arrived (name spelling, value
bytes, order) so that a proxy forwards unknown headers byte-exact; only the
headers a layer asks for are interpreted, and only when asked (see
L{rustpbx_py.sip.headers}).  Header lookup is case-insensitive and knows the
compact forms.

This module imports nothing else of ours but L{rustpbx_py.sip}.
"""

from __future__ import annotations

import re
from typing import Dict, Iterator, List, Optional, Tuple, Union

from rustpbx_py.sip.headers import URI, HeaderError, NameAddr, Via

MAX_MESSAGE_SIZE = 65536
MAX_HEADERS = 100
SIP_VERSION = "SIP/2.0"

#: RFC 3261 section 7.3.3 and the registry of compact header forms.
COMPACT_FORMS = {
    "a": "accept-contact",
    "b": "referred-by",
    "c": "content-type",
    "d": "request-disposition",
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "n": "identity-info",
    "o": "event",
    "r": "refer-to",
    "s": "subject",
    "t": "to",
    "u": "allow-events",
    "v": "via",
    "x": "session-expires",
    "y": "identity",
}

#: Headers whose value is a comma-separated list (RFC 3261 section 7.3.1);
#: everything else (Authorization, Date, unknown headers, ...) is one value.
LIST_HEADERS = frozenset(
    [
        "via",
        "contact",
        "route",
        "record-route",
        "path",
        "service-route",
        "allow",
        "allow-events",
        "supported",
        "require",
        "proxy-require",
        "unsupported",
        "accept",
        "accept-encoding",
        "accept-language",
        "content-encoding",
        "content-language",
        "in-reply-to",
        "alert-info",
        "call-info",
        "error-info",
        "warning",
        "reply-to",
        "accept-contact",
        "reject-contact",
        "request-disposition",
    ]
)

#: How we spell headers that we add ourselves.
CANONICAL_NAMES = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version",
    "rack": "RAck",
    "rseq": "RSeq",
    "sip-etag": "SIP-ETag",
    "sip-if-match": "SIP-If-Match",
}

_TOKEN_RE = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
#: Leniency: a status line without the SP before an empty reason phrase.
_STATUS_LINE_RE = re.compile(r"^SIP/(\d{1,3})\.(\d{1,3}) ([1-6]\d\d)(?: (.*))?$", re.IGNORECASE | re.S)
_VERSION_RE = re.compile(r"^SIP/\d+\.\d+$", re.IGNORECASE)
_HEAD_END_RE = re.compile(rb"\r?\n\r?\n")


class SipParseError(Exception):
    """
    A message that cannot be understood.

    @ivar status: the response code a server should answer with (400, 505,
        ...), or L{None} when no response is possible (no usable Via, or a
        response that is malformed) and the message must be dropped.
    @ivar reason: the reason phrase, which says what was wrong.
    @ivar message: for a request, the L{Request} holding what could be
        parsed of it (its header lines, so the Via, From, To, Call-ID and
        CSeq a response copies); L{None} for responses and empty data.
    """

    def __init__(self, reason: str, status: Optional[int] = 400, message: Optional["Request"] = None) -> None:
        Exception.__init__(self, reason)
        self.reason = reason
        self.status = status
        self.message = message


def header_key(name: str) -> str:
    """The lookup key of a header name: lower case, compact forms expanded."""
    key = _KEYS.get(name)
    if key is None:
        key = name.lower()
        if len(key) == 1:
            key = COMPACT_FORMS.get(key, key)
        if len(_KEYS) < 1024:
            _KEYS[name] = key
    return key


#: Header names asked for -> their keys (every layer asks by name, many
#: times per message).
_KEYS: Dict[str, str] = {}


def canonical_name(key: str) -> str:
    """How to spell a header we generate: C{call-id} -> C{Call-ID}."""
    name = CANONICAL_NAMES.get(key)
    if name is None:
        name = "-".join(part.capitalize() for part in key.split("-"))
    return name


def split_list(value: str) -> List[str]:
    """
    Split a header value on the commas that separate list elements,
    leaving commas inside quoted strings and angle brackets alone.
    """
    if "," not in value:
        v = value.strip()
        return [v] if v else []
    parts = []
    depth = 0
    quoted = False
    start = 0
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            depth += 1
        elif ch == ">":
            if depth:
                depth -= 1
        elif ch == "," and not depth:
            part = value[start:i].strip()
            if part:
                parts.append(part)
            start = i + 1
        i += 1
    part = value[start:].strip()
    if part:
        parts.append(part)
    return parts


class Message:
    """
    What requests and responses share: an ordered list of headers and a body.

    Each header is kept as a C{[key, name, value]} list: the lookup key,
    the name as it arrived (or as we spelled it) and the value text.
    """

    __slots__ = ("headers", "body", "_parsed", "received")

    def __init__(self, headers: Optional[list] = None, body: bytes = b"") -> None:
        self.headers: list = headers if headers is not None else []
        self.body = body
        self._parsed: Optional[dict] = None
        #: The bytes this message arrived as (set by L{parse_message}); what
        #: a trace of received messages shows.  None for messages we built.
        self.received: Optional[bytes] = None

    # -- reading ------------------------------------------------------------

    def get(self, name: str) -> Optional[str]:
        """The value of the first header called C{name}, or L{None}."""
        key = header_key(name)
        for h in self.headers:
            if h[0] == key:
                return h[2]
        return None

    def get_all(self, name: str) -> List[str]:
        """
        Every value of C{name}, in order, with comma-separated lists split
        into their elements for the headers that are lists.
        """
        key = header_key(name)
        values = [h[2] for h in self.headers if h[0] == key]
        if key in LIST_HEADERS:
            out = []
            for v in values:
                out.extend(split_list(v))
            return out
        return values

    def has(self, name: str) -> bool:
        """Whether at least one C{name} header is present."""
        key = header_key(name)
        for h in self.headers:
            if h[0] == key:
                return True
        return False

    def header_items(self) -> Iterator[Tuple[str, str]]:
        """(name, value) of every header line, in order, as they will be sent."""
        for h in self.headers:
            yield h[1], h[2]

    # -- writing ------------------------------------------------------------

    def add(self, name: str, value: str) -> None:
        """Append a header line after the existing ones."""
        key = header_key(name)
        self.headers.append([key, name if len(name) > 1 else canonical_name(key), value])

    def insert(self, name: str, value: str) -> None:
        """
        Put a header line above the first one of the same name (or at the top
        of the message): where a proxy puts its Via and Record-Route.
        """
        key = header_key(name)
        entry = [key, name, value]
        for i, h in enumerate(self.headers):
            if h[0] == key:
                self.headers.insert(i, entry)
                return
        self.headers.insert(0, entry)

    def set(self, name: str, value: str) -> None:
        """Replace every C{name} header with one line, where the first was."""
        key = header_key(name)
        for i, h in enumerate(self.headers):
            if h[0] == key:
                h[2] = value
                self.headers[i + 1 :] = [x for x in self.headers[i + 1 :] if x[0] != key]
                return
        self.headers.append([key, name, value])

    def remove(self, name: str) -> None:
        """Drop every C{name} header."""
        key = header_key(name)
        self.headers = [h for h in self.headers if h[0] != key]

    def pop_first(self, name: str) -> Optional[str]:
        """
        Remove the first element of the list header C{name} (a Via or a
        Route) and return it.
        """
        key = header_key(name)
        for i, h in enumerate(self.headers):
            if h[0] == key:
                parts = split_list(h[2])
                if len(parts) <= 1:
                    del self.headers[i]
                else:
                    h[2] = ", ".join(parts[1:])
                return parts[0] if parts else None
        return None

    # -- convenience --------------------------------------------------------

    @property
    def call_id(self) -> str:
        return self.get("call-id") or ""

    @property
    def cseq(self) -> Tuple[int, str]:
        """(number, method) of the CSeq header; (0, "") when unusable."""
        value = self.get("cseq")
        if not value:
            return 0, ""
        parts = value.split()
        if len(parts) != 2 or not parts[0].isdigit() or len(parts[0]) > 10 or not parts[0].isascii():
            return 0, ""
        return int(parts[0]), parts[1]

    @property
    def max_forwards(self) -> Optional[int]:
        """The Max-Forwards value; L{None} when absent or not a number."""
        value = self.get("max-forwards")
        if value is None or not value.isdigit() or len(value) > 10 or not value.isascii():
            return None
        return int(value)

    @property
    def top_via(self) -> Optional[str]:
        """The first Via element, unparsed."""
        value = self.get("via")
        if value is None:
            return None
        if "," in value:
            parts = split_list(value)
            return parts[0] if parts else None
        return value.strip()

    def _cached(self, key: str, parse):
        """
        C{parse} applied to the value of the first C{key} header, kept for
        as long as that header line keeps the same value object (any edit
        through L{set}, L{insert}, L{remove} or a new value in C{headers}
        gives a fresh parse).  L{None} when there is no such header.
        """
        for h in self.headers:
            if h[0] == key:
                raw = h[2]
                break
        else:
            return None
        cache = self._parsed
        if cache is None:
            cache = self._parsed = {}
        else:
            hit = cache.get(key)
            if hit is not None and hit[0] is raw:
                return hit[1]
        value = parse(raw)
        cache[key] = (raw, value)
        return value

    @property
    def via(self) -> Optional[Via]:
        """
        The top Via element parsed (cached; treat it as read-only), or
        L{None} without Via.

        @raise HeaderError: when it does not parse.
        """
        return self._cached("via", _parse_top_via)

    def set_top_via(self, via: Via, remember: bool = True, text: Optional[str] = None) -> None:
        """
        Replace the first Via element (a proxy stamping C{received} and
        C{rport}), keeping the elements after it; with C{remember}, C{via}
        becomes the cached parse of the new top Via, so nobody parses the
        text just printed from it.  C{text}, when given, is C{via} already
        printed.
        """
        for h in self.headers:
            if h[0] == "via":
                value = h[2]
                if text is None:
                    text = str(via)
                if "," in value:
                    rest = split_list(value)[1:]
                    if rest:
                        text = text + ", " + ", ".join(rest)
                h[2] = text
                if remember:
                    if self._parsed is None:
                        self._parsed = {}
                    self._parsed["via"] = (text, via)
                return

    @property
    def from_addr(self) -> Optional[NameAddr]:
        """The From header parsed (cached; read-only), or L{None}.

        @raise HeaderError: when it does not parse."""
        return self._cached("from", NameAddr.parse)

    @property
    def to_addr(self) -> Optional[NameAddr]:
        """The To header parsed (cached; read-only), or L{None}.

        @raise HeaderError: when it does not parse."""
        return self._cached("to", NameAddr.parse)

    def to_bytes(self) -> bytes:
        """
        The message on the wire.  Content-Length is made to match the body
        (RFC 3261 section 20.14: mandatory on stream transports, and a
        mismatch would break framing).

        @raise ValueError: when a header value or the start line holds a CR
            or LF (a bug above this layer; sending it would inject headers).
        """
        body = self.body
        lines = [self.start_line()]
        seen_length = False
        for key, name, value in self.headers:
            if key == "content-length":
                if seen_length:
                    continue
                seen_length = True
                value = str(len(body))
            lines.append(f"{name}: {value}")
        if not seen_length:
            lines.append(f"Content-Length: {len(body)}")
        lines.append("")
        lines.append("")
        text = "\r\n".join(lines)
        if text.count("\n") != len(lines) - 1 or text.count("\r") != len(lines) - 1:
            # A CR or LF inside a value would end the header early and let
            # the rest be read as headers of its own (header injection).
            for line in lines:
                if "\r" in line or "\n" in line:
                    raise ValueError(f"CR or LF inside a header value or start line: {line[:60]!r}")
        return text.encode("utf-8", "surrogateescape") + body

    def copy_headers(self) -> list:
        """A shallow copy of the header list, safe to edit."""
        return [list(h) for h in self.headers]


class Request(Message):
    """A SIP request: method, Request-URI (text), version, headers, body."""

    __slots__ = ("method", "uri", "version", "_ruri")

    def __init__(
        self,
        method: str,
        uri: str,
        headers: Optional[list] = None,
        body: bytes = b"",
        version: str = SIP_VERSION,
    ) -> None:
        Message.__init__(self, headers, body)
        self.method = method
        self.uri = uri
        self.version = version
        self._ruri: Optional[Tuple[str, URI]] = None

    is_request = True

    @property
    def ruri(self) -> URI:
        """
        The Request-URI parsed, cached for as long as C{uri} keeps the same
        text.  Treat it as read-only (C{copy()} it to edit, then assign the
        text to C{uri}).

        @raise HeaderError: when the Request-URI does not parse.
        """
        cached = self._ruri
        if cached is not None and cached[0] is self.uri:
            return cached[1]
        parsed = URI.parse(self.uri)
        self._ruri = (self.uri, parsed)
        return parsed

    def start_line(self) -> str:
        return f"{self.method} {self.uri} {self.version}"

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri} call-id={self.call_id!r}>"


class Response(Message):
    """A SIP response: status code, reason phrase, headers, body."""

    __slots__ = ("status", "reason", "version")

    def __init__(
        self,
        status: int,
        reason: str = "",
        headers: Optional[list] = None,
        body: bytes = b"",
        version: str = SIP_VERSION,
    ) -> None:
        Message.__init__(self, headers, body)
        self.status = status
        self.reason = reason or REASONS.get(status, "")
        self.version = version

    is_request = False

    def start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason} call-id={self.call_id!r}>"


SipMessage = Union[Request, Response]


def _parse_top_via(value: str) -> Via:
    if "," in value:
        parts = split_list(value)
        if not parts:
            raise HeaderError(f"empty Via {value!r}")
        value = parts[0]
    return Via.parse(value)


def split_head(data: bytes) -> Tuple[bytes, bytes, bool]:
    """
    Split a datagram or framed message at the blank line.  Returns (head,
    rest, found); a head without its blank line is still returned (UDP
    senders that omit the final CRLF) with found False.
    """
    idx = data.find(b"\r\n\r\n")
    if idx >= 0:
        return data[:idx], data[idx + 4 :], True
    m = _HEAD_END_RE.search(data)
    if m is not None:
        return data[: m.start()], data[m.end() :], True
    return data.rstrip(b"\r\n"), b"", False


#: Header name as received -> (lookup key, name as kept).  Bounded so that
#: a peer sending random names cannot grow it without limit.
_NAME_CACHE: dict = {}
_NAME_CACHE_MAX = 4096
_METHOD_CACHE: dict = {}


def _name_entry(raw: str) -> Optional[Tuple[str, str]]:
    """(key, name) for a header name as it appeared before the colon."""
    entry = _NAME_CACHE.get(raw)
    if entry is None:
        name = raw.rstrip(" \t")
        if not name or _TOKEN_RE.match(name) is None:
            return None
        entry = (header_key(name), name)
        if len(_NAME_CACHE) < _NAME_CACHE_MAX:
            _NAME_CACHE[raw] = entry
    return entry


def _valid_method(method: str) -> bool:
    ok = _METHOD_CACHE.get(method)
    if ok is None:
        ok = _TOKEN_RE.match(method) is not None
        if len(_METHOD_CACHE) < 256:
            _METHOD_CACHE[method] = ok
    return ok


#: The headers every response copies from its request (RFC 3261 8.2.6.2).
_COPIED_BY_RESPONSES = frozenset(("via", "from", "to", "call-id", "cseq"))


def _respondable(msg: "Request") -> bool:
    """
    Whether a response can be addressed and written: the top Via element
    parses, and none of the headers a response copies holds a CR or LF
    (a bare CR inside a header value: a response cannot repeat it without
    letting the rest be read as headers of its own, so it is dropped).
    """
    top = msg.top_via
    if not top:
        return False
    for h in msg.headers:
        if h[0] in _COPIED_BY_RESPONSES and ("\r" in h[2] or "\n" in h[2]):
            return False
    try:
        Via.parse(top)
    except HeaderError:
        return False
    return True


def parse_message(data: bytes, stream: bool = False) -> SipMessage:
    """
    Parse one whole message.

    Framing and syntax are checked here: the start line, header lines,
    folding, the Content-Length (present on streams, well formed, only
    once, not beyond the data), the size limits.  The semantic checks a
    server makes before a transaction sees a request are in
    L{rustpbx_py.sip.validate}.

    @param data: the bytes of one datagram or one framed stream message.
        Bytes after Content-Length octets of body are ignored (RFC 3261
        section 18.3; RFC 4475 dblreq).
    @param stream: whether it came over a stream transport, where the
        framing already used Content-Length.
    @raise SipParseError: when the message is not valid SIP.  Its status
        says what to answer, or L{None} to drop it: responses, and
        requests without a usable top Via, are never answered.  Its
        C{message} holds what was parsed of a request, to build that
        answer from.
    """
    if data and data[0] in (10, 13):
        # CRLF keep-alives that preceded the message (RFC 5626 section 3.5.1).
        data = data.lstrip(b"\r\n")
    if not data:
        raise SipParseError("Empty message", None)
    error: Optional[Tuple[str, Optional[int]]] = None
    if len(data) > MAX_MESSAGE_SIZE:
        # Still read the head, to know whether the 513 can be addressed.
        error = (f"Message Too Large (limit {MAX_MESSAGE_SIZE} bytes)", 513)
        data = data[:MAX_MESSAGE_SIZE]
    head, rest, _ = split_head(data)
    text = head.decode("utf-8", "surrogateescape")
    lines = text.split("\r\n")
    lf = text.count("\n")
    if lf != len(lines) - 1 or text.count("\r") != lf:
        # Leniency: bare LF line ends (hand-written test tools, some SIP
        # ALGs).  A bare CR could end a line for another parser: refuse.
        if text.count("\r") != len(lines) - 1:
            error = error or ("Bad Request: bare CR in message header", 400)
        lines = text.replace("\r\n", "\n").split("\n")
    if len(lines) > MAX_HEADERS + 1:
        error = error or (f"Bad Request: more than {MAX_HEADERS} header lines", 400)
        del lines[MAX_HEADERS + 1 :]

    first = lines[0]
    msg: SipMessage
    is_response = first[:4].upper() == "SIP/"
    if is_response:
        m = _STATUS_LINE_RE.match(first)
        if m is None:
            raise SipParseError("Malformed status line", None)
        if m.group(1) != "2" or m.group(2) != "0":
            raise SipParseError("Unsupported SIP version in response", None)
        code = int(m.group(3))
        if code < 100:
            raise SipParseError("Status code out of range", None)
        msg = Response(code, "", [], b"")
        msg.reason = m.group(4) or ""
    else:
        parts = first.split(" ")
        if len(parts) == 3 and parts[0] and parts[1] and parts[2]:
            method, uri, version = parts
            msg = Request(method, uri, [], b"", version)
            if not _valid_method(method):
                error = error or ("Bad Request: malformed method", 400)
            elif "\t" in uri:
                error = error or ("Bad Request: white space in Request-URI", 400)
            elif version != SIP_VERSION:
                if _VERSION_RE.match(version) is None:
                    error = error or ("Bad Request: malformed SIP version", 400)
                elif version.upper() != SIP_VERSION:
                    error = error or ("Version Not Supported", 505)
        else:
            # Embedded LWS in the Request-URI, several SP between the
            # elements, SP at the end (RFC 4475 lwsruri, lwsstart, trws).
            msg = Request(parts[0], "", [], b"")
            error = error or ("Bad Request: malformed Request-Line", 400)

    headers = msg.headers
    lengths = None
    get_entry = _NAME_CACHE.get
    start_error = error
    folded = False
    it = iter(lines)
    next(it)
    # The common case, kept tight: no folded lines.
    for line in it:
        colon = line.find(":")
        if colon > 0:
            entry = get_entry(line[:colon]) or _name_entry(line[:colon])
            if entry is not None:
                current = [entry[0], entry[1], line[colon + 1 :].strip(" \t")]
                headers.append(current)
                if entry[0] == "content-length":
                    if lengths is None:
                        lengths = [current]
                    else:
                        lengths.append(current)
                continue
        if line:
            if line[0] == " " or line[0] == "\t":
                folded = True
                break
            error = error or (f"Bad Request: malformed header line {line[:40]!r}", 400)
    if folded:
        # Start again with the loop that joins continuation lines.
        error = start_error
        del headers[:]
        lengths = None
        it = iter(lines)
        next(it)
        current: Optional[list] = None
        for line in it:
            if not line:
                continue
            c = line[0]
            if c == " " or c == "\t":
                # Folded continuation: the line break and leading white
                # space count as one SP (RFC 3261 section 7.3.1).
                if current is None:
                    error = error or ("Bad Request: continuation line without header", 400)
                    continue
                v = current[2]
                current[2] = (v + " " + line.strip(" \t")) if v else line.strip(" \t")
                continue
            colon = line.find(":")
            entry = _name_entry(line[:colon]) if colon > 0 else None
            if entry is None:
                error = error or (f"Bad Request: malformed header line {line[:40]!r}", 400)
                current = None
                continue
            current = [entry[0], entry[1], line[colon + 1 :].strip(" \t")]
            headers.append(current)
            if entry[0] == "content-length":
                if lengths is None:
                    lengths = [current]
                else:
                    lengths.append(current)

    if error is None:
        if lengths is None:
            if stream:
                error = ("Bad Request: Content-Length required on stream transports", 400)
            else:
                msg.body = rest
        elif len(lengths) > 1:
            error = ("Bad Request: more than one Content-Length header", 400)
        else:
            value = lengths[0][2]
            if not (value.isdigit() and value.isascii()) or len(value) > 10:
                error = ("Bad Request: malformed Content-Length", 400)
            else:
                length = int(value)
                if length > len(rest):
                    error = ("Bad Request: body shorter than Content-Length", 400)
                else:
                    msg.body = rest if length == len(rest) else rest[:length]
    if error is not None:
        reason, status = error
        if is_response:
            raise SipParseError(reason, None)
        if status is not None and not _respondable(msg):
            status = None
        raise SipParseError(reason, status, msg)
    msg.received = data
    return msg


REASONS = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    422: "Session Interval Too Small",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    493: "Undecipherable",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}
