# -*- test-case-name: rustpbx_py.test.test_trunks -*-
"""
SIP trunks at run time: who a source address belongs to, where a trunk's
calls go, and whether a trunk may take one more call.

L{TrunkSet} is built once from the configuration's trunks (a dict of
L{rustpbx_py.config.TrunkConfig} by name) and answers, without any network
I/O:

 - L{TrunkSet.for_source}: the trunk an inbound request comes from, by
   source IP (the trunk's C{inbound_hosts}, plus the IPs of its C{dest} and
   C{backup_dest}, as RustPBX indexes them), filtered by the trunk's
   C{incoming_from_user_prefix} / C{incoming_to_user_prefix};
 - L{TrunkSet.destination} / L{TrunkSet.backup_destination}: the
   (transport, host, port) a trunk's C{dest} / C{backup_dest} names;
 - L{TrunkSet.admit}: whether the trunk's C{max_cps} and C{max_calls} let
   one more call through (503 otherwise), with L{TrunkSet.call_started} /
   L{TrunkSet.call_ended} keeping the count of calls in progress;
 - DID lookups, direction checks, the trunk's codec list, and
   L{TrunkSet.outbound_request}, which applies C{rewrite_hostport} and the
   P-Asserted-Identity RustPBX adds for trunks with credentials;
 - health: L{TrunkSet.is_up}, L{TrunkSet.trunk_status} and
   L{TrunkSet.status_observers}, kept by the OPTIONS prober
   (L{rustpbx_py.call.trunk_health}) so that routes skip a trunk that
   stopped answering and the monitor shows it.

Host names in C{inbound_hosts} (and in C{dest} / C{backup_dest}) are not
resolved here: no DNS query may run on the request path.  The service
resolves them at start and again by their TTL
(L{rustpbx_py.protocols.resolve.HostWatcher}) and hands the addresses to
L{TrunkSet.set_addresses}, which re-indexes the sources; until then a
name matches nothing.  L{TrunkSet.locations} says what to look up in DNS
(RFC 3263) to send to a trunk.
"""

from __future__ import annotations

import ipaddress
import re
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Mapping, NamedTuple, Optional, Tuple, Union

from twisted.logger import Logger

from rustpbx_py.sip.headers import URI, HeaderError, NameAddr, bare_host
from rustpbx_py.sip.message import Request

__all__ = [
    "TrunkDestination",
    "TrunkHealth",
    "TrunkLocation",
    "TrunkSet",
    "TrunkError",
    "matches_user_prefix",
    "copy_request",
]

_log = Logger()

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

#: Default port per transport when a trunk's URI names none (RFC 3263 for
#: UDP/TCP/TLS; RFC 7118 WebSocket servers sit on the HTTP ports).
DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061, "ws": 80, "wss": 443}

#: RustPBX's test for "this prefix is a regular expression".
_PREFIX_REGEX_CHARS = frozenset("^$.*?[](){}|\\")


class TrunkError(ValueError):
    """A trunk setting this module cannot use (names the trunk and key)."""


class TrunkDestination(NamedTuple):
    """Where a trunk's calls go: unpacks as C{(transport, host, port)}."""

    transport: str
    """C{udp}, C{tcp}, C{tls}, C{ws} or C{wss}."""
    host: str
    """Host name or IP address, IPv6 without brackets."""
    port: int
    """Explicit port, or the transport's default."""


class TrunkLocation(NamedTuple):
    """What RFC 3263 needs to locate a trunk's C{dest} or C{backup_dest}
    (see L{rustpbx_py.protocols.resolve.SipResolver.locate})."""

    host: str
    """Host name or IP address, IPv6 without brackets."""
    port: Optional[int]
    """The port the URI names; None lets DNS (SRV) choose."""
    transport: Optional[str]
    """The trunk's C{transport}, else the URI's C{transport} parameter;
    None lets DNS (NAPTR) choose."""
    secure: bool
    """A sips: URI: TLS only."""


def _location(config: Any, uri: URI) -> TrunkLocation:
    transport = getattr(config, "transport", None) or uri.params.get("transport") or None
    return TrunkLocation(bare_host(uri.host), uri.port, transport.lower() if transport else None, uri.scheme == "sips")


def host_name(text: str) -> Optional[str]:
    """
    The host name in an inbound host, dest or backup_dest
    (C{carrier.example.com}, C{carrier.example.com:5060},
    C{sip:carrier.example.com;transport=tcp}), lower-cased; None for an
    address or a network.
    """
    if _host_network(text) is not None:
        return None
    text = _hostport(text)
    if text.count(":") == 1:
        text = text.split(":", 1)[0]
    text = text.strip().rstrip(".").lower()
    return text or None


def copy_request(request: Request) -> Request:
    """A copy of C{request} whose start line and headers can be edited
    without touching the original (the body is shared: bytes are
    immutable)."""
    return Request(request.method, request.uri, request.copy_headers(), request.body, request.version)


def matches_user_prefix(pattern: str, value: str) -> bool:
    """
    RustPBX's C{incoming_*_user_prefix} test: an empty pattern passes; a
    pattern with regex characters is searched for as a regex (an invalid
    one never matches); otherwise C{value} must start with it.
    """
    return _compile_prefix(pattern)(value)


def _compile_prefix(pattern: Optional[str]):
    text = (pattern or "").strip()
    if not text:
        return lambda value: True
    if _PREFIX_REGEX_CHARS.isdisjoint(text):
        return lambda value: value.startswith(text)
    try:
        rx = re.compile(text)
    except re.error:
        return lambda value: False
    return lambda value: rx.search(value) is not None


def _hostport(text: str) -> str:
    """The host[:port] of an inbound host, dest or backup_dest: without
    <>, the sip:/sips: scheme, a user part, parameters or headers."""
    text = text.strip().strip("<>")
    lowered = text.lower()
    for prefix in ("sips:", "sip:"):
        if lowered.startswith(prefix):
            text = text[len(prefix) :]
            break
    text = text.split(";", 1)[0].split("?", 1)[0]
    if "@" in text:
        text = text.rsplit("@", 1)[1]
    return text


def _host_network(text: str) -> Optional[Union[ipaddress.IPv4Network, ipaddress.IPv6Network]]:
    """
    An inbound host, dest or backup_dest as a network: C{1.2.3.4},
    C{10.0.0.0/8}, C{1.2.3.4:5060}, C{[2001:db8::1]:5060},
    C{sip:1.2.3.4:5060;transport=tcp}.  None for host names.
    """
    text = _hostport(text)
    if not text:
        return None
    candidates = [text]
    if text.startswith("[") and "]" in text:
        candidates.append(text[1 : text.index("]")])
    elif text.count(":") == 1:
        candidates.append(text.split(":", 1)[0])
    for candidate in candidates:
        try:
            return ipaddress.ip_network(candidate, strict=False)
        except ValueError:
            continue
    return None


def _parse_dest(name: str, key: str, text: str, transport: Optional[str]) -> Tuple[TrunkDestination, URI]:
    """
    Parse a trunk's C{dest} or C{backup_dest}: a SIP URI
    (C{sip:host:port;transport=tcp}, C{sips:host}) or a bare C{host[:port]}
    (RustPBX accepts both).  The trunk's own C{transport} setting wins over
    the URI's C{transport} parameter, which wins over the scheme.
    """
    raw = text.strip().strip("<>")
    uri_text = raw if re.match(r"^sips?:", raw, re.I) else "sip:" + raw
    try:
        uri = URI.parse(uri_text)
    except HeaderError as e:
        raise TrunkError(f"trunk {name!r}: {key}: expected a SIP URI such as \"sip:sip.provider.com:5060\", found {text!r} ({e})")
    if uri.scheme not in ("sip", "sips"):
        raise TrunkError(f"trunk {name!r}: {key}: expected a sip: or sips: URI, found {text!r}")
    if transport:
        kind = transport.lower()
    elif uri.params.get("transport"):
        kind = (uri.params["transport"] or "").lower()
    else:
        kind = "tls" if uri.scheme == "sips" else "udp"
    if kind not in DEFAULT_PORTS:
        raise TrunkError(f"trunk {name!r}: {key}: unknown transport {kind!r} (expected udp, tcp, tls, ws or wss)")
    port = uri.port if uri.port is not None else DEFAULT_PORTS[kind]
    return TrunkDestination(kind, bare_host(uri.host), port), uri


def _normalise_number(number: str) -> str:
    """A DID without the punctuation people write numbers with: C{+1
    (555) 010-0000} -> C{15550100000}."""
    return re.sub(r"[\s+\-().]", "", number)


class TrunkHealth:
    """
    What the OPTIONS prober knows of one trunk (RustPBX's
    C{TrunkHealthState}).  C{state} is C{unknown} until the first answer
    (and for ever when C{health_check_enabled} is off), C{up} after a 2xx,
    C{down} after C{health_check_probe_count} failures in a row.
    """

    __slots__ = ("state", "options", "rtt", "last_probe", "failures", "last_error", "registration", "per_ip")

    def __init__(self) -> None:
        self.state = "unknown"
        #: C{off} (not probed), C{waiting} (first probe not answered yet),
        #: C{ok} (last probe answered 2xx) or C{failed}.
        self.options = "off"
        #: Round-trip time of the last 2xx, seconds.
        self.rtt: Optional[float] = None
        #: When the last probe finished (answered, failed or timed out),
        #: in the clock's seconds.
        self.last_probe: Optional[float] = None
        self.failures = 0
        self.last_error: Optional[str] = None
        #: The trunk's L{rustpbx_py.call.trunk_registration.TrunkRegistration}
        #: when it registers with its provider.
        self.registration: Any = None
        #: With C{health_check_per_ip}: the last round's result of each
        #: target (C{target}, C{healthy}, C{rtt}, C{last_error}).
        self.per_ip: Optional[List[dict]] = None


class _Trunk:
    """The precomputed run-time view of one configured trunk."""

    __slots__ = (
        "name", "config", "dest", "dest_uri", "backup", "backup_uri", "from_ok",
        "to_ok", "prefix_key", "active", "cps_times", "health",
    )

    def __init__(self, name: str, config: Any) -> None:
        self.name = name
        self.config = config
        transport = getattr(config, "transport", None)
        self.dest, self.dest_uri = _parse_dest(name, "dest", config.dest, transport)
        backup = getattr(config, "backup_dest", None)
        if backup:
            self.backup, self.backup_uri = _parse_dest(name, "backup_dest", backup, transport)
        else:
            self.backup, self.backup_uri = None, None
        from_prefix = getattr(config, "incoming_from_user_prefix", None)
        to_prefix = getattr(config, "incoming_to_user_prefix", None)
        self.from_ok = _compile_prefix(from_prefix)
        self.to_ok = _compile_prefix(to_prefix)
        # RustPBX tries the trunks sharing a network in this order: longer
        # caller prefix first, then longer callee prefix, then lower id.
        trunk_id = getattr(config, "id", None)
        self.prefix_key = (
            -len((from_prefix or "").strip()),
            -len((to_prefix or "").strip()),
            trunk_id if trunk_id is not None else float("inf"),
        )
        self.active = 0
        self.cps_times: Deque[float] = deque()
        self.health = TrunkHealth()


class TrunkSet:
    """
    The configured trunks, indexed for the questions a call asks.

    @param trunks: trunk name -> L{rustpbx_py.config.TrunkConfig} (the
        config's C{proxy.trunks}).
    @param clock: an C{IReactorTime} (C{seconds()}) for the CPS window;
        the global reactor when None.
    @raise TrunkError: when a C{dest} or C{backup_dest} cannot be parsed.

    @ivar ignored_hosts: C{(trunk, host)} for each host name in an
        C{inbound_hosts} list that L{for_source} cannot match yet: no
        addresses were given for it with L{set_addresses} (no DNS runs on
        the request path).
    """

    def __init__(self, trunks: Mapping[str, Any], clock: Any = None) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self._clock = clock
        #: host name -> its addresses, from DNS (see L{set_addresses}).
        self._resolved: Dict[str, List[str]] = {}
        self._trunks: Dict[str, _Trunk] = {}
        for name, config in trunks.items():
            self._trunks[name] = _Trunk(name, config)
        self._lower = {name.lower(): name for name in self._trunks}
        #: Called with C{(name, up)} each time a trunk goes down or comes
        #: back up (the monitor's trunk.up / trunk.down events).
        self.status_observers: List[Callable[[str, bool], None]] = []
        self._build_source_index()
        self._build_did_index()

    def replace(self, trunks: Mapping[str, Any]) -> None:
        """
        Take a new set of trunks in one step (the console's reload): every
        holder of this set (ACL, router, call module) sees the new trunks at
        once.  A trunk kept under the same name keeps its calls in progress
        and CPS window, and, when its settings did not change, its health
        (OPTIONS probe state, registration); the addresses resolved for
        host names so far are kept.  A trunk that was down and whose
        settings changed starts afresh (tried again until its probes say
        otherwise): the L{status_observers} hear that it is up.

        @raise TrunkError: a C{dest} cannot be parsed; nothing changed.
        """
        fresh = {name: _Trunk(name, config) for name, config in trunks.items()}
        revived = []
        for name, trunk in fresh.items():
            old = self._trunks.get(name)
            if old is not None:
                trunk.active = old.active
                trunk.cps_times = old.cps_times
                if old.config == trunk.config:
                    trunk.health = old.health
                elif old.health.state == "down":
                    revived.append(name)
        usage = self._did_usage
        self._trunks = fresh
        self._lower = {name.lower(): name for name in fresh}
        self._build_source_index()
        self._build_did_index()
        self._did_usage = {did: n for did, n in usage.items() if did in self._dids}
        for name in revived:
            self._tell(name, True)

    # -- lookups ---------------------------------------------------------------

    def __contains__(self, name: object) -> bool:
        return name in self._trunks

    def __len__(self) -> int:
        return len(self._trunks)

    def names(self) -> List[str]:
        """Trunk names in configuration order."""
        return list(self._trunks)

    def get(self, name: str) -> Any:
        """The L{rustpbx_py.config.TrunkConfig} of trunk C{name}.

        @raise KeyError: for an unknown trunk."""
        return self._trunks[name].config

    def canonical_name(self, name: str) -> Optional[str]:
        """The configured spelling of a trunk name matched
        case-insensitively (RustPBX compares C{source_trunks} that way)."""
        if name in self._trunks:
            return name
        return self._lower.get(name.lower())

    def trunk_id(self, name: str) -> Optional[int]:
        """The trunk's database id (C{id}), for routes' C{source_trunk_ids}."""
        return getattr(self._trunks[name].config, "id", None)

    def is_disabled(self, name: str) -> bool:
        """A disabled trunk is neither routed to nor recognised as a source."""
        return bool(getattr(self._trunks[name].config, "disabled", False))

    def codecs(self, name: str) -> List[str]:
        """The trunk's codec list (canonical names, in preference order);
        empty means "use the route's or C{proxy.codecs}"."""
        return list(getattr(self._trunks[name].config, "codec", None) or [])

    # -- health (OPTIONS probing) ----------------------------------------------------

    def is_up(self, name: str) -> bool:
        """False only while the trunk is marked down by its OPTIONS probes:
        a trunk never probed (or not answered yet) is tried."""
        trunk = self._trunks.get(name)
        return trunk is None or trunk.health.state != "down"

    def health(self, name: str) -> TrunkHealth:
        """The trunk's L{TrunkHealth}, for the prober to update."""
        return self._trunks[name].health

    def set_state(self, name: str, state: str) -> None:
        """
        Set the trunk's health state (C{up}, C{down} or C{unknown}); the
        L{status_observers} hear of a change between up and down (a first
        C{down} included, a first C{up} not: a trunk is up until told
        otherwise).
        """
        health = self._trunks[name].health
        before, health.state = health.state, state
        if before == state:
            return
        if state == "down" or (state == "up" and before == "down"):
            self._tell(name, state == "up")

    def _tell(self, name: str, up: bool) -> None:
        for observer in list(self.status_observers):
            try:
                observer(name, up)
            except Exception:
                _log.failure("trunk status observer failed")

    def trunk_status(self, name: str) -> dict:
        """What the console and the monitor show of a trunk's health and
        registration (a JSON-able dict)."""
        trunk = self._trunks[name]
        health = trunk.health
        registration = health.registration
        return {
            "trunk": name,
            "state": health.state,
            "options": health.options,
            "rtt": health.rtt,
            "last_probe": health.last_probe,
            "failures": health.failures,
            "last_error": health.last_error,
            "fallback_trunk": getattr(trunk.config, "health_check_fallback_trunk", None),
            "registration": registration.status() if registration is not None else None,
            "per_ip": [dict(target) for target in health.per_ip] if health.per_ip is not None else None,
        }

    def statuses(self) -> List[dict]:
        """L{trunk_status} of every trunk, in configuration order."""
        return [self.trunk_status(name) for name in self._trunks]

    def fallback(self, name: str) -> Optional[str]:
        """The trunk's C{health_check_fallback_trunk} when it can take
        calls now (enabled, outbound, not down), else None."""
        fallback = getattr(self._trunks[name].config, "health_check_fallback_trunk", None)
        if fallback and self.usable_outbound(fallback) and self.is_up(fallback):
            return fallback
        return None

    # -- direction ---------------------------------------------------------------

    def allows(self, name: str, direction: str) -> bool:
        """
        Whether the trunk's C{direction} allows a call of C{direction}
        (C{"inbound"}: the call arrives over the trunk; C{"outbound"}: the
        call is sent to it).  A C{bidirectional} trunk allows everything,
        as in RustPBX; an C{inbound} trunk only inbound calls, an
        C{outbound} trunk only outbound calls.
        """
        mode = getattr(self._trunks[name].config, "direction", None) or "bidirectional"
        return mode == "bidirectional" or mode == direction

    def usable_outbound(self, name: str) -> bool:
        """Whether calls may be sent to the trunk: it exists, is enabled
        and is not inbound-only."""
        trunk = self._trunks.get(name)
        return trunk is not None and not self.is_disabled(name) and self.allows(name, "outbound")

    # -- source identification -------------------------------------------------

    def _build_source_index(self) -> None:
        # Per IP version: prefix length -> network address (int) -> trunk
        # names; lookups try each prefix length present, longest first, so
        # the cost is one dict probe per distinct prefix length.
        index: Dict[int, Dict[int, Dict[int, List[str]]]] = {4: {}, 6: {}}
        ordered = sorted(
            (t for t in self._trunks.values() if not self.is_disabled(t.name) and self.allows(t.name, "inbound")),
            key=lambda t: t.prefix_key,
        )
        self.ignored_hosts: List[Tuple[str, str]] = []
        for trunk in ordered:
            written = [str(h) for h in (getattr(trunk.config, "inbound_hosts", None) or [])]
            implied = [trunk.config.dest] + ([trunk.config.backup_dest] if trunk.backup else [])
            for host, from_config in [(h, True) for h in written] + [(h, False) for h in implied]:
                network = _host_network(host)
                networks = [network] if network is not None else []
                if network is None:
                    name = host_name(host)
                    resolved = self._resolved.get(name or "")
                    if resolved is None:
                        if from_config:
                            # A host name in inbound_hosts not resolved (yet).
                            self.ignored_hosts.append((trunk.name, host))
                        continue
                    networks = [ipaddress.ip_network(ip) for ip in resolved]
                for network in networks:
                    by_len = index[network.version].setdefault(network.prefixlen, {})
                    names = by_len.setdefault(int(network.network_address), [])
                    if trunk.name not in names:
                        names.append(trunk.name)
        self._source_index = {
            version: [(plen, (~((1 << (bits - plen)) - 1)) & ((1 << bits) - 1), table) for plen, table in sorted(by.items(), reverse=True)]
            for version, by, bits in ((4, index[4], 32), (6, index[6], 128))
        }

    def host_names(self) -> List[str]:
        """
        The host names among the trunks' C{inbound_hosts}, C{dest} and
        C{backup_dest} (lower-cased, each once) whose addresses the source
        index needs: resolve them and hand the result to L{set_addresses}.
        """
        found: List[str] = []
        for trunk in self._trunks.values():
            hosts = [str(h) for h in (getattr(trunk.config, "inbound_hosts", None) or [])]
            hosts += [trunk.config.dest] + ([trunk.config.backup_dest] if trunk.backup else [])
            for host in hosts:
                name = host_name(host)
                if name is not None and name not in found:
                    found.append(name)
        return found

    def set_addresses(self, name: str, addresses: List[str]) -> None:
        """
        The current addresses of host name C{name} (from DNS): requests
        from them are recognised as the trunks that name it (in
        C{inbound_hosts}, C{dest} or C{backup_dest}); the previous
        addresses of the name no longer are.
        """
        valid = []
        for ip in addresses:
            try:
                valid.append(str(ipaddress.ip_address(bare_host(ip))))
            except ValueError:
                continue
        self._resolved[name.lower().rstrip(".")] = valid
        self._build_source_index()

    def for_source(
        self,
        ip: Union[str, IPAddress],
        from_user: Optional[str] = None,
        to_user: Optional[str] = None,
    ) -> Optional[str]:
        """
        The trunk a request from C{ip} belongs to, or None.

        The most specific network containing C{ip} wins (an address beats a
        CIDR); among trunks sharing it, RustPBX's order applies (longer
        C{incoming_from_user_prefix}, then longer
        C{incoming_to_user_prefix}, then lower C{id}, then configuration
        order), and a trunk is skipped when the From / To user does not
        fit its prefixes.  Disabled and outbound-only trunks are never
        sources.  IPv4-mapped IPv6 addresses count as their IPv4 address.
        """
        if isinstance(ip, str):
            try:
                ip = ipaddress.ip_address(bare_host(ip))
            except ValueError:
                return None
        if ip.version == 6 and ip.ipv4_mapped is not None:  # type: ignore[union-attr]
            ip = ip.ipv4_mapped  # type: ignore[union-attr]
        value = int(ip)
        for _, mask, table in self._source_index[ip.version]:
            names = table.get(value & mask)
            if names is None:
                continue
            for name in names:
                trunk = self._trunks[name]
                if trunk.from_ok(from_user or "") and trunk.to_ok(to_user or ""):
                    return name
        return None

    # -- destinations ------------------------------------------------------------

    def destination(self, name: str) -> TrunkDestination:
        """(transport, host, port) of the trunk's C{dest}."""
        return self._trunks[name].dest

    def backup_destination(self, name: str) -> Optional[TrunkDestination]:
        """(transport, host, port) of the trunk's C{backup_dest}, the
        failover target when C{dest} does not answer; None when unset."""
        return self._trunks[name].backup

    def destinations(self, name: str) -> List[TrunkDestination]:
        """C{dest} then C{backup_dest}: the addresses to try, in order."""
        trunk = self._trunks[name]
        return [trunk.dest] if trunk.backup is None else [trunk.dest, trunk.backup]

    def locations(self, name: str) -> List[TrunkLocation]:
        """C{dest} then C{backup_dest} as RFC 3263 look-ups: what to try,
        in order, when the trunk's hosts may be names."""
        trunk = self._trunks[name]
        found = [_location(trunk.config, trunk.dest_uri)]
        if trunk.backup_uri is not None:
            found.append(_location(trunk.config, trunk.backup_uri))
        return found

    def dest_uri(self, name: str) -> URI:
        """The trunk's C{dest} as a URI (a copy, safe to edit)."""
        return self._trunks[name].dest_uri.copy()

    # -- admission (max_cps, max_calls) -------------------------------------------

    def admit(self, name: str) -> Optional[Tuple[int, str]]:
        """
        Whether the trunk can take one more call now: None when it can, or
        C{(503, reason)} when C{max_cps} (calls in the last second, a
        sliding window) or C{max_calls} (calls in progress, see
        L{call_started}) is reached.  Ask for the trunk a call arrives on
        before routing it and for each trunk before sending a call to it,
        as RustPBX does.

        A yes uses one slot of the CPS window (the attempt counts as a
        call); a no uses nothing, so refused attempts do not lock a trunk
        out.
        """
        trunk = self._trunks[name]
        config = trunk.config
        max_cps = getattr(config, "max_cps", None)
        max_calls = getattr(config, "max_calls", None)
        if max_cps:
            now = self._clock.seconds()
            times = trunk.cps_times
            while times and times[0] <= now - 1.0:
                times.popleft()
            if len(times) >= max_cps:
                return 503, f"CPS limit exceeded (limit: {max_cps})"
        if max_calls is not None and trunk.active >= max_calls:
            return 503, f"Concurrent call limit exceeded (limit: {max_calls})"
        if max_cps:
            trunk.cps_times.append(now)
        return None

    def call_started(self, name: str) -> None:
        """A call over the trunk (either direction) began: it counts
        against C{max_calls} until L{call_ended}."""
        trunk = self._trunks.get(name)
        if trunk is not None:
            trunk.active += 1

    def call_ended(self, name: str) -> None:
        """A call counted by L{call_started} is over (whatever its end;
        the trunk may have been removed by a reload since)."""
        trunk = self._trunks.get(name)
        if trunk is not None and trunk.active > 0:
            trunk.active -= 1

    def active_calls(self, name: str) -> int:
        """Calls in progress over the trunk."""
        return self._trunks[name].active

    # -- DIDs ------------------------------------------------------------------------

    def _build_did_index(self) -> None:
        self._dids: Dict[str, str] = {}
        self._dids_normalised: Dict[str, str] = {}
        self._did_usage: Dict[str, int] = {}
        for trunk in self._trunks.values():
            if self.is_disabled(trunk.name):
                continue
            for did in getattr(trunk.config, "did_numbers", None) or []:
                self._dids.setdefault(did, trunk.name)
                self._dids_normalised.setdefault(_normalise_number(did), trunk.name)

    def did_numbers(self, name: str) -> List[str]:
        """The numbers (DIDs) the trunk owns."""
        return list(getattr(self._trunks[name].config, "did_numbers", None) or [])

    def trunk_for_did(self, number: str) -> Optional[str]:
        """
        The enabled trunk owning DID C{number} (e.g. the user part of an
        inbound call's Request-URI), or None.  Written punctuation is
        ignored, so C{+1 555 0100} finds C{15550100}; the first trunk
        listing a number owns it.
        """
        name = self._dids.get(number)
        if name is None:
            name = self._dids_normalised.get(_normalise_number(number))
        return name

    def pick_did(self, name: str) -> Optional[str]:
        """
        The trunk's least-used DID, counted as used: RustPBX's number pool,
        which presents one of the trunk's DIDs as the caller ID.  None when
        the trunk has none.
        """
        dids = self.did_numbers(name)
        if not dids:
            return None
        usage = self._did_usage
        did = min(dids, key=lambda d: usage.get(d, 0))
        usage[did] = usage.get(did, 0) + 1
        return did

    # -- the request towards the trunk ---------------------------------------------

    def outbound_request(self, name: str, request: Request) -> Request:
        """
        A copy of C{request} prepared for the trunk as RustPBX prepares
        it: with C{rewrite_hostport} (the default) the host:port of the
        Request-URI, From and To become the C{dest}'s, and a trunk with a
        C{username} gets a P-Asserted-Identity carrying the original From
        URI.  Other headers (Via, Contact, ...) are the B2BUA's business.
        """
        trunk = self._trunks[name]
        config = trunk.config
        out = copy_request(request)
        original_from = None
        from_value = out.get("from")
        if from_value is not None:
            try:
                original_from = NameAddr.parse(from_value).uri
            except HeaderError:
                original_from = None
        if getattr(config, "rewrite_hostport", True):
            host, port = trunk.dest_uri.host, trunk.dest_uri.port
            try:
                ruri = out.ruri.copy()
            except HeaderError:
                ruri = None
            if ruri is not None and ruri.scheme in ("sip", "sips"):
                ruri.host, ruri.port = host, port
                out.uri = str(ruri.changed())
            for header in ("from", "to"):
                value = out.get(header)
                if value is None:
                    continue
                try:
                    na = NameAddr.parse(value)
                except HeaderError:
                    continue
                if na.uri is None or na.uri.scheme not in ("sip", "sips"):
                    continue
                na.uri = na.uri.copy()
                na.uri.host, na.uri.port = host, port
                na.uri.changed()
                out.set(header, str(na))
        if getattr(config, "username", None) and original_from is not None:
            out.set("P-Asserted-Identity", f"<{original_from}>")
        return out
