# -*- test-case-name: rustpbx_py.test.test_resolve -*-
"""
Locating SIP servers (RFC 3263) with C{twisted.names}, without blocking.

L{SipResolver.locate} turns what a URI says (host, optional port, optional
transport, sip: or sips:) into the ordered list of L{SipTarget}s to try,
each an address the transport layer can reach without further DNS:

 - a numeric IP, or a host name with an explicit port, is used as it is
   (the name only through its A/AAAA records): RFC 3263 section 4.2 skips
   NAPTR and SRV then;
 - a name with a transport but no port: the SRV records of that transport
   (C{_sip._udp}, C{_sip._tcp}, C{_sips._tcp}), else A/AAAA on the
   transport's default port;
 - a name with neither: the NAPTR records (services C{SIP+D2U},
   C{SIP+D2T}, C{SIPS+D2T}, ordered by order then preference; a sips: URI
   takes only C{SIPS+D2T}), each pointing at an SRV name; without NAPTR the
   SRV names of every transport we speak; without SRV the A/AAAA records,
   over UDP (TLS for sips:) on the default port.

SRV records are ordered by priority and, within a priority, by RFC 2782's
weighted random draw; each SRV target's addresses come in the order the
server gave them, IPv4 first.  The caller tries the list in order and moves
to the next target when one fails (503, a transaction timeout, a refused
connection): RFC 3263 section 4.3.

The resolver chain (the hosts file, a cache, then the name servers) is
built from the system's C{resolv.conf}, or from an explicit list of name
servers (C{proxy.dns_servers}); tests inject any C{IResolver}.
L{HostWatcher} keeps the addresses of a few names fresh (by their TTL) for
those who must recognise them on the request path, where no DNS query may
run: the trunks' C{inbound_hosts}.
"""

from __future__ import annotations

import ipaddress
import random
import socket
import weakref
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

from twisted.internet import defer
from twisted.logger import Logger
from twisted.names import dns

__all__ = [
    "SipTarget",
    "SipResolver",
    "HostWatcher",
    "order_srv",
    "default_resolver",
    "DEFAULT_PORTS",
]

#: Default port per transport (RFC 3261 section 19.1.2).
DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061, "ws": 80, "wss": 443}

#: NAPTR service field -> our transport name (RFC 3263 section 4.1).
NAPTR_SERVICES = {b"SIP+D2U": "udp", b"SIP+D2T": "tcp", b"SIPS+D2T": "tls"}

#: SRV owner-name prefix per transport (RFC 3263 section 4.1/4.2).
SRV_PREFIXES = {"udp": "_sip._udp.", "tcp": "_sip._tcp.", "tls": "_sips._tcp."}

#: Bounds on how long resolved addresses are trusted by L{HostWatcher}
#: (seconds): a TTL of 0 must not make us query in a loop, and a week-long
#: TTL must not keep a moved carrier out for a week.
MIN_REFRESH = 30.0
MAX_REFRESH = 3600.0
#: Retry interval after a failed look-up.
RETRY_REFRESH = 60.0


class SipTarget(NamedTuple):
    """One place to send a request: unpacks as C{(transport, host, port, name)}."""

    transport: str
    """C{udp}, C{tcp} or C{tls}."""
    host: str
    """An IP address (IPv6 without brackets)."""
    port: int
    """The port to send to."""
    name: str
    """The host name the address was found for (a TLS server name); the
    address itself when the URI named an IP."""


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _text(value: Any) -> bytes:
    """The bytes of a NAPTR character-string field (a C{Charstr})."""
    return bytes(getattr(value, "string", value) or b"")


def order_srv(records: Sequence[Any], rng: Optional[random.Random] = None) -> List[Any]:
    """
    SRV records (objects with C{priority}, C{weight}) in the order to try
    them, RFC 2782: lowest priority first; within one priority, repeatedly
    draw a record with probability proportional to its weight (records of
    weight 0 first in the running sum, so they are rarely picked first
    when others have weight).
    """
    rng = rng or random
    by_priority: Dict[int, List[Any]] = {}
    for record in records:
        by_priority.setdefault(record.priority, []).append(record)
    ordered: List[Any] = []
    for priority in sorted(by_priority):
        pool = sorted(by_priority[priority], key=lambda r: r.weight != 0)
        while pool:
            total = sum(r.weight for r in pool)
            pick = rng.randint(0, total) if total else 0
            running = 0
            for index, record in enumerate(pool):
                running += record.weight
                if running >= pick:
                    break
            ordered.append(pool.pop(index))
    return ordered


def default_resolver(servers: Optional[Sequence[Tuple[str, int]]] = None, reactor: Any = None):
    """
    The resolver chain C{twisted.names.client.createResolver} builds (the
    hosts file, a cache, the name servers), with the reactor injected and
    C{servers} (C{(ip, port)} pairs) instead of C{/etc/resolv.conf} when
    given.  Returns C{(chain, parts)}: L{SipResolver.close} stops the
    parts' timers.
    """
    from twisted.names import cache, client, hosts, resolve

    if reactor is None:
        from twisted.internet import reactor

    class ClosableResolver(client.Resolver):
        """A client resolver whose UDP queries still in flight can be
        abandoned when the service stops (their ports closed, their
        timeouts cancelled), instead of outliving it."""

        def _connectedProtocol(self, *args, **kwargs):
            protocol = client.Resolver._connectedProtocol(self, *args, **kwargs)
            self.__dict__.setdefault("in_flight", weakref.WeakSet()).add(protocol)
            return protocol

        def abandon(self) -> None:
            for protocol in list(getattr(self, "in_flight", ())):
                live = getattr(protocol, "liveMessages", {})
                entries = list(live.values())
                live.clear()
                for d, timeout in entries:
                    if timeout is not None and timeout.active():
                        timeout.cancel()
                    if not d.called:
                        # The client's own callback then closes the port.
                        d.errback(defer.CancelledError("the resolver is closed"))

    if servers:
        upstream = ClosableResolver(servers=list(servers), reactor=reactor)
    else:
        upstream = ClosableResolver(resolv="/etc/resolv.conf", reactor=reactor)
    memory = cache.CacheResolver(reactor=reactor)
    chain = resolve.ResolverChain([hosts.Resolver(b"/etc/hosts"), memory, upstream])
    return chain, (memory, upstream)


class SipResolver:
    """
    RFC 3263 server location over any C{twisted.names} C{IResolver}.

    @param resolver: an C{IResolver}; by default the chain of
        L{default_resolver}, built on first use (so that a PBX whose
        destinations are all IP addresses never reads C{resolv.conf}).
    @param servers: C{(ip, port)} name servers for the default chain
        (C{proxy.dns_servers}); None = the system's.
    @param transports: the transports we can send over, in the order we
        prefer them when the domain does not say (no NAPTR).
    @param rng: the random source of the SRV weighted draw.
    """

    log = Logger()

    def __init__(
        self,
        resolver: Any = None,
        servers: Optional[Sequence[Tuple[str, int]]] = None,
        reactor: Any = None,
        transports: Sequence[str] = ("udp", "tcp", "tls"),
        rng: Optional[random.Random] = None,
    ) -> None:
        self._resolver = resolver
        self._servers = servers
        self._reactor = reactor
        self._parts: Tuple[Any, ...] = ()
        self._closed = False
        self.transports = tuple(transports)
        self.rng = rng or random.Random()

    def _ask(self, method: str, name: str) -> defer.Deferred:
        """One query through the resolver chain (none once closed)."""
        if self._closed:
            return defer.fail(defer.CancelledError("the resolver is closed"))
        return defer.maybeDeferred(getattr(self.resolver, method), name)

    @property
    def resolver(self):
        """The C{IResolver} queries go to (built now if not yet)."""
        if self._resolver is None:
            self._resolver, self._parts = default_resolver(self._servers, self._reactor)
        return self._resolver

    def close(self) -> None:
        """Cancel the default chain's timers (cache expiry, resolv.conf
        re-reading) and abandon the queries in flight: the service is
        stopping.  Look-ups after this find nothing."""
        self._closed = True
        for part in self._parts:
            abandon = getattr(part, "abandon", None)
            if abandon is not None:
                abandon()
            parse = getattr(part, "_parseCall", None)
            if parse is not None and parse.active():
                parse.cancel()
            for call in list(getattr(part, "cancel", {}).values()):
                if call.active():
                    call.cancel()
            getattr(part, "cancel", {}).clear()
            getattr(part, "cache", {}).clear()
            for connection in list(getattr(part, "connections", [])):
                transport = getattr(connection, "transport", None)
                if transport is not None:
                    transport.loseConnection()

    # -- RFC 3263 ----------------------------------------------------------------

    @defer.inlineCallbacks
    def locate(self, host: str, port: Optional[int] = None, transport: Optional[str] = None, secure: bool = False):
        """
        The targets for a URI's host, port and transport, in the order to
        try them (see the module docstring).  Fires with a list, empty when
        nothing resolves; never fails.

        @param transport: C{udp}, C{tcp} or C{tls} when the URI (or the
            configuration) fixes it; None to let DNS choose.
        @param secure: a sips: URI (TLS only).
        """
        host = host.strip()
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        transport = transport.lower() if transport else None
        if _is_ip(host):
            chosen = transport or ("tls" if secure else "udp")
            return [SipTarget(chosen, host, port or DEFAULT_PORTS.get(chosen, 5060), host)]
        name = host.rstrip(".")
        if port is not None:
            chosen = transport or ("tls" if secure else "udp")
            targets = yield self._address_targets(chosen, name, port)
            return targets
        if transport is not None:
            targets = []
            if transport in SRV_PREFIXES:  # WebSocket servers have no SRV
                targets = yield self._srv_targets([(transport, SRV_PREFIXES[transport] + name)])
            if not targets:
                targets = yield self._address_targets(transport, name, DEFAULT_PORTS.get(transport, 5060))
            return targets
        services = yield self._naptr(name, secure)
        if not services:
            wanted = ("tls",) if secure else tuple(t for t in self.transports if t != "tls")
            services = [(t, SRV_PREFIXES[t] + name) for t in wanted if t in self.transports]
        targets = yield self._srv_targets(services)
        if not targets:
            chosen = "tls" if secure else "udp"
            targets = yield self._address_targets(chosen, name, DEFAULT_PORTS[chosen])
        return targets

    @defer.inlineCallbacks
    def _naptr(self, name: str, secure: bool):
        """(transport, SRV name) pairs from the domain's NAPTR records, in order."""
        try:
            answers, _, _ = yield self._ask("lookupNamingAuthorityPointer", name)
        except Exception as e:
            self._debug("NAPTR", name, e)
            return []
        records = [a.payload for a in answers if a.type == dns.NAPTR and a.payload is not None]
        records.sort(key=lambda r: (r.order, r.preference))
        services = []
        for record in records:
            if _text(record.flags).lower() != b"s":
                continue
            service = _text(record.service).upper()
            transport = NAPTR_SERVICES.get(service)
            if transport is None or transport not in self.transports or (secure and transport != "tls"):
                continue
            target = record.replacement.name.decode("ascii", "replace")
            if target and (transport, target) not in services:
                services.append((transport, target))
        return services

    @defer.inlineCallbacks
    def _srv_targets(self, services: Iterable[Tuple[str, str]]):
        """The targets of the SRV records of each (transport, SRV name), in order."""
        services = list(services)
        lookups = yield defer.DeferredList(
            [self._ask("lookupService", srv) for _, srv in services], consumeErrors=True
        )
        ordered: List[Tuple[str, Any]] = []
        for (transport, srv), (ok, result) in zip(services, lookups):
            if not ok:
                self._debug("SRV", srv, result.value)
                continue
            records = [a.payload for a in result[0] if a.type == dns.SRV and a.payload is not None]
            for record in order_srv(records, self.rng):
                target = record.target.name.decode("ascii", "replace").rstrip(".")
                if target:  # "." means: no such service here (RFC 2782)
                    ordered.append((transport, record))
        names = []
        for _, record in ordered:
            target = record.target.name.decode("ascii", "replace").rstrip(".")
            if target not in names:
                names.append(target)
        found = yield defer.DeferredList([self.addresses(n) for n in names], consumeErrors=True)
        addresses = {n: (r[0] if ok else []) for n, (ok, r) in zip(names, found)}
        targets: List[SipTarget] = []
        for transport, record in ordered:
            target = record.target.name.decode("ascii", "replace").rstrip(".")
            for ip in addresses.get(target, []):
                candidate = SipTarget(transport, ip, record.port, target)
                if candidate not in targets:
                    targets.append(candidate)
        return targets

    @defer.inlineCallbacks
    def _address_targets(self, transport: str, name: str, port: int):
        ips, _ = yield self.addresses(name)
        return [SipTarget(transport, ip, port, name) for ip in ips]

    @defer.inlineCallbacks
    def addresses(self, name: str):
        """
        The IPv4 then IPv6 addresses of C{name} and the smallest TTL among
        them: C{(addresses, ttl)}; C{([], None)} when it has none.  A
        numeric address is its own answer.
        """
        name = name.strip().strip("[]")
        if _is_ip(name):
            return [name], None
        v4, v6 = yield defer.DeferredList(
            [
                self._ask("lookupAddress", name),
                self._ask("lookupIPV6Address", name),
            ],
            consumeErrors=True,
        )
        found: List[str] = []
        ttls: List[int] = []
        for (ok, result), kind in ((v4, dns.A), (v6, dns.AAAA)):
            if not ok:
                continue
            for answer in result[0]:
                if answer.type != kind or answer.payload is None:
                    continue
                if kind == dns.A:
                    ip = answer.payload.dottedQuad()
                else:
                    ip = socket.inet_ntop(socket.AF_INET6, answer.payload.address)
                if ip not in found:
                    found.append(ip)
                    ttls.append(answer.ttl)
        if not found:
            self._debug("A/AAAA", name, v4[1].value if not v4[0] else "no address")
        return found, (min(ttls) if ttls else None)

    @defer.inlineCallbacks
    def service_addresses(self, name: str):
        """
        Every address a SIP service named C{name} may send from: the
        name's own A/AAAA records, then those of its RFC 3263 targets
        (NAPTR/SRV).  C{(addresses, ttl)} like L{addresses}, the TTL being
        the name's own.
        """
        found, ttl = yield self.addresses(name)
        targets = yield self.locate(name)
        for target in targets:
            if target.host not in found:
                found.append(target.host)
        return found, ttl

    def _debug(self, kind: str, name: str, error: Any) -> None:
        self.log.debug("DNS {kind} {name}: {error}", kind=kind, name=name, error=str(error) or type(error).__name__)


class HostWatcher:
    """
    Keeps the addresses of some host names fresh: each is resolved at
    L{start} and again when its TTL (bounded by L{MIN_REFRESH} and
    L{MAX_REFRESH}) runs out, or after L{RETRY_REFRESH} when it failed;
    C{changed(name, addresses)} is called whenever a name's addresses
    change.  A failed refresh keeps the addresses last seen (a DNS outage
    must not make a carrier's calls look foreign).

    @param lookup: C{name -> Deferred((addresses, ttl))}, e.g.
        L{SipResolver.addresses}.
    """

    log = Logger()

    def __init__(self, names: Iterable[str], lookup: Callable[[str], defer.Deferred], changed: Callable[[str, List[str]], None], clock: Any) -> None:
        self.names = list(dict.fromkeys(names))
        self.lookup = lookup
        self.changed = changed
        self.clock = clock
        self.addresses: Dict[str, List[str]] = {}
        self._calls: Dict[str, Any] = {}
        self._running = False

    def start(self) -> defer.Deferred:
        """Resolve every name now; fires once each first look-up ended."""
        self._running = True
        return defer.DeferredList([self._refresh(name) for name in self.names])

    def stop(self) -> None:
        self._running = False
        for call in self._calls.values():
            if call.active():
                call.cancel()
        self._calls.clear()

    def _refresh(self, name: str) -> defer.Deferred:
        self._calls.pop(name, None)
        d = defer.maybeDeferred(self.lookup, name)
        d.addCallbacks(lambda result: self._resolved(name, result), lambda f: self._failed(name, f))
        return d

    def _resolved(self, name: str, result: Tuple[List[str], Optional[int]]) -> None:
        if not self._running:
            return
        addresses, ttl = result
        if not addresses:
            self._failed(name, None)
            return
        if addresses != self.addresses.get(name):
            self.addresses[name] = list(addresses)
            self.log.info("{name} resolves to {addresses}", name=name, addresses=", ".join(addresses))
            self.changed(name, list(addresses))
        delay = min(max(float(ttl if ttl is not None else MAX_REFRESH), MIN_REFRESH), MAX_REFRESH)
        self._schedule(name, delay)

    def _failed(self, name: str, failure: Any) -> None:
        if not self._running:
            return  # stopped: an abandoned look-up is no news
        kept = self.addresses.get(name)
        self.log.warn(
            "cannot resolve {name}{why}; {kept}",
            name=name,
            why=f" ({failure.getErrorMessage()})" if failure is not None else "",
            kept=f"keeping {', '.join(kept)}" if kept else f"retrying in {int(RETRY_REFRESH)} s",
        )
        self._schedule(name, RETRY_REFRESH)

    def _schedule(self, name: str, delay: float) -> None:
        if self._running:
            self._calls[name] = self.clock.callLater(delay, self._refresh, name)
