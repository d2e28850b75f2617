# -*- test-case-name: rustpbx_py.test.test_b2bua -*-
"""
Doubles for the call layer's tests: a SIP core that records what the call
module sends and lets the test answer it, an INVITE server transaction
with CANCEL observers, a locator with fixed bindings, a record sink, and a
harness that places calls through a L{CallModule} on a L{task.Clock}.
"""

from __future__ import annotations

from typing import Iterable, List, Optional, Tuple

from twisted.internet import defer, task

from rustpbx_py.config import parse_config_text
from rustpbx_py.pipeline import TransactionContext
from rustpbx_py.sip.message import Request, Response
from rustpbx_py.test.fakes import FakeFlow, make_request
from rustpbx_py.transaction.responses import build_response, new_branch
from rustpbx_py.transaction.timers import TimerValues

SDP_OFFER = b"v=0\r\no=caller 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
SDP_ANSWER = b"v=0\r\no=callee 1 1 IN IP4 192.0.2.20\r\ns=-\r\nc=IN IP4 192.0.2.20\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n"


class FakeServerTx:
    """
    A server transaction: keeps its responses, tracks C{completed}, and
    calls CANCEL observers like the real one.
    """

    def __init__(self, request: Request, flow: Optional[FakeFlow] = None) -> None:
        self.request = request
        self.flow = flow if flow is not None else FakeFlow()
        self.reply_flow = self.flow
        self.context = TransactionContext()
        self.completed = False
        self.responses: List[Response] = []
        self.to_tag: Optional[str] = None
        self.cancel_observers: list = []
        self.sent: Optional[bytes] = None

    def local_tag(self) -> str:
        if self.to_tag is None:
            self.to_tag = "pbxtag" + str(id(self) % 10000)
        return self.to_tag

    def reply(self, status: int, reason: str = "", headers: Iterable[Tuple[str, str]] = (), body: bytes = b"") -> Response:
        response = build_response(
            self.request, status, reason, headers, body, to_tag=self.local_tag() if status > 100 else None
        )
        self.respond(response)
        return response

    def respond(self, response: Response) -> None:
        self.responses.append(response)
        self.sent = response.to_bytes()
        if response.status >= 200:
            self.completed = True

    def on_cancel(self, fn) -> None:
        self.cancel_observers.append(fn)

    def cancel(self) -> None:
        """A CANCEL matched: like L{ServerTransaction.cancel}."""
        observers, self.cancel_observers = self.cancel_observers, []
        for fn in observers:
            fn(self)
        if not observers and not self.completed:
            self.reply(487, "Request Terminated")

    @property
    def last(self) -> Optional[Response]:
        return self.responses[-1] if self.responses else None

    def statuses(self) -> List[int]:
        return [r.status for r in self.responses]


class FakeClientTx:
    """One request the call layer sent; the test answers it with L{answer}."""

    def __init__(self, request: Request, flow, on_response) -> None:
        self.request = request
        self.flow = flow
        self.on_response = on_response
        self.answers: List[Response] = []
        self.data = request.to_bytes()

    @property
    def method(self) -> str:
        return self.request.method

    def answer(
        self,
        status: int,
        reason: str = "",
        headers: Iterable[Tuple[str, str]] = (),
        body: bytes = b"",
        to_tag: Optional[str] = "callee1",
        contact: Optional[str] = "<sip:bob@192.0.2.20:5060>",
    ) -> Response:
        """Feed a response to the request (with a To tag and a Contact)."""
        headers = list(headers)
        if contact and 100 < status < 300 and self.request.method in ("INVITE", "UPDATE", "SUBSCRIBE"):
            headers.append(("Contact", contact))
        if body and not any(h[0].lower() == "content-type" for h in headers):
            headers.append(("Content-Type", "application/sdp"))
        response = build_response(self.request, status, reason, headers, body, to_tag=to_tag)
        self.answers.append(response)
        self.on_response(self, response)
        return response


class FakeCore:
    """
    The parts of L{rustpbx_py.proxy.SipCore} the call layer uses: requests
    sent statefully land in C{sent}, stateless ones (ACKs) in C{stateless}.
    """

    def __init__(self, clock, t1_ms: int = 500, t1x64_ms: int = 32000) -> None:
        self.clock = clock

        class _Layer:
            timer_values = TimerValues(t1_ms, t1x64_ms)

        self.transactions = _Layer()
        self.sent: List[FakeClientTx] = []
        self.stateless: List[Tuple[Request, object]] = []
        self.ack_handlers: list = []
        self.dialog_lookup = None
        self.local_hosts = {"127.0.0.1", "192.0.2.1"}
        self.transports = None
        self.resolved: List[tuple] = []

    def via_for(self, flow, branch: Optional[str] = None) -> str:
        return f"SIP/2.0/{flow.transport} 192.0.2.1:5060;branch={branch or new_branch()};rport"

    def contact_for(self, flow, user: Optional[str] = None) -> str:
        return f"<sip:{user or 'pbx'}@192.0.2.1:5060>"

    def send_request(self, request: Request, flow, on_response) -> FakeClientTx:
        tx = FakeClientTx(request, flow, on_response)
        self.sent.append(tx)
        return tx

    def send_stateless(self, message, flow) -> bytes:
        self.stateless.append((message, flow))
        return message.to_bytes()

    def resolve(self, transport: str, host: str, port: Optional[int]) -> defer.Deferred:
        self.resolved.append((transport, host, port))
        return defer.succeed(FakeFlow((host, port or 5060), transport.upper()))

    # -- for assertions --------------------------------------------------------

    def requests(self, method: Optional[str] = None) -> List[FakeClientTx]:
        return [tx for tx in self.sent if method is None or tx.method == method]

    def last(self, method: str) -> FakeClientTx:
        found = self.requests(method)
        assert found, f"no {method} was sent"
        return found[-1]

    def acks(self) -> List[Request]:
        return [m for m, _ in self.stateless if m.method == "ACK"]


class FakeBinding:
    """A registration as the locator returns it."""

    def __init__(self, aor: str, contact: str, remote: Tuple[str, int], path: Tuple[str, ...] = ()) -> None:
        self.aor = aor
        self.contact = contact
        self.path = path
        self.flow = FakeFlow(remote)
        self.destination = ("UDP", remote[0], remote[1])

    def live_flow(self, transports):
        return self.flow


class FakeLocator:
    def __init__(self) -> None:
        self.bindings: dict = {}

    def add(self, aor: str, *contacts: str) -> None:
        for i, contact in enumerate(contacts):
            self.bindings.setdefault(aor, []).append(FakeBinding(aor, contact, ("192.0.2.%d" % (20 + i), 5060)))

    def lookup(self, aor: str):
        return list(self.bindings.get(aor, ()))


class FakeRecords:
    """A call record sink that keeps what it is given."""

    def __init__(self) -> None:
        self.opened_records: list = []
        self.saved: list = []
        self.orphans_closed_at: List[float] = []
        #: What save() returns while set: a write still under way.
        self.pending_write: Optional[defer.Deferred] = None
        self._writes: list = []

    def opened(self, record) -> defer.Deferred:
        self.opened_records.append(record)
        return defer.succeed(None)

    def save(self, record) -> defer.Deferred:
        self.saved.append(record)
        if self.pending_write is None:
            return defer.succeed(None)
        self._writes.append(self.pending_write)
        return self.pending_write

    def drained(self) -> defer.Deferred:
        return defer.gatherResults([w for w in self._writes if not w.called])

    def close_orphans(self, now: float) -> defer.Deferred:
        self.orphans_closed_at.append(now)
        return defer.succeed(None)


class CallContext:
    """The server context a L{CallModule} is built with."""

    def __init__(self, config, clock, core, locator=None) -> None:
        self.config = config
        self.reactor = clock
        self.store = None
        self.core = core
        self.users = None
        self.trunks = None
        self.locator = locator
        self.addons: list = []
        self.modules: list = []


BASE_TOML = """
[proxy]
realms = ["example.com"]
"""


class CallHarness:
    """
    Mixin for trial tests: C{self.module} is a started L{CallModule} with
    a fake core on C{self.clock}; bob@example.com has the registered
    contacts given to L{setup_module}.
    """

    def setup_module(self, toml: str = "", contacts: Tuple[str, ...] = ("<sip:bob@192.0.2.20:5060>",), **kw):
        from rustpbx_py.modules.call import CallModule

        self.clock = task.Clock()
        self.core = FakeCore(self.clock, **kw)
        self.locator = FakeLocator()
        if contacts:
            self.locator.add("bob@example.com", *[c.strip("<>") for c in contacts])
        config = parse_config_text(BASE_TOML + toml)
        self.context = CallContext(config, self.clock, self.core, self.locator)
        self.module = CallModule(self.context)
        self.module.records = self.records = FakeRecords()
        self.module.start()
        self.context.modules = [self.module]
        return self.module

    # -- the caller ------------------------------------------------------------

    def invite(self, uri: str = "sip:bob@example.com", body: bytes = SDP_OFFER, headers=(), transport: str = "UDP", call_id: str = "a-call-1@192.0.2.10"):
        """The caller's INVITE through the module; returns (tx, call)."""
        extra = list(headers)
        if body:
            extra.append(("Content-Type", "application/sdp"))
        extra.append(("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO"))
        request = make_request("INVITE", uri, call_id=call_id, headers=extra, body=body)
        tx = FakeServerTx(request, FakeFlow(("192.0.2.10", 5060), transport))
        before = set(self.module.calls)
        self.module.on_transaction_begin(tx)
        new = set(self.module.calls) - before
        call = new.pop() if new else None
        return tx, call

    def caller_request(self, call, method: str, cseq: int, headers=(), body: bytes = b"") -> FakeServerTx:
        """An in-dialog request from the caller (its To tag is ours)."""
        a = call.tx.request
        request = make_request(
            method,
            "sip:pbx@192.0.2.1:5060",
            call_id=a.call_id,
            to_uri="sip:bob@example.com",
            to_tag=call.tx.local_tag(),
            cseq=cseq,
            headers=list(headers) + ([("Content-Type", "application/sdp")] if body else []),
            body=body,
        )
        tx = FakeServerTx(request, call.tx.flow)
        self.module.on_transaction_begin(tx)
        return tx

    def callee_request(self, call, method: str, cseq: int, headers=(), body: bytes = b"", tag: str = "callee1") -> FakeServerTx:
        """An in-dialog request from the callee into the B dialog."""
        b = call.b
        request = make_request(
            method,
            "sip:pbx@192.0.2.1:5060",
            from_uri="sip:bob@example.com",
            from_tag=tag,
            to_uri="sip:alice@example.com",
            to_tag=call.b_tag,
            call_id=b.call_id,
            cseq=cseq,
            headers=list(headers) + ([("Content-Type", "application/sdp")] if body else []),
            body=body,
        )
        request.set("Contact", "<sip:bob@192.0.2.20:5060>")
        tx = FakeServerTx(request, b.flow)
        self.module.on_transaction_begin(tx)
        return tx

    def caller_ack(self, call, cseq: int = 1, body: bytes = b"") -> Request:
        a = call.tx.request
        ack = make_request(
            "ACK",
            "sip:pbx@192.0.2.1:5060",
            call_id=a.call_id,
            to_uri="sip:bob@example.com",
            to_tag=call.tx.local_tag(),
            cseq=cseq,
            body=body,
            headers=[("Content-Type", "application/sdp")] if body else [],
        )
        for handler in self.core.ack_handlers:
            if handler(ack, call.tx.flow):
                break
        return ack

    def answered_call(self, caller_headers=(), answer_headers=(), ack: bool = True):
        """A call bob answered (180 then 200 with SDP), ACKed by the caller."""
        tx, call = self.invite(headers=caller_headers)
        fork = self.core.last("INVITE")
        fork.answer(180, "Ringing")
        fork.answer(200, "OK", list(answer_headers), SDP_ANSWER)
        if ack:
            self.caller_ack(call)
        return tx, call, fork
