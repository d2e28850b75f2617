# -*- test-case-name: rustpbx_py.test.test_session_timer -*-
"""
SIP session timers (RFC 4028) for one leg of a back-to-back call.

Each leg is its own dialog, so each leg negotiates its own interval and
refresher: on the caller's leg we are the UAS (L{uas_plan}), on the
callee's leg the UAC (L{uac_result}).  A L{SessionTimer} then either
refreshes the session at half the interval (we are the refresher) or
watches for the peer's refreshes and reports the session expired at
C{interval - min(32, interval / 3)} (RFC 4028 section 10).
"""

from __future__ import annotations

from typing import List, NamedTuple, Optional, Tuple, Union

from rustpbx_py.sip.headers import parse_params

#: The smallest Session-Expires anyone may ask for (RFC 4028 section 4),
#: and the Min-SE we send.
MIN_SE = 90

TAG = "timer"


def option_tags(message, *names: str) -> List[str]:
    """The option-tags of the C{Supported}/C{Require} headers named, lower-cased."""
    tags: List[str] = []
    for name in names or ("supported", "require"):
        tags.extend(t.strip().lower() for t in message.get_all(name))
    return tags


def parse_session_expires(value: str) -> Tuple[int, Optional[str]]:
    """
    C{(interval, refresher)} of a Session-Expires value such as
    C{"1800;refresher=uac"}; the refresher is C{"uac"}, C{"uas"} or None.

    @raise ValueError: the interval is not a whole number of seconds.
    """
    number, _, params = value.partition(";")
    number = number.strip()
    if not number.isdigit() or len(number) > 10:
        raise ValueError(f"Session-Expires {value!r}: expected delta-seconds")
    refresher = parse_params(params).get("refresher")
    refresher = refresher.lower() if refresher else None
    if refresher not in ("uac", "uas"):
        refresher = None
    return int(number), refresher


def parse_min_se(message) -> int:
    """The Min-SE of a message (RFC 4028 section 5), at least L{MIN_SE}."""
    value = (message.get("min-se") or "").partition(";")[0].strip()
    if value.isdigit() and len(value) <= 10:
        return max(MIN_SE, int(value))
    return MIN_SE


class Plan(NamedTuple):
    """What a leg agreed on: the interval, and whether the peer refreshes."""

    interval: int
    peer_refreshes: bool
    peer_supports: bool


class Refusal(NamedTuple):
    """A request we must refuse: 422 with our Min-SE, or 400."""

    status: int
    reason: str
    headers: Tuple[Tuple[str, str], ...]


def uas_plan(request, enabled: bool, our_expires: int, current: Optional[int] = None) -> Union[Plan, Refusal, None]:
    """
    The session timer of a dialog where we answer C{request} (an INVITE or
    UPDATE) as the UAS, RFC 4028 section 9:

      - a Session-Expires below our minimum (90 s) is refused with 422 and
        C{Min-SE: 90};
      - otherwise we take the requested interval, reduced to
        C{our_expires} when that is smaller but never below the request's
        Min-SE;
      - the refresher is the one the request names; when it names none,
        the caller refreshes if it supports timers, else we do;
      - a request without Session-Expires from a UA that supports timers
        gets the C{current} interval of the dialog (a refresh), else
        C{our_expires}, refreshed by that UA;
      - a request from a UA that neither asks for nor supports timers has
        no session timer (None), as when C{enabled} is false.
    """
    if not enabled:
        return None
    supports = TAG in option_tags(request)
    value = request.get("session-expires")
    floor = parse_min_se(request)
    if value:
        try:
            interval, refresher = parse_session_expires(value)
        except ValueError:
            return Refusal(400, "Bad Session-Expires", ())
        if interval < MIN_SE:
            return Refusal(422, "Session Interval Too Small", (("Min-SE", str(MIN_SE)),))
        interval = max(min(interval, our_expires), floor)
        if refresher == "uas" or not supports:
            return Plan(interval, False, supports)
        return Plan(interval, True, supports)
    if supports:
        return Plan(max(current or our_expires, floor), True, True)
    return None


def uas_headers(plan: Plan) -> List[Tuple[str, str]]:
    """
    Our 2xx's headers for a leg where we are the UAS: Session-Expires with
    the refresher, and C{Require: timer} when the peer supports timers
    (a MUST when it refreshes, section 9).
    """
    who = "uac" if plan.peer_refreshes else "uas"
    headers = [("Session-Expires", f"{plan.interval};refresher={who}")]
    if plan.peer_supports:
        headers.append(("Require", TAG))
    return headers


def uac_headers(interval: int, we_refresh: Optional[bool], min_se: int = MIN_SE) -> List[Tuple[str, str]]:
    """
    A request's headers where we are the UAC: Session-Expires (with the
    refresher when it is settled) and Min-SE; the caller adds C{timer} to
    its Supported header.
    """
    value = str(interval)
    if we_refresh is not None:
        value += ";refresher=" + ("uac" if we_refresh else "uas")
    return [("Session-Expires", value), ("Min-SE", str(min_se))]


def uac_result(response) -> Optional[Plan]:
    """
    The session timer a 2xx to our INVITE or UPDATE settles, section 7.2:
    none when it has no Session-Expires; otherwise its interval, refreshed
    by the callee when it says C{refresher=uas}, else by us.
    """
    value = response.get("session-expires")
    if not value:
        return None
    try:
        interval, refresher = parse_session_expires(value)
    except ValueError:
        return None
    return Plan(max(interval, 1), refresher == "uas", True)


def expiry_delay(interval: float) -> float:
    """When the side that does not refresh gives up: section 10's
    C{interval - min(32, interval / 3)}."""
    return interval - min(32.0, interval / 3.0)


class SessionTimer:
    """
    The running session timer of one leg.

    @ivar interval: the negotiated Session-Expires, seconds.
    @ivar we_refresh: whether we send the refreshes on this leg.
    """

    def __init__(self, clock, name: str, interval: int, we_refresh: bool, on_refresh, on_expire) -> None:
        self.clock = clock
        self.name = name
        self.interval = interval
        self.we_refresh = we_refresh
        self.on_refresh = on_refresh
        self.on_expire = on_expire
        self.refreshes = 0
        self._refresh_call = None
        self._expiry_call = None

    def start(self) -> None:
        """(Re)start both clocks from now: a successful refresh just happened."""
        self._cancel()
        if self.we_refresh:
            self._refresh_call = self.clock.callLater(self.interval / 2.0, self._refresh)
            # Our refreshes keep the session; should none succeed, it ends
            # when the interval runs out.
            deadline = float(self.interval)
        else:
            deadline = expiry_delay(self.interval)
        self._expiry_call = self.clock.callLater(deadline, self._expire)

    def refreshed(self, plan: Optional[Plan] = None) -> None:
        """A refresh succeeded (either way); C{plan} renegotiates it."""
        if plan is not None:
            self.interval = plan.interval
            self.we_refresh = not plan.peer_refreshes
        self.refreshes += 1
        self.start()

    def retry(self, delay: float) -> None:
        """Try refreshing again after C{delay} seconds (before the deadline)."""
        if self._refresh_call is not None and self._refresh_call.active():
            self._refresh_call.cancel()
        self._refresh_call = self.clock.callLater(delay, self._refresh)

    def stop(self) -> None:
        self._cancel()

    @property
    def running(self) -> bool:
        return self._expiry_call is not None and self._expiry_call.active()

    def _cancel(self) -> None:
        for call in (self._refresh_call, self._expiry_call):
            if call is not None and call.active():
                call.cancel()
        self._refresh_call = None
        self._expiry_call = None

    def _refresh(self) -> None:
        self._refresh_call = None
        self.on_refresh(self)

    def _expire(self) -> None:
        self._expiry_call = None
        if self._refresh_call is not None and self._refresh_call.active():
            self._refresh_call.cancel()
        self._refresh_call = None
        self.on_expire(self)

    def __repr__(self) -> str:
        who = "us" if self.we_refresh else "peer"
        return f"<SessionTimer {self.name} {self.interval}s refreshed by {who}>"
