# -*- test-case-name: rustpbx_py.test.test_acl -*-
"""
The C{acl} module: the first stage of the pipeline, which decides whether a
request is worth any work at all (RustPBX's AclModule).

For every request, in this order:

 1. User-Agent: a request whose C{User-Agent} contains an entry of
    C{ua_black_list} (case-insensitive substring: scanners write versions
    after their names) is dropped; with a non-empty C{ua_white_list} only
    user agents containing one of its entries pass, and a request without
    User-Agent is dropped.
 2. Trunks: a request from one of a trunk's C{inbound_hosts} (or the IP of
    its C{dest}, as RustPBX does, unless the trunk is outbound-only) is the
    carrier's traffic: C{tx.context.trunk} is set to the trunk's name and
    the request skips the rules below (and auth).
 3. C{acl_rules}: C{allow}/C{deny} of an address, a CIDR (IPv4 or IPv6) or
    C{all}; the first rule that matches the source address decides, no
    match denies, and no rules at all allow everybody.
 4. C{frequency_limiter}: at most N requests per window from one source
    address (one /64 for IPv6), over a sliding window.

The limiter must stop a scanner without ever cutting off an office: fifty
phones behind one NAT address re-register, ping and call far more than
"100/60s" allows if every request counted.  So it counts what a stranger
can send and refunds what turns out to be a known phone's:

 - every request is counted when it arrives (before the core answers
   anything), except in-dialog requests of a live call (the call module's
   dialogs: re-INVITE, ACK, BYE of either party) and OPTIONS to the PBX
   itself from a source that authenticated within the last hour (phones'
   keep-alives); CRLF keep-alives never reach the core and responses are
   never counted;
 - a request that then authenticates (a correct digest, or a dialog the
   auth module trusts) is refunded, together with the request whose
   challenge gave it its nonce (and that request's ACK, for INVITE): a
   phone's challenge/answer round trip costs its source nothing;
 - everything else stays counted: unauthenticated requests, wrong
   passwords, unknown users, retransmissions.
The auth module refunds through C{tx.context.credit}, which this module
sets on the requests it counted.

A rejected request is marked as spam and dropped without an answer: a
scanner learns nothing, not even that a SIP server is here.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import re
from collections import OrderedDict
from typing import Any, Iterable, List, Optional, Tuple, Union

from twisted.logger import Logger
from zope.interface import implementer

from rustpbx_py.interfaces import ABORT, CONTINUE, IProxyModule
from rustpbx_py.modules.guard import TrustedSources
from rustpbx_py.sip.headers import HeaderError, NameAddr

__all__ = [
    "AclModule",
    "AclError",
    "FrequencyLimiter",
    "OncePer",
    "compile_rules",
    "limiter_key",
    "parse_frequency",
    "source_address",
]

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


class AclError(ValueError):
    """An ACL rule, trunk host or limiter setting we cannot use."""


@functools.lru_cache(maxsize=4096)
def source_address(host: str) -> Optional[IPAddress]:
    """
    The address a request came from, as an C{ipaddress} object: IPv6
    brackets and zone ids removed, and an IPv4-mapped IPv6 address (what a
    dual-stack socket reports for IPv4 peers) turned back into IPv4 so that
    IPv4 rules match it.  None for something that is not an address.
    Cached: the same peers send most requests, and parsing an address costs
    more than every rule check after it.
    """
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    host = host.split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def limiter_key(ip: IPAddress) -> str:
    """
    Who the frequency limiter counts: an IPv4 address, or the /64 of an
    IPv6 one -- one subscriber usually holds a whole /64 and could
    otherwise rotate through its addresses to escape the limit.
    """
    if ip.version == 6:
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


def _parse_network(text: str) -> IPNetwork:
    """C{10.0.0.0/8}, C{10.1.2.3}, C{2001:db8::/32}, C{[::1]} -> a network."""
    text = text.strip()
    if text.startswith("[") and "]" in text:
        text = text[1 : text.index("]")]
    return ipaddress.ip_network(text, strict=False)


def compile_rules(rules: Optional[Iterable[Any]]) -> List[Tuple[bool, Optional[IPNetwork]]]:
    """
    C{acl_rules} as (allow, network) pairs, network None for C{all}.

    Accepts the config's AclRule objects (C{.action}, C{.network}) and, for
    rules built by hand or read from older files, C{"allow 10.0.0.0/8"}
    strings.

    @raise AclError: an unknown action or an unparsable address, naming
        the rule.
    """
    compiled: List[Tuple[bool, Optional[IPNetwork]]] = []
    for rule in rules or ():
        if isinstance(rule, str):
            parts = rule.split()
            if len(parts) != 2:
                raise AclError(f"acl rule {rule!r}: expected 'allow|deny <address|cidr|all>'")
            action, target = parts
        else:
            action, target = getattr(rule, "action", None), getattr(rule, "network", None)
        action = str(action).lower()
        if action not in ("allow", "deny"):
            raise AclError(f"acl rule {rule!r}: action must be allow or deny, not {action!r}")
        network: Optional[IPNetwork]
        if target is None or (isinstance(target, str) and target.lower() == "all"):
            network = None
        elif isinstance(target, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
            network = target
        else:
            try:
                network = _parse_network(str(target))
            except ValueError:
                raise AclError(f"acl rule {rule!r}: {target!r} is not an address, a CIDR or 'all'")
        compiled.append((action == "allow", network))
    return compiled


def _uri_user(value: Optional[str]) -> Optional[str]:
    """The user part of a From/To value (for trunks' user-prefix filters)."""
    if not value:
        return None
    try:
        uri = NameAddr.parse(value).uri
    except HeaderError:
        return None
    return uri.user if uri is not None else None


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


_FREQUENCY_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*(s|sec|secs|seconds?|m|min|minutes?|h|hours?)?\s*$", re.I)


def parse_frequency(value: Any) -> Optional[Tuple[int, float]]:
    """
    The limiter setting as (count, window seconds), or None when unset.
    Takes the config's FrequencyLimit (C{.count}, C{.window_seconds}) or
    the TOML text C{"100/60s"} (also C{"10/s"}, C{"300/5m"}, C{"1000/1h"}).

    @raise AclError: for text in another form or a non-positive limit.
    """
    if value is None or value == "":
        return None
    if isinstance(value, str):
        m = _FREQUENCY_RE.match(value)
        if m is None:
            raise AclError(f"frequency_limiter {value!r}: expected '<count>/<window>', e.g. '100/60s'")
        count = int(m.group(1))
        amount = int(m.group(2)) if m.group(2) else 1
        unit = (m.group(3) or "s").lower()[0]
        window = float(amount * {"s": 1, "m": 60, "h": 3600}[unit])
    else:
        count = int(_get(value, "count"))
        window = float(_get(value, "window_seconds"))
    if count <= 0 or window <= 0:
        raise AclError(f"frequency_limiter {value!r}: count and window must be positive")
    return count, window


class OncePer:
    """
    Remembers when something was last logged for a key, to log it at most
    once per C{interval}; bounded to C{max_keys} keys (oldest forgotten).
    """

    def __init__(self, clock: Any, interval: float, max_keys: int = 4096) -> None:
        self._clock = clock
        self.interval = interval
        self.max_keys = max_keys
        self._last: "OrderedDict[Any, float]" = OrderedDict()

    def __call__(self, key: Any) -> bool:
        """True when C{key} should be logged now."""
        now = self._clock.seconds()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            return False
        self._last[key] = now
        self._last.move_to_end(key)
        while len(self._last) > self.max_keys:
            self._last.popitem(last=False)
        return True


#: How long a source that authenticated is trusted to send keep-alive
#: OPTIONS without counting them: an hour covers the refresh interval of
#: every phone's registration.
TRUST_SECONDS = 3600.0


class _Slot:
    __slots__ = ("window", "previous", "current", "logged")

    def __init__(self, window: int) -> None:
        self.window = window
        self.previous = 0
        self.current = 0
        self.logged = -1


class FrequencyLimiter:
    """
    At most C{count} requests per C{window} seconds from each source.

    A sliding window estimated from two fixed windows (the count of the
    previous window weighted by how much of it still overlaps the sliding
    window, plus the current count): exact at window boundaries, O(1)
    memory per source.  Only accepted requests count, so a source over the
    limit is held to C{count} per window rather than locked out.

    Memory stays bounded: sources idle for a whole window are forgotten
    (their estimate would be zero anyway), at most once per window, and
    beyond C{max_sources} the least recently seen are dropped.
    """

    log = Logger()

    def __init__(self, count: int, window: float, clock: Any, max_sources: int = 100000) -> None:
        self.count = count
        self.window = window
        self._clock = clock
        self.max_sources = max_sources
        self._sources: "OrderedDict[str, _Slot]" = OrderedDict()
        self._swept = -1
        #: Sources that authenticated lately -> until when they are trusted.
        self._trusted = TrustedSources(clock, max(TRUST_SECONDS, window), max_sources)
        self.trust_seconds = self._trusted.seconds

    def __len__(self) -> int:
        """How many sources are tracked."""
        return len(self._sources)

    def allow(self, source: str) -> bool:
        """
        Count one request from C{source}; False when it is over the limit
        (the caller drops it).  The first excess request of each window
        from a source is logged, the rest are not.
        """
        now = self._clock.seconds()
        index = int(now // self.window)
        if index != self._swept:
            self._sweep(index)
        sources = self._sources
        slot = sources.get(source)
        if slot is None:
            slot = sources[source] = _Slot(index)
            while len(sources) > self.max_sources:
                sources.popitem(last=False)
        else:
            sources.move_to_end(source)
            if slot.window != index:
                slot.previous = slot.current if slot.window == index - 1 else 0
                slot.current = 0
                slot.window = index
        elapsed = (now - index * self.window) / self.window
        # Rounded up: just after a window boundary the previous window
        # still counts whole, so a burst across the boundary is not let in
        # one request over the limit.
        estimate = math.ceil(slot.previous * (1.0 - elapsed)) + slot.current
        if estimate >= self.count:
            if slot.logged != index:
                slot.logged = index
                self.log.warn(
                    "frequency limit {count}/{window}s exceeded by {source}; dropping its requests",
                    count=self.count,
                    window=self.window,
                    source=source,
                )
            return False
        slot.current += 1
        return True

    def credit(self, source: str, count: int = 1) -> None:
        """
        Give back C{count} requests of C{source} that proved legitimate
        (they authenticated), newest window first, and trust the source's
        keep-alives for L{trust_seconds} (see L{trusted}).
        """
        now = self._clock.seconds()
        slot = self._sources.get(source)
        if slot is not None:
            index = int(now // self.window)
            if slot.window != index:
                slot.previous = slot.current if slot.window == index - 1 else 0
                slot.current = 0
                slot.window = index
            taken = min(count, slot.current)
            slot.current -= taken
            slot.previous = max(0, slot.previous - (count - taken))
        self._trusted.trust(source, now)

    def trusted(self, source: str) -> bool:
        """Whether C{source} authenticated within the last L{trust_seconds}."""
        return self._trusted.trusted(source)

    def _sweep(self, index: int) -> None:
        """Forget sources last seen before the previous window."""
        self._swept = index
        sources = self._sources
        while sources:
            key, slot = next(iter(sources.items()))
            if slot.window >= index - 1:
                break
            del sources[key]


@implementer(IProxyModule)
class AclModule:
    """The C{acl} pipeline stage (see the module docstring)."""

    name = "acl"
    log = Logger()

    def __init__(self, proxy: Any, reactor: Any = None, trunks: Any = None, core: Any = None) -> None:
        """
        @param proxy: the C{[proxy]} config section (a ProxyConfig).
        @param reactor: the clock for the frequency limiter.
        @param trunks: the service's L{rustpbx_py.call.trunks.TrunkSet}
            (built from C{proxy.trunks} when not given), which says which
            trunk a source address belongs to.
        """
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self._reactor = reactor
        self.rules = compile_rules(_get(proxy, "acl_rules", None))
        self.black_list = [s.lower() for s in (_get(proxy, "ua_black_list", None) or []) if s]
        self.white_list = [s.lower() for s in (_get(proxy, "ua_white_list", None) or []) if s]
        if trunks is None:
            from rustpbx_py.call.trunks import TrunkSet

            trunks = TrunkSet(_get(proxy, "trunks", None) or {}, reactor)
        self.trunks = trunks
        self._any_trunk = bool(trunks.names())
        #: The SIP core whose screens this module joins at start (see
        #: L{screen}); without one the checks run in the pipeline.
        self.core = core
        self._screening = False
        limit = parse_frequency(_get(proxy, "frequency_limiter", None))
        self.limiter = FrequencyLimiter(limit[0], limit[1], reactor) if limit else None
        # Denied requests are logged once a minute per source and reason.
        self._log_once = OncePer(reactor, 60.0)

    def allow_methods(self) -> List[str]:
        return ["*"]

    def start(self) -> None:
        self.log.info(
            "acl: {rules} rules, {trunks} trunks, limiter {limit}",
            rules=len(self.rules),
            trunks=len(self.trunks.names()),
            # "is not None": an empty limiter (no source seen yet) is falsy.
            limit=f"{self.limiter.count}/{self.limiter.window:g}s" if self.limiter is not None else "off",
        )
        if self.core is not None:
            self.core.screens.append(self.screen)
            self._screening = True

    def stop(self) -> None:
        if self._screening:
            self.core.screens.remove(self.screen)
            self._screening = False

    def ip_allowed(self, ip: IPAddress) -> bool:
        """Whether the rules let C{ip} in: first match wins, none denies, no rules allow."""
        if not self.rules:
            return True
        for allow, network in self.rules:
            if network is None:
                return allow
            if network.version == ip.version and ip in network:
                return allow
        return False

    def ua_allowed(self, ua: Optional[str]) -> bool:
        """Whether a User-Agent value (None when absent) passes the lists."""
        if ua is None:
            return not self.white_list
        low = ua.lower()
        for bad in self.black_list:
            if bad in low:
                return False
        if self.white_list:
            return any(good in low for good in self.white_list)
        return True

    def _log_drop(self, request: Any, host: str, reason: str) -> None:
        if self._log_once((host, reason)):
            self.log.info(
                "acl: dropping {method} from {host} ({reason})",
                method=request.method,
                host=host,
                reason=reason,
            )

    def check(self, request: Any, host: str) -> Tuple[Optional[str], Optional[str]]:
        """
        (why to drop the request or None, the trunk it comes from or None):
        the User-Agent lists, then the trunks' addresses (which bypass the
        rules), the rules and the frequency limiter.
        """
        if not self.ua_allowed(request.get("user-agent")):
            return "user agent", None
        ip = source_address(host)
        if ip is None:
            return "source is not an IP address", None
        if self._any_trunk:
            trunk = self.trunks.for_source(ip, _uri_user(request.get("from")), _uri_user(request.get("to")))
            if trunk is not None:
                return None, trunk
        if not self.ip_allowed(ip):
            return "acl rules", None
        if self.limiter is not None:
            key = limiter_key(ip)
            if self._counted(request, key) and not self.limiter.allow(key):
                # The limiter logs once per window itself.
                return "", None
        return None, None

    def _counted(self, request: Any, key: str) -> bool:
        """
        Whether the limiter counts C{request} from source C{key}: not an
        in-dialog request of a live call, nor a trusted source's OPTIONS
        to the PBX itself (see the module docstring).
        """
        core = self.core
        if core is not None and core.dialog_lookup(request):
            return False
        if request.method == "OPTIONS" and self.limiter.trusted(key):
            try:
                if request.to_addr.tag:
                    return True  # in-dialog: not a keep-alive
            except (HeaderError, AttributeError):
                return True
            if core is not None:
                return not core.addressed_to_self(request)
            try:
                return request.ruri.user is not None
            except HeaderError:
                return True
        return True

    def _credit_to(self, tx: Any, host: str) -> None:
        """Let the auth module refund this counted request (C{tx.context.credit})."""
        ip = source_address(host)
        if ip is None:
            return
        key = limiter_key(ip)
        if self._counted(tx.request, key):
            tx.context.credit = functools.partial(self.limiter.credit, key)

    def screen(self, request: Any, flow: Any) -> bool:
        """
        The core's first look at every request, before the transaction
        layer, the core's own answers (483, 420, 400, 503, OPTIONS) or any
        module: True drops it without a word, so a scanner or a flood learns
        nothing at all.
        """
        reason, _ = self.check(request, flow.remote[0])
        if reason is None:
            return False
        if reason:
            self._log_drop(request, flow.remote[0], reason)
        return True

    def on_transaction_begin(self, tx: Any) -> str:
        request = tx.request
        host = tx.flow.remote[0]
        if self._screening:
            # screen() already passed this request: only say which trunk.
            if self._any_trunk:
                ip = source_address(host)
                if ip is not None:
                    tx.context.trunk = self.trunks.for_source(
                        ip, _uri_user(request.get("from")), _uri_user(request.get("to"))
                    )
            if self.limiter is not None and tx.context.trunk is None:
                self._credit_to(tx, host)
            return CONTINUE
        reason, trunk = self.check(request, host)
        if trunk is not None:
            tx.context.trunk = trunk
            return CONTINUE
        if reason is None:
            if self.limiter is not None:
                self._credit_to(tx, host)
            return CONTINUE
        tx.context.spam = True
        if reason:
            self._log_drop(request, host, reason)
        return ABORT

    def on_transaction_end(self, tx: Any) -> None:
        pass
