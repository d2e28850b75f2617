# -*- test-case-name: rustpbx_py.test.test_registrar -*-
"""
Registrar bindings (RFC 3261 section 10): who is registered where.

L{Registry} keeps every binding of every address-of-record in memory, so
the call path's L{Registry.lookup} never waits, and writes each change
through to the database before the change counts: the registrar sends its
200 only once the write committed, so an acknowledged registration survives
a crash or restart.

Writes of concurrent REGISTERs share one database transaction (group
commit): while one commit is in flight the next requests queue, and the
whole queue goes in the following transaction.  Under load this turns
thousands of REGISTERs a second into a few dozen commits; when idle each
write goes out at once.  REGISTERs for one address-of-record run one after
the other, so RFC 3261 10.3 step 7 (Call-ID/CSeq ordering) always compares
with committed state.

This module knows only the store and the SIP text types; the registrar's
REGISTER handling is in L{rustpbx_py.modules.registrar}.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, Sequence, Tuple

from twisted.internet import defer, task
from twisted.logger import Logger
from zope.interface import implementer

from rustpbx_py.interfaces import ILocator, IRegistry
from rustpbx_py.sip.headers import URI, bare_host
from rustpbx_py.store.group_commit import GroupCommit

Address = Tuple[str, int]

#: How often expired bindings are removed from memory and the database.
SWEEP_INTERVAL = 30.0

_COLUMNS = (
    "aor",
    "binding_key",
    "contact",
    "params",
    "instance_id",
    "reg_id",
    "call_id",
    "cseq",
    "expires",
    "expires_at",
    "registered_at",
    "path",
    "transport",
    "source_host",
    "source_port",
    "local_host",
    "local_port",
    "flow_id",
    "user_agent",
    "nat",
    "webrtc",
)
_INSERT = "INSERT INTO registrations ({}) VALUES ({})".format(
    ", ".join(_COLUMNS), ", ".join("?" for _ in _COLUMNS)
)
#: Write a binding, replacing the row of the same key (an expired row the
#: sweeper has not removed yet, or the binding this one refreshes): one
#: statement where a delete and an insert were two.  SQLite 3.24+ and
#: PostgreSQL 9.5+ both read it.
_UPSERT = _INSERT + " ON CONFLICT (aor, binding_key) DO UPDATE SET {}".format(
    ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS if c not in ("aor", "binding_key"))
)
_DELETE_ONE = "DELETE FROM registrations WHERE aor = ? AND binding_key = ?"
_DELETE_AOR = "DELETE FROM registrations WHERE aor = ?"
_DELETE_EXPIRED = "DELETE FROM registrations WHERE expires_at <= ?"
_SELECT_LIVE = "SELECT {} FROM registrations WHERE expires_at > ?".format(", ".join(_COLUMNS))


class OutOfOrder(Exception):
    """
    A REGISTER whose Call-ID matches a binding's but whose CSeq is not
    higher (RFC 3261 10.3 step 7): an old request that arrived late.  The
    whole update is abandoned.
    """


def make_aor(user: str, realm: str) -> str:
    """
    The registry key of C{user} at C{realm}: C{user@realm}, lower-cased.

    RFC 3261 compares user parts case-sensitively, but phones, dial plans
    and RustPBX's locator all treat C{Alice} and C{alice} as one extension;
    the call module must build its keys with this function too.
    """
    return f"{user.lower()}@{bare_host(realm)}"


def contact_key(uri: URI) -> str:
    """
    A comparison key for a Contact URI (RFC 3261 19.1.4, simplified):
    scheme, user, host (case-insensitive), port and every URI parameter with
    lower-cased names, sorted.  Stricter than the RFC for a parameter
    present on one side only; phones re-register with the Contact they
    registered, so the difference never merges two phones.
    """
    if uri.scheme not in ("sip", "sips"):
        return str(uri)
    params = ";".join(
        f"{k}={v.lower() if k == 'transport' and v else v}" if v is not None else k
        for k, v in sorted(uri.params.items())
    )
    user = uri.user or ""
    return f"{uri.scheme}:{user}@{bare_host(uri.host)}:{uri.port or ''};{params}"


def binding_key(uri: URI, instance: Optional[str], reg_id: Optional[str], ckey: Optional[str] = None) -> str:
    """
    The identity of a binding within its address-of-record.

    With C{+sip.instance} the binding is the instance's (RFC 5627 4.1) or,
    with a C{reg-id} too, the instance's flow (RFC 5626 6): a phone that
    re-registers over a new connection or from a new NAT port replaces its
    old binding even though its Contact URI changed.  Without an instance
    the Contact URI is the identity (RFC 3261 10.3 step 7).
    """
    if instance:
        return f"instance:{instance}|{reg_id or ''}"
    return "contact:" + (ckey if ckey is not None else contact_key(uri))


def default_port(uri: URI) -> int:
    """The port a URI without one means (RFC 3263 4.2, numeric hosts)."""
    if uri.scheme == "sips" or (uri.params.get("transport") or "").lower() == "tls":
        return 5061
    return 5060


def is_webrtc_binding(uri: URI, transport: str, user=None) -> bool:
    """
    Whether a contact is a WebRTC endpoint, as RustPBX's registrar decides
    a location's C{supports_webrtc}: registered over WS/WSS (RFC 7118
    browsers; also a C{;transport=ws/wss} Contact, whatever carried the
    REGISTER), or its user (the authenticated L{rustpbx_py.users.SipUser})
    has C{is_support_webrtc}.
    """
    if transport.upper() in ("WS", "WSS"):
        return True
    if (uri.params.get("transport") or "").lower() in ("ws", "wss"):
        return True
    return bool(getattr(user, "is_support_webrtc", False))


def needs_nat_fix(uri: URI, source: Address, transport: str, nat_fix: bool, has_path: bool) -> bool:
    """
    Whether requests to this Contact must go to the address the REGISTER
    came from rather than to the Contact itself.

    The decision (RustPBX's C{nat_fix}):
      - a C{.invalid} host (RFC 7118 WebSocket clients) can only be reached
        through its source, always, whatever C{nat_fix} says;
      - with C{nat_fix} off, or when the REGISTER came through an edge proxy
        (C{Path}: requests go through the proxy, which does its own fix),
        the Contact is used as registered;
      - a Contact with a host name is trusted (DNS may point elsewhere than
        the source for good reasons);
      - a Contact with an IP address that differs from the source address is
        behind NAT: RFC 1918, 100.64/10 (carrier NAT), link-local or a
        public address a STUN client learnt all fall here.  Over UDP the
        port must match too (NAT rewrites ports; the reply path is the
        source port); over TCP/TLS/WS the source port is the connection's
        ephemeral port, so only the host is compared.
    """
    host = bare_host(uri.host)
    if host.endswith(".invalid"):
        return True
    if not nat_fix or has_path:
        return False
    source_host = bare_host(source[0])
    if host != source_host:
        # Texts differ: still the same address when written differently
        # (IPv6 zero compression); a host name is never rewritten.
        try:
            if ipaddress.ip_address(host) != ipaddress.ip_address(source_host):
                return True
        except ValueError:
            return False
    if transport.upper() == "UDP":
        return (uri.port or default_port(uri)) != source[1]
    return False


@dataclass(eq=False)
class Binding:
    """
    One contact of an address-of-record (RFC 3261 10.3).

    @ivar aor: C{user@realm}, see L{make_aor}.
    @ivar contact: the Contact URI exactly as the phone registered it: the
        Request-URI of requests to this binding and what the 200 lists.
    @ivar params: the Contact header parameters as registered, without
        C{expires} (C{;+sip.instance="<urn:...>";reg-id=1;q=0.5}), or "".
    @ivar key: the identity within the AOR, see L{binding_key}.
    @ivar instance: the C{+sip.instance} value (RFC 5626/5627), or None.
    @ivar reg_id: the C{reg-id} value (RFC 5626), or None.
    @ivar call_id: Call-ID of the REGISTER that made the binding.
    @ivar cseq: its CSeq number, for RFC 3261 10.3 step 7.
    @ivar expires: the lifetime granted, in seconds; 0 in an update means
        "remove this binding".
    @ivar registered_at: when the REGISTER was accepted (reactor seconds,
        Unix time on a real reactor).
    @ivar expires_at: C{registered_at + expires}.
    @ivar path: the REGISTER's C{Path} values in order (RFC 3327): the
        route set towards the phone.
    @ivar transport: the transport the REGISTER came over (C{UDP}, C{TCP},
        C{TLS}, C{WS}, C{WSS}).
    @ivar source: (host, port) the REGISTER came from ("received").
    @ivar local: (host, port) of ours it arrived on, or None.
    @ivar flow_id: the L{rustpbx_py.interfaces.IFlow} id: requests to a
        phone on TCP/TLS/WS go back over its own connection while
        C{core.transports.flow_by_id(flow_id)} still finds it connected.
        The binding outlives the connection: the phone will re-register.
    @ivar user_agent: the REGISTER's User-Agent, or "".
    @ivar nat: requests go to C{source}, not to the Contact's host (see
        L{needs_nat_fix}).
    @ivar webrtc: a WebRTC endpoint (RustPBX's C{supports_webrtc}, see
        L{is_webrtc_binding}): calls to it get a WebRTC offer.
    """

    aor: str
    contact: str
    key: str
    call_id: str
    cseq: int
    expires: int
    registered_at: float
    transport: str
    source: Address
    params: str = ""
    instance: Optional[str] = None
    reg_id: Optional[str] = None
    path: Tuple[str, ...] = ()
    local: Optional[Address] = None
    flow_id: Optional[str] = None
    user_agent: str = ""
    nat: bool = False
    webrtc: bool = False
    expires_at: float = field(default=0.0)
    _uri: Optional[URI] = field(default=None, repr=False, compare=False)
    _contact_key: Optional[str] = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.expires_at:
            self.expires_at = self.registered_at + self.expires

    @property
    def uri(self) -> URI:
        """The Contact URI, parsed once."""
        if self._uri is None:
            self._uri = URI.parse(self.contact)
        return self._uri

    @property
    def contact_key(self) -> str:
        """L{contact_key} of the Contact URI, computed once."""
        if self._contact_key is None:
            self._contact_key = contact_key(self.uri)
        return self._contact_key

    def remaining(self, now: float) -> int:
        """Whole seconds of life left at C{now} (rounded up), at least 0."""
        left = self.expires_at - now
        if left <= 0:
            return 0
        whole = int(left)
        return whole if whole == left else whole + 1

    def alive(self, now: float) -> bool:
        return self.expires_at > now

    @property
    def destination(self) -> Tuple[str, str, int]:
        """
        (transport, host, port) to send requests to when the binding's flow
        is gone: the source address when L{nat} is set, else the Contact's
        host and port.  A Contact without C{transport=} gets the transport
        the phone registered over (softphones registering over TCP often
        leave C{;transport=tcp} out; RFC 3263 would say UDP).
        """
        if self.nat:
            return self.transport, bare_host(self.source[0]), self.source[1]
        uri = self.uri
        transport = (uri.params.get("transport") or self.transport).upper()
        if uri.scheme == "sips" and transport == "TCP":
            transport = "TLS"
        return transport, bare_host(uri.host), uri.port or default_port(uri)

    def live_flow(self, transports: Any) -> Any:
        """
        The flow requests to this binding should use, if it still works:
        C{transports.flow_by_id(flow_id)} when that finds a connected flow
        (the phone's own connection, or for UDP the socket it reached us
        on), else None and the caller sends to L{destination}.
        """
        if not self.flow_id:
            return None
        flow = transports.flow_by_id(self.flow_id)
        if flow is None or not getattr(flow, "connected", True):
            return None
        return flow

    def contact_header(self, now: float) -> str:
        """The Contact value a 200 lists (RFC 3261 10.3 step 8)."""
        return f"<{self.contact}>{self.params};expires={self.remaining(now)}"

    def row(self) -> tuple:
        """The database row, in L{_COLUMNS} order."""
        local = self.local or (None, None)
        return (
            self.aor,
            self.key,
            self.contact,
            self.params,
            self.instance,
            self.reg_id,
            self.call_id,
            self.cseq,
            self.expires,
            self.expires_at,
            self.registered_at,
            "\n".join(self.path),
            self.transport,
            self.source[0],
            self.source[1],
            local[0],
            local[1],
            self.flow_id,
            self.user_agent,
            1 if self.nat else 0,
            1 if self.webrtc else 0,
        )

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> "Binding":
        """The inverse of L{row}."""
        (
            aor,
            key,
            contact,
            params,
            instance,
            reg_id,
            call_id,
            cseq,
            expires,
            expires_at,
            registered_at,
            path,
            transport,
            source_host,
            source_port,
            local_host,
            local_port,
            flow_id,
            user_agent,
            nat,
            webrtc,
        ) = row
        return cls(
            aor=aor,
            contact=contact,
            key=key,
            call_id=call_id,
            cseq=int(cseq),
            expires=int(expires),
            registered_at=float(registered_at),
            expires_at=float(expires_at),
            transport=transport,
            source=(source_host, int(source_port)),
            params=params or "",
            instance=instance,
            reg_id=reg_id,
            path=tuple(p for p in (path or "").split("\n") if p),
            local=(local_host, int(local_port)) if local_host is not None and local_port is not None else None,
            flow_id=flow_id,
            user_agent=user_agent or "",
            nat=bool(nat),
            webrtc=bool(webrtc),
        )


@implementer(IRegistry, ILocator)
class Registry:
    """
    The bindings of every address-of-record: in memory for lookups, written
    through to the C{registrations} table (see the module docstring).

    @param store: a started L{rustpbx_py.store.db.Database} whose schema
        is migrated, or None for a memory-only registry (lost on restart).
    @param reactor: the clock for expiry times and the sweep timer.
    """

    log = Logger()

    def __init__(self, store=None, reactor=None, sweep_interval: float = SWEEP_INTERVAL) -> None:
        if reactor is None:
            from twisted.internet import reactor  # type: ignore[no-redef]
        self.store = store
        self.reactor = reactor
        self.sweep_interval = sweep_interval
        self._index: Dict[str, List[Binding]] = {}
        self._queues: Dict[str, Deque[Tuple[Callable[[], Any], defer.Deferred]]] = {}
        self._writer = GroupCommit(store)
        self._sweeper: Optional[task.LoopingCall] = None
        #: Called with (aor, registered) when an AoR gains its first live
        #: binding or loses its last one (the presence module's open/closed).
        self.observers: List[Callable[[str, bool], None]] = []
        #: Called with (event, binding) for each binding "added",
        #: "refreshed", "removed" or "expired" (the monitor's live feed).
        self.binding_observers: List[Callable[[str, Binding], None]] = []

    # -- lifecycle ----------------------------------------------------------

    def now(self) -> float:
        """The registry's clock: Unix seconds on a real reactor."""
        return self.reactor.seconds()

    def start(self) -> defer.Deferred:
        """
        Load the live bindings from the database, delete the expired ones,
        and start the sweep timer.  Fires once the bindings are in memory.
        """
        d = self._load() if self.store is not None else defer.succeed(0)

        def started(count):
            self._sweeper = task.LoopingCall(self.sweep)
            self._sweeper.clock = self.reactor
            self._sweeper.start(self.sweep_interval, now=False).addErrback(
                lambda f: self.log.failure("registrar sweeper stopped", f)
            )
            return count

        return d.addCallback(started)

    def _load(self) -> defer.Deferred:
        now = self.now()
        d = self.store.run_operation(_DELETE_EXPIRED, (now,))
        d.addCallback(lambda _: self.store.run_query(_SELECT_LIVE, (now,)))

        def loaded(rows):
            index: Dict[str, List[Binding]] = {}
            for row in rows:
                try:
                    b = Binding.from_row(row)
                except (TypeError, ValueError) as e:
                    self.log.warn("skipping unreadable registration row {row!r}: {e}", row=row, e=e)
                    continue
                index.setdefault(b.aor, []).append(b)
            for bindings in index.values():
                bindings.sort(key=_recency)
            self._index = index
            count = sum(len(v) for v in index.values())
            self.log.info("registrar: {count} bindings of {aors} AORs loaded", count=count, aors=len(index))
            return count

        return d.addCallback(loaded)

    def stop(self) -> defer.Deferred:
        """Stop the sweep timer; fires once pending writes are committed."""
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()
        self._sweeper = None
        return self._writer.drained()

    # -- reading (ILocator) -------------------------------------------------

    def lookup(self, aor: str) -> List[Binding]:
        """
        The live bindings of C{aor}, most recently registered first.
        Synchronous: the call path asks this for every INVITE.
        """
        bindings = self._index.get(aor)
        if not bindings:
            return []
        now = self.now()
        return [b for b in bindings if b.expires_at > now]

    def bindings(self, aor: str) -> List[Binding]:
        """Every live binding of C{aor} (same as L{lookup})."""
        return self.lookup(aor)

    def aors(self) -> List[str]:
        """Every address-of-record with at least one live binding."""
        now = self.now()
        return [aor for aor, bs in self._index.items() if any(b.expires_at > now for b in bs)]

    def all_bindings(self) -> Iterator[Binding]:
        """Every live binding (for the console and the API)."""
        now = self.now()
        for bindings in self._index.values():
            for b in bindings:
                if b.expires_at > now:
                    yield b

    def __len__(self) -> int:
        return sum(1 for _ in self.all_bindings())

    @property
    def commits(self) -> int:
        """How many database transactions wrote bindings (for benchmarks)."""
        return self._writer.commits

    # -- writing (IRegistry) ------------------------------------------------

    def update(self, aor: str, changes: List[Binding]) -> defer.Deferred:
        """
        Apply one REGISTER's contacts to C{aor} (RFC 3261 10.3 step 7),
        all or nothing: a change with C{expires} 0 removes the binding it
        matches, any other adds or refreshes one.  A binding with the same
        Call-ID and a CSeq not lower than the change's fails the whole
        update with L{OutOfOrder}.

        Fires, once committed, with the live bindings of C{aor} afterwards.
        """
        return self._serialised(aor, self._observed(aor, lambda: self._apply(aor, changes)))

    def remove_all(self, aor: str, call_id: str, cseq: int) -> defer.Deferred:
        """
        C{Contact: *} (RFC 3261 10.3 step 6): remove every binding of
        C{aor}, unless one has the same Call-ID and a CSeq not lower, in
        which case nothing is removed and the Deferred fails with
        L{OutOfOrder}.  Fires with the (empty) list of live bindings.
        """
        return self._serialised(aor, self._observed(aor, lambda: self._apply_remove_all(aor, call_id, cseq)))

    def query(self, aor: str) -> defer.Deferred:
        """The live bindings of C{aor} once its pending updates finished."""
        return self._serialised(aor, lambda: defer.succeed(self.lookup(aor)))

    def sweep(self) -> defer.Deferred:
        """
        Drop expired bindings from memory and the database.  Lookups never
        return an expired binding anyway; this reclaims memory and rows.
        """
        now = self.now()
        dropped = 0
        for aor in list(self._index):
            bindings = self._index[aor]
            live = [b for b in bindings if b.expires_at > now]
            if len(live) != len(bindings):
                dropped += len(bindings) - len(live)
                for b in bindings:
                    if b.expires_at <= now:
                        self._log_change("expired", b)
                        self._tell_binding("expired", b)
                if live:
                    self._index[aor] = live
                else:
                    del self._index[aor]
                    self._tell(aor, False)
        if dropped:
            self.log.debug("registrar: {n} bindings expired", n=dropped)
        if self.store is None:
            return defer.succeed(dropped)
        d = self._writer.submit([(_DELETE_EXPIRED, (now,))])
        d.addCallback(lambda _: dropped)

        def failed(f):
            self.log.failure("registrar: deleting expired bindings failed", f)
            return dropped

        return d.addErrback(failed)

    # -- internals ----------------------------------------------------------

    def _observed(self, aor: str, job: Callable[[], defer.Deferred]) -> Callable[[], defer.Deferred]:
        """C{job}, telling the observers when it registers or unregisters C{aor}."""

        def run() -> defer.Deferred:
            before = bool(self.lookup(aor))

            def done(result):
                after = bool(self.lookup(aor))
                if after != before:
                    self._tell(aor, after)
                return result

            return job().addCallback(done)

        return run

    def _tell(self, aor: str, registered: bool) -> None:
        for observer in list(self.observers):
            try:
                observer(aor, registered)
            except Exception:
                self.log.failure("registrar: observer of {aor} failed", aor=aor)

    def _serialised(self, aor: str, job: Callable[[], defer.Deferred]) -> defer.Deferred:
        """Run C{job} after every earlier job of C{aor} finished."""
        result = defer.Deferred()
        queue = self._queues.get(aor)
        if queue is not None:
            queue.append((job, result))
            return result
        self._queues[aor] = deque()
        self._run(aor, job, result)
        return result

    def _run(self, aor: str, job, result: defer.Deferred) -> None:
        try:
            d = job()
        except Exception:
            d = defer.fail()

        def finished(outcome):
            queue = self._queues.get(aor)
            if queue:
                nxt, nxt_result = queue.popleft()
                self._run(aor, nxt, nxt_result)
            else:
                self._queues.pop(aor, None)
            return outcome

        d.addBoth(finished)
        d.chainDeferred(result)

    def _apply(self, aor: str, changes: List[Binding]) -> defer.Deferred:
        now = self.now()
        current = [b for b in self._index.get(aor, ()) if b.expires_at > now]
        added: List[Binding] = []
        removed: List[str] = []
        for change in changes:
            outbound = change.reg_id is not None and change.instance is not None
            contact = change.contact_key
            for old in list(current):
                same = old.key == change.key or (
                    not outbound
                    and old.reg_id is None
                    and old.contact_key == contact
                )
                if not same:
                    continue
                fresh = any(old is a for a in added)
                if not fresh and old.call_id == change.call_id and change.cseq <= old.cseq:
                    raise OutOfOrder(
                        f"CSeq {change.cseq} is not higher than {old.cseq} of Call-ID "
                        f"{change.call_id} for {old.contact}"
                    )
                current = [b for b in current if b is not old]
                if fresh:
                    added = [b for b in added if b is not old]
                else:
                    removed.append(old.key)
            if change.expires > 0:
                # In front: among equal registration times the newest wins.
                current.insert(0, change)
                added.append(change)
        written = {b.key for b in added}
        statements: list = [(_DELETE_ONE, (aor, key)) for key in removed if key not in written]
        for b in added:
            statements.append((_UPSERT, b.row()))
        current.sort(key=_recency)
        if not statements:
            return defer.succeed(list(current))
        d = self._writer.submit(statements)
        d.addCallback(lambda _: self._commit(aor, current))
        return d

    def _apply_remove_all(self, aor: str, call_id: str, cseq: int) -> defer.Deferred:
        now = self.now()
        for old in self._index.get(aor, ()):
            if old.expires_at > now and old.call_id == call_id and cseq <= old.cseq:
                raise OutOfOrder(f"CSeq {cseq} is not higher than {old.cseq} of Call-ID {call_id}")
        if aor not in self._index:
            return defer.succeed([])
        d = self._writer.submit([(_DELETE_AOR, (aor,))])
        d.addCallback(lambda _: self._commit(aor, []))
        return d

    def _commit(self, aor: str, bindings: List[Binding]) -> List[Binding]:
        self._log_changes(self._index.get(aor, ()), bindings)
        if bindings:
            self._index[aor] = bindings
        else:
            self._index.pop(aor, None)
        return list(bindings)


    def _log_changes(self, before, after: List[Binding]) -> None:
        """
        One info line per binding that appeared, moved (another source or
        transport), went away or had expired; a plain refresh (same
        contact, source and transport) is not a change and logs nothing.
        """
        now = self.now()
        old = {b.key: b for b in before}
        for b in after:
            previous = old.pop(b.key, None)
            if previous is None or previous.expires_at <= now:
                self._log_change("registered", b)
                self._tell_binding("added", b)
            else:
                if (previous.source, previous.transport, previous.contact) != (b.source, b.transport, b.contact):
                    self._log_change("moved", b)
                if previous is not b:
                    self._tell_binding("refreshed", b)
        for b in old.values():
            expired = b.expires_at <= now
            self._log_change("expired" if expired else "unregistered", b)
            self._tell_binding("expired" if expired else "removed", b)

    def _tell_binding(self, event: str, b: Binding) -> None:
        for observer in self.binding_observers:
            try:
                observer(event, b)
            except Exception:
                self.log.failure("registrar: binding observer failed on {event}", event=event)

    def _log_change(self, event: str, b: Binding) -> None:
        host, port = b.source
        self.log.info(
            "registration {event}: {aor} contact {contact} from {source} over {transport}, expires {expires} s",
            event=event,
            aor=b.aor,
            contact=b.contact,
            source=f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
            transport=b.transport,
            expires=b.expires,
        )


def _recency(b: Binding) -> float:
    return -b.registered_at


__all__ = [
    "Binding",
    "Registry",
    "OutOfOrder",
    "make_aor",
    "binding_key",
    "contact_key",
    "needs_nat_fix",
    "default_port",
]
