# -*- test-case-name: rustpbx_py.test.test_b2bua,rustpbx_py.test.test_acl_office,rustpbx_py.test.test_outside -*-
"""
What the three benches that drive the real L{SipCore} on a L{task.Clock}
share: L{call_fakes} (the B2BUA's wire), L{sip_phones} (many scripted UDP
phones) and L{core_phones} (phones on flows, call and presence modules).

Each bench wires phones its own way; these are the pieces they would
otherwise write three times: the memory UDP socket under the real
L{SipDatagramProtocol}, a phone's request, a phone's answer to what the PBX
sent, a Via's branch and the server context modules are built with.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, List, Optional, Tuple

from twisted.internet.address import IPv4Address

from rustpbx_py.sip.headers import Via
from rustpbx_py.sip.message import Request, Response
from rustpbx_py.transaction.responses import build_response

Address = Tuple[str, int]


class MemoryUDPSocket:
    """
    The UDP transport (and socket) under a real L{SipDatagramProtocol}:
    what the PBX writes, through Twisted's C{write} or straight to
    C{socket.sendto}, is handed to C{on_write(data, address)}.
    """

    def __init__(self, address: Address, on_write: Callable[[bytes, Address], None]) -> None:
        self.address = address
        self.socket = self
        self._on_write = on_write

    def getHost(self) -> IPv4Address:
        return IPv4Address("UDP", *self.address)

    def write(self, data: bytes, addr: Address) -> None:
        self._on_write(data, addr)

    sendto = write

    def stopListening(self) -> None:
        pass


def branch_of(message: Any) -> str:
    """The branch of C{message}'s top Via ("" without one)."""
    top = message.top_via
    return (Via.parse(top).branch or "") if top else ""


def with_content_type(headers: Iterable[Tuple[str, str]], body: bytes) -> List[Tuple[str, str]]:
    """C{headers}, with an SDP Content-Type when there is a body and none is given."""
    headers = list(headers)
    if body and not any(name.lower() == "content-type" for name, _ in headers):
        headers.append(("Content-Type", "application/sdp"))
    return headers


def phone_request(
    method: str,
    uri: str,
    via: str,
    from_: str,
    to: str,
    call_id: str,
    cseq: int,
    contact: Optional[str] = None,
    user_agent: Optional[str] = None,
    headers: Iterable[Tuple[str, str]] = (),
    body: bytes = b"",
) -> Request:
    """A request as a phone sends it: Via, Max-Forwards 70, From, To,
    Call-ID, CSeq, then Contact and User-Agent when given, then C{headers}."""
    req = Request(method, uri)
    req.add("Via", via)
    req.add("Max-Forwards", "70")
    req.add("From", from_)
    req.add("To", to)
    req.add("Call-ID", call_id)
    req.add("CSeq", f"{cseq} {method}")
    if contact is not None:
        req.add("Contact", contact)
    if user_agent is not None:
        req.add("User-Agent", user_agent)
    for name, value in headers:
        req.add(name, value)
    req.body = body
    return req


def phone_answer(
    request: Request,
    status: int,
    reason: str = "",
    headers: Iterable[Tuple[str, str]] = (),
    body: bytes = b"",
    to_tag: Optional[str] = None,
    contact: Optional[str] = None,
) -> Response:
    """
    A phone's response to C{request} the PBX sent: C{contact} goes in a
    101-299 to an INVITE, UPDATE or SUBSCRIBE, and a body without a
    Content-Type is SDP.
    """
    headers = list(headers)
    if contact and 100 < status < 300 and request.method in ("INVITE", "UPDATE", "SUBSCRIBE"):
        headers.append(("Contact", contact))
    return build_response(request, status, reason, with_content_type(headers, body), body, to_tag=to_tag)


class ModuleContext:
    """The server context a module is built with, from its parts."""

    def __init__(self, config: Any, clock: Any, core: Any, locator: Any = None, users: Any = None) -> None:
        self.config = config
        self.reactor = clock
        self.store = None
        self.core = core
        self.users = users
        self.trunks = None
        self.locator = locator
        self.addons: list = []
        self.modules: list = []
