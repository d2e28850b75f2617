# -*- test-case-name: rustpbx_py.test.test_sip_headers -*-
"""
The structured headers a SIP element has to read: URIs, Via, name-addr
(From, To, Contact, Route, ...), and generic parameter lists.

Each type parses from text and prints back to text; the layers above parse
only the headers they use, only when they use them.
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
    "HeaderError",
]


class HeaderError(ValueError):
    """A header value that does not follow its grammar."""


_HOSTPORT_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[^:\[\]]+)(?::(\d{1,5}))?$")
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+\-.]*):")
_VIA_RE = re.compile(
    r"^\s*([A-Za-z0-9\-.!%*_+`'~]+)\s*/\s*([A-Za-z0-9\-.!%*_+`'~]+)\s*/\s*"
    r"([A-Za-z0-9\-.!%*_+`'~]+)\s+(.+)$"
)


def parse_params(text: str) -> Dict[str, Optional[str]]:
    """
    Parse C{;a=b;c} parameters (the leading C{;} optional) into an ordered
    dict with lower-cased names; a flag parameter maps to L{None}.  Quoted
    values keep their quotes out.
    """
    params: Dict[str, Optional[str]] = {}
    if not text:
        return params
    for part in _split_outside_quotes(text, ";"):
        part = part.strip()
        if not part:
            continue
        if "=" in part:
            k, v = part.split("=", 1)
            v = v.strip()
            if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
                v = v[1:-1]
            params[k.strip().lower()] = v
        else:
            params[part.lower()] = None
    return params


def format_params(params: Dict[str, Optional[str]]) -> str:
    """Print parameters back as C{;a=b;c}."""
    out = []
    for k, v in params.items():
        if v is None:
            out.append(";" + k)
        else:
            if v == "" or any(c in v for c in ' ;,"'):
                v = '"' + v.replace('"', '\\"') + '"'
            out.append(f";{k}={v}")
    return "".join(out)


def _split_outside_quotes(text: str, sep: str) -> List[str]:
    if '"' not in text:
        return text.split(sep)
    parts = []
    quoted = False
    start = 0
    i = 0
    while i < len(text):
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
    m = _HOSTPORT_RE.match(text.strip())
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


class URI:
    """
    A SIP, SIPS or TEL URI (RFC 3261 section 19.1, RFC 3966).

    C{user} is unescaped (C{%23} -> C{#}); C{str()} escapes nothing that
    was not escaped, by keeping the original text until something changes.
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
        """Parse a URI; raises L{HeaderError} for anything unusable."""
        text = text.strip()
        m = _SCHEME_RE.match(text)
        if m is None:
            raise HeaderError(f"URI without scheme: {text!r}")
        scheme = m.group(1).lower()
        rest = text[m.end() :]
        uri = cls(scheme)
        if scheme == "tel":
            number, _, params = rest.partition(";")
            uri.user = unquote(number)
            uri.params = parse_params(params)
            uri._text = text
            return uri
        if scheme not in ("sip", "sips"):
            # Other schemes (http:, mailto:, urn:, ...) are kept as text.
            uri.host = rest
            uri._text = text
            return uri
        headers = ""
        if "?" in rest:
            rest, headers = rest.split("?", 1)
        if "@" in rest:
            userinfo, hostpart = rest.rsplit("@", 1)
            if ":" in userinfo:
                user, password = userinfo.split(":", 1)
                uri.password = unquote(password)
            else:
                user = userinfo
            if not user:
                raise HeaderError(f"empty user part in {text!r}")
            uri.user = unquote(user)
        else:
            hostpart = rest
        hostport, _, params = hostpart.partition(";")
        if not hostport:
            raise HeaderError(f"URI without host: {text!r}")
        uri.host, uri.port = split_hostport(hostport)
        uri.params = parse_params(params)
        uri.headers = headers
        uri._text = text
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
            userinfo = _escape_user(self.user)
            if self.password is not None:
                userinfo += ":" + self.password
            userinfo += "@"
        text = f"{self.scheme}:{userinfo}{join_hostport(self.host, self.port)}"
        text += format_params(self.params)
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

    def __repr__(self) -> str:
        return f"<URI {self}>"


_USER_SAFE = set(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'()&=+$,;?/"
)


def _escape_user(user: str) -> str:
    return "".join(c if c in _USER_SAFE else "".join(f"%{b:02X}" for b in c.encode()) for c in user)


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
    def parse(cls, text: str) -> "Via":
        m = _VIA_RE.match(text)
        if m is None:
            raise HeaderError(f"malformed Via {text!r}")
        name, version, transport, rest = m.groups()
        sent_by, _, params = rest.partition(";")
        host, port = split_hostport(sent_by.strip())
        return cls(transport, host, port, parse_params(params), f"{name}/{version}")

    @property
    def branch(self) -> Optional[str]:
        return self.params.get("branch")

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


_NAMEADDR_RE = re.compile(r'^\s*(?:"((?:[^"\\]|\\.)*)"|([^<"]*?))\s*<([^>]*)>(.*)$', re.S)


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
        text = text.strip()
        if text == "*":
            na = cls(None)
            na.wildcard = True
            return na
        m = _NAMEADDR_RE.match(text)
        if m is not None:
            quoted, plain, uri_text, params = m.groups()
            display = quoted if quoted is not None else (plain.strip() or None)
            if quoted is not None:
                display = re.sub(r"\\(.)", r"\1", quoted)
            return cls(URI.parse(uri_text), display, parse_params(params))
        if "<" in text or ">" in text:
            raise HeaderError(f"malformed name-addr {text!r}")
        # addr-spec: parameters after the URI belong to the header.
        uri_text, _, params = text.partition(";")
        if " " in uri_text.strip():
            raise HeaderError(f"malformed addr-spec {text!r}")
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
    for part in _split_outside_quotes(rest, ","):
        part = part.strip()
        if not part or "=" not in part:
            continue
        k, v = part.split("=", 1)
        v = v.strip()
        if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
            v = re.sub(r"\\(.)", r"\1", v[1:-1])
        params[k.strip().lower()] = v
    return scheme, params
