# -*- test-case-name: rustpbx_py.test.test_b2bua -*-
"""
The call layer's test bench: a real L{SipCore} with its real transaction
layer and UDP protocol on a L{task.Clock}, whose socket is a memory
transport.  Every message the PBX sends lands on the L{Wire}, parsed from
its bytes; the test answers as the phones would, with bytes delivered to
the same protocol.  So retransmissions, Timers A to M, CANCEL matching and
stray responses are the production ones: a fake core once hid a Timer B
that killed every call ringing past 32 s.

Also: a locator with fixed bindings, a record sink, and L{FakeCore} for
the trunk registrar's own unit tests (not the B2BUA's).
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Tuple

from twisted.internet import defer, task

from rustpbx_py.config import parse_config_text
from rustpbx_py.pipeline import Pipeline
from rustpbx_py.protocols.flow import StreamFlow
from rustpbx_py.protocols.udp import SipDatagramProtocol
from rustpbx_py.sip.message import Request, Response, parse_message
from rustpbx_py.test.core_wire import MemoryUDPSocket, ModuleContext, branch_of, phone_answer, with_content_type
from rustpbx_py.test.fakes import FakeFlow, make_request
from rustpbx_py.transaction.client import build_cancel
from rustpbx_py.transaction.layer import client_key, server_key
from rustpbx_py.transaction.responses import new_branch
from rustpbx_py.transaction.timers import TimerValues

SDP_OFFER = b"v=0\r\no=caller 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
SDP_ANSWER = b"v=0\r\no=callee 1 1 IN IP4 192.0.2.20\r\ns=-\r\nc=IN IP4 192.0.2.20\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n"

#: Where the PBX listens on the wire.
PBX_ADDRESS = ("192.0.2.1", 5060)
#: Where the caller (alice) sends from.
CALLER_ADDRESS = ("192.0.2.10", 5060)


class _AnsweredRequest:
    """A request the code under test sent; the test answers it as the peer
    with L{answer} (kept in C{answers}), which L{_send} hands over."""

    def __init__(self, request: Request, flow) -> None:
        self.request = request
        self.flow = flow
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
        """Answer the request (with a To tag and a Contact)."""
        response = phone_answer(self.request, status, reason, headers, body, to_tag, contact)
        self.answers.append(response)
        self._send(response)
        return response

    def _send(self, response: Response) -> None:
        raise NotImplementedError


class WireClientTx(_AnsweredRequest):
    """
    One request the PBX sent (retransmissions counted in C{sends}); the
    test answers it as the peer with L{answer}, sent to the PBX as bytes.
    """

    def __init__(self, wire: "Wire", request: Request, flow) -> None:
        super().__init__(request, flow)
        self.wire = wire
        self.sends = 1

    def _send(self, response: Response) -> None:
        self.wire.deliver(response, self.flow)

    def on_response(self, tx, response: Response) -> None:
        """Send C{response} again (a retransmission by the peer)."""
        self.wire.deliver(response, self.flow)

    def __repr__(self) -> str:
        return f"<WireClientTx {self.request.method} {self.request.uri}>"


class WireServerTx:
    """
    A request a phone sent the PBX, seen from the phone: the responses the
    PBX sent to it after it went out (C{responses}, retransmissions
    included), and C{cancel} sends a CANCEL for it.
    """

    def __init__(self, wire: "Wire", request: Request, flow) -> None:
        self.wire = wire
        self.request = request
        self.flow = flow
        self.reply_flow = flow
        self.branch = branch_of(request)
        self.method = request.method
        self.start = len(wire.log)
        wire.deliver(request, flow)
        #: The PBX's own server transaction for it.
        self.real = wire.core.transactions.server.get(server_key(request))

    @property
    def responses(self) -> List[Response]:
        return [
            m
            for m, _ in self.wire.log[self.start :]
            if not m.is_request and m.cseq[1] == self.method and m.call_id == self.request.call_id and branch_of(m) == self.branch
        ]

    @property
    def last(self) -> Optional[Response]:
        responses = self.responses
        return responses[-1] if responses else None

    def statuses(self) -> List[int]:
        return [r.status for r in self.responses]

    @property
    def completed(self) -> bool:
        return any(r.status >= 200 for r in self.responses)

    @property
    def context(self):
        return self.real.context

    def local_tag(self) -> Optional[str]:
        """The To tag the PBX answers this request with."""
        if self.real is not None:
            return self.real.local_tag()
        from rustpbx_py.call.dialog import tag_of

        for r in self.responses:
            if tag_of(r.get("to")):
                return tag_of(r.get("to"))
        return None

    def cancel(self) -> Optional[Response]:
        """The phone CANCELs this request (RFC 3261 9.1); returns the PBX's answer to the CANCEL."""
        cancel = build_cancel(self.request)
        start = len(self.wire.log)
        self.wire.deliver(cancel, self.flow)
        for m, _ in self.wire.log[start:]:
            if not m.is_request and m.cseq[1] == "CANCEL" and branch_of(m) == self.branch:
                return m
        return None

    def __repr__(self) -> str:
        return f"<WireServerTx {self.method} {self.request.uri}>"


class Wire:
    """
    The network around one real L{SipCore}: a UDP listener at
    L{PBX_ADDRESS} on a memory socket, TCP connections as stream flows,
    and the log of every message the PBX sent, in order, with its flow.
    """

    def __init__(self, core) -> None:
        self.core = core
        self.log: List[Tuple[object, object]] = []
        self._client: Dict[tuple, WireClientTx] = {}
        self._requests: List[WireClientTx] = []
        self.listener = SipDatagramProtocol(core)
        self.listener.makeConnection(MemoryUDPSocket(PBX_ADDRESS, lambda data, addr: self.sent(data, self.listener.flow_for(tuple(addr)))))
        core.transports.udp.append(self.listener)
        core.transports.listening["UDP"] = PBX_ADDRESS
        core.transports.listening["TCP"] = PBX_ADDRESS
        #: (transport, host, port) of every flow the core resolved.
        self.resolved: List[tuple] = []
        resolve = core.resolve

        def recording(transport, host, port):
            self.resolved.append((transport, host, port))
            return resolve(transport, host, port)

        core.resolve = recording

    @property
    def resolve(self):
        """The core's C{resolve}; a test may replace it (a refused connection)."""
        return self.core.resolve

    @resolve.setter
    def resolve(self, fn) -> None:
        self.core.resolve = fn

    # -- the network ------------------------------------------------------------

    def flow(self, remote: Tuple[str, int] = CALLER_ADDRESS, transport: str = "UDP"):
        """The flow between the PBX and a phone at C{remote}."""
        if transport == "UDP":
            return self.listener.flow_for(remote)
        existing = self.core.transports.by_remote.get((transport, remote[0], remote[1]))
        if existing is not None:
            return existing
        holder: list = []
        flow = StreamFlow(transport, remote, PBX_ADDRESS, lambda data: self.sent(data, holder[0]), lambda: None)
        holder.append(flow)
        self.core.flow_opened(flow)
        return flow

    def deliver(self, message, flow) -> None:
        """A phone sends C{message} to the PBX over C{flow}, as bytes."""
        data = message.to_bytes()
        if flow.reliable:
            self.core.message_received(parse_message(data, stream=True), flow)
        else:
            self.listener.datagramReceived(data, flow.remote)

    def send(self, request: Request, flow) -> WireServerTx:
        """A phone sends C{request}; returns its view of the PBX's answers."""
        return WireServerTx(self, request, flow)

    def sent(self, data: bytes, flow) -> None:
        """The PBX sent C{data} over C{flow}."""
        message = parse_message(data, stream=flow.reliable)
        self.log.append((message, flow))
        if message.is_request and message.method != "ACK":
            key = client_key(message)
            known = self._client.get(key)
            if known is not None:
                known.sends += 1
                return
            tx = self._client[key] = WireClientTx(self, message, flow)
            self._requests.append(tx)

    # -- for assertions ---------------------------------------------------------

    def requests(self, method: Optional[str] = None) -> List[WireClientTx]:
        """The requests (not ACKs) the PBX sent, once each, in order."""
        return [tx for tx in self._requests if method is None or tx.method == method]

    def last(self, method: str) -> WireClientTx:
        found = self.requests(method)
        assert found, f"no {method} was sent"
        return found[-1]

    def acks(self) -> List[Request]:
        """The ACKs for 2xx responses the PBX sent (each retransmission too);
        the transaction layer's ACKs for non-2xx (same branch as their
        INVITE) are not listed."""
        return [
            m
            for m, _ in self.log
            if m.is_request and m.method == "ACK" and (branch_of(m), "INVITE") not in self._client
        ]

    def responses(self, status: Optional[int] = None) -> List[Response]:
        """Every response the PBX sent."""
        return [m for m, _ in self.log if not m.is_request and (status is None or m.status == status)]


class FakeClientTx(_AnsweredRequest):
    """One request sent on L{FakeCore}; the test answers it with
    L{answer}, fed straight to the sender's callback."""

    def __init__(self, request: Request, flow, on_response) -> None:
        super().__init__(request, flow)
        self.on_response = on_response

    def _send(self, response: Response) -> None:
        self.on_response(self, response)


class FakeCore:
    """
    The parts of L{rustpbx_py.proxy.SipCore} the trunk registrar uses,
    for its own unit tests: requests sent statefully land in C{sent}.
    The B2BUA is never tested on this (see L{CallHarness}).
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
        self.remote = remote
        self.destination = ("UDP", remote[0], remote[1])

    def live_flow(self, transports):
        """The UDP flow to the contact through the core's listener."""
        return transports.udp_listener_for(self.remote[0]).flow_for(self.remote)


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


BASE_TOML = """
[proxy]
realms = ["example.com"]
contact_username = "pbx"
"""


class CallHarness:
    """
    Mixin for trial tests: C{self.module} is a started L{CallModule} in
    the pipeline of a real L{SipCore} (C{self.sip}) on C{self.clock};
    C{self.core} is the L{Wire} the test sees the PBX through (what it
    sent, answering it); bob@example.com has the registered contacts
    given to L{setup_module}.
    """

    def setup_module(
        self,
        toml: str = "",
        contacts: Tuple[str, ...] = ("<sip:bob@192.0.2.20:5060>",),
        t1_ms: int = 500,
        t1x64_ms: int = 32000,
    ):
        from rustpbx_py.modules.call import CallModule
        from rustpbx_py.proxy import SipCore

        self.clock = task.Clock()
        timers = f"t1_timer = {t1_ms}\nt1x64_timer = {t1x64_ms}\n"
        config = parse_config_text(BASE_TOML + timers + toml)
        self.sip = SipCore(config, self.clock)
        self.core = Wire(self.sip)
        self.locator = FakeLocator()
        if contacts:
            self.locator.add("bob@example.com", *[c.strip("<>") for c in contacts])
        self.context = ModuleContext(config, self.clock, self.sip, self.locator)
        self.module = CallModule(self.context)
        self.module.records = self.records = FakeRecords()
        self.module.start()
        self.context.modules = [self.module]
        self.sip.pipeline = Pipeline([self.module])
        self.sip.accepting = True
        return self.module

    def module_timers(self) -> list:
        """The pending timers of the call layer (the transaction layer's,
        which the core stops at shutdown, left out)."""
        from rustpbx_py.transaction.timers import FixedDelayQueue, TimerSet

        return [
            d
            for d in self.clock.getDelayedCalls()
            if not isinstance(getattr(d.func, "__self__", None), (TimerSet, FixedDelayQueue))
        ]

    # -- the caller ------------------------------------------------------------

    def invite(self, uri: str = "sip:bob@example.com", body: bytes = SDP_OFFER, headers=(), transport: str = "UDP", call_id: str = "a-call-1@192.0.2.10"):
        """The caller's INVITE to the PBX; returns (its view, the call)."""
        extra = list(headers)
        if body:
            extra.append(("Content-Type", "application/sdp"))
        extra.append(("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO"))
        request = make_request("INVITE", uri, call_id=call_id, headers=extra, body=body)
        if transport != "UDP":
            request.set("Via", request.top_via.replace("SIP/2.0/UDP", f"SIP/2.0/{transport}"))
        before = set(self.module.calls)
        tx = self.core.send(request, self.core.flow(CALLER_ADDRESS, transport))
        new = set(self.module.calls) - before
        call = new.pop() if new else None
        return tx, call

    def caller_request(self, call, method: str, cseq: int, headers=(), body: bytes = b"", max_forwards: int = 70) -> WireServerTx:
        """An in-dialog request from the caller (its To tag is ours)."""
        a = call.tx.request
        request = make_request(
            method,
            "sip:pbx@192.0.2.1:5060",
            call_id=a.call_id,
            to_uri="sip:bob@example.com",
            to_tag=call.tx.local_tag(),
            cseq=cseq,
            headers=with_content_type(headers, body),
            body=body,
        )
        if call.tx.flow.transport != "UDP":
            request.set("Via", request.top_via.replace("SIP/2.0/UDP", f"SIP/2.0/{call.tx.flow.transport}"))
        request.set("Max-Forwards", str(max_forwards))
        return self.core.send(request, call.tx.flow)

    def callee_request(self, call, method: str, cseq: int, headers=(), body: bytes = b"", tag: str = "callee1") -> WireServerTx:
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
            headers=with_content_type(headers, body),
            body=body,
        )
        host, port = b.flow.remote
        request.set("Via", f"SIP/2.0/UDP {host}:{port};branch={new_branch()}")
        request.set("Contact", "<sip:bob@192.0.2.20:5060>")
        return self.core.send(request, b.flow)

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
        # A new transaction (RFC 3261 13.2.2.4): its own branch.
        host, port = call.tx.flow.remote
        ack.set("Via", f"SIP/2.0/{call.tx.flow.transport} {host}:{port};branch={new_branch()}")
        self.core.deliver(ack, call.tx.flow)
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
