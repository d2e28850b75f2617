# -*- test-case-name: rustpbx_py.test.test_transaction -*-
"""
Client transactions (RFC 3261 section 17.1, with RFC 6026's Accepted state).

A client transaction sends one request, retransmits it over unreliable
transports (Timers A and E), gives up after 64*T1 (Timers B and F, reported
to the caller as a 408), ACKs non-2xx final INVITE responses itself, and
passes every response up once.

An INVITE that got a provisional response waits in Proceeding for as long
as the TU wants (17.1.1.2: Timer B only runs in Calling): a phone may ring
for minutes, and the B2BUA's C{max_ring_time} decides when to give up.
Once the TU CANCELs it, the INVITE gets 64*T1 more for its final response
and is then dropped (9.1).
"""

from __future__ import annotations

from typing import Callable, Optional

from rustpbx_py.sip.headers import Via
from rustpbx_py.sip.message import Request, Response
from rustpbx_py.transaction.responses import build_response
from rustpbx_py.transaction.timers import TimerSet

CALLING = "calling"
TRYING = "trying"
PROCEEDING = "proceeding"
COMPLETED = "completed"
ACCEPTED = "accepted"
TERMINATED = "terminated"


def build_ack(request: Request, response: Response) -> Request:
    """The ACK for a non-2xx final response (17.1.1.3): same branch, the
    response's To, the INVITE's Route set."""
    ack = Request("ACK", request.uri)
    for h in request.headers:
        key = h[0]
        if key == "via":
            ack.headers.append([key, h[1], request.top_via or h[2]])
            break
    for h in request.headers:
        if h[0] in ("from", "call-id", "route", "max-forwards"):
            ack.headers.append(list(h))
    to = response.get("to") or request.get("to") or ""
    ack.add("To", to)
    ack.add("CSeq", f"{request.cseq[0]} ACK")
    return ack


def build_cancel(request: Request) -> Request:
    """The CANCEL for a pending INVITE (9.1): same branch and CSeq number."""
    cancel = Request("CANCEL", request.uri)
    via = request.top_via
    if via is not None:
        cancel.add("Via", via)
    for h in request.headers:
        if h[0] in ("from", "to", "call-id", "route", "max-forwards"):
            cancel.headers.append(list(h))
    cancel.add("CSeq", f"{request.cseq[0]} CANCEL")
    return cancel


def _ignore_response(tx, response) -> None:
    """What a terminated client transaction calls (nothing reaches it)."""


class ClientTransaction:
    """
    One request we sent.  C{on_response(tx, response)} is called for every
    response (provisionals, the final one, and 2xx retransmissions of an
    INVITE), including a synthesised 408 on timeout and 503 on a transport
    failure.
    """

    def __init__(self, layer, request: Request, flow, key, on_response: Callable) -> None:
        self.layer = layer
        self.request = request
        self.flow = flow
        self.key = key
        self.on_response = on_response
        self.invite = request.method == "INVITE"
        self.state = CALLING if self.invite else TRYING
        self.timers = TimerSet(layer.clock, getattr(layer, "long_timers", None))
        self.data = request.to_bytes()
        self.final: Optional[Response] = None
        self.ack_data: Optional[bytes] = None
        self.provisional = False

    def start(self) -> None:
        """Send the request and start the timers."""
        t = self.layer.timer_values
        self.layer.send(self.flow, self.data)
        if not self.flow.reliable:
            self.timers.start("A" if self.invite else "E", t.t1, self._retransmit, t.t1)
        self.timers.start("B" if self.invite else "F", t.t1x64, self._timeout)

    def _retransmit(self, interval: float) -> None:
        if self.state not in (CALLING, TRYING, PROCEEDING):
            return
        t = self.layer.timer_values
        if self.invite and self.state == PROCEEDING:
            return
        self.layer.send(self.flow, self.data)
        if self.invite:
            interval = interval * 2
        else:
            interval = t.t2 if self.state == PROCEEDING else min(interval * 2, t.t2)
        self.timers.start("A" if self.invite else "E", interval, self._retransmit, interval)

    def _timeout(self) -> None:
        if self.state in (CALLING, TRYING, PROCEEDING):
            self._synthesise(408, "Request Timeout")
        elif self.state == ACCEPTED:
            self.terminate()

    def cancel_sent(self) -> None:
        """
        The TU sent a CANCEL for this INVITE: if no final response comes
        within 64*T1 the INVITE is over (RFC 3261 9.1), reported as a 408.
        """
        if self.invite and self.state in (CALLING, PROCEEDING) and "B" not in self.timers.calls:
            self.timers.start("B", self.layer.timer_values.t1x64, self._timeout)

    def transport_failed(self) -> None:
        """The flow could not carry the request (17.1.4): a 503 to the TU."""
        if self.state in (CALLING, TRYING, PROCEEDING):
            self._synthesise(503, "Service Unavailable")

    def _synthesise(self, status: int, reason: str) -> None:
        response = build_response(self.request, status, reason)
        self.final = response
        on_response = self.on_response
        self.terminate()
        on_response(self, response)

    def response_received(self, response: Response) -> None:
        status = response.status
        state = self.state
        if state == TERMINATED:
            return
        if status < 200:
            if state in (CALLING, TRYING, PROCEEDING):
                self.state = PROCEEDING
                self.provisional = True
                if self.invite:
                    self.timers.stop("A")
                    self.timers.stop("B")
                self.on_response(self, response)
            return
        t = self.layer.timer_values
        if self.invite:
            if status < 300:
                if state != ACCEPTED:
                    self.state = ACCEPTED
                    self.final = response
                    self.timers.stop_all()
                    self.timers.start("M", t.t1x64, self.terminate)
                self.on_response(self, response)
                return
            if state == COMPLETED:
                if self.ack_data is not None:
                    self.layer.send(self.flow, self.ack_data)
                return
            if state == ACCEPTED:
                return
            self.state = COMPLETED
            self.final = response
            self.timers.stop_all()
            ack = build_ack(self.request, response)
            if self.layer.server_header:
                ack.add("User-Agent", self.layer.server_header)
            self.ack_data = ack.to_bytes()
            self.layer.send(self.flow, self.ack_data)
            self.timers.start("D", 0 if self.flow.reliable else 32.0, self.terminate)
            self.on_response(self, response)
            return
        if state == COMPLETED:
            return
        self.state = COMPLETED
        self.final = response
        self.timers.stop_all()
        self.timers.start("K", 0 if self.flow.reliable else t.t4, self.terminate)
        self.on_response(self, response)

    def terminate(self) -> None:
        if self.state == TERMINATED:
            return
        self.state = TERMINATED
        self.timers.stop_all()
        self.layer.client_terminated(self)
        # No response reaches a terminated transaction.  The callback is a
        # closure over the call that holds this transaction: dropping it
        # breaks that reference cycle, so the call is freed by reference
        # counting when it ends instead of waiting for a full collection.
        self.on_response = _ignore_response

    @property
    def branch(self) -> str:
        via = self.request.top_via
        return Via.parse(via).branch or "" if via else ""

    def __repr__(self) -> str:
        return f"<ClientTransaction {self.request.method} {self.state}>"
