# -*- test-case-name: rustpbx_py.test.test_proxy -*-
"""
The SIP core: the one controller every transport hands its messages to.

It stamps the top Via with where a request really came from, answers what
no module should see (malformed messages, overload, Max-Forwards 0,
unsupported extensions), runs new server transactions through the module
pipeline, answers OPTIONS addressed to the PBX itself, and gives the call
layer what it needs to send requests and catch ACKs and stray responses.
"""

from __future__ import annotations

import re
from typing import Callable, List, Optional, Tuple

from twisted.internet import defer
from twisted.logger import Logger

from rustpbx_py.pipeline import Pipeline
from rustpbx_py.protocols.transports import TransportLayer
from rustpbx_py.sip.headers import HeaderError, URI, Via, bare_host
from rustpbx_py.sip.message import Request, Response, SipParseError
from rustpbx_py.sip.validate import check_request, strict_top_via
from rustpbx_py.transaction.layer import TransactionLayer
from rustpbx_py.transaction.responses import build_response, new_branch
from rustpbx_py.transaction.timers import TimerValues

#: The methods of RFC 3261 and its extensions: one no module takes is
#: answered 405 Method Not Allowed, anything else 501 Not Implemented.
KNOWN_METHODS = frozenset(
    ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE", "NOTIFY", "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE")
)

#: Option tags we implement (for Require checks and Supported headers).
SUPPORTED = ("path", "outbound", "timer", "100rel", "replaces")
ACCEPT = "application/sdp"


#: A bare C{rport} parameter in a Via element (RFC 3581: the client asks
#: us to fill it in).
_BARE_RPORT = re.compile(r";[ \t]*rport(?=[ \t]*(?:;|$))", re.IGNORECASE)


def _stamped_text(top: Optional[str], host: str, port: int, fill_rport: bool) -> Optional[str]:
    """
    The top Via element as it arrived with C{received} added and a bare
    C{rport} filled in: the same text the parsed Via would print, made
    without printing every parameter again.  None when the element is not
    in the plain shape this handles (the caller prints the parsed Via).
    """
    if not top or "received" in top.lower():
        return None
    if fill_rport:
        top, n = _BARE_RPORT.subn(f";rport={port}", top, count=1)
        if n != 1:
            return None
    return f"{top};received={host}"


class SipCore:
    """Transaction user of the transaction layer, controller of transports."""

    log = Logger()

    def __init__(self, config, reactor, pipeline: Optional[Pipeline] = None) -> None:
        proxy = config.proxy
        self.config = config
        self.reactor = reactor
        self.useragent = proxy.useragent
        self.max_concurrency = proxy.max_concurrency
        self.pipeline = pipeline or Pipeline([])
        self.transports = TransportLayer(reactor, external_ip=config.external_ip)
        self.transactions = TransactionLayer(
            self,
            reactor,
            TimerValues(proxy.t1_timer, proxy.t1x64_timer),
            server_header=self.useragent,
        )
        self.local_hosts = {"127.0.0.1", "::1", "localhost"}
        for realm in proxy.realms:
            self.local_hosts.add(realm.lower())
        if config.external_ip:
            self.local_hosts.add(config.external_ip)
        if proxy.addr not in ("0.0.0.0", "::"):
            self.local_hosts.add(bare_host(proxy.addr))
        self.supported = SUPPORTED
        #: Called with (ack, flow) for ACKs to 2xx (they belong to dialogs).
        self.ack_handlers: List[Callable] = []
        #: Called with (response, flow) for responses no transaction expects.
        self.stray_handlers: List[Callable] = []
        #: Whether a request belongs to a known dialog (set by the call module;
        #: auth lets such requests through without a new challenge).
        self.dialog_lookup: Callable = lambda request: False
        self.counters = {"received": 0, "parse_errors": 0, "overload": 0, "send_errors": 0}
        self._send_error_logged = float("-inf")
        #: Called with (request, flow) for every request before anything
        #: else looks at it; one that answers True has it dropped silently
        #: (the acl module: scanners and floods get no answer at all).
        self.screens: List[Callable] = []
        #: False until the modules have started: requests are dropped.
        self.accepting = False
        #: See L{set_capture}.
        self.capture: Optional[Callable] = None

    def set_capture(self, capture: Optional[Callable]) -> None:
        """
        Have C{capture(data, flow, outbound)} called with every SIP message
        the core receives (C{outbound} False, before anything looks at it;
        C{data} is the parsed message, or the bytes of one that could not be
        parsed) and sends (True, after the send; C{data} is the bytes): the
        tap HEP export uses
        (L{rustpbx_py.protocols.hep}).  None turns it off; off, it costs
        one attribute test per message.
        """
        self.capture = capture
        self.transactions.capture = capture

    # -- from the transports -------------------------------------------------

    def message_received(self, message, flow) -> None:
        self.counters["received"] += 1
        capture = self.capture
        if capture is not None:
            capture(message, flow, False)
        if not self.accepting:
            return
        if message.is_request:
            for screen in self.screens:
                if screen(message, flow):
                    return
            if not self._stamp_via(message, flow):
                return
            self.transactions.request_received(message, flow)
        else:
            # RFC 3261 18.1.2: a response whose top Via is not ours is dropped.
            self.transactions.response_received(message, flow)

    def parse_error(self, error: SipParseError, data: bytes, flow) -> None:
        """
        Answer a message we could not parse when enough of it survives to
        address a response (RFC 3261 16.3, 21.4.1); drop it otherwise.
        """
        self.counters["parse_errors"] += 1
        capture = self.capture
        if capture is not None:
            capture(data, flow, False)
        if not self.accepting or error.status is None or data[:4].upper() == b"SIP/":
            return
        request = error.message
        if request is None or request.top_via is None:
            return
        for screen in self.screens:
            if screen(request, flow):
                return
        if request.method == "ACK":
            return
        self._stamp_via(request, flow)
        response = build_response(request, error.status, error.reason, server=self.useragent)
        self._send_stateless(response, request, flow)

    def flow_opened(self, flow) -> None:
        self.transports.flow_opened(flow)

    def flow_closed(self, flow) -> None:
        self.transports.flow_closed(flow)
        self.transactions.flow_failed(flow)

    def send_failed(self, listener, addr, error) -> None:
        """
        A datagram could not be sent.  Counted every time; logged at most
        once a minute (with the count since the last line), so a flood of
        requests whose answers cannot be sent cannot flood the log.
        """
        self.counters["send_errors"] += 1
        now = self.reactor.seconds()
        if now < self._send_error_logged + 60.0:
            return
        self._send_error_logged = now
        self.log.warn(
            "send to {addr} failed: {error} ({count} send errors so far)",
            addr=addr,
            error=repr(error),
            count=self.counters["send_errors"],
        )

    # -- from the transaction layer ------------------------------------------

    def new_transaction(self, tx) -> None:
        request = tx.request
        if self.transactions.pending > self.max_concurrency:
            self.counters["overload"] += 1
            tx.reply(503, "Service Unavailable", [("Retry-After", "5")])
            return
        rejection = check_request(request, self.supported)
        if rejection is not None:
            if rejection.status is None:
                tx.terminate()
            else:
                tx.reply(rejection.status, rejection.reason, rejection.headers)
            return
        d = self.pipeline.run(tx)
        if not d.called and request.method == "INVITE":
            self._trying(tx)
        d.addCallback(self._pipeline_done, tx)
        d.addErrback(self._pipeline_failed, tx)

    def _trying(self, tx) -> None:
        """
        A module is waiting on something slow (a user look-up in a database
        or over HTTP) for an INVITE: say 100 Trying now, so the phone stops
        retransmitting (RFC 3261 17.2.1: within 200 ms).  Only then: what
        the modules decided synchronously (acl, a scanner marked as spam)
        still gets no answer at all.
        """
        if tx.last is None and not tx.completed and not tx.context.spam:
            tx.reply(100, "Trying")

    def _pipeline_done(self, handled: bool, tx) -> None:
        if tx.context.spam:
            if not tx.completed:
                tx.terminate()
            return
        if handled or tx.completed:
            return
        request = tx.request
        if request.method == "OPTIONS":
            # For the PBX itself, or for a user when no module relays it.
            tx.reply(200, "OK", self.capability_headers())
            return
        if request.method != "REGISTER" and self._to_tag(request):
            # 12.2.2: inside a dialog no module knows (a subscription of a
            # module that is not configured, a dialog long gone).
            tx.reply(481, "Call/Transaction Does Not Exist")
            return
        # RFC 3261 21.4.6 / 21.5.2: both carry the Allow that is true here.
        if request.method in KNOWN_METHODS:
            tx.reply(405, "Method Not Allowed", [("Allow", self.allow_header())])
        else:
            tx.reply(501, "Not Implemented", [("Allow", self.allow_header())])

    @staticmethod
    def _to_tag(request: Request) -> bool:
        try:
            to = request.to_addr
        except HeaderError:
            return False
        return to is not None and bool(to.tag)

    def _pipeline_failed(self, failure, tx) -> None:
        self.log.failure("request pipeline failed", failure)
        if not tx.completed and not tx.context.spam:
            tx.reply(500, "Server Internal Error")

    def cancel_received(self, cancel_tx, invite_tx) -> None:
        """A CANCEL (RFC 3261 9.2): 200 to it, then cancel the INVITE unless
        it was already answered; 481 when no INVITE transaction matches."""
        if invite_tx is None:
            cancel_tx.reply(481, "Call/Transaction Does Not Exist")
            return
        cancel_tx.to_tag = invite_tx.local_tag()
        cancel_tx.reply(200, "OK")
        if not invite_tx.completed:
            # After the final response a CANCEL changes nothing (9.2).
            invite_tx.cancel()

    def ack_received(self, ack: Request, flow) -> None:
        for handler in self.ack_handlers:
            if handler(ack, flow):
                return

    def stray_response(self, response: Response, flow) -> None:
        for handler in self.stray_handlers:
            if handler(response, flow):
                return

    def transaction_ended(self, tx) -> None:
        self.pipeline.end(tx)

    # -- for modules ---------------------------------------------------------

    def addressed_to_self(self, request: Request) -> bool:
        """
        Whether a request is for the PBX itself rather than a user: a
        Request-URI without a user part, or naming our contact user.
        """
        try:
            uri = request.ruri
        except HeaderError:
            return False
        if uri.user is None:
            return True
        return uri.user == self.config.proxy.contact_username

    def allow_header(self) -> str:
        methods = ["OPTIONS", "ACK", "CANCEL"]
        for m in self.pipeline.allowed_methods():
            if m not in methods:
                methods.append(m)
        return ", ".join(methods)

    def capability_headers(self) -> List[Tuple[str, str]]:
        """What an OPTIONS answer advertises (RFC 3261 11.2), with the
        event packages modules serve (C{allow_events()}, RFC 6665 8.2.2)."""
        headers = [
            ("Allow", self.allow_header()),
            ("Accept", ACCEPT),
            ("Supported", ", ".join(self.supported)),
            ("Accept-Language", "en"),
        ]
        events: List[str] = []
        for module in self.pipeline.modules:
            for event in getattr(module, "allow_events", lambda: ())():
                if event not in events:
                    events.append(event)
        if events:
            headers.append(("Allow-Events", ", ".join(events)))
        return headers

    def via_for(self, flow, branch: Optional[str] = None) -> str:
        """Our Via for a request sent over C{flow}."""
        host, port = self.transports.advertised(flow.transport, flow.remote[0])
        via = Via(flow.transport, host, port, {"branch": branch or new_branch(), "rport": None})
        return str(via)

    def contact_for(self, flow, user: Optional[str] = None) -> str:
        """Our Contact for dialogs over C{flow}."""
        host, port = self.transports.advertised(flow.transport, flow.remote[0])
        uri = URI("sip", user or self.config.proxy.contact_username, host, port)
        if flow.transport != "UDP":
            uri.params["transport"] = flow.transport.lower()
        return f"<{uri}>"

    def send_request(self, request: Request, flow, on_response: Callable):
        """Send C{request} statefully; it must already carry our top Via."""
        if not request.has("user-agent") and self.useragent:
            request.add("User-Agent", self.useragent)
        return self.transactions.send_request(request, flow, on_response)

    def send_stateless(self, message, flow) -> bytes:
        """Send a message outside any transaction (ACK for 2xx, 2xx
        retransmissions); returns the bytes sent."""
        if message.is_request and self.useragent and not message.has("user-agent"):
            message.add("User-Agent", self.useragent)
        data = message.to_bytes()
        self._send(flow, data)
        return data

    def resolve(self, transport: str, host: str, port: Optional[int]) -> defer.Deferred:
        """A flow to a peer (see L{TransportLayer.resolve})."""
        return self.transports.resolve(transport, host, port)

    def shutdown(self) -> None:
        """Stop every transaction timer: the service is stopping."""
        self.transactions.shutdown()

    # -- helpers -------------------------------------------------------------

    def _stamp_via(self, request: Request, flow) -> bool:
        """
        Add C{received} (and fill C{rport}) to the top Via when the source
        differs from what it says (RFC 3261 18.2.1, RFC 3581).  False when
        the request has no usable Via and must be dropped.
        """
        strict = True
        try:
            via = strict_top_via(request)
        except HeaderError:
            # Lenient parse: check_request will refuse it with 400, and the
            # 400 must still reach the sender.
            strict = False
            top = request.top_via
            if top is None:
                return False
            try:
                via = Via.parse(top)
            except HeaderError:
                return False
        if via is None:
            return False
        src_host, src_port = flow.remote
        params = via.params
        add_received = bare_host(via.host) != src_host
        fill_rport = "rport" in params and not params["rport"]
        if not (add_received or fill_rport):
            return True
        params = dict(params)
        params["received"] = src_host
        if fill_rport:
            params["rport"] = str(src_port)
        stamped = Via(via.transport, via.host, via.port, params, via.protocol)
        text = _stamped_text(request.top_via, src_host, src_port, fill_rport) if strict else None
        request.set_top_via(stamped, remember=strict, text=text)
        return True

    def _send_stateless(self, response: Response, request: Request, flow) -> None:
        """A response outside any transaction goes to the packet's source,
        like every response (see L{ServerTransaction._response_flow})."""
        self._send(flow, response.to_bytes())

    def _send(self, flow, data: bytes) -> None:
        """Send outside a transaction; an error is counted, never raised."""
        try:
            flow.send(data)
        except Exception as e:
            self.send_failed(None, flow.remote, e)
            return
        capture = self.capture
        if capture is not None:
            capture(data, flow, True)
