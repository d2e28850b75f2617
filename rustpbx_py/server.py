# -*- test-case-name: rustpbx_py.test.test_server -*-
"""
The running PBX: opens the database, builds the module pipeline and the
addons from plugins, then starts the listeners named in the config.

L{buildService} is what C{twistd pbx} runs; tests use L{PbxService}
directly with ephemeral ports.
"""

from __future__ import annotations

import os
from typing import Callable, Dict, List, Optional, Sequence

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.plugin import getPlugins
from zope.interface import implementer

from rustpbx_py.interfaces import IAddonFactory, IProxyModuleFactory, IServerContext
from rustpbx_py.pipeline import Pipeline
from rustpbx_py.proxy import SipCore
from rustpbx_py.store.db import Database


def find_factories(interface) -> Dict[str, object]:
    """Every plugin providing C{interface}, by name."""
    import rustpbx_py.plugins

    found: Dict[str, object] = {}
    for plugin in getPlugins(interface, rustpbx_py.plugins):
        found.setdefault(plugin.name, plugin)
    return found


def check_plugins(config) -> List[str]:
    """
    Problems with the C{modules} and C{addons} lists: a name no installed
    plugin provides stops start-up, naming the ones that exist.
    """
    problems = []
    for key, interface, names in (
        ("proxy.modules", IProxyModuleFactory, config.proxy.modules),
        ("proxy.addons", IAddonFactory, config.proxy.addons),
    ):
        available = find_factories(interface)
        for name in names:
            if name not in available:
                known = ", ".join(sorted(available)) or "none"
                problems.append(
                    f"{config.path}: {key}: no plugin provides {name!r} (available: {known})"
                )
    return problems


@implementer(IServerContext)
class ServerContext:
    """What module and addon factories build with."""

    def __init__(self, config, reactor, store, core, users=None) -> None:
        self.config = config
        self.reactor = reactor
        self.store = store
        self.core = core
        self.users = users
        self.trunks = None
        #: The RFC 3263 resolver (L{rustpbx_py.protocols.resolve.SipResolver}).
        self.dns = None
        self.locator = None
        self.addons: list = []
        self.modules: list = []
        #: The HTTP(S) site (L{rustpbx_py.web.site.WebSite}), None without one.
        self.web = None


def tls_server_options(certificate_path: str, key_path: str):
    """CertificateOptions from a PEM certificate (chain) and key file."""
    from rustpbx_py.protocols.tls import load_certificate_options

    return load_certificate_options(certificate_path, key_path)


class PbxService(service.MultiService):
    """
    The PBX: C{ready} fires once the database is migrated, the modules are
    started and every listener is bound; C{ports} then maps each transport
    to the port it is bound to.
    """

    log = Logger()

    def __init__(self, config, reactor=None, tune_gc: bool = False, log_level=None) -> None:
        service.MultiService.__init__(self)
        self.tune_gc = tune_gc
        #: Filter twistd's log to this level (None: leave logging alone,
        #: as tests running the service in-process need).
        self.log_level = log_level
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self.config = config
        self.reactor = reactor
        self.ports: Dict[str, int] = {}
        self.listeners: list = []
        self.store: Optional[Database] = None
        self.core: Optional[SipCore] = None
        self.context: Optional[ServerContext] = None
        self.modules: list = []
        self.addons: list = []
        self.ready: defer.Deferred = defer.Deferred()
        self.full_collections: Optional[FullCollections] = None
        self.host_watcher = None
        self.web = None

    def privilegedStartService(self) -> None:
        """
        Bind every listener now, before twistd drops privileges (port 5060
        and 5061 may need them), and stop start-up with one clear line when
        a port is taken.  Requests that arrive before the modules are
        started are dropped (UDP peers retransmit).
        """
        if self.log_level is not None:
            # twistd began logging before starting the application.
            from rustpbx_py.logs import install_log_filter

            install_log_filter(self.log_level)
        service.MultiService.privilegedStartService(self)
        if self.core is not None:
            return
        self.core = SipCore(self.config, self.reactor)
        try:
            self._listen()
        except Exception as e:  # a taken port, an unreadable certificate, ...
            for port in self.listeners:
                port.stopListening()
            raise StartupError(f"{self.config.path}: cannot start the SIP listeners: {e}")

    def startService(self) -> None:
        if self.core is None:
            self.privilegedStartService()
        service.MultiService.startService(self)
        d = self.start()
        d.addCallbacks(self.ready.callback, self._start_failed)

    def _start_failed(self, failure) -> None:
        if failure.check(StartupError):
            # A problem the admin can fix, said in one line.
            self.log.critical("{line}", line=failure.value.message)
        else:
            self.log.failure("rustpbx_py could not start", failure)
        self.ready.errback(failure)
        if self.reactor.running:
            self.reactor.stop()

    @defer.inlineCallbacks
    def start(self):
        from rustpbx_py.features import pending_features

        config = self.config
        proxy = config.proxy
        for warning in config.warnings + pending_features(config):
            self.log.warn("{message}", message=warning)
        yield self._open_store()
        from rustpbx_py.users import build_user_backends

        users = build_user_backends(config, self.store, self.reactor)
        core = self.core
        context = self.context = ServerContext(config, self.reactor, self.store, core, users)
        context.web = self.web
        from rustpbx_py.call.trunks import TrunkSet

        context.trunks = TrunkSet(proxy.trunks, self.reactor)
        yield self._resolve_trunk_hosts(context)

        module_factories = find_factories(IProxyModuleFactory)
        for name in proxy.modules:
            module = module_factories[name].build(context)
            self.modules.append(module)
            if getattr(module, "registry", None) is not None and context.locator is None:
                context.locator = module.registry
        context.modules = self.modules
        addon_factories = find_factories(IAddonFactory)
        for name in proxy.addons:
            self.addons.append(addon_factories[name].build(context))
        context.addons = self.addons
        core.pipeline = Pipeline(self.modules)
        for module in self.modules:
            yield defer.maybeDeferred(module.start)
        for addon in self.addons:
            yield defer.maybeDeferred(addon.start)
        if self.web is not None:
            self.web.start(context)
        core.accepting = True
        if self.tune_gc:
            tune_garbage_collector()
            from rustpbx_py.call.dialog import forget_tags

            prunes = [m.prune for m in self.modules if callable(getattr(m, "prune", None))]
            self.full_collections = FullCollections(
                self.reactor, housekeeping=prunes + [forget_tags], trim=malloc_trim()
            )
            self.full_collections.start()
        self.log.info(
            "modules: {modules}; addons: {addons}",
            modules=", ".join(m.name for m in self.modules) or "none",
            addons=", ".join(a.id for a in self.addons) or "none",
        )
        from rustpbx_py import __version__

        self.log.info("rustpbx_py started (version {version})", version=__version__)
        return self

    def _resolve_trunk_hosts(self, context) -> defer.Deferred:
        """
        Resolve the trunks' host names (RFC 3263 resolver, C{dns_servers})
        so that the ACL knows their addresses, and keep them fresh by TTL.
        Start-up waits for the first answers at most
        L{TRUNK_HOSTS_WAIT} seconds: a slow name server must not keep
        the PBX down.
        """
        from rustpbx_py.protocols.resolve import HostWatcher, SipResolver

        context.dns = SipResolver(servers=self.config.proxy.dns_servers or None, reactor=self.reactor)
        names = context.trunks.host_names()
        if not names:
            return defer.succeed(None)
        trunks = context.trunks
        # A dest's name is a SIP service: its SRV targets send too.
        services = {loc.host.lower().rstrip(".") for t in trunks.names() for loc in trunks.locations(t)}

        def lookup(name: str) -> defer.Deferred:
            if name in services:
                return context.dns.service_addresses(name)
            return context.dns.addresses(name)

        self.host_watcher = HostWatcher(names, lookup, trunks.set_addresses, self.reactor)
        done: defer.Deferred = defer.Deferred()

        def finish(result=None):
            if timer.active():
                timer.cancel()
            if not done.called:
                for trunk, host in context.trunks.ignored_hosts:
                    self.log.warn(
                        "trunk {trunk}: inbound host {host!r} does not resolve yet; requests from it are not "
                        "recognised as the trunk's until it does",
                        trunk=trunk,
                        host=host,
                    )
                done.callback(None)

        timer = self.reactor.callLater(TRUNK_HOSTS_WAIT, finish)
        self.host_watcher.start().addBoth(finish)
        return done

    @defer.inlineCallbacks
    def _open_store(self):
        """
        Open and migrate the database, and make sure it can be written (a
        read-only file would otherwise show at the first REGISTER); a
        database that cannot be used stops start-up with one line naming
        it, not a traceback.
        """
        config = self.config
        try:
            self.store = Database(config.database_url)
            yield self.store.migrate()
            yield self.store.check_writable()
        except Exception as e:
            where = _database_name(config.database_url)
            reason = " ".join(str(e).split()) or type(e).__name__
            raise StartupError(f"{config.path}: database_url: cannot use the database {where}: {reason}")

    def _listen(self) -> None:
        from rustpbx_py.protocols.stream import SipStreamFactory
        from rustpbx_py.protocols.tls import WSS_ALPN, ServerContextFactory
        from rustpbx_py.protocols.udp import SipDatagramProtocol, listen_udp

        config = self.config
        proxy = config.proxy
        core = self.core
        reactor = self.reactor
        addr = proxy.addr
        interface = addr if addr not in ("0.0.0.0",) else ""
        idle = proxy.tcp_idle_timeout
        if idle is None:
            idle = max(proxy.registrar_expires + 60, 300)
        limits = self.stream_limits(idle)

        if proxy.udp_port is not None:
            protocol = SipDatagramProtocol(core)
            port = listen_udp(reactor, proxy.udp_port, protocol, interface or ("::" if ":" in addr else ""))
            core.transports.udp.append(protocol)
            self._bound("UDP", port)

        if proxy.tls_ca_certificates:
            from rustpbx_py.protocols.tls import load_trust_root

            core.transports.tls_trust_root = load_trust_root(proxy.tls_ca_certificates)
        tls = bool(proxy.ssl_certificate and proxy.ssl_private_key)

        def tls_context(alpn=()):
            # One context per listener: each has its own ALPN answer, and
            # OpenSSL contexts cannot be changed once a connection used them.
            return ServerContextFactory(tls_server_options(proxy.ssl_certificate, proxy.ssl_private_key), alpn)

        # Stream factories serve outbound connections (trunks over TCP or
        # TLS) even where no listener of that transport is configured.
        for name in ("TCP", "TLS"):
            core.transports.stream_factory[name] = SipStreamFactory(core, name, idle, reactor, limits=limits)
        if proxy.tcp_port is not None:
            port = reactor.listenTCP(proxy.tcp_port, core.transports.stream_factory["TCP"], interface=interface)
            self._bound("TCP", port)
        if proxy.tls_port is not None and tls:
            port = reactor.listenSSL(proxy.tls_port, core.transports.stream_factory["TLS"], tls_context(), interface=interface)
            self._bound("TLS", port)
        # ws_port is plain WebSocket whatever certificates are set, as in
        # RustPBX; wss_port is our secure listener (RustPBX serves WSS on
        # its HTTPS server, as the web site does here too).
        if proxy.ws_port is not None:
            from rustpbx_py.protocols.ws import SipWebSocketFactory

            factory = SipWebSocketFactory(core, proxy.ws_handler, "WS", server=proxy.useragent, allowed_origins=proxy.ws_allowed_origins, limits=limits, clock=reactor)
            port = reactor.listenTCP(proxy.ws_port, factory, interface=interface)
            self._bound("WS", port)
        if proxy.wss_port is not None and tls:
            from rustpbx_py.protocols.ws import SipWebSocketFactory

            factory = SipWebSocketFactory(core, proxy.ws_handler, "WSS", server=proxy.useragent, allowed_origins=proxy.ws_allowed_origins, limits=limits, clock=reactor)
            port = reactor.listenSSL(proxy.wss_port, factory, tls_context(WSS_ALPN), interface=interface)
            self._bound("WSS", port)
        self._listen_web(limits)

    def _listen_web(self, limits) -> None:
        """The HTTP(S) site (L{rustpbx_py.web}): bound now, served once started."""
        config = self.config
        if config.http_addr is None and config.https_addr is None:
            return
        from rustpbx_py.web.listen import listen_web
        from rustpbx_py.web.site import WebSite

        self.web = WebSite(config, self.reactor)
        for name, port in listen_web(config, self.reactor, self.web, self.core, limits):
            host = port.getHost()
            self.listeners.append(port)
            self.ports[name] = host.port
            # SIP over WebSocket is served there too (at proxy.ws_handler).
            self.core.transports.listening.setdefault("WS" if name == "HTTP" else "WSS", (host.host, host.port))
            self.log.info("listening for {name} on {host}:{port}", name=name, host=host.host, port=host.port)

    def stream_limits(self, idle: float):
        """
        The limits every TCP, TLS and WebSocket connection shares; the
        process may open as many files as its hard limit allows (systemd's
        C{LimitNOFILE}), and C{tcp_max_connections} defaults to that less
        a reserve, so accept() never fails with EMFILE.
        """
        from rustpbx_py.protocols.limits import StreamLimits, default_max_connections, raise_open_files_limit

        proxy = self.config.proxy
        open_files = raise_open_files_limit()
        limits = StreamLimits(
            per_ip=proxy.tcp_max_connections_per_ip,
            total=proxy.tcp_max_connections or default_max_connections(open_files),
            first_message_timeout=proxy.tcp_first_message_timeout,
            handshake_timeout=proxy.tls_handshake_timeout,
            idle_timeout=idle,
        )
        self.log.info(
            "stream connections: at most {total} in all, {per_ip} per source address (open files limit {files})",
            total=limits.total,
            per_ip=limits.per_ip,
            files=open_files,
        )
        return limits

    def _bound(self, transport: str, port) -> None:
        host = port.getHost()
        self.listeners.append(port)
        self.ports[transport] = host.port
        self.core.transports.listening[transport] = (host.host, host.port)
        self.log.info(
            "listening for SIP over {transport} on {host}:{port}",
            transport=transport,
            host=host.host,
            port=host.port,
        )

    @defer.inlineCallbacks
    def stopService(self):
        """
        Stop addons and modules while the listeners are still bound and the
        transactions alive: the call module hangs up live calls with BYE
        and un-REGISTERs trunks, and waits for their answers and records.
        Then the listeners close and the transaction timers stop.
        """
        yield defer.maybeDeferred(service.MultiService.stopService, self)
        if self.full_collections is not None:
            self.full_collections.stop()
        for addon in reversed(self.addons):
            try:
                yield defer.maybeDeferred(addon.stop)
            except Exception:
                self.log.failure("addon {id} failed to stop", id=addon.id)
        for module in reversed(self.modules):
            try:
                yield defer.maybeDeferred(module.stop)
            except Exception:
                self.log.failure("module {name} failed to stop", name=module.name)
        if self.host_watcher is not None:
            self.host_watcher.stop()
        dns = getattr(self.context, "dns", None)
        if dns is not None:
            dns.close()
        if self.core is not None:
            # No retransmission timer may fire once the sockets are closed.
            self.core.shutdown()
        for port in self.listeners:
            yield defer.maybeDeferred(port.stopListening)
        self.listeners = []
        if self.web is not None:
            self.web.close_connections()
        if self.core is not None:
            yield self.core.transports.close_all()
        users = getattr(self.context, "users", None)
        if users is not None and hasattr(users, "close"):
            yield defer.maybeDeferred(users.close)
        if self.store is not None:
            self.store.close()


#: Seconds start-up waits for the trunks' host names to resolve.
TRUNK_HOSTS_WAIT = 5.0


def _database_name(url: str) -> str:
    """The file of a SQLite URL, or the URL without its password."""
    from rustpbx_py.store.db import redact, sqlite_path

    try:
        if url.lower().startswith("sqlite:"):
            return os.path.abspath(sqlite_path(url))
    except Exception:
        pass
    return redact(url)


class StartupError(SystemExit):
    """
    Start-up cannot go on (a port is taken, a certificate unreadable): the
    message is printed on standard error and twistd exits with status 1,
    without a traceback.
    """

    def __init__(self, message: str) -> None:
        SystemExit.__init__(self, message)
        self.message = message


#: Full (generation 2) collections only after this many generation 1
#: collections instead of Python's 10.
GC_GEN2_THRESHOLD = 10000


def tune_garbage_collector() -> None:
    """
    Keep the cyclic garbage collector from pausing call handling.

    With thousands of dialogs up the process holds most of a million
    GC-tracked objects, and Python's default thresholds run a full
    collection every few seconds under load: each one stopped the reactor
    for up to half a second (measured with 5,000 dialogs: 511 ms), longer
    than T1, so phones retransmitted.  Young collections stay as they are
    (cycles among short-lived objects are still freed at once); full ones
    come a thousand times less often, and everything alive at start-up
    (config, users, plugins) is moved out of the collector's sight with
    C{gc.freeze()}.  The price is some memory held by long-lived cyclic
    garbage between full collections (about 10 MB more with 5,000 dialogs).
    """
    import gc

    gc.freeze()
    gen0, gen1, _ = gc.get_threshold()
    gc.set_threshold(gen0, gen1, GC_GEN2_THRESHOLD)


#: Seconds between the scheduled full collections.
GC_FULL_INTERVAL = 600.0

#: Seconds between two rounds of housekeeping (expired entries of the
#: modules' tables dropped, freed memory given back to the system).
HOUSEKEEPING_INTERVAL = 60.0


def malloc_trim() -> Optional[Callable[[], int]]:
    """
    glibc's C{malloc_trim(0)}, or None where the C library has none (musl,
    macOS): it gives the free pages inside the C heap back to the system.
    Python's small objects live in its own 1 MiB arenas, which it unmaps
    itself once they are empty; messages, bodies and large tables are
    C{malloc}'s, and a heap whose top is still in use keeps every free
    page below it without this (13 MB after 10,000 calls, bench/retained.py).
    """
    import ctypes

    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


class FullCollections:
    """
    Housekeeping every L{HOUSEKEEPING_INTERVAL} seconds, and a full
    collection every L{GC_FULL_INTERVAL} seconds: the safety net of
    L{tune_garbage_collector}.

    Calls and transactions break their own reference cycles when they end
    (test_memory checks that a call leaves none), so what a call allocates
    is freed by reference counting at once.  Cycles made on paths no test
    covers (errors, failures with tracebacks) would still wait for a full
    collection, which the tuning postpones for a very long time: this
    bounds how long.  With the start-up objects frozen, one collection
    looks only at live calls and registrations; its duration is logged.

    Housekeeping runs C{housekeeping}, the modules' C{prune} methods:
    tables whose entries expire on a clock (nonce-counts, the late-2xx
    window of ended calls, cached dialog tags) are otherwise pruned only
    by new traffic, and after a burst of calls their last entries, spread
    over every arena the burst allocated, kept all of them mapped
    (bench/retained.py, 10,000 calls: 347 MB instead of 85 MB once they
    were over).
    Then C{trim} (L{malloc_trim}) returns the C heap's free pages.
    """

    log = Logger()

    def __init__(
        self,
        clock,
        interval: float = GC_FULL_INTERVAL,
        collect=None,
        housekeeping: Sequence[Callable[[], object]] = (),
        every: float = HOUSEKEEPING_INTERVAL,
        trim: Optional[Callable[[], int]] = None,
    ) -> None:
        import gc

        self.clock = clock
        self.interval = interval
        self.every = min(every, interval)
        self.collect = collect or gc.collect
        self.housekeeping = list(housekeeping)
        self.trim = trim
        self._call = None
        self._last = 0.0
        self.runs = 0

    def start(self) -> None:
        from twisted.internet.task import LoopingCall

        self._call = LoopingCall(self.tick)
        self._call.clock = self.clock
        self._last = self.clock.seconds()
        self._call.start(self.every, now=False)

    def tick(self) -> None:
        """One round: prune, a full collection when it is due, trim."""
        for prune in self.housekeeping:
            try:
                prune()
            except Exception:
                self.log.failure("housekeeping: {prune!r} failed", prune=prune)
        if self.clock.seconds() - self._last >= self.interval - 1e-6:
            self._last = self.clock.seconds()
            self.run()
        if self.trim is not None:
            self.trim()

    def run(self) -> None:
        import time

        began = time.perf_counter()
        found = self.collect()
        self.runs += 1
        self.log.debug(
            "full garbage collection: {found} unreachable objects in {ms:.0f} ms",
            found=found,
            ms=(time.perf_counter() - began) * 1000,
        )

    def stop(self) -> None:
        if self._call is not None and self._call.running:
            self._call.stop()
        self._call = None


def buildService(config, log_level=None) -> service.IService:
    """The service C{twistd pbx} runs: the collector tuned for it, and its
    log filtered to C{log_level} (a C{LogLevel}; default: the config's
    C{log_level}) without Twisted's noise (L{rustpbx_py.logs})."""
    if log_level is None:
        from rustpbx_py.logs import level_for

        log_level = level_for(None, getattr(config, "log_level", None))
    return PbxService(config, tune_gc=True, log_level=log_level)
