# -*- test-case-name: rustpbx_py.test.test_digest -*-
"""
HTTP Digest as SIP uses it (RFC 3261 section 22.4, RFC 7616, RFC 8760):
the hashes, the challenge text a server sends and the credentials it reads.

Pure functions over text: no clock, no randomness, no I/O.  The auth module
(L{rustpbx_py.modules.auth}) adds nonces, users and policy on top.

Algorithms: C{MD5} and C{SHA-256} with their C{-sess} variants.  RFC 8760
lets a SIP server offer SHA-256 and MD5 together so that old phones keep
working while new ones pick the stronger hash.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Dict, Iterable, Optional

from rustpbx_py.sip.headers import parse_auth_params

__all__ = [
    "DigestError",
    "ALGORITHMS",
    "normalize_algorithm",
    "base_algorithm",
    "hash_hex",
    "compute_ha1",
    "session_ha1",
    "compute_ha2",
    "compute_response",
    "Credentials",
    "parse_credentials",
    "format_challenge",
    "verify_response",
]


class DigestError(ValueError):
    """Credentials that cannot be used; the message says which parameter."""


#: Canonical spelling of each supported algorithm -> hashlib name.
ALGORITHMS: Dict[str, str] = {
    "MD5": "md5",
    "MD5-sess": "md5",
    "SHA-256": "sha256",
    "SHA-256-sess": "sha256",
}

_CANONICAL = {name.lower(): name for name in ALGORITHMS}
#: Spellings already seen -> canonical (every request names its algorithm).
_SPELLINGS: Dict[str, str] = {name: name for name in ALGORITHMS}
#: Canonical spelling -> hash constructor.
_HASHES = {name: getattr(hashlib, hashlib_name) for name, hashlib_name in ALGORITHMS.items()}


def normalize_algorithm(name: Optional[str]) -> str:
    """
    The canonical spelling of an algorithm token (the token is
    case-insensitive); a missing one means MD5 (RFC 7616 section 3.3).

    @raise DigestError: for an algorithm we do not implement.
    """
    if not name:
        return "MD5"
    canonical = _SPELLINGS.get(name)
    if canonical is not None:
        return canonical
    canonical = _CANONICAL.get(name.strip().lower())
    if canonical is None:
        raise DigestError(f"unsupported digest algorithm {name!r}")
    if len(_SPELLINGS) < 64:
        _SPELLINGS[name] = canonical
    return canonical


def base_algorithm(algorithm: str) -> str:
    """C{SHA-256-sess} -> C{SHA-256}: the hash an HA1 is stored under."""
    algorithm = normalize_algorithm(algorithm)
    return algorithm[:-5] if algorithm.endswith("-sess") else algorithm


def hash_hex(algorithm: str, text: str) -> str:
    """Lower-case hex of the algorithm's hash of C{text} in UTF-8."""
    return _HASHES[normalize_algorithm(algorithm)](text.encode("utf-8")).hexdigest()


def compute_ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    """
    H(username:realm:password): what a server may store instead of the
    password (one value per realm and base algorithm).
    """
    return hash_hex(algorithm, f"{username}:{realm}:{password}")


def session_ha1(algorithm: str, ha1: str, nonce: str, cnonce: str) -> str:
    """The C{-sess} HA1: H(H(username:realm:password):nonce:cnonce)."""
    return hash_hex(algorithm, f"{ha1}:{nonce}:{cnonce}")


def compute_ha2(algorithm: str, method: str, uri: str, qop: Optional[str] = None, body: bytes = b"") -> str:
    """H(method:uri), or H(method:uri:H(body)) for C{qop=auth-int}."""
    if qop == "auth-int":
        body_hash = hashlib.new(ALGORITHMS[normalize_algorithm(algorithm)], body).hexdigest()
        return hash_hex(algorithm, f"{method}:{uri}:{body_hash}")
    return hash_hex(algorithm, f"{method}:{uri}")


def compute_response(
    algorithm: str,
    ha1: str,
    method: str,
    uri: str,
    nonce: str,
    nc: Optional[str] = None,
    cnonce: Optional[str] = None,
    qop: Optional[str] = None,
    body: bytes = b"",
) -> str:
    """
    The C{response} parameter a client computes from a (plain) HA1.

    With C{qop} it is H(HA1:nonce:nc:cnonce:qop:HA2) (RFC 7616 3.4.1);
    without, the RFC 2069 form H(HA1:nonce:HA2) that RFC 3261 still allows.
    For C{-sess} algorithms the session HA1 is derived here from C{ha1}.
    """
    algorithm = normalize_algorithm(algorithm)
    if algorithm.endswith("-sess"):
        if not cnonce:
            raise DigestError(f"{algorithm} needs a cnonce")
        ha1 = session_ha1(algorithm, ha1, nonce, cnonce)
    ha2 = compute_ha2(algorithm, method, uri, qop, body)
    if qop:
        if not nc or not cnonce:
            raise DigestError("qop given without nc and cnonce")
        return hash_hex(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return hash_hex(algorithm, f"{ha1}:{nonce}:{ha2}")


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_challenge(
    realm: str,
    nonce: str,
    algorithm: str = "MD5",
    qop: Optional[Iterable[str]] = ("auth",),
    opaque: Optional[str] = None,
    stale: bool = False,
) -> str:
    """
    The value of one WWW-Authenticate or Proxy-Authenticate header.

    The algorithm is always written, even for MD5: RFC 8760 servers offer
    several challenges and the client tells them apart by this token.
    """
    parts = [f"realm={_quote(realm)}", f"nonce={_quote(nonce)}"]
    if opaque is not None:
        parts.append(f"opaque={_quote(opaque)}")
    if stale:
        parts.append("stale=true")
    parts.append(f"algorithm={normalize_algorithm(algorithm)}")
    if qop:
        parts.append(f"qop={_quote(','.join(qop))}")
    return "Digest " + ", ".join(parts)


class Credentials:
    """
    A parsed Authorization or Proxy-Authorization header value.

    Parameter values are kept as sent; C{algorithm} is canonical and C{qop}
    and C{nc} are normalised (lower case, 8 hex digits) because they feed
    the hash.
    """

    __slots__ = (
        "username",
        "realm",
        "nonce",
        "uri",
        "response",
        "algorithm",
        "cnonce",
        "nc",
        "qop",
        "opaque",
        "params",
    )

    def __init__(
        self,
        username: str,
        realm: str,
        nonce: str,
        uri: str,
        response: str,
        algorithm: str = "MD5",
        cnonce: Optional[str] = None,
        nc: Optional[str] = None,
        qop: Optional[str] = None,
        opaque: Optional[str] = None,
        params: Optional[Dict[str, str]] = None,
    ) -> None:
        self.username = username
        self.realm = realm
        self.nonce = nonce
        self.uri = uri
        self.response = response
        self.algorithm = algorithm
        self.cnonce = cnonce
        self.nc = nc
        self.qop = qop
        self.opaque = opaque
        self.params = params if params is not None else {}

    @property
    def nonce_count(self) -> int:
        """C{nc} as a number; 0 when the client sent none (no qop)."""
        return int(self.nc, 16) if self.nc else 0

    def __repr__(self) -> str:
        return f"<Credentials {self.username}@{self.realm} {self.algorithm} nc={self.nc}>"


def parse_credentials(value: str) -> Credentials:
    """
    Parse C{Digest username="...", realm="...", ...}.

    @raise DigestError: when the scheme is not Digest, a required parameter
        (username, realm, nonce, uri, response) is missing, the algorithm is
        unsupported, or qop is given without a well-formed nc and cnonce.
    """
    scheme, params = parse_auth_params(value)
    if scheme.lower() != "digest":
        raise DigestError(f"authorization scheme {scheme!r} is not Digest")
    missing = [k for k in ("username", "realm", "nonce", "uri", "response") if k not in params]
    if missing:
        raise DigestError(f"Digest credentials without {', '.join(missing)}")
    algorithm = normalize_algorithm(params.get("algorithm"))
    qop = params.get("qop")
    nc = params.get("nc")
    cnonce = params.get("cnonce")
    if qop is not None:
        qop = qop.strip().lower()
        if qop not in ("auth", "auth-int"):
            raise DigestError(f"unsupported qop {qop!r}")
        if not nc or not cnonce:
            raise DigestError("qop given without nc and cnonce")
        nc = nc.strip()
        if len(nc) != 8:
            raise DigestError(f"nc {nc!r} is not 8 hex digits")
        try:
            int(nc, 16)
        except ValueError:
            raise DigestError(f"nc {nc!r} is not 8 hex digits")
        nc = nc.lower()
    elif algorithm.endswith("-sess") and not cnonce:
        raise DigestError(f"{algorithm} needs a cnonce")
    return Credentials(
        username=params["username"],
        realm=params["realm"],
        nonce=params["nonce"],
        uri=params["uri"],
        response=params["response"].strip().lower(),
        algorithm=algorithm,
        cnonce=cnonce,
        nc=nc if qop is not None else None,
        qop=qop,
        opaque=params.get("opaque"),
        params=params,
    )


def verify_response(credentials: Credentials, ha1: str, method: str, body: bytes = b"") -> bool:
    """
    Whether C{credentials.response} is right for a plain HA1 (of the
    credentials' base algorithm), compared in constant time.
    """
    try:
        expected = compute_response(
            credentials.algorithm,
            ha1,
            method,
            credentials.uri,
            credentials.nonce,
            credentials.nc,
            credentials.cnonce,
            credentials.qop,
            body,
        )
    except DigestError:
        return False
    return hmac.compare_digest(expected.encode("ascii"), credentials.response.encode("ascii", "replace"))
