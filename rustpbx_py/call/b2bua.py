# -*- test-case-name: rustpbx_py.test.test_b2bua -*-
"""
One back-to-back call: the caller's INVITE (the A leg, where we are the
UAS) and the INVITEs we send to the callee's contacts or a trunk (the B
forks, where we are the UAC).  The first 2xx wins and every other fork is
cancelled; after that, the call relays in-dialog requests between the two
dialogs until a BYE, a CANCEL, a timeout or an expired session ends it.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Tuple

from twisted.logger import Logger

from rustpbx_py.call import record as R
from rustpbx_py.call.dialog import Leg, tag_of, uac_leg_from_response, uas_leg_from_request
from rustpbx_py.call.credentials import build_authorization
from rustpbx_py.sip.headers import HeaderError, NameAddr, parse_params
from rustpbx_py.sip.message import Request, Response
from rustpbx_py.transaction.client import build_cancel
from rustpbx_py.transaction.responses import new_branch, new_call_id, new_tag

#: Headers of the caller's INVITE that the B leg carries over.
COPIED_TO_B = (
    "content-type",
    "content-disposition",
    "allow",
    "accept",
    "subject",
    "priority",
    "alert-info",
    "call-info",
    "privacy",
    "p-asserted-identity",
    "p-preferred-identity",
    "user-to-user",
)
#: Headers of a response or in-dialog request relayed to the other leg.
RELAYED = ("content-type", "content-disposition", "event", "subscription-state", "allow", "rseq", "info-package", "recv-info")

MIN_SE = 90


class Target:
    """
    Where one fork goes: the Request-URI, the flow to send over, extra Route
    headers (a registration's Path), and the trunk it uses if any.
    """

    def __init__(
        self,
        uri: str,
        flow,
        to: str,
        routes: Tuple[str, ...] = (),
        trunk=None,
        label: str = "",
        template: Optional[Request] = None,
    ) -> None:
        self.template = template
        self.uri = uri
        self.flow = flow
        self.to = to
        self.routes = routes
        self.trunk = trunk
        self.label = label


class Fork:
    """One INVITE we sent for a call."""

    def __init__(self, target: Target, request: Request) -> None:
        self.target = target
        self.request = request
        self.tx = None
        self.provisional = False
        self.final: Optional[Response] = None
        self.cancel_pending = False
        self.cancelled = False
        self.auth_tried = False

    @property
    def done(self) -> bool:
        return self.final is not None


def _is_2xx(status: int) -> bool:
    return 200 <= status < 300


def best_response(responses: List[Response]) -> Optional[Response]:
    """
    The response a forking element passes on when no fork succeeded
    (RFC 3261 16.7 step 6): a 6xx wins, else the lowest class, preferring
    specific 4xx over 408/503.
    """
    if not responses:
        return None
    six = [r for r in responses if r.status >= 600]
    if six:
        return six[0]

    def rank(r: Response):
        generic = r.status in (408, 480, 500, 503)
        return (r.status // 100, generic, r.status)

    return sorted(responses, key=rank)[0]


class Call:
    """The state of one call between the A leg and its B forks."""

    log = Logger()

    def __init__(self, module, tx, record: R.CallRecord) -> None:
        self.module = module
        self.core = module.core
        self.clock = module.clock
        self.tx = tx
        self.record = record
        self.state = "routing"
        self.forks: List[Fork] = []
        self.pending_targets: List[List[Target]] = []
        self.a: Optional[Leg] = None
        self.b: Optional[Leg] = None
        self.b_call_id = new_call_id(module.config.proxy.callid_suffix)
        self.b_tag = new_tag()
        self.winner: Optional[Fork] = None
        self.answer: Optional[Response] = None
        self.answer_timer = None
        self.answer_interval = 0.0
        self.ring_timer = None
        self.session_interval: Optional[int] = None
        self.a_refresher = False  # the caller refreshes the session
        self.b_refresher_us = False  # we refresh towards the callee
        self.b_refresher_peer = False
        self.expiry_timers: dict = {}
        self.refresh_timer = None
        self.end_reason: Optional[str] = None
        self.on_end: List[Callable] = []
        self.pending_relays: dict = {}
        tx.on_cancel(self._caller_cancelled)

    # -- setting up ----------------------------------------------------------

    def trace(self, leg: str, direction: str, peer, message) -> None:
        self.record.sip_flow.add(self.clock.seconds(), leg, direction, peer, message)

    def start(self, targets: List[Target], fallbacks: List[List[Target]] = ()) -> None:
        """Fork to every target at once; C{fallbacks} are tried in order if all fail."""
        self.pending_targets = list(fallbacks)
        self.state = "calling"
        ring = self.module.ring_time_for(targets)
        if ring:
            self.ring_timer = self.clock.callLater(ring, self._ring_timeout)
        for target in targets:
            self._fork(target)

    def _build_invite(self, target: Target) -> Request:
        a = target.template or self.tx.request
        core = self.core
        flow = target.flow
        req = Request("INVITE", target.uri)
        req.add("Via", core.via_for(flow))
        try:
            mf = int(a.get("max-forwards") or "70")
        except ValueError:
            mf = 70
        req.add("Max-Forwards", str(max(mf - 1, 0)))
        req.add("From", self._b_from(a))
        req.add("To", target.to)
        req.add("Call-ID", self.b_call_id)
        req.add("CSeq", "1 INVITE")
        req.add("Contact", core.contact_for(flow))
        for route in target.routes:
            req.add("Route", route)
        for h in a.headers:
            if h[0] in COPIED_TO_B or h[0].startswith("x-"):
                req.headers.append(list(h))
        supported = [s for s in a.get_all("supported") if s.lower() not in ("100rel", "replaces", "gruu")]
        if self.session_interval and "timer" not in [s.lower() for s in supported]:
            supported.append("timer")
        if supported:
            req.add("Supported", ", ".join(supported))
        if self.session_interval:
            req.add("Session-Expires", str(self.session_interval))
            req.add("Min-SE", str(MIN_SE))
        req.add("User-Agent", self.module.config.proxy.useragent)
        req.body = a.body
        return req

    def _b_from(self, template: Request) -> str:
        value = template.get("from") or ""
        try:
            na = NameAddr.parse(value)
        except HeaderError:
            return f"<sip:anonymous@anonymous.invalid>;tag={self.b_tag}"
        na.params = {k: v for k, v in na.params.items() if k != "tag"}
        na.params["tag"] = self.b_tag
        return str(na)

    def _fork(self, target: Target) -> Fork:
        request = self._build_invite(target)
        fork = Fork(target, request)
        self.forks.append(fork)
        self.module.index_b(self, fork)
        self._send_fork(fork)
        return fork

    def _send_fork(self, fork: Fork) -> None:
        self.trace("b", "out", fork.target.flow.remote, fork.request)
        fork.tx = self.core.send_request(fork.request, fork.target.flow, lambda tx, r, fork=fork: self._b_response(fork, r))

    # -- responses from the callee side ------------------------------------

    def _b_response(self, fork: Fork, response: Response) -> None:
        self.trace("b", "in", fork.target.flow.remote, response)
        status = response.status
        if status < 200:
            if status == 100:
                return
            fork.provisional = True
            if fork.cancel_pending:
                self._cancel_fork(fork)
                return
            if self.state in ("calling", "ringing") and not self.tx.completed:
                if self.record.ring_time is None:
                    self.record.ring_time = self.clock.seconds()
                    self.module.event("ringing", self)
                self.state = "ringing"
                self._reply_a(status, response.reason, response)
            return
        if _is_2xx(status):
            self._b_answered(fork, response)
            return
        fork.final = response
        if status in (401, 407) and fork.target.trunk is not None and not fork.auth_tried:
            if self._retry_with_credentials(fork, response):
                return
        if self.state in ("ended", "answered"):
            return
        if status >= 500 or status == 408:
            self.module.trunk_failed(fork.target.trunk)
        if all(f.done for f in self.forks):
            if self.pending_targets and self.state in ("calling", "ringing") and (status >= 500 or status == 408):
                nxt = self.pending_targets.pop(0)
                for target in nxt:
                    self._fork(target)
                return
            self._fail_a([f.final for f in self.forks if f.final is not None])

    def _retry_with_credentials(self, fork: Fork, response: Response) -> bool:
        """Answer a carrier's 401/407 with the trunk's username and password."""
        trunk = fork.target.trunk
        username = getattr(trunk, "username", None)
        password = getattr(trunk, "password", None)
        if not username or password is None:
            return False
        header = "www-authenticate" if response.status == 401 else "proxy-authenticate"
        challenge = response.get(header)
        if not challenge:
            return False
        req = fork.request
        number = req.cseq[0] + 1
        retry = Request("INVITE", req.uri, req.copy_headers(), req.body)
        retry.remove("via")
        retry.insert("Via", self.core.via_for(fork.target.flow))
        retry.set("CSeq", f"{number} INVITE")
        authorization = build_authorization(challenge, "INVITE", req.uri, username, password)
        retry.add("Authorization" if response.status == 401 else "Proxy-Authorization", authorization)
        new = Fork(fork.target, retry)
        new.auth_tried = True
        fork.auth_tried = True
        self.forks.append(new)
        self._send_fork(new)
        return True

    def _b_answered(self, fork: Fork, response: Response) -> None:
        if self.winner is not None:
            if fork is self.winner or fork.request.call_id == self.b_call_id and tag_of(response.get("to")) == tag_of(self.winner_response.get("to")):
                # A 2xx retransmission: ACK it again (13.2.2.4).
                self._ack_b(fork, response)
                return
            # A second fork answered too: take it and hang it up.
            leg = uac_leg_from_response("b2", fork.request, response, fork.target.flow)
            self._ack_b(fork, response, leg)
            self._send_in_dialog(leg, "BYE")
            return
        if self.state == "ended":
            leg = uac_leg_from_response("b", fork.request, response, fork.target.flow)
            self._ack_b(fork, response, leg)
            self._send_in_dialog(leg, "BYE")
            return
        self.winner = fork
        self.winner_response = response
        fork.final = response
        self.b = uac_leg_from_response("b", fork.request, response, fork.target.flow)
        self.b.cseq = fork.request.cseq[0]
        self.module.index_leg(self, self.b)
        self.module.trust_callee(self.b)
        self._ack_b(fork, response)
        for other in self.forks:
            if other is not fork and not other.done:
                self._cancel_fork(other)
        self._stop_ring_timer()
        self._negotiate_b_timer(response)
        self.state = "answered"
        self.record.answer_time = self.clock.seconds()
        self.record.status_code = response.status
        self.record.trunk = getattr(fork.target.trunk, "name", self.record.trunk)
        extra = self._session_headers_for_a()
        self._reply_a(response.status, response.reason, response, extra)
        self.module.event("answered", self)
        self._start_answer_retransmission()
        self._arm_session_timers()

    def _ack_b(self, fork: Fork, response: Response, leg: Optional[Leg] = None) -> None:
        leg = leg or self.b
        if leg is None:
            return
        ack = leg.request("ACK", self.core.via_for(leg.flow), cseq=fork.request.cseq[0])
        for name in ("proxy-authorization", "authorization"):
            value = fork.request.get(name)
            if value:
                ack.add(name, value)
        self.trace("b", "out", leg.flow.remote, ack)
        self.core.send_stateless(ack, leg.flow)

    def _cancel_fork(self, fork: Fork) -> None:
        """CANCEL a pending fork once it has sent a provisional (9.1)."""
        if fork.done or fork.cancelled:
            return
        if not fork.provisional:
            fork.cancel_pending = True
            return
        fork.cancelled = True
        cancel = build_cancel(fork.request)
        self.trace("b", "out", fork.target.flow.remote, cancel)
        self.core.send_request(cancel, fork.target.flow, lambda tx, r: None)

    # -- toward the caller ---------------------------------------------------

    def _reply_a(self, status: int, reason: str, source: Optional[Response] = None, extra=()) -> None:
        headers = []
        body = b""
        if source is not None:
            for h in source.headers:
                if h[0] in RELAYED:
                    headers.append((h[1], h[2]))
            body = source.body
        if status > 100 and status < 300 or status >= 300 and status < 400:
            headers.append(("Contact", self.core.contact_for(self.tx.flow)))
        headers.extend(extra)
        response = self.tx.reply(status, reason, headers, body)
        self.trace("a", "out", self.tx.reply_flow.remote, response)
        if _is_2xx(status):
            self.answer = response
            self.a = uas_leg_from_request("a", self.tx.request, self.tx.local_tag(), self.tx.reply_flow)
            self.module.index_leg(self, self.a)

    def _fail_a(self, responses: List[Response]) -> None:
        best = best_response(responses)
        if best is None:
            status, reason = 480, "Temporarily Unavailable"
        else:
            status, reason = best.status, best.reason
        if not self.module.config.proxy.passthrough_failure and status != 487:
            status, reason = 480, "Temporarily Unavailable"
        if not self.tx.completed:
            self._reply_a(status, reason)
        self.record.status_code = status
        reason_code = R.REJECTED
        if status in (408, 480) and best is not None and best.status == 408:
            reason_code = R.NO_ANSWER
        elif status >= 500 and status < 600:
            reason_code = R.FAILED
        self.end(reason_code)

    def fail(self, status: int, reason: str, hangup: str = R.FAILED, headers=()) -> None:
        """Refuse the call before any fork (routing said no)."""
        if not self.tx.completed:
            response = self.tx.reply(status, reason, headers)
            self.trace("a", "out", self.tx.reply_flow.remote, response)
        self.record.status_code = status
        self.end(hangup)

    def _start_answer_retransmission(self) -> None:
        """Repeat our 2xx to the caller until its ACK (13.3.1.4)."""
        if self.tx.reply_flow.reliable:
            self.answer_timer = self.clock.callLater(self.module.timers.t1x64, self._answer_not_acked)
            return
        self.answer_interval = self.module.timers.t1
        self.answer_deadline = self.clock.seconds() + self.module.timers.t1x64
        self.answer_timer = self.clock.callLater(self.answer_interval, self._retransmit_answer)

    def _retransmit_answer(self) -> None:
        if self.answer is None or self.state != "answered":
            return
        if self.clock.seconds() >= self.answer_deadline:
            self._answer_not_acked()
            return
        self.tx.respond(self.answer)
        self.answer_interval = min(self.answer_interval * 2, self.module.timers.t2)
        self.answer_timer = self.clock.callLater(self.answer_interval, self._retransmit_answer)

    def _answer_not_acked(self) -> None:
        self.answer_timer = None
        if self.state == "answered" and self.answer is not None:
            self.log.info("call {id}: no ACK for our 2xx, hanging up", id=self.tx.request.call_id)
            self.hangup(R.FAILED)

    def a_acked(self) -> None:
        """The caller's ACK for our 2xx arrived."""
        self.answer = None
        if self.answer_timer is not None and self.answer_timer.active():
            self.answer_timer.cancel()
        self.answer_timer = None

    # -- cancel, timeouts, hangup -------------------------------------------

    def _caller_cancelled(self, tx) -> None:
        for fork in self.forks:
            self._cancel_fork(fork)
        self._stop_ring_timer()
        if not self.tx.completed:
            response = self.tx.reply(487, "Request Terminated")
            self.trace("a", "out", self.tx.reply_flow.remote, response)
        self.record.status_code = 487
        self.end(R.CANCELED)

    def _ring_timeout(self) -> None:
        self.ring_timer = None
        if self.state not in ("calling", "ringing"):
            return
        for fork in self.forks:
            self._cancel_fork(fork)
        if not self.tx.completed:
            response = self.tx.reply(480, "Temporarily Unavailable")
            self.trace("a", "out", self.tx.reply_flow.remote, response)
        self.record.status_code = 480
        self.end(R.NO_ANSWER)

    def _stop_ring_timer(self) -> None:
        if self.ring_timer is not None and self.ring_timer.active():
            self.ring_timer.cancel()
        self.ring_timer = None

    def hangup(self, reason: str) -> None:
        """End an answered call from our side: BYE to both legs."""
        if self.state == "ended":
            return
        for leg in (self.a, self.b):
            if leg is not None:
                self._send_in_dialog(leg, "BYE")
        if self.state in ("calling", "ringing"):
            for fork in self.forks:
                self._cancel_fork(fork)
            if not self.tx.completed:
                self.tx.reply(503, "Service Unavailable")
        self.end(reason)

    def end(self, reason: str) -> None:
        if self.state == "ended":
            return
        self.state = "ended"
        self.end_reason = reason
        self._stop_ring_timer()
        self.a_acked()
        for call in list(self.expiry_timers.values()) + [self.refresh_timer]:
            if call is not None and call.active():
                call.cancel()
        self.expiry_timers.clear()
        self.refresh_timer = None
        self.record.end_time = self.clock.seconds()
        self.record.hangup_reason = reason
        self.module.call_ended(self)

    # -- in-dialog requests --------------------------------------------------

    def other(self, leg: Leg) -> Optional[Leg]:
        return self.b if leg is self.a else self.a

    def in_dialog(self, tx, leg: Leg) -> None:
        """A request inside one of our dialogs: answer or relay it."""
        request = tx.request
        self.trace(leg.name, "in", tx.flow.remote, request)
        number = request.cseq[0]
        if number and number < leg.remote_cseq and request.method != "ACK":
            tx.reply(500, "Server Internal Error", [("Retry-After", "1")])
            return
        leg.remote_cseq = max(leg.remote_cseq, number)
        method = request.method
        if method == "BYE":
            response = tx.reply(200, "OK")
            self.trace(leg.name, "out", tx.reply_flow.remote, response)
            other = self.other(leg)
            if other is not None and self.state != "ended":
                self._send_in_dialog(other, "BYE")
            if self.state != "ended":
                self.end(R.BY_CALLER if leg is self.a else R.BY_CALLEE)
            return
        if self.state != "answered":
            tx.reply(481 if self.state == "ended" else 491, "")
            return
        other = self.other(leg)
        if other is None:
            tx.reply(481, "Call/Transaction Does Not Exist")
            return
        if method in ("INVITE", "UPDATE"):
            self._refreshed(leg, request)
        headers = [(h[1], h[2]) for h in request.headers if h[0] in RELAYED]
        if method in ("INVITE", "UPDATE") and self.session_interval:
            headers.append(("Session-Expires", f"{self.session_interval};refresher={'uas' if other is self.b and self.b_refresher_peer else 'uac'}"))
            headers.append(("Supported", "timer"))
        relay = other.request(method, self.core.via_for(other.flow), self.core.contact_for(other.flow), headers, request.body)
        self.trace(other.name, "out", other.flow.remote, relay)
        self.core.send_request(relay, other.flow, lambda ctx, r: self._relayed_response(tx, leg, other, relay, r))

    def _relayed_response(self, tx, leg: Leg, other: Leg, relay: Request, response: Response) -> None:
        self.trace(other.name, "in", other.flow.remote, response)
        if relay.method == "INVITE" and _is_2xx(response.status):
            ack = other.request("ACK", self.core.via_for(other.flow), cseq=relay.cseq[0])
            self.trace(other.name, "out", other.flow.remote, ack)
            self.core.send_stateless(ack, other.flow)
        if tx.completed or response.status == 100:
            return
        headers = [(h[1], h[2]) for h in response.headers if h[0] in RELAYED]
        if relay.method in ("INVITE", "UPDATE") and _is_2xx(response.status):
            headers.append(("Contact", self.core.contact_for(tx.flow)))
            if self.session_interval:
                who = "uac" if leg is self.a and self.a_refresher else "uas"
                headers.append(("Session-Expires", f"{self.session_interval};refresher={who}"))
                headers.append(("Require", "timer"))
        out = tx.reply(response.status, response.reason, headers, response.body)
        self.trace(leg.name, "out", tx.reply_flow.remote, out)

    def _send_in_dialog(self, leg: Leg, method: str) -> None:
        request = leg.request(method, self.core.via_for(leg.flow), self.core.contact_for(leg.flow))
        self.trace(leg.name, "out", leg.flow.remote, request)
        self.core.send_request(request, leg.flow, lambda tx, r, leg=leg: self.trace(leg.name, "in", leg.flow.remote, r))

    # -- session timers (RFC 4028) -------------------------------------------

    def negotiate_a_timer(self) -> Optional[Tuple[int, str]]:
        """
        Read the caller's Session-Expires; a value below our minimum is
        refused with 422 (returned as (status, Min-SE)).
        """
        if not self.module.config.proxy.session_timer:
            return None
        request = self.tx.request
        value = request.get("session-expires")
        supported = [s.lower() for s in request.get_all("supported")]
        if value:
            number, _, params = value.partition(";")
            try:
                interval = int(number.strip())
            except ValueError:
                return (400, "Bad Session-Expires")
            if interval < MIN_SE:
                return (422, str(MIN_SE))
            refresher = parse_params(params).get("refresher")
            self.session_interval = interval
            # The caller refreshes unless it named us, or cannot do it.
            self.a_refresher = refresher != "uas" and "timer" in supported
            return None
        if "timer" in supported:
            self.session_interval = self.module.config.proxy.session_expires
            self.a_refresher = True
        return None

    def _session_headers_for_a(self) -> list:
        if not self.session_interval:
            return []
        who = "uac" if self.a_refresher else "uas"
        headers = [("Session-Expires", f"{self.session_interval};refresher={who}")]
        if "timer" in [s.lower() for s in self.tx.request.get_all("supported")]:
            headers.append(("Require", "timer"))
        return headers

    def _negotiate_b_timer(self, response: Response) -> None:
        if not self.session_interval:
            return
        value = response.get("session-expires")
        if not value:
            return  # the callee does not do session timers: nothing to watch on B
        number, _, params = value.partition(";")
        try:
            self.session_interval = max(MIN_SE, min(self.session_interval, int(number.strip())))
        except ValueError:
            return
        refresher = parse_params(params).get("refresher")
        if refresher == "uas":
            self.b_refresher_peer = True
        else:
            self.b_refresher_us = True

    def _arm_session_timers(self) -> None:
        interval = self.session_interval
        if not interval:
            return
        if self.a_refresher:
            self._arm_expiry("a")
        if self.b_refresher_peer:
            self._arm_expiry("b")
        if not self.a_refresher or self.b_refresher_us:
            self.refresh_timer = self.clock.callLater(interval / 2.0, self._refresh)

    def _arm_expiry(self, name: str) -> None:
        interval = self.session_interval or 0
        old = self.expiry_timers.get(name)
        if old is not None and old.active():
            old.cancel()
        # RFC 4028 10: expire at interval minus min(32, interval / 3).
        delay = interval - min(32.0, interval / 3.0)
        self.expiry_timers[name] = self.clock.callLater(delay, self._expired, name)

    def _refreshed(self, leg: Leg, request: Request) -> None:
        if leg is self.a and self.a_refresher:
            self._arm_expiry("a")
        elif leg is self.b and self.b_refresher_peer:
            self._arm_expiry("b")

    def _expired(self, name: str) -> None:
        self.expiry_timers.pop(name, None)
        if self.state == "answered":
            self.log.info("call {id}: session expired unrefreshed", id=self.tx.request.call_id)
            self.hangup(R.SESSION_EXPIRED)

    def _refresh(self) -> None:
        """Refresh the legs where we are the refresher: UPDATE when the peer
        allows it, else a re-INVITE with the last SDP."""
        self.refresh_timer = None
        if self.state != "answered":
            return
        legs = []
        if not self.a_refresher and self.a is not None:
            legs.append((self.a, self.answer_body_for_a()))
        if self.b_refresher_us and self.b is not None:
            legs.append((self.b, self.tx.request.body))
        for leg, body in legs:
            method = "UPDATE" if leg.allows("UPDATE") else "INVITE"
            headers = [("Session-Expires", f"{self.session_interval};refresher=uac"), ("Supported", "timer")]
            if method == "INVITE" and body:
                headers.append(("Content-Type", "application/sdp"))
            else:
                body = b""
            req = leg.request(method, self.core.via_for(leg.flow), self.core.contact_for(leg.flow), headers, body)
            self.trace(leg.name, "out", leg.flow.remote, req)
            self.core.send_request(req, leg.flow, lambda tx, r, leg=leg, req=req: self._refresh_answered(leg, req, r))
        self.refresh_timer = self.clock.callLater((self.session_interval or 0) / 2.0, self._refresh)

    def _refresh_answered(self, leg: Leg, request: Request, response: Response) -> None:
        self.trace(leg.name, "in", leg.flow.remote, response)
        if request.method == "INVITE" and _is_2xx(response.status):
            ack = leg.request("ACK", self.core.via_for(leg.flow), cseq=request.cseq[0])
            self.core.send_stateless(ack, leg.flow)
        if response.status in (408, 481) and self.state == "answered":
            self.hangup(R.SESSION_EXPIRED)

    def answer_body_for_a(self) -> bytes:
        response = getattr(self, "winner_response", None)
        return response.body if response is not None else b""
