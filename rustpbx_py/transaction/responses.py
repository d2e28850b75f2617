# -*- test-case-name: rustpbx_py.test.test_transaction -*-
"""Building responses and identifiers the way RFC 3261 section 8.2.6 says."""

from __future__ import annotations

from typing import Iterable, Optional, Tuple

from rustpbx_py.randomness import random_hex
from rustpbx_py.sip.message import REASONS, Request, Response

MAGIC_COOKIE = "z9hG4bK"

#: Headers a response copies from its request (RFC 3261 8.2.6.2).
_COPIED = ("via", "from", "to", "call-id", "cseq")


def new_branch() -> str:
    """A fresh RFC 3261 branch (magic cookie + 16 random hex digits)."""
    return MAGIC_COOKIE + random_hex(8)


def new_tag() -> str:
    """A fresh From/To tag."""
    return random_hex(5)


def new_call_id(suffix: str) -> str:
    """A fresh Call-ID ending in C{@suffix} (RustPBX's callid_suffix)."""
    return f"{random_hex(10)}@{suffix}" if suffix else random_hex(12)


def build_response(
    request: Request,
    status: int,
    reason: str = "",
    headers: Iterable[Tuple[str, str]] = (),
    body: bytes = b"",
    to_tag: Optional[str] = None,
    server: Optional[str] = None,
) -> Response:
    """
    A response to C{request}: Via, From, To, Call-ID and CSeq copied, a To
    tag added when the request had none and the status is above 100, then
    the extra C{headers} and C{Server}.
    """
    copied = []
    for h in request.headers:
        if h[0] in _COPIED:
            copied.append([h[0], h[1], h[2]])
    response = Response(status, reason or REASONS.get(status, ""), copied, body)
    if to_tag and status > 100:
        for h in copied:
            if h[0] == "to":
                if ";tag=" not in h[2].replace(" ", "").lower():
                    h[2] = f"{h[2]};tag={to_tag}"
                break
    for name, value in headers:
        response.add(name, value)
    if server and not response.has("server"):
        response.add("Server", server)
    return response
