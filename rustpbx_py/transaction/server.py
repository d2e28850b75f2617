# -*- test-case-name: rustpbx_py.test.test_transaction -*-
"""
Server transactions (RFC 3261 section 17.2, with RFC 6026's Accepted state).

A server transaction owns a received request: it absorbs retransmissions by
repeating its last response, retransmits non-2xx final INVITE responses
until the ACK (Timer G/H), and remembers its answer long enough to repeat it
(Timers I, J, L).
"""

from __future__ import annotations

from typing import Iterable, Optional, Tuple

from zope.interface import implementer

from rustpbx_py.interfaces import IServerTransaction
from rustpbx_py.pipeline import TransactionContext
from rustpbx_py.sip.message import Request, Response
from rustpbx_py.transaction.responses import build_response, new_tag
from rustpbx_py.transaction.timers import TimerSet

TRYING = "trying"
PROCEEDING = "proceeding"
COMPLETED = "completed"
CONFIRMED = "confirmed"
ACCEPTED = "accepted"
TERMINATED = "terminated"


@implementer(IServerTransaction)
class ServerTransaction:
    """One received request and the responses we send to it."""

    def __init__(self, layer, request: Request, flow, key) -> None:
        self.layer = layer
        self.request = request
        self.flow = flow
        self.key = key
        self.invite = request.method == "INVITE"
        self.state = PROCEEDING if self.invite else TRYING
        self.context = TransactionContext()
        self.completed = False
        self.final: Optional[Response] = None
        self.last: Optional[bytes] = None
        #: The bytes of the response the last L{respond} sent (None when
        #: the state machine dropped it): what a call trace records.
        self.sent: Optional[bytes] = None
        self.to_tag: Optional[str] = None
        self.timers = TimerSet(layer.clock, getattr(layer, "long_timers", None))
        self.cancel_observers: list = []
        self.cancelled = False
        self.reply_flow = self._response_flow()
        #: When the request arrived (clock seconds): latency and age.
        self.created = layer.clock.seconds()

    def _response_flow(self):
        """
        Where responses go: the flow the request came in on, that is the
        same connection, or for UDP the packet's source address and port
        (RFC 3581's symmetric response routing, Kamailio's default).

        Never the address the top Via names: C{received}, C{rport} and
        C{maddr} are the client's to write, and following them let one
        437-byte INVITE send eleven responses to a third party.
        """
        return self.flow

    # -- IServerTransaction ------------------------------------------------

    def local_tag(self) -> str:
        """The To tag of our responses (one per transaction)."""
        if self.to_tag is None:
            self.to_tag = new_tag()
        return self.to_tag

    def reply(
        self,
        status: int,
        reason: str = "",
        headers: Iterable[Tuple[str, str]] = (),
        body: bytes = b"",
    ) -> Response:
        """Answer with a response built from the request (RFC 3261 8.2.6)."""
        response = build_response(
            self.request,
            status,
            reason,
            headers,
            body,
            to_tag=self.local_tag() if status > 100 else None,
            server=self.layer.server_header,
        )
        self.respond(response)
        return response

    def respond(self, response: Response) -> None:
        """Send C{response} and move the state machine."""
        self.sent = None
        if self.state in (COMPLETED, CONFIRMED, TERMINATED):
            return
        if self.state == ACCEPTED and response.status < 300 and response.status >= 200:
            # 2xx retransmissions by the TU go straight through (RFC 6026).
            self.sent = response.to_bytes()
            self._send(self.sent)
            return
        if self.state == ACCEPTED:
            return
        if not response.has("server") and self.layer.server_header:
            response.add("Server", self.layer.server_header)
        data = response.to_bytes()
        self.last = self.sent = data
        status = response.status
        if status < 200:
            if self.state == TRYING:
                self.state = PROCEEDING
            self._send(data)
            return
        self.final = response
        if not self.completed:
            self.completed = True
            self.layer.transaction_answered(self)
        self._send(data)
        t = self.layer.timer_values
        reliable = self.reply_flow.reliable
        if self.invite:
            if status < 300:
                self.state = ACCEPTED
                self.timers.start("L", t.t1x64, self.terminate)
            else:
                self.state = COMPLETED
                if not reliable:
                    self.timers.start("G", t.t1, self._timer_g, t.t1)
                self.timers.start("H", t.t1x64, self._timer_h)
        else:
            self.state = COMPLETED
            self.timers.start("J", 0 if reliable else t.t1x64, self.terminate)

    # -- events --------------------------------------------------------------

    def retransmission_received(self) -> None:
        """The same request again: repeat our last response (17.2.1, 17.2.2)."""
        if self.last is not None and self.state != ACCEPTED:
            self._send(self.last)

    def ack_received(self, ack: Request) -> None:
        """An ACK for our non-2xx final response: stop retransmitting."""
        if self.state == COMPLETED and self.invite:
            self.state = CONFIRMED
            self.timers.stop("G")
            self.timers.stop("H")
            t = self.layer.timer_values
            self.timers.start("I", 0 if self.reply_flow.reliable else t.t4, self.terminate)

    def cancel(self) -> None:
        """A CANCEL matched this INVITE: tell observers, or answer 487."""
        if self.cancelled or self.completed:
            return
        self.cancelled = True
        observers, self.cancel_observers = self.cancel_observers, []
        for fn in observers:
            fn(self)
        if not observers and not self.completed:
            self.reply(487, "Request Terminated")

    def on_cancel(self, fn) -> None:
        """Call C{fn(tx)} when a CANCEL for this INVITE arrives."""
        self.cancel_observers.append(fn)

    # -- timers --------------------------------------------------------------

    def _timer_g(self, interval: float) -> None:
        if self.state != COMPLETED or self.last is None:
            return
        self._send(self.last)
        interval = min(interval * 2, self.layer.timer_values.t2)
        self.timers.start("G", interval, self._timer_g, interval)

    def _timer_h(self) -> None:
        # The ACK never came (17.2.1): give up.
        self.terminate()

    def terminate(self) -> None:
        if self.state == TERMINATED:
            return
        self.state = TERMINATED
        self.timers.stop_all()
        self.layer.server_terminated(self)
        # The observers are bound methods of the call, which holds this
        # transaction: a reference cycle per call that only a full
        # collection would free (see server.tune_garbage_collector).
        self.cancel_observers = []

    def _send(self, data: bytes) -> None:
        self.layer.send(self.reply_flow, data)

    def __repr__(self) -> str:
        return f"<ServerTransaction {self.request.method} {self.state} {self.key}>"
