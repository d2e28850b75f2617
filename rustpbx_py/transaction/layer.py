# -*- test-case-name: rustpbx_py.test.test_transaction -*-
"""
The transaction layer: matches messages to transactions (RFC 3261 17.1.3
and 17.2.3, with the RFC 2543 fallback), creates server transactions for
new requests, and tells the transaction user (the SIP core) about them.

The transaction user provides: C{new_transaction(tx)},
C{cancel_received(cancel_tx, invite_tx)}, C{ack_received(ack, flow)},
C{stray_response(response, flow)} and C{transaction_ended(tx)}.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

from rustpbx_py.sip.headers import HeaderError
from rustpbx_py.sip.message import Request, Response
from rustpbx_py.transaction.client import ClientTransaction
from rustpbx_py.transaction.responses import MAGIC_COOKIE
from rustpbx_py.transaction.server import ServerTransaction
from rustpbx_py.transaction.timers import FixedDelayQueue, TimerValues


def server_key(request: Request, method: Optional[str] = None) -> Optional[Tuple]:
    """
    The key that finds a request's server transaction: branch, sent-by and
    method (ACK and CANCEL use INVITE's) per 17.2.3, or for RFC 2543 peers
    without the magic cookie, Call-ID, From tag, CSeq number and top Via.
    """
    top = request.top_via
    if top is None:
        return None
    method = method or request.method
    if method == "ACK":
        method = "INVITE"
    i = top.find("branch=")
    if i >= 0:
        j = i + 7
        end = j
        n = len(top)
        while end < n and top[end] not in ";, \t":
            end += 1
        branch = top[j:end]
        if branch.startswith(MAGIC_COOKIE):
            try:
                sent_by = request.via.sent_by().lower()
            except HeaderError:
                return None
            return (branch, sent_by, method)
    from_tag = None
    try:
        from_addr = request.from_addr
    except HeaderError:
        from_addr = None
    if from_addr is not None:
        from_tag = from_addr.tag
    return ("2543", request.call_id, from_tag, request.cseq[0], method, top)


def client_key(message, method: Optional[str] = None) -> Optional[Tuple[str, str]]:
    """Branch and CSeq method: what a response carries back (17.1.3)."""
    top = message.top_via
    if top is None:
        return None
    i = top.find("branch=")
    if i < 0:
        return None
    j = i + 7
    end = j
    n = len(top)
    while end < n and top[end] not in ";, \t":
        end += 1
    return (top[j:end], method or message.cseq[1])


class TransactionLayer:
    """All live transactions of one SIP core."""

    def __init__(self, tu, clock, timer_values: Optional[TimerValues] = None, server_header: str = "") -> None:
        self.tu = tu
        self.clock = clock
        self.timer_values = timer_values or TimerValues()
        #: The 64*T1 timers of every transaction, in one queue.
        self.long_timers = FixedDelayQueue(clock, self.timer_values.t1x64)
        self.server_header = server_header
        self.server: Dict[Tuple, ServerTransaction] = {}
        self.client: Dict[Tuple, ClientTransaction] = {}
        #: Server transactions not yet answered with a final response.
        self.pending = 0
        #: Server transactions created so far (read by the monitor addon).
        self.received = 0
        #: Called with each server transaction when it sends its final
        #: response (the monitor's response codes and latency); empty
        #: unless an addon watches.
        self.answer_observers: list = []
        #: Called with (data, flow, True) after each send (see
        #: L{rustpbx_py.proxy.SipCore.set_capture}); None: no capture.
        self.capture: Optional[Callable] = None

    # -- inbound -------------------------------------------------------------

    def request_received(self, request: Request, flow) -> None:
        key = server_key(request)
        if key is None:
            return
        tx = self.server.get(key)
        method = request.method
        if method == "ACK":
            if tx is not None and tx.final is not None and tx.final.status >= 300:
                tx.ack_received(request)
                return
            self.tu.ack_received(request, flow)
            return
        if tx is not None:
            tx.retransmission_received()
            return
        tx = ServerTransaction(self, request, flow, key)
        self.server[key] = tx
        self.pending += 1
        self.received += 1
        if method == "CANCEL":
            invite = self.server.get(server_key(request, "INVITE"))
            self.tu.cancel_received(tx, invite)
            return
        self.tu.new_transaction(tx)

    def response_received(self, response: Response, flow) -> None:
        key = client_key(response)
        tx = self.client.get(key) if key is not None else None
        if tx is None:
            self.tu.stray_response(response, flow)
            return
        tx.response_received(response)

    # -- outbound ------------------------------------------------------------

    def send_request(self, request: Request, flow, on_response: Callable) -> ClientTransaction:
        """
        Start a client transaction for C{request}, whose top Via already
        carries our branch, over C{flow}.
        """
        key = client_key(request)
        if key is None:
            raise ValueError("a request sent statefully needs a Via with a branch")
        tx = ClientTransaction(self, request, flow, key, on_response)
        self.client[key] = tx
        tx.start()
        if request.method == "CANCEL":
            invite = self.client.get((key[0], "INVITE"))
            if invite is not None:
                invite.cancel_sent()
        return tx

    def send(self, flow, data: bytes) -> None:
        """
        Send C{data} for a transaction.  Whatever the flow raises is handed
        to the transaction user's C{send_failed} (which counts and logs it)
        and goes no further: a send that fails must not keep a transaction
        from starting its timers and reaching its end state.
        """
        try:
            flow.send(data)
        except Exception as e:
            report = getattr(self.tu, "send_failed", None)
            if report is not None:
                report(None, flow.remote, e)
            return
        capture = self.capture
        if capture is not None:
            capture(data, flow, True)

    # -- bookkeeping ---------------------------------------------------------

    def transaction_answered(self, tx: ServerTransaction) -> None:
        self.pending -= 1
        if self.answer_observers:
            for observer in self.answer_observers:
                observer(tx)

    def server_terminated(self, tx: ServerTransaction) -> None:
        if self.server.get(tx.key) is tx:
            del self.server[tx.key]
        if not tx.completed:
            tx.completed = True
            self.pending -= 1
        self.tu.transaction_ended(tx)

    def client_terminated(self, tx: ClientTransaction) -> None:
        if self.client.get(tx.key) is tx:
            del self.client[tx.key]

    def shutdown(self) -> None:
        """Forget every transaction and cancel its timers."""
        for tx in list(self.server.values()):
            tx.timers.stop_all()
        for tx in list(self.client.values()):
            tx.timers.stop_all()
        self.server.clear()
        self.client.clear()
        self.long_timers.stop()

    def flow_failed(self, flow) -> None:
        """A connection closed: its pending client transactions fail (503)."""
        for tx in list(self.client.values()):
            if tx.flow is flow:
                tx.transport_failed()
