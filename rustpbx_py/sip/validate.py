# -*- test-case-name: rustpbx_py.test.test_sip_validate,rustpbx_py.test.test_sip_torture -*-
"""
The semantic checks a server makes on a parsed message before a
transaction sees it (RFC 3261 sections 8.2 and 16.3, RFC 4475 section 3).

L{parse_message} already refused what cannot be framed or read (start
line, header lines, Content-Length); this module looks at the values of
the headers every request must carry and answers the way a registrar and
back-to-back proxy should: 400 for malformed or missing mandatory headers,
416 for a Request-URI scheme we cannot route, 483 when Max-Forwards is
exhausted, 420 with C{Unsupported} for unknown Require option-tags, 415
for a session body we cannot read, 406 when the client accepts no SDP,
and C{None} (drop) when no response could be addressed.

Cost matters: this runs on every request.  One pass over the headers picks
out the ones of interest; only the Request-URI, the top Via, From, To and
Contact are parsed.

This module imports nothing else of ours but L{rustpbx_py.sip}.
"""

from __future__ import annotations

from typing import Dict, FrozenSet, Iterable, List, Optional, Sequence, Tuple

from rustpbx_py.sip.headers import HeaderError, NameAddr, Via, parse_content_type
from rustpbx_py.sip.message import Request, Response, SipMessage, split_list

__all__ = [
    "Rejection",
    "check_request",
    "check_response",
    "check_message",
    "DEFAULT_SUPPORTED",
    "SESSION_BODY_TYPES",
    "MAX_CSEQ",
]

#: Option-tags we implement unless the caller says otherwise.
DEFAULT_SUPPORTED: FrozenSet[str] = frozenset({"path", "outbound", "timer", "100rel", "replaces", "gruu"})

#: Body types a request that carries a session description may have.
SESSION_BODY_TYPES: FrozenSet[str] = frozenset(
    {"application/sdp", "multipart/mixed", "multipart/alternative", "multipart/related"}
)

#: Methods whose body is a session description (RFC 3261, 3262, 3311).
SESSION_METHODS = frozenset({"INVITE", "UPDATE", "PRACK", "ACK"})

#: Methods whose Contact the layers above use (dialog targets, bindings):
#: only these have their Contact checked.
CONTACT_METHODS = frozenset({"INVITE", "REGISTER", "SUBSCRIBE", "NOTIFY", "REFER", "UPDATE", "PRACK"})

#: CSeq numbers are below 2**31 (RFC 3261 section 8.1.1.5).
MAX_CSEQ = 2**31 - 1

#: Request-URI schemes a PBX can route (RFC 3261 section 16.3, 19.1; RFC 3966).
ROUTABLE_SCHEMES = frozenset({"sip", "sips", "tel"})

#: Headers that may appear only once in a request.
_SINGLE = ("from", "to", "call-id", "cseq", "max-forwards", "content-type", "content-length")

_INTERESTING = frozenset(
    {
        "via",
        "from",
        "to",
        "call-id",
        "cseq",
        "max-forwards",
        "content-type",
        "content-length",
        "content-encoding",
        "contact",
        "require",
        "proxy-require",
        "date",
        "accept",
    }
)

_NICE_NAMES = {
    "from": "From",
    "to": "To",
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "max-forwards": "Max-Forwards",
    "content-type": "Content-Type",
    "content-length": "Content-Length",
}

_MAGIC_COOKIE = "z9hG4bK"
_SDP_ACCEPTING = frozenset({"application/sdp", "application/*", "*/*"})
_BROADCAST = frozenset({"255.255.255.255", "0.0.0.0"})
_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")


class Rejection:
    """
    Why a message is refused and what to answer.

    @ivar status: the response code to send, or L{None} to drop the
        message without answering (no usable Via, an ACK, a response).
    @ivar reason: the reason phrase; it names what was wrong.
    @ivar headers: extra header (name, value) pairs the response carries,
        e.g. C{[("Unsupported", "foo")]} with a 420.
    """

    __slots__ = ("status", "reason", "headers")

    def __init__(self, status: Optional[int], reason: str, headers: Sequence[Tuple[str, str]] = ()) -> None:
        self.status = status
        self.reason = reason
        self.headers: List[Tuple[str, str]] = list(headers)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Rejection):
            return NotImplemented
        return (self.status, self.reason, self.headers) == (other.status, other.reason, other.headers)

    def __repr__(self) -> str:
        return f"<Rejection {self.status} {self.reason!r} {self.headers!r}>"


def _bad(reason: str) -> Rejection:
    if len(reason) > 160:
        # The reason phrase quotes the offending value: keep it short.
        reason = reason[:157] + "..."
    return Rejection(400, "Bad Request: " + reason)


_SUPPORTED_CACHE: Dict[object, FrozenSet[str]] = {}


def _supported_set(supported: Iterable[str]) -> FrozenSet[str]:
    """The option-tags lower-cased, cached per (hashable) argument."""
    try:
        cached = _SUPPORTED_CACHE.get(supported)  # type: ignore[arg-type]
    except TypeError:
        return frozenset(t.lower() for t in supported)
    if cached is None:
        cached = frozenset(t.lower() for t in supported)
        if len(_SUPPORTED_CACHE) < 64:
            _SUPPORTED_CACHE[supported] = cached  # type: ignore[index]
    return cached


def _valid_cseq(value: str) -> Optional[Tuple[int, str]]:
    parts = value.split()
    if len(parts) != 2:
        return None
    number, method = parts
    if not (number.isdigit() and number.isascii()) or len(number) > 10:
        return None
    n = int(number)
    if n > MAX_CSEQ:
        return None
    if not _TOKEN_CHARS.issuperset(method):
        return None
    return n, method


#: The headers L{check_response} reads.
_RESPONSE_HEADERS = frozenset(["via", "cseq", "call-id", "from", "to"])


def _gather(message, keys) -> Dict[str, List[str]]:
    """The values of the headers in C{keys}, by key, in one pass over the message."""
    found: Dict[str, List[str]] = {}
    for h in message.headers:
        key = h[0]
        if key in keys:
            values = found.get(key)
            if values is None:
                found[key] = [h[2]]
            else:
                values.append(h[2])
    return found


def check_request(
    req: Request,
    supported: Iterable[str] = DEFAULT_SUPPORTED,
    check_proxy_require: bool = True,
    session_types: FrozenSet[str] = SESSION_BODY_TYPES,
) -> Optional[Rejection]:
    """
    The checks a registrar / back-to-back proxy makes on a parsed request
    before handing it to a transaction.

    @param supported: the option-tags this server implements; a Require
        (and, with C{check_proxy_require}, Proxy-Require) naming another
        one gets a 420 listing it in C{Unsupported}.
    @param check_proxy_require: whether Proxy-Require is ours to honour
        too (true for a B2BUA, which plays proxy and UAS at once).
    @param session_types: the body types INVITE, UPDATE and PRACK may have;
        another one gets 415 with C{Accept: application/sdp}.
    @return: L{None} when the request may go on, else a L{Rejection};
        a rejected ACK is always dropped (status L{None}).
    """
    rejection = _check_request(req, supported, check_proxy_require, session_types)
    if rejection is not None and rejection.status is not None and req.method == "ACK":
        # No response is ever sent to an ACK (RFC 3261 section 17.2.1).
        return Rejection(None, rejection.reason)
    return rejection


def _check_request(
    req: Request,
    supported: Iterable[str],
    check_proxy_require: bool,
    session_types: FrozenSet[str],
) -> Optional[Rejection]:
    found = _gather(req, _INTERESTING)

    # -- Via: without a usable top Via no response can be addressed. -------
    vias = found.get("via")
    if not vias:
        return Rejection(None, "no Via header")
    first_line = vias[0]
    try:
        # Parsed strictly once, and cached for the layers above.
        top = req._cached("via", _strict_top_via)
        if "," in first_line:
            for element in split_list(first_line)[1:]:
                Via.parse(element, strict=True)
            if first_line[-1] == ",":
                raise HeaderError("empty Via element")
    except HeaderError as e:
        try:
            _lenient_top_via(first_line)
        except HeaderError:
            return Rejection(None, "malformed top Via")
        return _bad(f"malformed Via ({e})")
    if top.protocol.upper().replace(" ", "") != "SIP/2.0":
        return _bad(f"Via protocol {top.protocol!r} is not SIP/2.0")
    params = top.params
    if "branch" in params:
        branch = params["branch"]
        if not branch or branch == _MAGIC_COOKIE:
            # RFC 4475 badbranch: the cookie promises an RFC 3261 branch
            # but carries no transaction identifier.
            return _bad("Via branch has no transaction identifier")

    # -- mandatory headers, once each ---------------------------------------
    for key in _SINGLE:
        values = found.get(key)
        if values is None:
            if key in ("from", "to", "call-id", "cseq"):
                return _bad(f"missing {_NICE_NAMES[key]} header")
        elif len(values) > 1:
            return _bad(f"more than one {_NICE_NAMES[key]} header")

    call_id = found["call-id"][0]
    if not call_id or not call_id.isprintable() or " " in call_id:
        return _bad("malformed Call-ID")

    cseq = _valid_cseq(found["cseq"][0])
    if cseq is None:
        return _bad("malformed CSeq (a number below 2**31 and a method)")
    if cseq[1] != req.method:
        return _bad(f"CSeq method {cseq[1]} does not match the request method")

    max_forwards = None
    mf = found.get("max-forwards")
    if mf is not None:
        value = mf[0]
        # Leading zeros are fine (RFC 4475 wsinv: 0068).
        if not (value.isdigit() and value.isascii()) or len(value) > 10 or int(value) > 255:
            return _bad("Max-Forwards must be a number from 0 to 255")
        max_forwards = int(value)

    # -- Request-URI --------------------------------------------------------
    uri_text = req.uri
    colon = uri_text.find(":")
    scheme = uri_text[:colon].lower() if colon > 0 else ""
    if not scheme or not _is_scheme(scheme):
        return _bad("malformed Request-URI")
    if scheme not in ROUTABLE_SCHEMES:
        return Rejection(416, "Unsupported URI Scheme")
    try:
        ruri = req.ruri
    except HeaderError as e:
        return _bad(f"malformed Request-URI ({e})")
    if ruri.headers:
        # RFC 3261 section 19.1.5: headers are not allowed in a
        # Request-URI (RFC 4475 escruri).
        return _bad("headers in the Request-URI")

    # -- From, To, Contact --------------------------------------------------
    try:
        from_ = req.from_addr
    except HeaderError as e:
        return _bad(f"malformed From ({e})")
    try:
        to = req.to_addr
    except HeaderError as e:
        return _bad(f"malformed To ({e})")
    if from_.wildcard or to.wildcard:
        return _bad("'*' in From or To")
    if req.method == "REGISTER" and to.uri is not None and to.uri.scheme not in ("sip", "sips"):
        # RFC 4475 unksm2: the address-of-record must be a SIP or SIPS URI.
        return _bad("the To of a REGISTER must be a sip: or sips: URI")
    contacts = found.get("contact")
    if contacts is not None and req.method in CONTACT_METHODS:
        try:
            for value in contacts:
                for element in split_list(value) if "," in value else (value,):
                    NameAddr.parse(element)
        except HeaderError as e:
            return _bad(f"malformed Contact ({e})")

    dates = found.get("date")
    if dates is not None and not dates[0].rstrip().endswith(" GMT"):
        # rfc1123-date is always GMT (RFC 3261 section 20.17; RFC 4475 baddate).
        return _bad("Date must be in GMT")

    body = req.body
    lengths = found.get("content-length")
    if lengths is not None:
        value = lengths[0].strip()
        if not (value.isdigit() and value.isascii()) or len(value) > 10 or int(value) != len(body):
            return _bad("Content-Length does not match the body")

    # -- hop limit, extensions, body ------------------------------------------
    if max_forwards == 0:
        return Rejection(483, "Too Many Hops")

    method = req.method
    if method != "ACK" and method != "CANCEL":
        # RFC 3261 section 8.2.2.3: Require is never refused on ACK/CANCEL.
        tags = found.get("require")
        if check_proxy_require:
            more = found.get("proxy-require")
            if more is not None:
                tags = (tags or []) + more
        if tags is not None:
            known = _supported_set(supported)
            unknown = []
            for value in tags:
                for tag in value.split(","):
                    tag = tag.strip()
                    if tag and tag.lower() not in known and tag not in unknown:
                        unknown.append(tag)
            if unknown:
                return Rejection(420, "Bad Extension", [("Unsupported", ", ".join(unknown))])

    content_type = found.get("content-type")
    if body and body.strip():
        if content_type is None:
            return _bad("a body without Content-Type")
        try:
            mime, _ = parse_content_type(content_type[0])
        except HeaderError:
            return _bad("malformed Content-Type")
        encodings = found.get("content-encoding")
        if encodings is not None:
            for value in encodings:
                for enc in value.split(","):
                    if enc.strip().lower() not in ("identity", ""):
                        return Rejection(415, "Unsupported Media Type", [("Accept-Encoding", "identity")])
        if method in SESSION_METHODS and mime not in session_types:
            # RFC 4475 invut; RFC 3261 section 8.2.3.
            return Rejection(415, "Unsupported Media Type", [("Accept", "application/sdp")])

    if method == "INVITE":
        accepts = found.get("accept")
        if accepts is not None:
            types = []
            for value in accepts:
                for element in value.split(","):
                    element = element.split(";", 1)[0].strip().lower()
                    if element:
                        types.append(element)
            # An empty Accept is left alone (some phones send one).
            if types and _SDP_ACCEPTING.isdisjoint(types):
                # RFC 4475 sdp01: our answer would carry SDP it cannot read.
                return Rejection(406, "Not Acceptable", [("Accept", "application/sdp")])
    return None


def strict_top_via(req) -> Optional[Via]:
    """
    The top Via of C{req} parsed strictly, once: the parse is cached on the
    message, where the transaction layer and L{check_request} find it.

    @raise HeaderError: when it does not parse strictly.
    """
    return req._cached("via", _strict_top_via)


def _strict_top_via(value: str) -> Via:
    if "," in value:
        parts = split_list(value)
        if not parts or not value.lstrip().split(",", 1)[0].strip():
            raise HeaderError(f"empty Via element in {value!r}")
        value = parts[0]
    return Via.parse(value, strict=True)


def _lenient_top_via(value: str) -> Via:
    parts = split_list(value) if "," in value else [value]
    if not parts:
        raise HeaderError("empty Via")
    return Via.parse(parts[0])


_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789+-.")


def _is_scheme(scheme: str) -> bool:
    return "a" <= scheme[0] <= "z" and _SCHEME_CHARS.issuperset(scheme)


def check_response(resp: Response) -> Optional[Rejection]:
    """
    The checks a proxy makes on a response before matching it to a
    transaction.  A bad response is never answered, so every rejection
    here has status L{None}: drop.

    Refused: no usable top Via, a malformed CSeq (RFC 4475 scalarlg), a
    missing Call-ID, From or To, and a second Via whose address is a
    broadcast one (RFC 4475 bcast: forwarding it would flood the network).
    """
    found = _gather(resp, _RESPONSE_HEADERS)
    vias = found.get("via")
    if not vias:
        return Rejection(None, "response without Via")
    try:
        # Cached for the transaction layer, which matches on its branch.
        resp._cached("via", _lenient_top_via)
    except HeaderError:
        return Rejection(None, "response with a malformed top Via")
    elements = split_list(vias[0]) if "," in vias[0] else [vias[0]]
    for key in ("cseq", "call-id", "from", "to"):
        values = found.get(key)
        if values is None or len(values) > 1:
            return Rejection(None, f"response without exactly one {_NICE_NAMES[key]}")
    if _valid_cseq(found["cseq"][0]) is None:
        return Rejection(None, "response with a malformed CSeq")
    # The Via the response would be forwarded to.
    second = elements[1] if len(elements) > 1 else None
    if second is None and len(vias) > 1:
        rest = split_list(vias[1])
        second = rest[0] if rest else None
    if second is not None:
        try:
            host, _ = Via.parse(second).response_address()
        except HeaderError:
            return Rejection(None, "response with a malformed second Via")
        if host in _BROADCAST:
            return Rejection(None, "response would be forwarded to a broadcast address")
    return None


def check_message(msg: SipMessage, supported: Iterable[str] = DEFAULT_SUPPORTED) -> Optional[Rejection]:
    """L{check_request} or L{check_response}, whichever C{msg} needs."""
    if msg.is_request:
        return check_request(msg, supported)  # type: ignore[arg-type]
    return check_response(msg)  # type: ignore[arg-type]
