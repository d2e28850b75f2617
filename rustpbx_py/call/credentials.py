# -*- test-case-name: rustpbx_py.test.test_b2bua -*-
"""Answering a carrier's digest challenge with a trunk's credentials."""

from __future__ import annotations

import os
from typing import Any, Optional, Tuple

from rustpbx_py.sip.digest import compute_ha1, compute_response, normalize_algorithm
from rustpbx_py.sip.headers import parse_auth_params


def build_authorization(challenge: str, method: str, uri: str, username: str, password: str, nc: int = 1) -> str:
    """
    The Authorization / Proxy-Authorization value answering C{challenge}
    (a WWW-Authenticate or Proxy-Authenticate value), RFC 7616 client side:
    C{qop=auth} when offered, else the RFC 2069 form.  C{nc} is the
    nonce-count: 1 for a fresh challenge, one more for each later request
    that reuses the same nonce.
    """
    _, params = parse_auth_params(challenge)
    realm = params.get("realm", "")
    nonce = params.get("nonce", "")
    algorithm = normalize_algorithm(params.get("algorithm"))
    qops = [q.strip() for q in params.get("qop", "").split(",") if q.strip()]
    qop = "auth" if "auth" in qops else None
    nc_text = f"{nc:08x}" if qop else None
    cnonce = os.urandom(8).hex() if qop or algorithm.endswith("-sess") else None
    ha1 = compute_ha1(algorithm, username, realm, password)
    response = compute_response(algorithm, ha1, method, uri, nonce, nc_text, cnonce, qop)
    parts = [
        f'username="{username}"',
        f'realm="{realm}"',
        f'nonce="{nonce}"',
        f'uri="{uri}"',
        f'response="{response}"',
        f"algorithm={params.get('algorithm') or 'MD5'}",
    ]
    if qop:
        parts += [f"qop={qop}", f"nc={nc_text}", f'cnonce="{cnonce}"']
    if "opaque" in params:
        parts.append(f'opaque="{params["opaque"]}"')
    return "Digest " + ", ".join(parts)


def challenge_of(response: Any) -> Optional[str]:
    """The challenge of a 401 (WWW-Authenticate) or 407 (Proxy-Authenticate)."""
    return response.get("www-authenticate" if response.status == 401 else "proxy-authenticate")


def trunk_authorization(trunk: Any, response: Any, method: str, uri: str) -> Optional[Tuple[str, str]]:
    """
    The (Authorization or Proxy-Authorization, value) header answering a
    carrier's 401/407 C{response} with C{trunk}'s username and password;
    None when the trunk has no credentials or the response no challenge.
    """
    username = getattr(trunk, "username", None)
    password = getattr(trunk, "password", None)
    if not username or password is None:
        return None
    challenge = challenge_of(response)
    if not challenge:
        return None
    name = "Authorization" if response.status == 401 else "Proxy-Authorization"
    return name, build_authorization(challenge, method, uri, username, password)
