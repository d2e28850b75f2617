# -*- test-case-name: rustpbx_py.test.test_sip_headers -*-
"""
The structured headers a SIP element has to read: URIs, Via, name-addr
(From, To, Contact, Route, ...), and generic parameter lists.

Each type parses from text and prints back to text; the layers above parse
only the headers they use, only when they use them.  Parsing follows the
RFC 3261 section 25 grammar where it says MUST, and is lenient where real
devices differ; each leniency is named in a comment and has a test.
"""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Tuple
from urllib.parse import unquote

__all__ = [
    "URI",
    "Via",
    "NameAddr",
    "parse_params",
    "format_params",
    "parse_auth_params",
    "parse_content_type",
    "split_hostport",
    "join_hostport",
    "bare_host",
    "HeaderError",
]


class HeaderError(ValueError):
    """A header value that does not follow its grammar."""


#: host[:port]; the host is a bracketed IPv6 reference, or a hostname or
#: IPv4 address.  Leniency: C{_} is accepted in host names (Windows and
#: some embedded devices use names like C{my_pbx.local}).
_HOSTPORT_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._]+)(?::(\d{1,5}))?$")
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+\-.]*):")
_VIA_RE = re.compile(
    r"^\s*([A-Za-z0-9\-.!%*_+`'~]+)\s*/\s*([A-Za-z0-9\-.!%*_+`'~]+)\s*/\s*"
    r"([A-Za-z0-9\-.!%*_+`'~]+)\s+(.+)$",
    re.S,
)
_TOKEN_RE = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")
#: An unquoted display name: tokens separated by LWS.  Leniency: octets
#: above 0x7F are accepted (phones that send UTF-8 names without quotes).
_DISPLAY_RE = re.compile(
    "^[A-Za-z0-9\\-.!%*_+`'~\u0080-\U0010ffff]+(?:[ \\t]+[A-Za-z0-9\\-.!%*_+`'~\u0080-\U0010ffff]+)*$"
)
_QUOTED_PAIR_RE = re.compile(r"\\(.)", re.S)
_WS = frozenset(" \t\r\n")


def _unescape(text: str) -> str:
    """%HH escapes decoded (UTF-8, undecodable octets kept as surrogates)."""
    if "%" not in text:
        return text
    return unquote(text, "utf-8", "surrogateescape")


def parse_params(text: str, strict: bool = False) -> Dict[str, Optional[str]]:
    """
    Parse C{;a=b;c} parameters (the leading C{;} optional) into an ordered
    dict with lower-cased names; a flag parameter maps to L{None}.  Quoted
    values keep their quotes out.

    @param strict: raise L{HeaderError} for empty parameters (C{;;}, a
        trailing C{;}) and unterminated quotes instead of skipping them.
    """
    params: Dict[str, Optional[str]] = {}
    if not text:
        return params
    parts = split_outside_quotes(text, ";")
    if strict:
        if parts[0].strip():
            raise HeaderError(f"text before the first ';' in parameters {text!r}")
        if '"' in text and not _quotes_balanced(text):
            raise HeaderError(f"unterminated quoted string in {text!r}")
        parts = parts[1:]
    for part in parts:
        eq = part.find("=")
        if eq < 0:
            part = part.strip()
            if part:
                params[part.lower()] = None
            elif strict:
                raise HeaderError(f"empty parameter in {text!r}")
            continue
        k = part[:eq].strip().lower()
        v = part[eq + 1 :].strip()
        if v[:1] == '"' and len(v) >= 2 and v[-1] == '"':
            v = v[1:-1]
            if "\\" in v:
                v = _QUOTED_PAIR_RE.sub(r"\1", v)
        if not k and strict:
            raise HeaderError(f"parameter without a name in {text!r}")
        params[k] = v
    return params


def format_params(params: Dict[str, Optional[str]]) -> str:
    """Print parameters back as C{;a=b;c}."""
    out = []
    for k, v in params.items():
        if v is None:
            out.append(";" + k)
        else:
            if not v or _NEEDS_QUOTES.search(v) is not None:
                v = '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
            out.append(f";{k}={v}")
    return "".join(out)


#: A parameter value holding one of these is printed as a quoted string.
_NEEDS_QUOTES = re.compile(r'[ ;,"\\]')


def _quotes_balanced(text: str) -> bool:
    quoted = False
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if quoted and ch == "\\":
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
        i += 1
    return not quoted


def split_outside_quotes(text: str, sep: str) -> List[str]:
    """Split C{text} on C{sep} where it stands outside double quotes
    (backslash escapes inside quotes respected)."""
    if '"' not in text:
        return text.split(sep)
    pieces = text.split('"')
    if "\\" not in text and len(pieces) % 2:
        # Balanced quotes without escapes: even pieces are outside quotes.
        parts: List[str] = []
        current = ""
        for i, piece in enumerate(pieces):
            if i % 2:
                current += '"' + piece + '"'
            else:
                sub = piece.split(sep)
                if len(sub) == 1:
                    current += piece
                else:
                    parts.append(current + sub[0])
                    parts.extend(sub[1:-1])
                    current = sub[-1]
        parts.append(current)
        return parts
    return _split_outside_quotes_slow(text, sep)


def _split_outside_quotes_slow(text: str, sep: str) -> List[str]:
    parts = []
    quoted = False
    start = 0
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if quoted and ch == "\\":
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
        elif ch == sep and not quoted:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return parts


def split_hostport(text: str) -> Tuple[str, Optional[int]]:
    """C{host[:port]}, IPv6 references in brackets, into (host, port)."""
    m = _HOSTPORT_RE.match(text)
    if m is None:
        m = _HOSTPORT_RE.match(text.strip(" \t"))
    if m is None:
        raise HeaderError(f"malformed host {text!r}")
    host, port = m.group(1), m.group(2)
    if port is not None:
        p = int(port)
        if p > 65535:
            raise HeaderError(f"port out of range in {text!r}")
        return host, p
    return host, None


def join_hostport(host: str, port: Optional[int]) -> str:
    """The inverse of L{split_hostport}: brackets IPv6 addresses."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return host if port is None else f"{host}:{port}"


def bare_host(host: str) -> str:
    """An IPv6 reference without its brackets, lower-cased."""
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host.lower()


#: URI parameters that must match for two SIP URIs to be equal when either
#: has them (RFC 3261 section 19.1.4).
_SIGNIFICANT_PARAMS = ("user", "ttl", "method", "maddr", "transport")


class URI:
    """
    A SIP, SIPS or TEL URI (RFC 3261 section 19.1, RFC 3966).

    C{user}, C{password} and the parameters of SIP URIs are unescaped
    (C{%23} -> C{#}); C{str()} gives back the original text, escapes and
    all, until L{changed} says a field was edited.  Other schemes
    (C{http:}, C{urn:}, ...) keep everything after the colon in C{host}.
    """

    __slots__ = ("scheme", "user", "password", "host", "port", "params", "headers", "_text")

    def __init__(
        self,
        scheme: str = "sip",
        user: Optional[str] = None,
        host: str = "",
        port: Optional[int] = None,
        params: Optional[Dict[str, Optional[str]]] = None,
        headers: str = "",
        password: Optional[str] = None,
    ) -> None:
        self.scheme = scheme
        self.user = user
        self.password = password
        self.host = host
        self.port = port
        self.params = params if params is not None else {}
        self.headers = headers
        self._text: Optional[str] = None

    @classmethod
    def parse(cls, text: str) -> "URI":
        """
        Parse a URI; raises L{HeaderError} for anything unusable: no
        scheme, white space inside, an empty user or host, a bad port.
        """
        text = text.strip()
        head = text[:4]
        if head == "sip:" or head == "SIP:":
            scheme = "sip"
            rest = text[4:]
        else:
            m = _SCHEME_RE.match(text)
            if m is None:
                raise HeaderError(f"URI without scheme: {text!r}")
            scheme = m.group(1).lower()
            rest = text[m.end() :]
        if " " in rest or "\t" in rest or "\n" in rest or "\r" in rest:
            raise HeaderError(f"white space inside URI {text!r}")
        uri = cls.__new__(cls)
        uri.scheme = scheme
        uri.user = uri.password = uri.port = None
        uri.host = uri.headers = ""
        uri.params = {}
        uri._text = text
        if scheme == "tel":
            number, _, params = rest.partition(";")
            if not number:
                raise HeaderError(f"tel URI without a number: {text!r}")
            uri.user = _unescape(number)
            uri.params = parse_params(params)
            return uri
        if scheme != "sip" and scheme != "sips":
            # Other schemes (http:, mailto:, urn:, ...) are kept as text.
            uri.host = rest
            return uri
        # The user part may hold ';', '?', ',' and '/' (RFC 3261 25.1,
        # user-unreserved) but never '@', which params and headers cannot
        # hold either: the first '@' ends the userinfo.
        at = rest.find("@")
        if at >= 0:
            userinfo = rest[:at]
            rest = rest[at + 1 :]
            colon = userinfo.find(":")
            if colon >= 0:
                uri.password = _unescape(userinfo[colon + 1 :])
                userinfo = userinfo[:colon]
            if not userinfo:
                raise HeaderError(f"empty user part in {text!r}")
            uri.user = _unescape(userinfo) if "%" in userinfo else userinfo
        q = rest.find("?")
        if q >= 0:
            uri.headers = rest[q + 1 :]
            rest = rest[:q]
        semi = rest.find(";")
        if semi >= 0:
            params = rest[semi + 1 :]
            rest = rest[:semi]
            p = parse_params(params)
            if "%" in params:
                p = {_unescape(k): (None if v is None else _unescape(v)) for k, v in p.items()}
            uri.params = p
        if not rest:
            raise HeaderError(f"URI without host: {text!r}")
        m = _HOSTPORT_RE.match(rest)
        if m is None:
            raise HeaderError(f"malformed host in URI {text!r}")
        uri.host = m.group(1)
        port = m.group(2)
        if port is not None:
            uri.port = int(port)
            if uri.port > 65535:
                raise HeaderError(f"port out of range in {text!r}")
        return uri

    def __str__(self) -> str:
        if self._text is not None:
            return self._text
        if self.scheme == "tel":
            return f"tel:{self.user}{format_params(self.params)}"
        if self.scheme not in ("sip", "sips"):
            return f"{self.scheme}:{self.host}"
        userinfo = ""
        if self.user is not None:
            userinfo = _escape(self.user, _USER_SAFE)
            if self.password is not None:
                userinfo += ":" + _escape(self.password, _PASSWORD_SAFE)
            userinfo += "@"
        text = f"{self.scheme}:{userinfo}{join_hostport(self.host, self.port)}"
        for k, v in self.params.items():
            text += ";" + _escape(k, _PARAM_SAFE)
            if v is not None:
                text += "=" + _escape(v, _PARAM_SAFE)
        if self.headers:
            text += "?" + self.headers
        return text

    def changed(self) -> "URI":
        """Forget the original text after a field was edited."""
        self._text = None
        return self

    def copy(self) -> "URI":
        u = URI(self.scheme, self.user, self.host, self.port, dict(self.params), self.headers, self.password)
        u._text = self._text
        return u

    @property
    def transport(self) -> str:
        """The transport this URI asks for (C{transport=} param or scheme)."""
        t = self.params.get("transport")
        if t:
            return t.upper()
        return "TLS" if self.scheme == "sips" else "UDP"

    def aor(self) -> str:
        """C{user@host} with the host lower-cased: a registrar's key."""
        host = bare_host(self.host)
        return f"{self.user}@{host}" if self.user is not None else host

    def equivalent(self, other: "URI") -> bool:
        """
        URI comparison per RFC 3261 section 19.1.4: user and password
        case-sensitive after unescaping, host case-insensitive, an absent
        port differs from an explicit one, the user/ttl/method/maddr/
        transport parameters must agree when either URI has them, other
        parameters only when both have them, and headers must agree.
        """
        if self.scheme != other.scheme:
            return False
        if self.scheme not in ("sip", "sips"):
            if self.scheme == "tel":
                return self.user == other.user and _lower_params(self.params) == _lower_params(other.params)
            return str(self).split(":", 1)[1] == str(other).split(":", 1)[1]
        if self.user != other.user or self.password != other.password:
            return False
        if bare_host(self.host) != bare_host(other.host) or self.port != other.port:
            return False
        a, b = _lower_params(self.params), _lower_params(other.params)
        for name in _SIGNIFICANT_PARAMS:
            if a.get(name) != b.get(name):
                return False
        for name in a.keys() & b.keys():
            if a[name] != b[name]:
                return False
        return _header_set(self.headers) == _header_set(other.headers)

    def __repr__(self) -> str:
        return f"<URI {self}>"


def _lower_params(params: Dict[str, Optional[str]]) -> Dict[str, Optional[str]]:
    return {k: (v.lower() if v is not None else None) for k, v in params.items()}


def _header_set(headers: str) -> Dict[str, str]:
    out = {}
    for part in headers.split("&"):
        if part:
            k, _, v = part.partition("=")
            out[_unescape(k).lower()] = _unescape(v)
    return out


_UNRESERVED = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'()"
_USER_SAFE = frozenset(_UNRESERVED + "&=+$,;?/")
_PASSWORD_SAFE = frozenset(_UNRESERVED + "&=+$,")
_PARAM_SAFE = frozenset(_UNRESERVED + "[]/:&+$")


def _escape(text: str, safe: frozenset) -> str:
    out = []
    for c in text:
        if c in safe:
            out.append(c)
        else:
            out.append("".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogateescape")))
    return "".join(out)


def _escape_user(user: str) -> str:
    return _escape(user, _USER_SAFE)


class Via:
    """One Via element: C{SIP/2.0/UDP host:port;branch=...;rport}."""

    __slots__ = ("protocol", "transport", "host", "port", "params")

    def __init__(
        self,
        transport: str,
        host: str,
        port: Optional[int] = None,
        params: Optional[Dict[str, Optional[str]]] = None,
        protocol: str = "SIP/2.0",
    ) -> None:
        self.protocol = protocol
        self.transport = transport.upper()
        self.host = host
        self.port = port
        self.params = params if params is not None else {}

    @classmethod
    def parse(cls, text: str, strict: bool = False) -> "Via":
        """
        Parse one Via element.  LWS is accepted around the slashes (RFC
        3261 section 25.1, RFC 4475 wsinv).

        @param strict: also reject empty parameters (RFC 4475 badinv01).
        """
        sp = text.find(" ", 8) if text[:8] == "SIP/2.0/" else -1
        if sp > 8 and _TOKEN_CHARS.issuperset(text[8:sp]):
            # The usual spelling, without LWS around the slashes.
            protocol = "SIP/2.0"
            transport = text[8:sp]
            rest = text[sp + 1 :]
        else:
            m = _VIA_RE.match(text)
            if m is None:
                raise HeaderError(f"malformed Via {text!r}")
            name, version, transport, rest = m.groups()
            protocol = f"{name}/{version}"
        semi = rest.find(";")
        if semi >= 0:
            sent_by = rest[:semi]
            params = parse_params(rest[semi:], strict)
        else:
            sent_by = rest
            params = {}
        host, port = split_hostport(sent_by)
        return cls(transport, host, port, params, protocol)

    @property
    def branch(self) -> Optional[str]:
        return self.params.get("branch")

    @property
    def received(self) -> Optional[str]:
        return self.params.get("received")

    @property
    def maddr(self) -> Optional[str]:
        return self.params.get("maddr")

    @property
    def rport(self) -> Optional[int]:
        """The C{rport} value a server filled in, or L{None}."""
        value = self.params.get("rport")
        if value and value.isdigit() and len(value) <= 5:
            return int(value)
        return None

    def sent_by(self) -> str:
        return join_hostport(self.host, self.port)

    def __str__(self) -> str:
        return f"{self.protocol}/{self.transport} {self.sent_by()}{format_params(self.params)}"

    def response_address(self, default_port: int = 5060) -> Tuple[str, int]:
        """
        Where a response to this Via goes over an unreliable transport
        (RFC 3261 section 18.2.2 and RFC 3581): maddr, else received, and
        rport when the client asked for it.
        """
        p = self.params
        host = p.get("maddr") or p.get("received") or self.host
        port = self.port or default_port
        rport = p.get("rport")
        if rport:
            try:
                port = int(rport)
            except ValueError:
                pass
        return bare_host(host), port


class NameAddr:
    """
    A name-addr or addr-spec with header parameters: the value of From, To,
    Contact, Route, Record-Route, Path, Refer-To, ...
    """

    __slots__ = ("display", "uri", "params", "wildcard")

    def __init__(
        self,
        uri: Optional[URI],
        display: Optional[str] = None,
        params: Optional[Dict[str, Optional[str]]] = None,
    ) -> None:
        self.uri = uri
        self.display = display
        self.params = params if params is not None else {}
        self.wildcard = False

    @classmethod
    def parse(cls, text: str) -> "NameAddr":
        """
        Parse a name-addr (C{"Name" <uri>;p=v}) or addr-spec (C{uri;p=v}).

        Raises L{HeaderError} for an unterminated quoted display name, a
        display name with characters a token cannot hold (C{,} C{;} ...),
        white space inside C{<>}, text between C{>} and the parameters,
        and an addr-spec holding C{?} or C{,} (RFC 3261 section 20.10: such
        URIs must be in angle brackets).
        """
        text = text.strip()
        if not text:
            raise HeaderError("empty name-addr")
        if text == "*":
            na = cls(None)
            na.wildcard = True
            return na
        lt = text.find("<")
        semi = text.find(";")
        if text[0] == '"':
            # A quoted display name; find its closing quote, skipping
            # escaped ones (a quote after an odd run of backslashes).
            pos = 1
            while True:
                q = text.find('"', pos)
                if q < 0:
                    raise HeaderError(f"unterminated quoted display name in {text!r}")
                b = q - 1
                while text[b] == "\\":
                    b -= 1
                if (q - 1 - b) % 2 == 0:
                    break
                pos = q + 1
            quoted = text[1:q]
            display: Optional[str] = _QUOTED_PAIR_RE.sub(r"\1", quoted) if "\\" in quoted else quoted
            lt = q + 1
            n = len(text)
            while lt < n and (text[lt] == " " or text[lt] == "\t"):
                lt += 1
            if text[lt : lt + 1] != "<":
                raise HeaderError(f"malformed name-addr {text!r}")
        elif lt >= 0 and (semi < 0 or lt < semi):
            plain = text[:lt].strip()
            if plain and _DISPLAY_RE.match(plain) is None:
                raise HeaderError(f"display name must be a token list or quoted: {plain!r}")
            display = plain or None
        else:
            lt = -1
        if lt >= 0:
            gt = text.find(">", lt + 1)
            if gt < 0:
                raise HeaderError(f"malformed name-addr {text!r}")
            uri_text = text[lt + 1 : gt]
            if not uri_text or uri_text[0] in _WS or uri_text[-1] in _WS:
                raise HeaderError(f"white space inside <> in {text!r}")
            params = text[gt + 1 :]
            if params:
                params = params.lstrip()
                if params and params[0] != ";":
                    raise HeaderError(f"text after '>' in {text!r}")
            return cls(URI.parse(uri_text), display, parse_params(params))
        # addr-spec: parameters after the URI belong to the header.
        if semi >= 0:
            uri_text, params = text[:semi].rstrip(), text[semi:]
        else:
            uri_text, params = text, ""
        if "<" in uri_text or ">" in uri_text or '"' in uri_text:
            raise HeaderError(f"malformed name-addr {text!r}")
        if "?" in uri_text or "," in uri_text:
            raise HeaderError(f"URI with '?' or ',' must be enclosed in <>: {text!r}")
        return cls(URI.parse(uri_text), None, parse_params(params))

    @property
    def tag(self) -> Optional[str]:
        return self.params.get("tag")

    def __str__(self) -> str:
        if self.wildcard:
            return "*"
        prefix = ""
        if self.display:
            d = self.display.replace("\\", "\\\\").replace('"', '\\"')
            prefix = f'"{d}" '
        return f"{prefix}<{self.uri}>{format_params(self.params)}"

    def __repr__(self) -> str:
        return f"<NameAddr {self}>"


def parse_auth_params(value: str) -> Tuple[str, Dict[str, str]]:
    """
    Parse a challenge or credentials header (RFC 3261 section 25.1,
    RFC 7616): C{Digest username="a", realm="b", nc=00000001} into
    (C{"Digest"}, {name: value}) with names lower-cased and quotes removed.
    """
    value = value.strip()
    scheme, _, rest = value.partition(" ")
    params: Dict[str, str] = {}
    for part in split_outside_quotes(rest, ","):
        part = part.strip()
        if not part or "=" not in part:
            continue
        k, v = part.split("=", 1)
        v = v.strip()
        if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
            v = _QUOTED_PAIR_RE.sub(r"\1", v[1:-1])
        params[k.strip().lower()] = v
    return scheme, params


def parse_content_type(value: str) -> Tuple[str, Dict[str, Optional[str]]]:
    """
    C{Application/SDP; charset=UTF-8} -> (C{"application/sdp"},
    {C{"charset"}: C{"UTF-8"}}); raises L{HeaderError} unless the media
    type is C{type/subtype} made of tokens.
    """
    mime, _, params = value.partition(";")
    mime = mime.strip().lower()
    slash = mime.find("/")
    if slash <= 0 or not _TOKEN_RE.match(mime[:slash]) or not _TOKEN_RE.match(mime[slash + 1 :]):
        raise HeaderError(f"malformed media type {value!r}")
    return mime, parse_params(params)
