# -*- test-case-name: rustpbx_py.test.test_acl -*-
"""
Small hand-written doubles shared by the unit tests: a flow, a server
transaction that records what it answered, a request builder, a proxy
config with RustPBX's defaults and a server context.

Others may add doubles here; keep each one small and obvious.
"""

from __future__ import annotations

from typing import Any, Iterable, List, Optional, Sequence, Tuple

from twisted.internet import task
from zope.interface import implementer

from rustpbx_py.interfaces import IFlow, IServerContext, IServerTransaction
from rustpbx_py.pipeline import TransactionContext
from rustpbx_py.sip.message import Request, Response
from rustpbx_py.test.core_wire import phone_request


@implementer(IFlow)
class FakeFlow:
    """A flow that records what was sent on it."""

    def __init__(
        self,
        remote: Tuple[str, int] = ("192.0.2.10", 5060),
        transport: str = "UDP",
        local: Tuple[str, int] = ("192.0.2.1", 5060),
    ) -> None:
        self.remote = remote
        self.local = local
        self.transport = transport
        self.reliable = transport != "UDP"
        self.connected = True
        self.id = f"{transport}:{remote[0]}:{remote[1]}"
        self.sent: List[bytes] = []

    def send(self, data: bytes) -> None:
        self.sent.append(data)


@implementer(IServerTransaction)
class FakeServerTransaction:
    """
    A server transaction that keeps its responses in C{responses} instead
    of sending them.
    """

    def __init__(self, request: Request, flow: Optional[FakeFlow] = None) -> None:
        self.request = request
        self.flow = flow if flow is not None else FakeFlow()
        self.context = TransactionContext()
        self.completed = False
        self.responses: List[Response] = []
        self.sent: Optional[bytes] = None

    def reply(self, status: int, reason: str = "", headers: Iterable[Tuple[str, str]] = (), body: bytes = b"") -> None:
        response = Response(status, reason)
        for name, value in headers:
            response.add(name, value)
        response.body = body
        self.respond(response)

    def respond(self, response: Response) -> None:
        self.responses.append(response)
        self.sent = response.to_bytes()
        if response.status >= 200:
            self.completed = True

    @property
    def last(self) -> Optional[Response]:
        """The last response sent, or None."""
        return self.responses[-1] if self.responses else None


def make_request(
    method: str = "INVITE",
    uri: str = "sip:bob@example.com",
    from_uri: str = "sip:alice@example.com",
    from_tag: Optional[str] = "fromtag1",
    to_uri: Optional[str] = None,
    to_tag: Optional[str] = None,
    call_id: str = "call-1@192.0.2.10",
    cseq: int = 1,
    user_agent: Optional[str] = "TestPhone/1.0",
    headers: Sequence[Tuple[str, str]] = (),
    body: bytes = b"",
) -> Request:
    """A well-formed request with the headers RFC 3261 8.1.1 requires."""
    if to_uri is None:
        to_uri = uri if method != "REGISTER" else from_uri
    return phone_request(
        method,
        uri,
        via="SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK" + call_id.split("@")[0] + str(cseq),
        from_=f"<{from_uri}>" + (f";tag={from_tag}" if from_tag else ""),
        to=f"<{to_uri}>" + (f";tag={to_tag}" if to_tag else ""),
        call_id=call_id,
        cseq=cseq,
        contact="<sip:alice@192.0.2.10:5060>",
        user_agent=user_agent,
        headers=headers,
        body=body,
    )


def make_tx(
    request: Optional[Request] = None,
    remote: Tuple[str, int] = ("192.0.2.10", 5060),
    transport: str = "UDP",
    **request_args: Any,
) -> FakeServerTransaction:
    """A fake transaction for C{request} (or one built from C{request_args})."""
    if request is None:
        request = make_request(**request_args)
    return FakeServerTransaction(request, FakeFlow(remote, transport))


class Attrs:
    """An attribute bag standing in for a typed config section."""

    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)

    def __repr__(self) -> str:
        return f"Attrs({self.__dict__!r})"


def proxy_config(**overrides: Any) -> Any:
    """
    A C{[proxy]} section from L{rustpbx_py.config.default_config}: keys in
    their TOML form (C{acl_rules=["deny all"]}, C{frequency_limiter="5/10s"},
    C{trunks={"carrier": {"dest": ..., "inbound_hosts": [...]}}}), checked
    as in a file.
    """
    from rustpbx_py.config import default_config

    return default_config(**overrides).proxy


def memory_backend(*users: dict) -> dict:
    """A C{[[proxy.user_backends]]} table of type memory with C{users}."""
    return {"type": "memory", "users": list(users)}


@implementer(IServerContext)
class FakeServerContext:
    """What a module factory is given, with a L{task.Clock} reactor."""

    def __init__(self, proxy: Any = None, users: Any = None, reactor: Any = None, store: Any = None) -> None:
        self.config = Attrs(proxy=proxy if proxy is not None else proxy_config())
        self.reactor = reactor if reactor is not None else task.Clock()
        self.store = store
        self.core = None
        self.users = users
        self.locator = None
        self.addons = []
