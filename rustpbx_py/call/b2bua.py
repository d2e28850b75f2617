# -*- test-case-name: rustpbx_py.test.test_b2bua -*-
"""
One back-to-back call: the caller's INVITE (the A leg, where we are the
UAS) and the INVITEs we send to the callee's contacts or a trunk (the B
forks, where we are the UAC).  The first 2xx wins and every other fork is
cancelled; after that, the call relays in-dialog requests between the two
dialogs until a BYE, a CANCEL, a timeout or an expired session ends it.

Each leg keeps its own session timer (RFC 4028, see
L{rustpbx_py.call.session_timer}); reliable provisional responses and
their PRACKs (RFC 3262) are relayed end to end when both sides do 100rel.
"""

from __future__ import annotations

import random
from typing import Callable, Dict, List, Optional, Tuple

from twisted.logger import Logger

from rustpbx_py.call import record as R
from rustpbx_py.call import session_timer as ST
from rustpbx_py.call.credentials import trunk_authorization
from rustpbx_py.call.media import ANSWER, OFFER, is_sdp
from rustpbx_py.call.dialog import (
    Leg,
    contact_target,
    from_with_tag,
    record_route_headers,
    relayed_max_forwards,
    tag_of,
    uac_leg_from_response,
    uas_leg_from_request,
)
from rustpbx_py.media import MediaError
from rustpbx_py.sip.headers import HeaderError, NameAddr
from rustpbx_py.sip.message import Request, Response
from rustpbx_py.transaction.client import build_cancel
from rustpbx_py.transaction.responses import new_call_id, new_tag

#: Headers of the caller's INVITE that the B leg carries over.
COPIED_TO_B = (
    "content-type",
    "content-disposition",
    "accept",
    "subject",
    "priority",
    "alert-info",
    "call-info",
    "privacy",
    "p-asserted-identity",
    "p-preferred-identity",
    "user-to-user",
    "referred-by",
)
#: Headers of a response or in-dialog request relayed to the other leg.
RELAYED = (
    "content-type",
    "content-disposition",
    "event",
    "subscription-state",
    "info-package",
    "recv-info",
    "refer-to",
    "referred-by",
    "retry-after",
    "warning",
    "unsupported",
    "expires",
    "allow-events",
    "accept",
    "refer-sub",
)
#: What we accept inside our dialogs (our Allow on both legs).
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, PRACK, UPDATE, INFO, MESSAGE, NOTIFY, REFER, SUBSCRIBE"
#: Option-tags never passed to the callee: they name dialogs or contacts
#: on the caller's side of the B2BUA.
_NOT_COPIED_TAGS = ("replaces", "gruu", "100rel", "timer")

MIN_SE = ST.MIN_SE
#: Seconds between repeats of our provisional to a caller that is still
#: ringing (RFC 3261 13.3.1.1: "every minute").
PROVISIONAL_INTERVAL = 60.0
#: Seconds a relayed re-INVITE may stay unanswered after a provisional
#: before we CANCEL it (RFC 3261 16.6 step 11: Timer C, more than 3 min).
TIMER_C = 181.0


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
        headers: Tuple[Tuple[str, str], ...] = (),
    ) -> None:
        self.template = template
        #: Extra headers for this fork's INVITE (a mapped Replaces).
        self.headers = headers
        self.uri = uri
        self.flow = flow
        self.to = to
        self.routes = routes
        self.trunk = trunk
        self.label = label
        #: The callee's registration was NAT-fixed (media policy).
        self.nat = False
        #: The callee is a WebRTC endpoint (its binding's C{webrtc}): the
        #: media engine offers it WebRTC.
        self.webrtc = False


class Fork:
    """
    One INVITE we sent for a call.  A fork answered with 401/407 or 422 is
    I{replaced} by the retry we send for it: its final response no longer
    counts when the call picks the answer for the caller.
    """

    def __init__(self, target: Target, request: Request, group: int = 0) -> None:
        self.target = target
        self.request = request
        self.group = group
        self.tx = None
        self.provisional = False
        self.final: Optional[Response] = None
        self.cancel_pending = False
        self.cancelled = False
        self.auth_tried = False
        self.timer_retried = False
        self.replaced = False
        #: Early dialogs (by the callee's To tag) of this fork.
        self.early: Dict[str, Leg] = {}
        #: To tags of extra 2xx dialogs we ACKed and hung up.
        self.released: set = set()

    @property
    def done(self) -> bool:
        return self.final is not None


class _Unacked:
    """A 2xx of ours to an INVITE, repeated until its ACK (13.3.1.4)."""

    __slots__ = ("tx", "response", "cseq", "interval", "deadline", "timer")

    def __init__(self, tx, response: Response, cseq: int) -> None:
        self.tx = tx
        self.response = response
        self.cseq = cseq
        self.interval = 0.0
        self.deadline = 0.0
        self.timer = None


class _AckRelay:
    """
    The ACK we owe the other leg for its 2xx: sent at once when our INVITE
    carried the offer, else when the peer's ACK brings the answer.
    """

    __slots__ = ("leg", "cseq", "ack", "auth", "sending")

    def __init__(self, leg: Leg, cseq: int, auth=()) -> None:
        self.leg = leg
        self.cseq = cseq
        self.ack: Optional[Request] = None
        self.auth = auth
        #: The answer its ACK carries is with the media engine.
        self.sending = False


def _is_2xx(status: int) -> bool:
    return 200 <= status < 300


def best_response(responses: List[Response]) -> Optional[Response]:
    """
    The response a forking element passes on when no fork succeeded
    (RFC 3261 16.7 step 6): a 6xx wins, else the lowest class, preferring
    specific 4xx over 408/480/500/503.
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


def hangup_reason_for(status: int) -> str:
    """
    The hangup reason of a call that failed with C{status} from the callee
    side, as RustPBX maps them: busy and decline are rejected, timeouts and
    unavailable callees noAnswer, 5xx serverUnavailable, the rest failed.
    """
    if status in (486, 600, 603):
        return R.REJECTED
    if status == 487:
        return R.CANCELED
    if status in (408, 480, 484, 485, 604):
        return R.NO_ANSWER
    if 500 <= status < 600:
        return R.SERVER_UNAVAILABLE
    return R.FAILED


def release_stray_2xx(core, response: Response, flow) -> Tuple[Request, Request]:
    """
    ACK and then BYE a 2xx to an INVITE of a call that is over (RFC 3261
    13.2.2.4 and 15): built from the response alone (its Contact, its
    Record-Route reversed), sent back where it came from, so a callee who
    answered too late is never left off-hook.
    """
    leg = Leg(
        "b",
        response.call_id,
        tag_of(response.get("from")) or "",
        response.get("from") or "",
        response.get("to") or "",
        contact_target(response) or _to_uri(response),
        list(reversed(response.get_all("record-route"))),
        flow,
        cseq=response.cseq[0],
    )
    ack = leg.request("ACK", core.via_for(flow), cseq=response.cseq[0])
    core.send_stateless(ack, flow)
    bye = leg.request("BYE", core.via_for(flow))
    core.send_request(bye, flow, lambda tx, r: None)
    return ack, bye


def _to_uri(message) -> str:
    try:
        uri = NameAddr.parse(message.get("to") or "").uri
    except HeaderError:
        return ""
    return str(uri) if uri is not None else ""


def media_status(failure) -> Tuple[int, str]:
    """The status a failed media step answers with: the L{MediaError}'s
    (488, or 503 when ports run out), 488 for SDP that does not parse,
    500 for anything else."""
    from rustpbx_py.sip.sdp import SdpError

    error = getattr(failure, "value", failure)
    if isinstance(error, MediaError):
        return error.status, error.reason
    if isinstance(error, SdpError):
        return 488, "Not Acceptable Here"
    return 500, "Server Internal Error"


def _fails_over(status: int) -> bool:
    """Whether a group that ended with C{status} lets the next group try (5xx, 408)."""
    return status == 408 or 500 <= status < 600


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
        self.group = 0
        self.pending_targets: List[List[Target]] = []
        self.a: Optional[Leg] = None
        self.b: Optional[Leg] = None
        self.b_call_id = new_call_id(module.config.proxy.callid_suffix)
        self.b_tag = new_tag()
        self.winner: Optional[Fork] = None
        self.winner_response: Optional[Response] = None
        self.ring_timer = None
        self.ring_time: Optional[float] = None
        #: Ends an answered call at max_call_duration.
        self.duration_timer = None
        #: Repeats our last provisional to the caller while it rings.
        self.keepalive_timer = None
        #: Timer C of each re-INVITE we relayed, by (leg name, CSeq).
        self.relay_timers: Dict[Tuple[str, int], object] = {}
        self.end_reason: Optional[str] = None
        #: Whether the record was handed to the store (see CallModule.flow_grew).
        self.recorded = False
        self.on_end: List[Callable] = []
        # Session timers (RFC 4028): the caller's plan, then one per leg.
        self.a_plan: Optional[ST.Plan] = None
        self.timers: Dict[str, ST.SessionTimer] = {}
        # Our 2xx waiting for an ACK, per leg name; the ACKs we owe the
        # other leg (by a key naming the INVITE), and those waiting for the
        # peer's ACK to carry its answer (leg name -> (CSeq, relay)).
        self.unacked: Dict[str, _Unacked] = {}
        self.ack_relays: Dict[str, _AckRelay] = {}
        self.ack_waits: Dict[str, Tuple[int, _AckRelay]] = {}
        # An offer/answer exchange relayed and not finished (14.1: 491).
        self.offer_pending = False
        # Reliable provisionals (RFC 3262).
        supported = ST.option_tags(tx.request, "supported")
        required = ST.option_tags(tx.request, "require")
        self.a_100rel = "100rel" in supported or "100rel" in required
        self.a_requires_100rel = "100rel" in required
        self.rseq = random.randint(1, 2**30)
        self.reliable: Dict[int, Tuple[Fork, Leg, int]] = {}
        self.reliable_by_b: Dict[Tuple[int, str, int], int] = {}
        # REFERs relayed (RFC 3515): (leg a request comes in on, the REFER's
        # CSeq on that leg) -> its CSeq on the other leg, for Event ids.
        self.refer_ids: Dict[Tuple[str, int], int] = {}
        #: The media side (L{rustpbx_py.call.media.CallMedia}), set at start;
        #: the offer the B forks carry; the route's config (media policy).
        self.media = None
        self.b_offer: Optional[bytes] = None
        self.route_config = None
        tx.on_cancel(self._caller_cancelled)

    # -- setting up ----------------------------------------------------------

    def trace(self, leg: str, direction: str, peer, message) -> None:
        """Keep C{message} (or the bytes sent for it) in the call's SIP flow."""
        self.record.sip_flow.add(self.clock.seconds(), leg, direction, peer, message)

    def start(self, targets: List[Target], fallbacks: List[List[Target]] = (), ring_time: Optional[int] = None) -> None:
        """
        Fork to every target at once; C{fallbacks} are tried in order when
        a group fails with 5xx or 408.  C{ring_time} (seconds, 0 = none)
        bounds how long the callee side may ring.
        """
        if self.state != "routing":
            return
        media = self.media = self.module.call_media(self, [targets, *fallbacks])
        request = self.tx.request
        if is_sdp(request.get("content-type"), request.body):
            media.process(
                OFFER, "a", request.body, self.tx.flow.remote,
                lambda body: self._start(targets, fallbacks, ring_time, body), self._media_failed,
            )
            return
        self._start(targets, fallbacks, ring_time, None)

    def _start(self, targets: List[Target], fallbacks, ring_time: Optional[int], offer: Optional[bytes]) -> None:
        if self.state != "routing":
            return
        self.b_offer = offer
        self.pending_targets = list(fallbacks)
        self.state = "calling"
        ring = self.module.ring_time_for(targets) if ring_time is None else ring_time
        if ring:
            self.ring_timer = self.clock.callLater(ring, self._ring_timeout)
        for target in targets:
            self._fork(target)

    def _build_invite(self, target: Target) -> Request:
        a = target.template or self.tx.request
        core = self.core
        flow = target.flow
        proxy = self.module.config.proxy
        req = Request("INVITE", target.uri)
        req.add("Via", core.via_for(flow))
        req.add("Max-Forwards", str(relayed_max_forwards(a)))
        req.add("From", from_with_tag(a, self.b_tag))
        req.add("To", target.to)
        req.add("Call-ID", self.b_call_id)
        req.add("CSeq", "1 INVITE")
        req.add("Contact", core.contact_for(flow))
        for route in target.routes:
            req.add("Route", route)
        for h in a.headers:
            if h[0] in COPIED_TO_B or h[0].startswith("x-"):
                req.headers.append(list(h))
        for name, value in target.headers:
            req.add(name, value)
        req.add("Allow", ALLOW)
        supported = [s for s in a.get_all("supported") if s.lower() not in _NOT_COPIED_TAGS]
        if self.a_100rel:
            supported.append("100rel")
        if proxy.session_timer:
            supported.append("timer")
            for name, value in ST.uac_headers(proxy.session_expires, None):
                req.add(name, value)
        if supported:
            req.add("Supported", ", ".join(supported))
        req.add("User-Agent", proxy.useragent)
        req.body = a.body if self.b_offer is None else self.b_offer
        return req

    def _fork(self, target: Target) -> Fork:
        request = self._build_invite(target)
        fork = Fork(target, request, self.group)
        self.forks.append(fork)
        self._send_fork(fork)
        return fork

    def _send_fork(self, fork: Fork) -> None:
        fork.tx = self.core.send_request(fork.request, fork.target.flow, lambda tx, r, fork=fork: self._b_response(fork, r))
        self.trace("b", "out", fork.target.flow.remote, fork.tx.data)

    # -- responses from the callee side ------------------------------------

    def _b_response(self, fork: Fork, response: Response) -> None:
        self.trace("b", "in", fork.target.flow.remote, response)
        status = response.status
        if status < 200:
            # Any provisional, 100 included, lets a CANCEL through (9.1);
            # the INVITE then waits in Proceeding, so one that only got a
            # 100 must be cancelled too when the call gives up.
            fork.provisional = True
            if fork.cancel_pending:
                self._cancel_fork(fork)
                return
            if status == 100:
                return
            if self.state in ("calling", "ringing") and not self.tx.completed:
                self._b_provisional(fork, response)
            return
        if _is_2xx(status):
            self._b_answered(fork, response)
            return
        fork.final = response
        if self.state not in ("calling", "ringing"):
            return
        if status in (401, 407) and fork.target.trunk is not None and not fork.auth_tried:
            if self._retry_with_credentials(fork, response):
                return
        if status == 422 and not fork.timer_retried and self._retry_with_interval(fork, response):
            return
        if _fails_over(status):
            self.module.trunk_failed(fork.target.trunk)
        if status >= 600:
            # A 6xx is final everywhere (RFC 3261 16.7): stop the others.
            for other in self.forks:
                self._cancel_fork(other)
        if not all(f.done for f in self.forks):
            return
        group = [f.final for f in self.forks if f.group == self.group and not f.replaced and f.final is not None]
        best = best_response(group)
        if self.pending_targets and best is not None and _fails_over(best.status):
            self.group += 1
            for target in self.pending_targets.pop(0):
                self._fork(target)
            return
        self._fail_a([f.final for f in self.forks if not f.replaced and f.final is not None])

    def _retry(self, fork: Fork, headers: List[Tuple[str, str]], drop: Tuple[str, ...] = ()) -> Fork:
        """Send C{fork}'s INVITE again with the next CSeq, a new branch and C{headers}."""
        req = fork.request
        retry = Request("INVITE", req.uri, req.copy_headers(), req.body)
        retry.remove("via")
        for name in drop:
            retry.remove(name)
        retry.insert("Via", self.core.via_for(fork.target.flow))
        retry.set("CSeq", f"{req.cseq[0] + 1} INVITE")
        for name, value in headers:
            retry.set(name, value)
        new = Fork(fork.target, retry, fork.group)
        new.auth_tried = fork.auth_tried
        new.timer_retried = fork.timer_retried
        fork.replaced = True
        self.forks.append(new)
        self._send_fork(new)
        return new

    def _retry_with_credentials(self, fork: Fork, response: Response) -> bool:
        """Answer a carrier's 401/407 with the trunk's username and password (once)."""
        authorization = trunk_authorization(fork.target.trunk, response, "INVITE", fork.request.uri)
        if authorization is None:
            return False
        fork.auth_tried = True
        self._retry(fork, [authorization])
        return True

    def _retry_with_interval(self, fork: Fork, response: Response) -> bool:
        """A 422 to our INVITE: ask again with the callee's Min-SE (RFC 4028 7.4)."""
        min_se = ST.parse_min_se(response)
        if not fork.request.has("session-expires"):
            return False
        fork.timer_retried = True
        self._retry(fork, ST.uac_headers(min_se, None, min_se))
        return True

    def _b_provisional(self, fork: Fork, response: Response) -> None:
        status = response.status
        reliable = "100rel" in ST.option_tags(response, "require") and response.get("rseq")
        extra: List[Tuple[str, str]] = []
        if reliable:
            try:
                b_rseq = int((response.get("rseq") or "").strip())
            except ValueError:
                return
            leg = self._early_leg(fork, response)
            if self.a_100rel:
                key = (id(fork), tag_of(response.get("to")) or "", b_rseq)
                a_rseq = self.reliable_by_b.get(key)
                if a_rseq is None:
                    self.rseq += 1
                    a_rseq = self.rseq
                    self.reliable_by_b[key] = a_rseq
                    self.reliable[a_rseq] = (fork, leg, b_rseq)
                extra = [("Require", "100rel"), ("RSeq", str(a_rseq))]
                self._a_early()
            else:
                # The caller cannot PRACK: we do, and pass it on unreliably.
                key = (id(fork), tag_of(response.get("to")) or "", b_rseq)
                if key in self.reliable_by_b:
                    return
                self.reliable_by_b[key] = 0
                self._send_in_dialog(leg, "PRACK", [("RAck", f"{b_rseq} {fork.request.cseq[0]} INVITE")])
        elif self.a_requires_100rel:
            return  # the caller insists on reliability we cannot give this one
        if self.record.ring_time is None and status >= 180:
            self.record.ring_time = self.clock.seconds()
            self.module.event("ringing", self)
        self.state = "ringing"
        self._early_media(fork, response, lambda body: self._reply_a(status, response.reason, response, extra, body=body))

    def _early_media(self, fork: Fork, response: Response, proceed: Callable[[bytes], None]) -> None:
        """
        An 18x's SDP through the media side.  The first early dialog with
        SDP answers the caller's offer; the caller keeps that answer (it
        has one early dialog with us), so another fork's or dialog's
        early SDP is replaced by it, until a 2xx picks the winner.
        """
        media = self.media
        if media is None or not media.anchored:
            proceed(response.body)
            return
        key = (id(fork), tag_of(response.get("to")) or "")
        if response.body and media.early is not None and media.early[0] != key:
            proceed(media.early[1])
            return

        def sent(body: bytes) -> None:
            if response.body and media.early is None:
                media.early = (key, body)
            if self.state != "ended":
                # (A 2xx may have come meanwhile: this still goes first.)
                proceed(body)

        self._media_body(response, "b", ANSWER if self.b_offer is not None else OFFER, fork.target.flow.remote, sent, self._media_failed, key)

    def _media_body(self, message, leg: str, kind: Optional[str], source, proceed: Callable[[bytes], None], failed, key=None) -> None:
        """Hand C{message}'s body (from C{leg}) to the media side; C{proceed}
        gets what to send the other leg (at once when nothing is anchored)."""
        if self.media is None:
            proceed(message.body)
            return
        sdp = is_sdp(message.get("content-type"), message.body)
        self.media.process(kind, leg, message.body, source, proceed, failed, key, sdp=sdp)

    def _media_failed(self, failure) -> None:
        """
        The media side refused an offer or answer of the call's set-up (or
        an ACK's answer): the caller gets the status (488, 503 when the
        port range is full), every fork is cancelled, a callee that
        answered gets BYE; an answered call is hung up.
        """
        status, reason = media_status(failure)
        self.log.info("call {id}: media refused: {status} {reason}", id=self.tx.request.call_id, status=status, reason=reason)
        if self.media is not None:
            self.media.note(f"media: refused: {status} {reason}")
        if self.state == "ended":
            return
        if self.state == "routing":
            self.fail(status, reason, R.FAILED)
        elif self.state in ("calling", "ringing"):
            self._give_up(status, reason, R.FAILED)
        elif not self.tx.completed:
            response = self.tx.reply(status, reason)
            self.trace("a", "out", self.tx.reply_flow.remote, self.tx.sent or response)
            self.record.status_code = status
            relay = self.ack_relays.get("b-initial")
            if relay is not None and relay.ack is None:
                self._send_completed_ack(relay, None, b"")
            if self.b is not None:
                self._send_in_dialog(self.b, "BYE")
            self.end(R.FAILED)
        else:
            self.hangup(R.FAILED)

    def media_timeout(self) -> None:
        """The media session saw no RTP either way for rtp_timeout: BYE both legs."""
        if self.media is not None:
            self.media.note(f"media: no RTP for {self.media.policy.rtp_timeout:g} s, hanging up")
        if self.state == "answered":
            self.log.info("call {id}: no RTP, hanging up", id=self.tx.request.call_id)
            self.hangup(R.RTP_TIMEOUT)

    def _early_leg(self, fork: Fork, response: Response) -> Leg:
        """The early dialog a provisional with a To tag opens (12.1.2)."""
        tag = tag_of(response.get("to")) or ""
        leg = fork.early.get(tag)
        if leg is None:
            leg = fork.early[tag] = uac_leg_from_response("b", fork.request, response, fork.target.flow)
        return leg

    def _a_early(self) -> Leg:
        """Our early dialog with the caller (for its PRACKs)."""
        if self.a is None:
            self.a = uas_leg_from_request("a", self.tx.request, self.tx.local_tag(), self.tx.reply_flow)
            self.module.index_leg(self, self.a)
        return self.a

    def _b_answered(self, fork: Fork, response: Response) -> None:
        tag = tag_of(response.get("to")) or ""
        if self.winner is not None and fork is self.winner and tag == tag_of(self.winner_response.get("to")):
            # A 2xx retransmission: ACK it again (13.2.2.4), once we have.
            relay = self.ack_relays.get("b-initial")
            if relay is not None and relay.ack is not None:
                self.trace("b", "out", relay.leg.flow.remote, relay.ack)
                self.core.send_stateless(relay.ack, relay.leg.flow)
            return
        if self.winner is not None or self.state not in ("calling", "ringing"):
            # Another fork (or another dialog of the same fork) answered too,
            # or the call is over: take that dialog and hang it up.
            fork.final = fork.final or response
            if tag in fork.released:
                return
            fork.released.add(tag)
            leg = fork.early.get(tag) or uac_leg_from_response("b2", fork.request, response, fork.target.flow)
            leg.confirm(response)
            self._send_ack(leg, fork.request.cseq[0], b"", self._auth_headers(fork.request))
            self._send_in_dialog(leg, "BYE")
            return
        self.winner = fork
        self.winner_response = response
        fork.final = response
        leg = fork.early.get(tag)
        if leg is None:
            leg = uac_leg_from_response("b", fork.request, response, fork.target.flow)
        else:
            leg.confirm(response)
        leg.cseq = max(leg.cseq, fork.request.cseq[0])
        leg.local_sdp = fork.request.body
        self.b = leg
        self.module.index_leg(self, self.b)
        self.module.trust_callee(self.b)
        for other in self.forks:
            if other is not fork and not other.done:
                self._cancel_fork(other)
        self._stop_ring_timer()
        self.state = "answered"
        self.record.answer_time = self.clock.seconds()
        limit = self.module.call_duration_for(fork.target)
        if limit:
            self.duration_timer = self.clock.callLater(limit, self._max_duration, limit)
        self.record.status_code = response.status
        self.record.trunk = getattr(fork.target.trunk, "name", self.record.trunk)
        # The B leg's ACK: now when our INVITE had the offer, else with the
        # caller's answer from its ACK.
        relay = self.ack_relays["b-initial"] = _AckRelay(leg, fork.request.cseq[0], self._auth_headers(fork.request))
        if fork.request.body:
            self._complete_ack(relay, None)
        else:
            self.ack_waits["a"] = (self.tx.request.cseq[0], relay)
        b_plan = ST.uac_result(response) if self.module.config.proxy.session_timer else None
        self._set_timer("b", b_plan)
        extra = ST.uas_headers(self.a_plan) if self.a_plan is not None else []

        def connect(body: bytes) -> None:
            if self.state != "answered":
                return
            self._reply_a(response.status, response.reason, response, extra, body=body)
            self._set_timer("a", self.a_plan)
            self.module.event("answered", self)

        kind = ANSWER if self.b_offer is not None else OFFER
        self._media_body(response, "b", kind, fork.target.flow.remote, connect, self._media_failed, (id(fork), tag))

    def stray_2xx(self, response: Response) -> bool:
        """
        A 2xx to one of our INVITEs whose client transaction is over (Timer
        B gave a silent fork a 408, Timer M ended the winner's): it is still
        an answer.  The winner's retransmission is ACKed again; any other
        connects the call if it still rings, else is ACKed and hung up.
        """
        try:
            branch = response.via.branch if response.via is not None else None
        except HeaderError:
            return False
        for fork in self.forks:
            via = fork.request.via
            if via is not None and via.branch == branch and fork.request.cseq[0] == response.cseq[0]:
                self.trace("b", "in", fork.target.flow.remote, response)
                self._b_answered(fork, response)
                return True
        return False

    def _auth_headers(self, request: Request) -> Tuple[Tuple[str, str], ...]:
        return tuple((name, request.get(name)) for name in ("proxy-authorization", "authorization") if request.get(name))

    def _send_ack(
        self, leg: Leg, cseq: int, body: bytes = b"", headers=(), content_type: Optional[str] = None, max_forwards: int = 70
    ) -> Request:
        extra = list(headers)
        if body:
            extra.append(("Content-Type", content_type or "application/sdp"))
        ack = leg.request("ACK", self.core.via_for(leg.flow), headers=extra, body=body, cseq=cseq, max_forwards=max_forwards)
        self.trace(leg.name, "out", leg.flow.remote, self.core.send_stateless(ack, leg.flow))
        return ack

    def _complete_ack(self, relay: _AckRelay, from_peer: Optional[Request]) -> None:
        """Send the ACK we owe C{relay.leg}, with the answer C{from_peer}'s ACK carries."""
        if relay.ack is not None or relay.sending:
            return
        media = self.media
        if from_peer is not None and from_peer.body and media is not None and media.anchored:
            relay.sending = True
            answering = self.other(relay.leg)

            def send(body: bytes) -> None:
                self._send_completed_ack(relay, from_peer, body)

            def failed(f) -> None:
                self._send_completed_ack(relay, from_peer, b"")
                self._media_failed(f)

            source = answering.flow.remote if answering is not None else None
            name = "a" if relay.leg.name == "b" else "b"
            self._media_body(from_peer, name, None, source, send, failed)
            return
        self._send_completed_ack(relay, from_peer, from_peer.body if from_peer is not None else b"")

    def _send_completed_ack(self, relay: _AckRelay, from_peer: Optional[Request], body: bytes) -> None:
        if relay.ack is not None:
            return
        content_type = from_peer.get("content-type") if from_peer is not None and body else None
        if body:
            relay.leg.local_sdp = body
        mf = relayed_max_forwards(from_peer) if from_peer is not None else 70
        relay.ack = self._send_ack(relay.leg, relay.cseq, body, relay.auth, content_type, mf)

    def _cancel_fork(self, fork: Fork) -> None:
        """CANCEL a pending fork once it has sent a provisional (9.1)."""
        if fork.done or fork.cancelled or fork.replaced:
            return
        if not fork.provisional:
            fork.cancel_pending = True
            return
        fork.cancelled = True
        cancel = build_cancel(fork.request)
        self.trace("b", "out", fork.target.flow.remote, cancel)
        self.core.send_request(cancel, fork.target.flow, lambda tx, r, fork=fork: self.trace("b", "in", fork.target.flow.remote, r))

    # -- toward the caller ---------------------------------------------------

    def _reply_a(
        self, status: int, reason: str, source: Optional[Response] = None, extra=(), body: Optional[bytes] = None
    ) -> Optional[Response]:
        """Answer the caller; C{body} replaces C{source}'s (SDP the media side rewrote)."""
        if self.tx.completed:
            return None
        headers = []
        if source is not None:
            for h in source.headers:
                if h[0] in RELAYED and (body is None or body or h[0] != "content-type"):
                    headers.append((h[1], h[2]))
            if body is None:
                body = source.body
        body = body or b""
        if 100 < status < 300:
            # A dialog-creating response copies the request's Record-Route,
            # in order (RFC 3261 12.1.1): the caller's ACK and BYE then go
            # back through the proxies that asked to stay on the path.
            headers.extend(record_route_headers(self.tx.request))
            headers.append(("Contact", self.core.contact_for(self.tx.flow)))
            headers.append(("Allow", ALLOW))
        headers.extend(extra)
        response = self.tx.reply(status, reason, headers, body)
        self.trace("a", "out", self.tx.reply_flow.remote, self.tx.sent or response)
        if 100 < status < 200 and not any(name.lower() == "rseq" for name, _ in extra):
            self._keep_ringing(response)
        if _is_2xx(status):
            leg = self._a_early()
            if body:
                leg.local_sdp = body
            self._await_ack(leg, self.tx, response)
        return response

    def _fail_a(self, responses: List[Response]) -> None:
        best = best_response(responses)
        if best is None:
            status, reason = 480, "Temporarily Unavailable"
        elif best.status in (401, 407):
            # A challenge for our (trunk) credentials: the caller cannot
            # answer it, the carrier refused us.
            status, reason = 403, "Forbidden"
        else:
            status, reason = best.status, best.reason
        hangup = hangup_reason_for(status)
        if not self.module.config.proxy.passthrough_failure and status != 487:
            status, reason = 480, "Temporarily Unavailable"
        extra = []
        if best is not None and best.status == status:
            # A redirect keeps the callee's Contacts: the caller may follow them.
            names = ("retry-after", "warning", "reason", "contact") if 300 <= status < 400 else ("retry-after", "warning", "reason")
            extra = [(h[1], h[2]) for h in best.headers if h[0] in names]
        self._reply_a(status, reason, None, extra)
        self.record.status_code = status
        self.end(hangup)

    def fail(self, status: int, reason: str, hangup: str = R.FAILED, headers=()) -> None:
        """Refuse the call before any fork (routing said no)."""
        if self.state == "ended":
            return
        if not self.tx.completed:
            response = self.tx.reply(status, reason, headers)
            self.trace("a", "out", self.tx.reply_flow.remote, response)
        self.record.status_code = status
        self.end(hangup)

    # -- our 2xx and its ACK ---------------------------------------------------

    def _await_ack(self, leg: Leg, tx, response: Response) -> None:
        """Repeat our 2xx to an INVITE on C{leg} until its ACK (13.3.1.4):
        T1, 2*T1, ... up to T2; no ACK within 64*T1 ends the call."""
        timers = self.module.timers
        pending = _Unacked(tx, response, tx.request.cseq[0])
        old = self.unacked.get(leg.name)
        if old is not None and old.timer is not None and old.timer.active():
            old.timer.cancel()
        self.unacked[leg.name] = pending
        pending.deadline = self.clock.seconds() + timers.t1x64
        if tx.reply_flow.reliable:
            pending.timer = self.clock.callLater(timers.t1x64, self._not_acked, leg.name, pending)
            return
        pending.interval = timers.t1
        pending.timer = self.clock.callLater(pending.interval, self._retransmit_2xx, leg.name, pending)

    def _retransmit_2xx(self, name: str, pending: _Unacked) -> None:
        if self.unacked.get(name) is not pending:
            return
        if self.clock.seconds() >= pending.deadline - 1e-9:
            self._not_acked(name, pending)
            return
        pending.tx.respond(pending.response)
        pending.interval = min(pending.interval * 2, self.module.timers.t2)
        delay = min(pending.interval, max(pending.deadline - self.clock.seconds(), 0.0))
        pending.timer = self.clock.callLater(delay, self._retransmit_2xx, name, pending)

    def _not_acked(self, name: str, pending: _Unacked) -> None:
        if self.unacked.get(name) is not pending:
            return
        del self.unacked[name]
        if self.state == "answered":
            self.log.info("call {id}: no ACK for our 2xx, hanging up", id=self.tx.request.call_id)
            self.hangup(R.FAILED)

    def acked(self, leg: Leg, ack: Request) -> None:
        """An ACK for our 2xx arrived on C{leg}."""
        pending = self.unacked.get(leg.name)
        if pending is not None and pending.cseq == ack.cseq[0]:
            del self.unacked[leg.name]
            if pending.timer is not None and pending.timer.active():
                pending.timer.cancel()
            if pending.tx is not self.tx:
                self.offer_pending = False
        wait = self.ack_waits.get(leg.name)
        if wait is not None and wait[0] == ack.cseq[0]:
            del self.ack_waits[leg.name]
            self._complete_ack(wait[1], ack)

    # -- cancel, timeouts, hangup -------------------------------------------

    def _caller_cancelled(self, tx) -> None:
        if self.state not in ("routing", "calling", "ringing"):
            return
        self._give_up(487, "Request Terminated", R.CANCELED)

    def _give_up(self, status: int, reason: str, hangup: str) -> None:
        """End a call nobody answered: CANCEL the forks, answer the caller."""
        for fork in self.forks:
            self._cancel_fork(fork)
        self._stop_ring_timer()
        if not self.tx.completed:
            response = self.tx.reply(status, reason)
            self.trace("a", "out", self.tx.reply_flow.remote, response)
        self.record.status_code = status
        self.end(hangup)

    def _ring_timeout(self) -> None:
        """
        max_ring_time passed: the caller gets 480 Temporarily Unavailable
        (reason noAnswer), which phones show as "no answer" where RustPBX's
        408 reads as a network failure.
        """
        self.ring_timer = None
        if self.state not in ("calling", "ringing"):
            return
        self._give_up(480, "Temporarily Unavailable", R.NO_ANSWER)

    def _max_duration(self, limit: int) -> None:
        """
        The call has been up for max_call_duration: BYE both legs.  What
        ends a call whose phones vanished without a BYE when nothing else
        would (media not anchored, so no rtp_timeout; no session timer
        negotiated): RustPBX's default limit of an hour.
        """
        self.duration_timer = None
        if self.state != "answered":
            return
        self.log.info("call {id}: up for {limit} s (max_call_duration), hanging up", id=self.tx.request.call_id, limit=limit)
        self.hangup(R.AUTOHANGUP)

    def _stop_ring_timer(self) -> None:
        if self.ring_timer is not None and self.ring_timer.active():
            self.ring_timer.cancel()
        self.ring_timer = None
        if self.keepalive_timer is not None and self.keepalive_timer.active():
            self.keepalive_timer.cancel()
        self.keepalive_timer = None

    def _keep_ringing(self, provisional: Response) -> None:
        """
        Repeat C{provisional} to the caller every minute while nobody
        answers (RFC 3261 13.3.1.1): a lost 180 is made good, and proxies
        in front of us (Timer C, Kamailio's fr_inv_timer) see the call is
        alive however long it rings.  Reliable ones are PRACKed, not
        repeated.
        """
        if self.keepalive_timer is not None and self.keepalive_timer.active():
            self.keepalive_timer.cancel()

        def again() -> None:
            self.keepalive_timer = None
            if self.state in ("calling", "ringing") and not self.tx.completed:
                self.tx.respond(provisional)
                self.trace("a", "out", self.tx.reply_flow.remote, self.tx.sent or provisional)
                self._keep_ringing(provisional)

        self.keepalive_timer = self.clock.callLater(PROVISIONAL_INTERVAL, again)

    def hangup(self, reason: str) -> None:
        """
        End the call from our side: BYE to both legs of an answered call;
        an unanswered one is cancelled and the caller gets 503 (480 when
        the reason is noAnswer).
        """
        if self.state == "ended":
            return
        if self.state == "answered":
            for leg in (self.a, self.b):
                if leg is not None:
                    try:
                        self._send_in_dialog(leg, "BYE")
                    except Exception:
                        self.log.failure("call {id}: could not send BYE", id=self.tx.request.call_id)
            self.end(reason)
            return
        if reason == R.NO_ANSWER:
            self._give_up(480, "Temporarily Unavailable", reason)
        else:
            self._give_up(503, "Service Unavailable", reason)

    def end(self, reason: str) -> None:
        if self.state == "ended":
            return
        self.state = "ended"
        self.end_reason = reason
        self._stop_ring_timer()
        if self.duration_timer is not None:
            if self.duration_timer.active():
                self.duration_timer.cancel()
            self.duration_timer = None
        for timer in self.relay_timers.values():
            if timer.active():
                timer.cancel()
        self.relay_timers.clear()
        # Whatever ended the call, no fork is left ringing (9.1: a silent
        # one is cancelled when its first provisional arrives).
        for fork in self.forks:
            self._cancel_fork(fork)
        for pending in self.unacked.values():
            if pending.timer is not None and pending.timer.active():
                pending.timer.cancel()
        self.unacked.clear()
        for timer in self.timers.values():
            timer.stop()
        if self.media is not None:
            media = self.media
            media.close().addCallback(lambda _: setattr(self.record, "media", media.summary()))
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
        method = request.method
        if number and number < leg.remote_cseq:
            # 12.2.2: a CSeq lower than the last one is out of order.
            self._answer(tx, leg, 500, "Server Internal Error", [("Retry-After", "1")])
            return
        leg.remote_cseq = max(leg.remote_cseq, number)
        if method == "BYE":
            self._answer(tx, leg, 200, "OK")
            if self.state in ("routing", "calling", "ringing") and leg is self.a:
                # The caller left its early dialog: like a CANCEL.
                self._give_up(487, "Request Terminated", R.CANCELED)
            elif self.state == "answered":
                other = self.other(leg)
                if other is not None:
                    self._send_in_dialog(other, "BYE", max_forwards=relayed_max_forwards(request))
                self.end(R.BY_CALLER if leg is self.a else R.BY_CALLEE)
            return
        if self.state == "ended":
            self._answer(tx, leg, 481, "Call/Transaction Does Not Exist")
            return
        if method == "PRACK":
            self._relay_prack(tx, leg)
            return
        if self.state != "answered":
            self._answer(tx, leg, 491 if method in ("INVITE", "UPDATE") else 481, "")
            return
        other = self.other(leg)
        if other is None:
            self._answer(tx, leg, 481, "Call/Transaction Does Not Exist")
            return
        plan = None
        if method in ("INVITE", "UPDATE"):
            proxy = self.module.config.proxy
            current = self.timers.get(leg.name)
            plan = ST.uas_plan(request, proxy.session_timer, proxy.session_expires, current and current.interval)
            if isinstance(plan, ST.Refusal):
                self._answer(tx, leg, plan.status, plan.reason, list(plan.headers))
                return
            if method == "UPDATE" and not request.body:
                # A session refresh (or a target refresh) without an offer:
                # it concerns this leg only, we answer it ourselves.
                leg.refresh_target(request)
                self._set_timer(leg.name, plan)
                headers = [("Contact", self.core.contact_for(leg.flow))]
                headers += ST.uas_headers(plan) if plan is not None else []
                self._answer(tx, leg, 200, "OK", headers)
                return
            if self.offer_pending:
                self._answer(tx, leg, 491, "Request Pending", [("Retry-After", str(random.randint(1, 4)))])
                return
            self.offer_pending = True
            leg.refresh_target(request)
        self._relay(tx, leg, other, plan)

    def _answer(self, tx, leg: Leg, status: int, reason: str, headers=(), body: bytes = b"") -> Response:
        response = tx.reply(status, reason, headers, body)
        self.trace(leg.name, "out", tx.reply_flow.remote, tx.sent or response)
        return response

    def _relay(self, tx, leg: Leg, other: Leg, plan) -> None:
        request = tx.request
        method = request.method
        if method == "UPDATE" and not other.allows("UPDATE"):
            method = "INVITE"  # an offer in UPDATE becomes a re-INVITE there
        headers = [(h[1], h[2]) for h in request.headers if h[0] in RELAYED]
        if method in ("NOTIFY", "SUBSCRIBE"):
            headers = [(n, self._mapped_event(leg, v) if n.lower() == "event" else v) for n, v in headers]
        if method in ("INVITE", "UPDATE"):
            headers.append(("Allow", ALLOW))
            timer = self.timers.get(other.name)
            if timer is not None:
                headers += ST.uac_headers(timer.interval, timer.we_refresh)
            if self.module.config.proxy.session_timer:
                headers.append(("Supported", "timer"))
            if self.media is not None and self.media.anchored and request.body:
                # A re-offer (hold, resume, a new codec) from either leg.

                def refused(f) -> None:
                    status, reason = media_status(f)
                    self.media.note(f"media: re-offer from {leg.name} refused: {status} {reason}")
                    self.offer_pending = False
                    if not tx.completed:
                        self._answer(tx, leg, status, reason)

                def send(body: bytes) -> None:
                    if self.state == "answered" and not tx.completed:
                        self._send_relay(tx, leg, other, plan, method, headers, body)

                self._media_body(request, leg.name, OFFER, tx.flow.remote, send, refused)
                return
        self._send_relay(tx, leg, other, plan, method, headers, request.body)

    def _send_relay(self, tx, leg: Leg, other: Leg, plan, method: str, headers, body: bytes) -> None:
        request = tx.request
        if method in ("INVITE", "UPDATE") and body:
            other.local_sdp = body
        relay = other.request(
            method,
            self.core.via_for(other.flow),
            self.core.contact_for(other.flow),
            headers,
            body,
            max_forwards=relayed_max_forwards(request),
        )
        if method == "REFER":
            # Both ways: the notifier's NOTIFYs, the subscriber's SUBSCRIBEs.
            self.refer_ids[(other.name, relay.cseq[0])] = request.cseq[0]
            self.refer_ids[(leg.name, request.cseq[0])] = relay.cseq[0]
        self.trace(other.name, "out", other.flow.remote, relay)
        self.core.send_request(relay, other.flow, lambda ctx, r: self._relayed_response(tx, leg, other, relay, r, plan))
        if request.method == "INVITE":
            tx.on_cancel(lambda t: self._relay_cancelled(t, leg, other, relay))
        if relay.method == "INVITE":
            # Timer B stops at the peer's first provisional: a re-INVITE
            # it never answers is cancelled after Timer C (RFC 3261 16.6
            # step 11), so the offer/answer exchange cannot stay open.
            key = (other.name, relay.cseq[0])
            self.relay_timers[key] = self.clock.callLater(TIMER_C, self._relay_timer_c, key, tx, leg, other, relay)

    def _relay_timer_c(self, key, tx, leg: Leg, other: Leg, relay: Request) -> None:
        self.relay_timers.pop(key, None)
        if self.state != "ended":
            self._relay_cancelled(tx, leg, other, relay)

    def _mapped_event(self, leg: Leg, value: str) -> str:
        """
        The Event of a NOTIFY (or SUBSCRIBE) arriving on C{leg} for a REFER
        we relayed: its id is the REFER's CSeq on C{leg}, mapped to the
        CSeq the REFER has on the other leg (RFC 3515 2.4.6).
        """
        from rustpbx_py.call.transfer import event_id, event_package, with_event_id

        if event_package(value) != "refer":
            return value
        number = event_id(value)
        if number is None:
            return value
        original = self.refer_ids.get((leg.name, number))
        return value if original is None else with_event_id(value, original)

    def _relay_cancelled(self, tx, leg: Leg, other: Leg, relay: Request) -> None:
        """The re-INVITE we relayed was cancelled: CANCEL ours, answer 487."""
        cancel = build_cancel(relay)
        self.trace(other.name, "out", other.flow.remote, cancel)
        self.core.send_request(cancel, other.flow, lambda ctx, r: self.trace(other.name, "in", other.flow.remote, r))
        if not tx.completed:
            self._answer(tx, leg, 487, "Request Terminated")

    def _relayed_response(self, tx, leg: Leg, other: Leg, relay: Request, response: Response, plan) -> None:
        self.trace(other.name, "in", other.flow.remote, response)
        status = response.status
        if status == 100:
            return
        if status >= 200:
            timer = self.relay_timers.pop((other.name, relay.cseq[0]), None) if relay.method == "INVITE" else None
            if timer is not None and timer.active():
                timer.cancel()
        if status >= 200 and relay.method in ("INVITE", "UPDATE"):
            if not _is_2xx(status) or tx.request.method != "INVITE" or tx.completed:
                # The exchange is over (a 2xx relayed to an INVITE ends
                # with the peer's ACK, see acked()).
                self.offer_pending = False
        if relay.method == "INVITE" and _is_2xx(status):
            key = f"relay-{other.name}-{relay.cseq[0]}"
            ack = self.ack_relays.get(key)
            if ack is None:
                ack = self.ack_relays[key] = _AckRelay(other, relay.cseq[0])
                if relay.body or tx.request.method != "INVITE":
                    self._complete_ack(ack, None)
                else:
                    self.ack_waits[leg.name] = (tx.request.cseq[0], ack)
            elif ack.ack is not None:
                self.core.send_stateless(ack.ack, other.flow)
        if tx.completed or self.state == "ended":
            return
        headers = [(h[1], h[2]) for h in response.headers if h[0] in RELAYED]
        anchored = self.media is not None and self.media.anchored
        if relay.method in ("INVITE", "UPDATE") and _is_2xx(status):
            other.refresh_target(response)
            other.learn_peer(response)
            if self.module.config.proxy.session_timer:
                self._set_timer(other.name, ST.uac_result(response))
            self._set_timer(leg.name, plan)
            headers.append(("Contact", self.core.contact_for(tx.flow)))
            headers.append(("Allow", ALLOW))
            if plan is not None:
                headers += ST.uas_headers(plan)
        elif status in (405, 501) and relay.method == "UPDATE":
            other.refused.add("UPDATE")
        if status < 200 and tx.request.method != "INVITE":
            return

        def send(body: bytes) -> None:
            if tx.completed or self.state == "ended":
                return
            out_headers = headers if body else [h for h in headers if h[0].lower() != "content-type"]
            if body and relay.method in ("INVITE", "UPDATE") and _is_2xx(status):
                leg.local_sdp = body
            out = self._answer(tx, leg, status, response.reason, out_headers, body)
            if tx.request.method == "INVITE" and _is_2xx(status):
                self._await_ack(leg, tx, out)

        if anchored and relay.method in ("INVITE", "UPDATE") and _is_2xx(status):
            # The answer to a re-offer, or the offer of an offerless re-INVITE.
            def failed(f) -> None:
                status_, reason = media_status(f)
                self.media.note(f"media: {other.name}'s answer refused: {status_} {reason}")
                if not tx.completed:
                    self._answer(tx, leg, status_, reason)
                self.hangup(R.FAILED)

            self._media_body(response, other.name, ANSWER if relay.body else OFFER, other.flow.remote, send, failed)
        elif anchored and relay.method in ("INVITE", "UPDATE") and response.body:
            # Early SDP of a re-offer's provisional would name the peer:
            # the 2xx carries the answer.
            send(b"")
        else:
            send(response.body)

    def _relay_prack(self, tx, leg: Leg) -> None:
        """The caller's PRACK for a reliable provisional we relayed: PRACK the callee's."""
        parts = (tx.request.get("rack") or "").split()
        entry = None
        if len(parts) == 3 and parts[0].isdigit():
            entry = self.reliable.get(int(parts[0]))
        if entry is None or leg is not self.a:
            self._answer(tx, leg, 481, "Call/Transaction Does Not Exist")
            return
        fork, b_leg, b_rseq = entry
        if self.media is not None and self.media.anchored and tx.request.body:
            # An answer to a reliable 18x's offer, or a new offer (RFC 3262 5).
            def refused(f) -> None:
                status, reason = media_status(f)
                if not tx.completed:
                    self._answer(tx, leg, status, reason)

            self._media_body(tx.request, "a", None, tx.flow.remote, lambda body: self._send_prack(tx, leg, fork, b_leg, b_rseq, body), refused)
            return
        self._send_prack(tx, leg, fork, b_leg, b_rseq, tx.request.body)

    def _send_prack(self, tx, leg: Leg, fork: Fork, b_leg: Leg, b_rseq: int, body: bytes) -> None:
        headers = [(h[1], h[2]) for h in tx.request.headers if h[0] in RELAYED]
        headers.append(("RAck", f"{b_rseq} {fork.request.cseq[0]} INVITE"))
        relay = b_leg.request("PRACK", self.core.via_for(b_leg.flow), None, headers, body, max_forwards=relayed_max_forwards(tx.request))
        self.trace(b_leg.name, "out", b_leg.flow.remote, relay)

        def answered(ctx, response: Response) -> None:
            self.trace(b_leg.name, "in", b_leg.flow.remote, response)
            if tx.completed or response.status < 200:
                return
            out = [(h[1], h[2]) for h in response.headers if h[0] in RELAYED]

            def send(body: bytes) -> None:
                if not tx.completed:
                    self._answer(tx, leg, response.status, response.reason, out if body else [h for h in out if h[0].lower() != "content-type"], body)

            if self.media is not None and self.media.anchored and response.body and _is_2xx(response.status):
                self._media_body(response, "b", None, b_leg.flow.remote, send, lambda f: send(b""))
            else:
                send(response.body)

        self.core.send_request(relay, b_leg.flow, answered)

    def _send_in_dialog(self, leg: Leg, method: str, headers=(), body: bytes = b"", on_response=None, max_forwards: int = 70) -> Request:
        request = leg.request(method, self.core.via_for(leg.flow), self.core.contact_for(leg.flow), headers, body, max_forwards=max_forwards)

        def answered(tx, response: Response, leg=leg) -> None:
            self.trace(leg.name, "in", leg.flow.remote, response)
            if self.state == "ended" and method == "BYE" and response.status >= 200:
                # The answer to our last BYE arrives after the call ended:
                # the record's SIP flow gets it too (the console's ladder).
                self.module.flow_grew(self)
            if on_response is not None:
                on_response(request, response)

        tx = self.core.send_request(request, leg.flow, answered)
        self.trace(leg.name, "out", leg.flow.remote, tx.data)
        return request

    # -- session timers (RFC 4028) -------------------------------------------

    def negotiate_a_timer(self) -> Optional[Tuple[int, str]]:
        """
        Read the caller's Session-Expires (RFC 4028 section 9).  A value
        below our minimum is refused: returns (422, Min-SE value) or
        (400, reason) for the caller to answer; None otherwise.
        """
        proxy = self.module.config.proxy
        plan = ST.uas_plan(self.tx.request, proxy.session_timer, proxy.session_expires)
        if isinstance(plan, ST.Refusal):
            if plan.status == 422:
                return (422, str(MIN_SE))
            return (plan.status, plan.reason)
        self.a_plan = plan
        return None

    def _set_timer(self, name: str, plan: Optional[ST.Plan]) -> None:
        """Start, renegotiate (a refresh succeeded) or stop a leg's session timer."""
        if self.state == "ended":
            return
        timer = self.timers.get(name)
        if plan is None:
            if timer is not None:
                timer.stop()
                del self.timers[name]
            return
        if timer is None:
            timer = self.timers[name] = ST.SessionTimer(
                self.clock, name, plan.interval, not plan.peer_refreshes, self._refresh, self._expired
            )
            timer.start()
        else:
            timer.refreshed(plan)

    def _leg(self, name: str) -> Optional[Leg]:
        return self.a if name == "a" else self.b

    def _expired(self, timer: ST.SessionTimer) -> None:
        if self.state == "answered":
            self.log.info(
                "call {id}: session on leg {leg} expired unrefreshed", id=self.tx.request.call_id, leg=timer.name
            )
            self.hangup(R.SESSION_EXPIRED)

    def _refresh(self, timer: ST.SessionTimer) -> None:
        """
        Refresh the session on a leg where we are the refresher: UPDATE
        when the peer allows it, else a re-INVITE offering the same SDP
        again (RFC 4028 section 7.4, RFC 3264 section 8).
        """
        leg = self._leg(timer.name)
        if leg is None or self.state != "answered":
            return
        if self.offer_pending:
            timer.retry(2.0)
            return
        method = "UPDATE" if leg.allows("UPDATE") else "INVITE"
        headers = ST.uac_headers(timer.interval, True) + [("Supported", "timer"), ("Allow", ALLOW)]
        body = b""
        if method == "INVITE":
            self.offer_pending = True
            body = leg.local_sdp
            if body:
                headers.append(("Content-Type", "application/sdp"))
        self._send_in_dialog(leg, method, headers, body, lambda req, r: self._refresh_answered(timer, leg, req, r))

    def _refresh_answered(self, timer: ST.SessionTimer, leg: Leg, request: Request, response: Response) -> None:
        status = response.status
        if status < 200:
            return
        if request.method == "INVITE":
            if _is_2xx(status):
                self._send_ack(leg, request.cseq[0])
            self.offer_pending = False
        if self.state != "answered" or self.timers.get(timer.name) is not timer:
            return
        if _is_2xx(status):
            leg.refresh_target(response)
            plan = ST.uac_result(response)
            if plan is None:
                self._set_timer(timer.name, None)
            else:
                timer.refreshed(plan)
            return
        if status in (408, 481):
            # The dialog is gone (RFC 5057): end the call.
            self.hangup(R.SESSION_EXPIRED)
            return
        if status == 422:
            timer.interval = max(timer.interval, ST.parse_min_se(response))
            self._refresh(timer)
            return
        if status in (405, 501) and request.method == "UPDATE":
            leg.refused.add("UPDATE")
            self._refresh(timer)
            return
        # 491 and the like: try again shortly; the deadline still holds.
        timer.retry(2.0 if status == 491 else min(timer.interval / 4.0, 30.0))
