# -*- test-case-name: rustpbx_py.test.test_routing -*-
"""
RustPBX's static routes: which route an INVITE takes and what it does.

The B2BUA asks L{Router.route} once per new call.  Routes (the config's
C{proxy.routes}, already sorted highest priority first) are tried in order;
the first enabled one whose conditions all hold decides, as in RustPBX's
C{match_invite}:

 1. C{source_trunks} / C{source_trunk_ids} / C{direction} filter the route;
 2. every C{match} condition must hold.  A pattern without regex
    characters (C{^ $ * + ? [ ( \\}, RustPBX's list: a C{.} alone does not
    make a regex) must equal the field; otherwise it is a regular expression
    searched for anywhere in the field (anchor it with C{^...$} to match the
    whole field), as Rust's C{Regex::is_match} does;
 3. C{rewrite} templates are filled from the capture groups of the same
    field's match (C{{1}} is the first group, C{{0}} the whole match) and
    applied to a copy of the request;
 4. the route's C{policy} (frequency, daily and concurrency limits per
    caller, time window) may refuse the call with 403;
 5. the action: C{forward} (to the C{dest} trunks, ordered by C{select}),
    C{reject}, C{busy} (486), C{queue} or C{application}.

No route matching gives None: the B2BUA then delivers to the Request-URI
(local users), as RustPBX does with C{NotHandled}.

The fields a condition can read, as RustPBX defines them:

 - C{from.user}, C{from.host}: the From URI (the caller);
 - C{to.user}, C{to.host}, C{to.port}: the callee, which is the
   Request-URI when it has a user part and the To URI otherwise;
 - C{request_uri.user}, C{request_uri.host}, C{request_uri.port};
 - C{caller}: C{user@host} of the From URI; C{callee}: C{user@host} of the
   callee; C{from} and C{to} are read as C{caller} and C{callee};
 - C{header.NAME}: the first NAME header's value (a missing header never
   matches).

Everything is compiled once, when the L{Router} is built; routing a call
parses the From, To and Request-URI once and runs the prepared matchers.
Regular expressions are Python's C{re}, which reads the patterns RustPBX
configurations use (classes, groups, quantifiers, anchors) the same way.
"""

from __future__ import annotations

import datetime
import random
import re
import time as _time
import zlib
import zoneinfo
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from rustpbx_py.call.trunks import TrunkSet, copy_request
from rustpbx_py.sip.headers import URI, HeaderError, NameAddr, split_hostport
from rustpbx_py.sip.message import Request

__all__ = [
    "RouteDecision",
    "Router",
    "RoutingError",
    "PolicyLimiter",
    "callee_uri",
    "trunk_policy_id",
]

#: Characters that make a match pattern a regular expression (RustPBX's
#: C{matches_pattern} list).
REGEX_CHARS = frozenset("^$*+?[(\\")

#: Match fields and what they read; see the module docstring.
MATCH_FIELDS = (
    "from.user", "from.host", "to.user", "to.host", "to.port",
    "request_uri.user", "request_uri.host", "request_uri.port",
    "caller", "callee", "from", "to",
)
#: Fields a rewrite may set (besides C{header.NAME}).
REWRITE_FIELDS = (
    "from.user", "from.host", "to.user", "to.host", "to.port",
    "request_uri.user", "request_uri.host", "request_uri.port",
)
_ALIASES = {"from": "caller", "to": "callee"}
_PLACEHOLDER = re.compile(r"\{(\d+)\}")


class RoutingError(ValueError):
    """A route or policy setting that cannot be used (names the route)."""


def trunk_policy_id(trunk: str) -> str:
    """The policy id under which a trunk's own C{policy} is counted
    (RustPBX's C{trunk:NAME}); pass it to L{Router.call_started}."""
    return "trunk:" + trunk


# ---------------------------------------------------------------------------
# The decision
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RouteDecision:
    """
    What the matching route says to do with a call.

    @ivar route: the route's name (also the policy id for
        L{Router.call_started} / L{Router.call_ended}).
    @ivar action: C{"forward"}, C{"reject"}, C{"busy"}, C{"queue"} or
        C{"application"}.
    @ivar request: the INVITE after the route's rewrites: a copy when
        anything was rewritten, else the request given.  Its Request-URI
        and To are the callee of the outgoing leg, its From the caller.
    @ivar trunks: C{forward}: the trunks to try, in order (the one
        C{select} chose first, then the others for failover).  Empty means
        "deliver to the Request-URI" (a route without C{dest}).
    @ivar code: C{reject} / C{busy}: the status to answer (403 when a
        reject route sets none; 486 for busy; 403 for a policy refusal).
    @ivar reason: the reason phrase, or None for the code's default.
    @ivar headers: extra headers for the rejection (C{reject.headers}).
    @ivar caller: the caller as policies count it (the rewritten From
        user); pass it to L{Router.call_started} / L{Router.call_ended}.
    @ivar callee: the callee user after rewrites.
    @ivar config: the L{rustpbx_py.config.RouteConfig} (queue, app,
        app_params, auto_answer, codecs, max_ring_time, ...).
    """

    route: str
    action: str
    request: Request
    trunks: Tuple[str, ...] = ()
    code: Optional[int] = None
    reason: Optional[str] = None
    headers: Mapping[str, str] = field(default_factory=dict)
    caller: str = ""
    callee: str = ""
    config: Any = None


# ---------------------------------------------------------------------------
# The fields of one request
# ---------------------------------------------------------------------------


def _parse_nameaddr_uri(value: Optional[str]) -> Optional[URI]:
    if value is None:
        return None
    try:
        uri = NameAddr.parse(value).uri
    except HeaderError:
        return None
    return uri


def callee_uri(request: Request) -> Optional[URI]:
    """
    Who an INVITE is for, as RustPBX decides it: the Request-URI when it
    has a user part, else the To URI; None when neither parses.
    """
    try:
        ruri: Optional[URI] = request.ruri
    except HeaderError:
        ruri = None
    if ruri is not None and ruri.user and ruri.user.strip():
        return ruri
    return _parse_nameaddr_uri(request.get("to"))


def _port_text(uri: Optional[URI]) -> str:
    return "" if uri is None or uri.port is None else str(uri.port)


class _Fields:
    """The match fields of one request, read once, on demand."""

    __slots__ = ("request", "values", "ruri", "from_uri", "callee")

    def __init__(self, request: Request) -> None:
        self.request = request
        try:
            self.ruri: Optional[URI] = request.ruri
        except HeaderError:
            self.ruri = None
        self.from_uri = _parse_nameaddr_uri(request.get("from"))
        if self.ruri is not None and self.ruri.user and self.ruri.user.strip():
            self.callee: Optional[URI] = self.ruri
        else:
            self.callee = _parse_nameaddr_uri(request.get("to"))
        caller_user = (self.from_uri.user or "") if self.from_uri else ""
        caller_host = self.from_uri.host if self.from_uri else ""
        callee_user = (self.callee.user or "") if self.callee else ""
        callee_host = self.callee.host if self.callee else ""
        self.values: Dict[str, str] = {
            "from.user": caller_user,
            "from.host": caller_host,
            "to.user": callee_user,
            "to.host": callee_host,
            "to.port": _port_text(self.callee),
            "request_uri.user": (self.ruri.user or "") if self.ruri else "",
            "request_uri.host": self.ruri.host if self.ruri else "",
            "request_uri.port": _port_text(self.ruri),
            "caller": f"{caller_user}@{caller_host}",
            "callee": f"{callee_user}@{callee_host}",
        }

    def get(self, name: str) -> Optional[str]:
        """A field's value; None for a header the request lacks."""
        if name.startswith("header."):
            return self.request.get(name[7:])
        return self.values[_ALIASES.get(name, name)]


# ---------------------------------------------------------------------------
# Compiled conditions, templates and policies
# ---------------------------------------------------------------------------


def _capture_key(name: str) -> str:
    """Where a field's capture groups are kept: header names are not case
    sensitive, so C{header.X-Id} in match feeds C{header.x-id} in rewrite."""
    return "header." + name[7:].lower() if name.startswith("header.") else name


class _Condition:
    """One C{match} entry: exact text or a regex, compiled once."""

    __slots__ = ("field", "key", "exact", "regex")

    def __init__(self, route: str, name: str, pattern: str) -> None:
        if not name.startswith("header.") and name not in MATCH_FIELDS:
            raise RoutingError(f"route {route!r}: match.{name}: unknown field (expected one of {', '.join(MATCH_FIELDS)} or header.NAME)")
        self.field = name
        self.key = _capture_key(name)
        if REGEX_CHARS.isdisjoint(pattern):
            self.exact: Optional[str] = pattern
            self.regex = None
        else:
            self.exact = None
            try:
                self.regex = re.compile(pattern)
            except re.error as e:
                raise RoutingError(f"route {route!r}: match.{name}: invalid regular expression {pattern!r} ({e})")

    def match(self, value: str) -> Optional[List[str]]:
        """The capture groups (group 0 first) when C{value} matches."""
        if self.regex is None:
            return [value] if value == self.exact else None
        m = self.regex.search(value)
        if m is None:
            return None
        return [m.group(0)] + [g if g is not None else "" for g in m.groups()]


class _Template:
    """A rewrite value: literal text with C{{N}} capture placeholders."""

    __slots__ = ("parts",)

    def __init__(self, route: str, name: str, text: str) -> None:
        if not name.startswith("header.") and name not in REWRITE_FIELDS:
            raise RoutingError(f"route {route!r}: rewrite.{name}: unknown field (expected one of {', '.join(REWRITE_FIELDS)} or header.NAME)")
        if "{" in _PLACEHOLDER.sub("", text) or "}" in _PLACEHOLDER.sub("", text):
            raise RoutingError(f"route {route!r}: rewrite.{name}: expected text with {{N}} capture-group placeholders, found {text!r}")
        parts: List[Union[str, int]] = []
        pos = 0
        for m in _PLACEHOLDER.finditer(text):
            if m.start() > pos:
                parts.append(text[pos : m.start()])
            parts.append(int(m.group(1)))
            pos = m.end()
        if pos < len(text):
            parts.append(text[pos:])
        self.parts = parts

    def expand(self, groups: Optional[List[str]], original: str) -> str:
        """
        Fill the placeholders from the groups of the same field's match.
        A placeholder with no such group (no condition on that field, or
        fewer groups) takes the field's original value, as RustPBX falls
        back to it.
        """
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
            elif groups is not None and part < len(groups):
                out.append(groups[part])
            else:
                out.append(original)
        return "".join(out)


def _parse_clock_time(text: str) -> int:
    parts = [int(p) for p in text.split(":")]
    while len(parts) < 3:
        parts.append(0)
    return parts[0] * 3600 + parts[1] * 60 + parts[2]


class _Policy:
    """One route's or trunk's C{policy}, checked against a caller."""

    __slots__ = (
        "id", "called_prefix", "trunk_country", "deny_regions", "window",
        "frequency", "daily", "concurrency", "per_account", "countries", "allow_landline",
    )

    def __init__(self, policy_id: str, policy: Any) -> None:
        self.id = policy_id
        self.called_prefix: Optional[str] = getattr(policy, "called_prefix", None)
        self.trunk_country: Optional[str] = getattr(policy, "trunk_country", None)
        self.deny_regions = [r.lower() for r in (getattr(policy, "deny_regions", None) or [])]
        self.countries = [c.strip().upper() for c in (getattr(policy, "allowed_destination_countries", None) or []) if c.strip()]
        self.allow_landline: Optional[bool] = getattr(policy, "allow_landline", None)
        self.window: Optional[Tuple[int, int, Optional[datetime.tzinfo], str, str]] = None
        window = getattr(policy, "time_window", None)
        if window is not None:
            if window.timezone == "Local":
                tz = None
            else:
                try:
                    tz = zoneinfo.ZoneInfo(window.timezone)
                except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                    raise RoutingError(f"{policy_id}: policy.time_window.timezone: expected an IANA time zone such as \"Europe/Berlin\" or \"Local\", found {window.timezone!r}")
            self.window = (_parse_clock_time(window.start), _parse_clock_time(window.end), tz, window.start, window.end)
        freq = getattr(policy, "frequency_limit", None)
        self.frequency = (freq.count, freq.window_hours * 3600) if freq is not None else None
        daily = getattr(policy, "daily_limit", None)
        self.daily = daily.count if daily is not None else None
        conc = getattr(policy, "concurrency", None)
        self.concurrency = conc.max_total if conc is not None else None
        self.per_account = dict(conc.max_per_account) if conc is not None else {}


def parse_international(callee: str) -> Any:
    """
    C{callee} as an international number (C{+CC...}, parsed with
    Google's libphonenumber data, the C{phonenumbers} package), or None
    when it is not one (RustPBX parses without a default region too, so
    national numbers are not checked) or the package is missing (see
    L{rustpbx_py.features}).
    """
    try:
        import phonenumbers
    except ImportError:
        return None
    try:
        return phonenumbers.parse(callee, None)
    except phonenumbers.NumberParseException:
        return None


def _destination_refusal(policy: "_Policy", callee: str) -> Optional[str]:
    """RustPBX's destination checks: C{allowed_destination_countries}
    (ISO region codes, any case) and C{allow_landline = false}."""
    number = parse_international(callee)
    if number is None:
        return None
    import phonenumbers

    if policy.countries:
        region = phonenumbers.region_code_for_number(number)
        if not region or region in ("ZZ", "001"):
            return f"No country ID found for callee {callee}"
        if region.upper() not in policy.countries:
            return f"Destination country {region} not allowed for callee {callee}"
    if policy.allow_landline is False:
        kind = phonenumbers.number_type(number)
        if kind in (phonenumbers.PhoneNumberType.FIXED_LINE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE):
            return f"Landline calls are not allowed: {callee}"
    return None


class PolicyLimiter:
    """
    RustPBX's in-memory policy guard: per policy id (a route name, or
    C{trunk:NAME}) and per caller, a frequency window, a daily count and
    the number of calls in progress.

    Semantics follow RustPBX's C{InMemoryFrequencyLimiter}:

     - C{frequency_limit = {count, window_hours}}: a fixed window opens at a
       caller's first call and closes C{window_hours} later; at most
       C{count} calls are let through in it;
     - C{daily_limit = {count}}: at most C{count} calls per UTC day;
     - C{concurrency = {max_total, max_per_account}}: at most C{max_total}
       calls in progress per caller (C{max_per_account} gives named callers
       their own figure, which RustPBX reads but does not apply);
     - C{called_prefix}: the policy applies only to callees starting with
       it; C{trunk_country}: only to calls from a trunk of that country;
     - C{allowed_destination_countries}: an international callee
       (C{+CC...}) must be in one of these regions (ISO codes such as
       C{"US"}, C{"DE"}); C{allow_landline = false}: it must not be a
       fixed line (libphonenumber's data); national numbers pass, as in
       RustPBX, which parses without a default region;
     - C{time_window = {start, end, timezone}}: calls only between start and
       end (a window may cross midnight);
     - C{deny_regions}: the source trunk's C{country} must not be listed.

    Limits are checked in that order and the first one reached refuses
    the call; frequency and daily counts include every call let through
    by them, even one a later limit refuses (as in RustPBX).  Calls in
    progress are counted by L{call_started} / L{call_ended}.

    @param clock: C{IReactorTime}; C{seconds()} is taken as POSIX time.
    """

    #: Seconds between sweeps of expired frequency/daily entries.
    SWEEP_INTERVAL = 60.0

    def __init__(self, clock: Any) -> None:
        self._clock = clock
        self._policies: Dict[str, _Policy] = {}
        self._frequency: Dict[Tuple[str, str], List[float]] = {}
        self._daily: Dict[Tuple[str, str], List[int]] = {}
        self._active: Dict[Tuple[str, str], int] = {}
        self._last_sweep = clock.seconds()

    def add(self, policy_id: str, policy: Any) -> None:
        """Compile the policy of a route or trunk.

        @raise RoutingError: for an unknown time zone."""
        self._policies[policy_id] = _Policy(policy_id, policy)

    def __contains__(self, policy_id: object) -> bool:
        return policy_id in self._policies

    def check(self, policy_id: str, caller: str, callee: str, origin_country: Optional[str] = None) -> Optional[str]:
        """
        Whether policy C{policy_id} lets the call through: None if so (also
        when there is no such policy), else the reason it does not.
        """
        policy = self._policies.get(policy_id)
        if policy is None:
            return None
        now = self._clock.seconds()
        if now - self._last_sweep >= self.SWEEP_INTERVAL:
            self._sweep(now)
        if policy.called_prefix is not None and not callee.startswith(policy.called_prefix):
            return None
        if policy.trunk_country is not None and origin_country is not None and policy.trunk_country != origin_country:
            return None
        if policy.countries or policy.allow_landline is False:
            refused = _destination_refusal(policy, callee)
            if refused is not None:
                return refused
        if policy.window is not None:
            start, end, tz, start_text, end_text = policy.window
            if tz is None:
                local = _time.localtime(now)
                of_day = local.tm_hour * 3600 + local.tm_min * 60 + local.tm_sec
            else:
                t = datetime.datetime.fromtimestamp(now, tz)
                of_day = t.hour * 3600 + t.minute * 60 + t.second
            if start <= end:
                outside = of_day < start or of_day > end
            else:
                outside = of_day < start and of_day > end
            if outside:
                return f"Call outside allowed time window: {start_text} - {end_text}"
        if policy.deny_regions and origin_country is not None and origin_country.lower() in policy.deny_regions:
            return f"Origin country {origin_country} is denied"
        key = (policy_id, caller)
        if policy.frequency is not None:
            limit, window = policy.frequency
            entry = self._frequency.get(key)
            if entry is None or now > entry[1]:
                self._frequency[key] = [1, now + window]
            elif entry[0] >= limit:
                return f"Frequency limit reached for caller {caller}"
            else:
                entry[0] += 1
        if policy.daily is not None:
            day = int(now // 86400)
            entry_d = self._daily.get(key)
            if entry_d is None or entry_d[1] != day:
                self._daily[key] = [1, day]
            elif entry_d[0] >= policy.daily:
                return f"Daily limit reached for caller {caller}"
            else:
                entry_d[0] += 1
        if policy.concurrency is not None:
            limit = policy.per_account.get(caller, policy.concurrency)
            if self._active.get(key, 0) >= limit:
                return f"Concurrency limit reached for caller {caller}"
        return None

    def _sweep(self, now: float) -> None:
        """Forget windows that are over, so idle callers cost no memory."""
        self._last_sweep = now
        today = int(now // 86400)
        self._frequency = {k: v for k, v in self._frequency.items() if v[1] >= now}
        self._daily = {k: v for k, v in self._daily.items() if v[1] == today}

    def call_started(self, policy_id: str, caller: str) -> None:
        """A call let through by policy C{policy_id} began: it counts
        against the policy's concurrency limit until L{call_ended}."""
        policy = self._policies.get(policy_id)
        if policy is None or policy.concurrency is None:
            return
        key = (policy_id, caller)
        self._active[key] = self._active.get(key, 0) + 1

    def call_ended(self, policy_id: str, caller: str) -> None:
        """A call counted by L{call_started} ended (however it ended)."""
        key = (policy_id, caller)
        count = self._active.get(key, 0)
        if count > 1:
            self._active[key] = count - 1
        elif count == 1:
            del self._active[key]

    def active(self, policy_id: str, caller: str) -> int:
        """Calls in progress counted for C{caller} under C{policy_id}."""
        return self._active.get((policy_id, caller), 0)


# ---------------------------------------------------------------------------
# Routes
# ---------------------------------------------------------------------------


class _Route:
    """One route, compiled."""

    __slots__ = (
        "config", "name", "direction", "source_trunks", "source_trunk_ids",
        "conditions", "rewrites", "action", "trunks", "unusable", "select",
        "hash_key", "weights", "rr",
    )

    def __init__(self, config: Any, trunks: TrunkSet) -> None:
        self.config = config
        self.name: str = config.name
        self.direction: str = getattr(config, "direction", "any") or "any"
        self.source_trunks = {t.lower() for t in (getattr(config, "source_trunks", None) or [])}
        self.source_trunk_ids = set(getattr(config, "source_trunk_ids", None) or [])
        self.conditions = [_Condition(self.name, k, v) for k, v in (config.match or {}).items()]
        self.rewrites = [(k, _Template(self.name, k, v)) for k, v in (config.rewrite or {}).items()]
        self.action: str = config.action
        dest = list(getattr(config, "dest", None) or [])
        # Disabled, unknown and inbound-only trunks never receive calls;
        # they are left out before selecting, so rr and weights spread
        # calls over the trunks that can take them.
        self.trunks = [t for t in dest if trunks.usable_outbound(t)]
        self.unusable = bool(dest) and not self.trunks
        self.select: str = getattr(config, "select", "rr") or "rr"
        self.hash_key: Optional[str] = getattr(config, "hash_key", None)
        self.weights = [getattr(trunks.get(t), "weight", 100) for t in self.trunks]
        self.rr = 0


class Router:
    """
    Routes INVITEs with RustPBX's static routes.

    @param routes: the config's C{proxy.routes}, highest priority first
        (disabled routes may be present; they are skipped).
    @param trunks: the L{TrunkSet} of the config's trunks.
    @param clock: C{IReactorTime} for policy windows; the global reactor
        when None.
    @param rng: the C{random.Random} behind C{select = "random"} and
        C{"weighted"} (seed one in tests).
    @raise RoutingError: for a condition or template that cannot be
        compiled, or a policy with an unknown time zone.
    """

    def __init__(
        self,
        routes: Sequence[Any],
        trunks: TrunkSet,
        clock: Any = None,
        rng: Optional[random.Random] = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self.trunks = trunks
        self.rng = rng if rng is not None else random.Random()
        self.policies = PolicyLimiter(clock)
        self._routes = [_Route(r, trunks) for r in routes if not getattr(r, "disabled", False)]
        for route in self._routes:
            if route.config.policy is not None:
                self.policies.add(route.name, route.config.policy)
        for name in trunks.names():
            policy = getattr(trunks.get(name), "policy", None)
            if policy is not None:
                self.policies.add(trunk_policy_id(name), policy)

    @classmethod
    def from_config(cls, proxy: Any, clock: Any = None, rng: Optional[random.Random] = None) -> "Router":
        """A router (and its L{TrunkSet}) for a C{ProxyConfig}."""
        return cls(proxy.routes, TrunkSet(proxy.trunks, clock), clock, rng)

    def route(
        self,
        request: Request,
        source_trunk: Optional[str] = None,
        direction: Optional[str] = None,
        auth_user: Optional[str] = None,
    ) -> Optional[RouteDecision]:
        """
        Decide what to do with a new call.

        @param request: the INVITE as received (it is not modified).
        @param source_trunk: the trunk the call arrived over
            (L{TrunkSet.for_source}), for C{source_trunks},
            C{source_trunk_ids} and the policies' country checks.
        @param direction: the call's direction (L{rustpbx_py.call.classify}:
            C{"inbound"}, C{"outbound"}, C{"internal"}); a route with
            C{direction = "inbound"} or C{"outbound"} matches only those
            calls.  None skips the check.
        @param auth_user: the authenticated user name, counted by policies
            when the From URI has no user part.
        @return: the decision of the first route that matches, or None.
        """
        fields: Optional[_Fields] = None
        source_id = None
        source_name = None
        if source_trunk is not None:
            source_name = self.trunks.canonical_name(source_trunk)
            if source_name is not None:
                source_id = self.trunks.trunk_id(source_name)
        for route in self._routes:
            if route.direction != "any" and direction is not None and route.direction != direction:
                continue
            if route.source_trunks and (source_trunk is None or source_trunk.lower() not in route.source_trunks):
                continue
            if route.source_trunk_ids and (source_id is None or source_id not in route.source_trunk_ids):
                continue
            if fields is None:
                fields = _Fields(request)
            captures: Dict[str, List[str]] = {}
            for condition in route.conditions:
                value = fields.get(condition.field)
                groups = None if value is None else condition.match(value)
                if groups is None:
                    break
                captures[condition.key] = groups
            else:
                return self._decide(route, request, fields, captures, source_name, auth_user)
        return None

    # -- after a match -------------------------------------------------------------

    def _decide(
        self,
        route: _Route,
        request: Request,
        fields: _Fields,
        captures: Dict[str, List[str]],
        source_trunk: Optional[str],
        auth_user: Optional[str],
    ) -> RouteDecision:
        config = route.config
        out = request
        caller = fields.values["from.user"]
        callee = fields.values["to.user"]
        if route.rewrites:
            try:
                out, caller, callee = self._rewrite(route, request, fields, captures)
            except RoutingError as e:
                return RouteDecision(route.name, "reject", request, code=500, reason=str(e), caller=caller, callee=callee, config=config)
        if not caller and auth_user:
            caller = auth_user

        origin_country = None
        if source_trunk is not None:
            origin_country = getattr(self.trunks.get(source_trunk), "country", None)
        refusal = self.policies.check(route.name, caller, callee, origin_country)
        if refusal is not None:
            return RouteDecision(route.name, "reject", out, code=403, reason=refusal, caller=caller, callee=callee, config=config)

        action = route.action
        if action == "reject":
            reject = config.reject
            if reject is None:
                return RouteDecision(route.name, "reject", out, code=403, caller=caller, callee=callee, config=config)
            return RouteDecision(route.name, "reject", out, code=reject.code, reason=reject.reason, headers=dict(reject.headers or {}), caller=caller, callee=callee, config=config)
        if action == "busy":
            return RouteDecision(route.name, "busy", out, code=486, caller=caller, callee=callee, config=config)
        if action == "forward" and route.unusable:
            reason = f"No usable trunk for route {route.name} (disabled or inbound-only)"
            return RouteDecision(route.name, "reject", out, code=503, reason=reason, caller=caller, callee=callee, config=config)
        trunks: Tuple[str, ...] = ()
        if route.trunks:
            trunks = self._live_trunks(route, out, caller, callee)
            if not trunks:
                reason = f"All trunks of route {route.name} are down"
                return RouteDecision(route.name, "reject", out, code=503, reason=reason, caller=caller, callee=callee, config=config)
        return RouteDecision(route.name, action, out, trunks=trunks, caller=caller, callee=callee, config=config)

    def _live_trunks(self, route: _Route, request: Request, caller: str, callee: str) -> Tuple[str, ...]:
        """
        The route's trunks in the order to try them, leaving out the ones
        their OPTIONS probes marked down (C{health_check_enabled}): C{select}
        chooses among the live ones, and the C{health_check_fallback_trunk}
        of each trunk left out follows them (when it is up and not already
        there).  Empty when every trunk is down and no fallback is up.
        """
        trunks = self.trunks
        if all(trunks.is_up(t) for t in route.trunks):
            return self._select(route, request, caller, callee)
        live = [(t, w) for t, w in zip(route.trunks, route.weights) if trunks.is_up(t)]
        chosen: List[str] = []
        if live:
            names, weights = [t for t, _ in live], [w for _, w in live]
            chosen = list(self._select(route, request, caller, callee, names, weights))
        for name in route.trunks:
            if not trunks.is_up(name):
                fallback = trunks.fallback(name)
                if fallback is not None and fallback not in chosen:
                    chosen.append(fallback)
        return tuple(chosen)

    def _rewrite(
        self, route: _Route, request: Request, fields: _Fields, captures: Dict[str, List[str]]
    ) -> Tuple[Request, str, str]:
        """Apply the route's rewrites to a copy of the request; returns
        the copy and the rewritten caller and callee users."""
        out = copy_request(request)
        from_na = _nameaddr(out.get("from"))
        to_na = _nameaddr(out.get("to"))
        ruri = fields.ruri.copy() if fields.ruri is not None else None
        values = fields.values
        touched = set()
        for name, template in route.rewrites:
            if name.startswith("header."):
                header = name[7:]
                current = out.get(header) or ""
                out.set(header, template.expand(captures.get(_capture_key(name)), current))
                continue
            new = template.expand(captures.get(name), values[name])
            target, part = name.split(".", 1)
            if target == "from":
                targets = [("from", from_na.uri if from_na is not None else None)]
            elif target == "to":
                # The callee: the outgoing leg's To and Request-URI.
                targets = [("to", to_na.uri if to_na is not None else None), ("ruri", ruri)]
            else:
                targets = [("ruri", ruri)]
            for which, uri in targets:
                if uri is not None:
                    _set_uri_part(route.name, name, uri, part, new)
                    touched.add(which)
        if "from" in touched:
            out.set("From", str(from_na))
        if "to" in touched:
            out.set("To", str(to_na))
        if "ruri" in touched:
            out.uri = str(ruri)
        caller = (from_na.uri.user or "") if from_na is not None and from_na.uri is not None else values["from.user"]
        if ruri is not None and ruri.user and ruri.user.strip():
            callee = ruri.user
        elif to_na is not None and to_na.uri is not None:
            callee = to_na.uri.user or ""
        else:
            callee = values["to.user"]
        return out, caller, callee

    def _select(
        self,
        route: _Route,
        request: Request,
        caller: str,
        callee: str,
        trunks: Optional[List[str]] = None,
        weights: Optional[List[int]] = None,
    ) -> Tuple[str, ...]:
        """
        Order the route's trunks: the one C{select} picks first, then the
        others in list order after it, for failover.

         - C{rr}: the next trunk in turn (a counter per route);
         - C{random}: uniformly at random;
         - C{hash}: by a stable hash of C{hash_key}: C{from.user},
           C{to.user} (both after rewrites), C{call-id}, or any other text
           taken literally; without C{hash_key} the From URI;
         - C{weighted}: at random in proportion to the trunks' C{weight}
           (uniformly when all weights are 0).

        C{trunks} and C{weights} replace the route's own lists (the live
        trunks when some are down).
        """
        if trunks is None:
            trunks, weights = route.trunks, route.weights
        n = len(trunks)
        if n == 1:
            return (trunks[0],)
        select = route.select
        if select == "random":
            index = self.rng.randrange(n)
        elif select == "hash":
            key = route.hash_key
            if key == "from.user":
                text = caller
            elif key == "to.user":
                text = callee
            elif key is not None and key.lower() == "call-id":
                text = request.call_id
            elif key is not None:
                text = key
            else:
                from_na = _nameaddr(request.get("from"))
                text = str(from_na.uri) if from_na is not None and from_na.uri is not None else ""
            index = zlib.crc32(text.encode("utf-8", "surrogateescape")) % n
        elif select == "weighted":
            total = sum(weights)
            if total <= 0:
                index = self.rng.randrange(n)
            else:
                point = self.rng.randrange(total)
                index = n - 1
                for i, weight in enumerate(weights):
                    if point < weight:
                        index = i
                        break
                    point -= weight
        else:
            index = route.rr % n
            route.rr += 1
        return tuple(trunks[index:]) + tuple(trunks[:index])

    # -- policies ------------------------------------------------------------------

    def check_trunk_policy(
        self, trunk: str, caller: str, callee: str, source_trunk: Optional[str] = None
    ) -> Optional[Tuple[int, str]]:
        """
        The selected trunk's own C{policy}, checked (as RustPBX does) after
        the route's: None when it lets the call through, else C{(403,
        reason)}.  Count the call with
        C{call_started(trunk_policy_id(trunk), caller)}.
        """
        origin_country = None
        if source_trunk is not None and source_trunk in self.trunks:
            origin_country = getattr(self.trunks.get(source_trunk), "country", None)
        refusal = self.policies.check(trunk_policy_id(trunk), caller, callee, origin_country)
        return None if refusal is None else (403, refusal)

    def call_started(self, route: str, caller: str) -> None:
        """A call routed by C{route} (a route name, or
        L{trunk_policy_id}) began: it counts against the concurrency limit
        of that policy for C{caller} (L{RouteDecision.caller}) until
        L{call_ended}.  Nothing to count when the policy has no
        concurrency limit."""
        self.policies.call_started(route, caller)

    def call_ended(self, route: str, caller: str) -> None:
        """The call counted by L{call_started} ended, however it ended."""
        self.policies.call_ended(route, caller)


def _nameaddr(value: Optional[str]) -> Optional[NameAddr]:
    if value is None:
        return None
    try:
        na = NameAddr.parse(value)
    except HeaderError:
        return None
    if na.uri is not None:
        na.uri = na.uri.copy()
    return na


def _set_uri_part(route: str, key: str, uri: URI, part: str, value: str) -> None:
    """Set a URI's user, host or port from a rewrite's result."""
    if part == "user":
        uri.user = value or None
    elif part == "host":
        try:
            host, port = split_hostport(value)
        except HeaderError:
            raise RoutingError(f"route {route!r}: rewrite.{key} gave {value!r}, which is not a host")
        uri.host = host
        if port is not None:
            uri.port = port
    else:
        if value == "":
            uri.port = None
        elif value.isdigit() and int(value) <= 65535:
            uri.port = int(value)
        else:
            raise RoutingError(f"route {route!r}: rewrite.{key} gave {value!r}, which is not a port")
    uri.changed()
