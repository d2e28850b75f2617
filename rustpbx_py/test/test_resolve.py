# -*- test-case-name: rustpbx_py.test.test_resolve -*-
"""
Tests for L{rustpbx_py.protocols.resolve}: RFC 3263 server location over a
C{twisted.names} authority held in memory, the RFC 2782 SRV order, the
host watcher, the trunks' use of both, and calls failing over between the
targets DNS gives.
"""

from __future__ import annotations

import random
from collections import Counter

from twisted.internet import defer, task
from twisted.names import dns
from twisted.names.error import DNSQueryTimeoutError
from twisted.trial.unittest import SynchronousTestCase, TestCase

from rustpbx_py.call.trunks import TrunkLocation, TrunkSet, host_name
from rustpbx_py.config import parse_config_text
from rustpbx_py.protocols.resolve import HostWatcher, SipResolver, SipTarget, order_srv
from rustpbx_py.test.dns_fakes import MemoryAuthority


def naptr(order, pref, service, replacement, flags=b"s"):
    return dns.Record_NAPTR(order, pref, flags, service, b"", replacement, ttl=60)


def srv(priority, weight, port, target):
    return dns.Record_SRV(priority, weight, port, target, ttl=60)


ZONE = {
    # NAPTR: TCP preferred over UDP; an unknown service and a non-"s" flag
    # are skipped.
    "example.test": [
        naptr(10, 20, b"SIP+D2U", b"_sip._udp.example.test"),
        naptr(10, 10, b"SIP+D2T", b"_sip._tcp.example.test"),
        naptr(5, 10, b"E2U+sip", b"ignored.example.test"),
        naptr(10, 30, b"SIPS+D2T", b"_sips._tcp.example.test"),
        naptr(10, 40, b"SIP+D2U", b"other.example.test", flags=b"a"),
    ],
    "_sip._udp.example.test": [srv(10, 0, 5070, b"b.example.test"), srv(5, 0, 5080, b"a.example.test")],
    "_sip._tcp.example.test": [srv(1, 0, 5090, b"a.example.test")],
    "_sips._tcp.example.test": [srv(1, 0, 5061, b"a.example.test")],
    "a.example.test": [dns.Record_A("192.0.2.1", ttl=60), dns.Record_AAAA("2001:db8::1", ttl=30)],
    "b.example.test": [dns.Record_A("192.0.2.2", ttl=60)],
    # No NAPTR: SRV per transport.
    "srvonly.example.test": [dns.Record_A("192.0.2.9")],
    "_sip._udp.srvonly.example.test": [srv(1, 0, 5062, b"b.example.test")],
    "_sip._tcp.srvonly.example.test": [srv(1, 0, 5063, b"a.example.test"), srv(2, 0, 5064, b".")],
    # Neither NAPTR nor SRV: A/AAAA on the default port.
    "plain.example.test": [dns.Record_A("192.0.2.3"), dns.Record_A("192.0.2.4")],
    "v6.example.test": [dns.Record_AAAA("2001:db8::6")],
}


class RaisingResolver:
    """A resolver any query to which is a test failure (numeric hosts)."""

    def __getattr__(self, name):
        raise AssertionError(f"DNS queried ({name}) for a numeric host")


def located(resolver: SipResolver, *args, **kw):
    result = []
    resolver.locate(*args, **kw).addBoth(result.append)
    assert len(result) == 1, "the in-memory authority answers at once"
    if isinstance(result[0], Exception) or hasattr(result[0], "raiseException"):
        result[0].raiseException()
    return result[0]


class LocateTests(SynchronousTestCase):
    """L{SipResolver.locate} follows RFC 3263 section 4."""

    def setUp(self) -> None:
        self.resolver = SipResolver(MemoryAuthority("example.test", ZONE), rng=random.Random(1))

    def test_numeric_host_skips_dns(self) -> None:
        """An IP address is used as it is, on the given or default port
        and transport: no DNS query at all (section 4.2)."""
        resolver = SipResolver(RaisingResolver())
        self.assertEqual(located(resolver, "192.0.2.7"), [SipTarget("udp", "192.0.2.7", 5060, "192.0.2.7")])
        self.assertEqual(located(resolver, "[2001:db8::7]", 5070, "tcp"), [SipTarget("tcp", "2001:db8::7", 5070, "2001:db8::7")])
        self.assertEqual(located(resolver, "192.0.2.7", secure=True), [SipTarget("tls", "192.0.2.7", 5061, "192.0.2.7")])

    def test_explicit_port_skips_naptr_and_srv(self) -> None:
        """A name with a port: only its A/AAAA records, over UDP (TLS for
        sips:), IPv4 first; SRV records of the name are not used."""
        self.assertEqual(
            located(self.resolver, "a.example.test", 5099),
            [SipTarget("udp", "192.0.2.1", 5099, "a.example.test"), SipTarget("udp", "2001:db8::1", 5099, "a.example.test")],
        )
        self.assertEqual(located(self.resolver, "srvonly.example.test", 5099, secure=True), [SipTarget("tls", "192.0.2.9", 5099, "srvonly.example.test")])

    def test_naptr_order_and_services(self) -> None:
        """NAPTR records are taken by order then preference, only for the
        SIP services with the "s" flag; each SRV set in priority order;
        IPv4 before IPv6 for one target."""
        self.assertEqual(
            located(self.resolver, "example.test"),
            [
                SipTarget("tcp", "192.0.2.1", 5090, "a.example.test"),
                SipTarget("tcp", "2001:db8::1", 5090, "a.example.test"),
                SipTarget("udp", "192.0.2.1", 5080, "a.example.test"),
                SipTarget("udp", "2001:db8::1", 5080, "a.example.test"),
                SipTarget("udp", "192.0.2.2", 5070, "b.example.test"),
                SipTarget("tls", "192.0.2.1", 5061, "a.example.test"),
                SipTarget("tls", "2001:db8::1", 5061, "a.example.test"),
            ],
        )

    def test_sips_takes_only_tls(self) -> None:
        """A sips: URI uses only the SIPS+D2T NAPTR records."""
        targets = located(self.resolver, "example.test", secure=True)
        self.assertEqual({t.transport for t in targets}, {"tls"})
        self.assertEqual(targets[0], SipTarget("tls", "192.0.2.1", 5061, "a.example.test"))

    def test_transports_we_cannot_use_are_skipped(self) -> None:
        """Only the transports the resolver is told we speak are kept."""
        resolver = SipResolver(MemoryAuthority("example.test", ZONE), transports=("udp",))
        self.assertEqual({t.transport for t in located(resolver, "example.test")}, {"udp"})

    def test_srv_without_naptr(self) -> None:
        """No NAPTR: the SRV records of each transport (UDP, then TCP); a
        target of "." means no service and is skipped (RFC 2782)."""
        self.assertEqual(
            located(self.resolver, "srvonly.example.test"),
            [SipTarget("udp", "192.0.2.2", 5062, "b.example.test"), SipTarget("tcp", "192.0.2.1", 5063, "a.example.test"), SipTarget("tcp", "2001:db8::1", 5063, "a.example.test")],
        )

    def test_transport_given_uses_its_srv(self) -> None:
        """A transport but no port: that transport's SRV records only."""
        self.assertEqual(located(self.resolver, "srvonly.example.test", transport="udp"), [SipTarget("udp", "192.0.2.2", 5062, "b.example.test")])

    def test_transport_given_without_srv_uses_address(self) -> None:
        """A transport without SRV records: A/AAAA on its default port."""
        self.assertEqual(located(self.resolver, "plain.example.test", transport="TLS")[0], SipTarget("tls", "192.0.2.3", 5061, "plain.example.test"))

    def test_address_fallback(self) -> None:
        """Neither NAPTR nor SRV: every A record, then AAAA, UDP on 5060."""
        self.assertEqual(
            located(self.resolver, "plain.example.test"),
            [SipTarget("udp", "192.0.2.3", 5060, "plain.example.test"), SipTarget("udp", "192.0.2.4", 5060, "plain.example.test")],
        )
        self.assertEqual(located(self.resolver, "v6.example.test"), [SipTarget("udp", "2001:db8::6", 5060, "v6.example.test")])

    def test_unknown_name(self) -> None:
        """A name that does not exist gives no target (and no error)."""
        self.assertEqual(located(self.resolver, "nowhere.example.test"), [])

    def test_failing_server(self) -> None:
        """A name server that times out gives no target (and no error)."""

        class TimingOut:
            def __getattr__(self, name):
                return lambda *a, **kw: defer.fail(DNSQueryTimeoutError(a[0]))

        self.assertEqual(located(SipResolver(TimingOut()), "example.test"), [])

    def test_addresses_ttl(self) -> None:
        """L{SipResolver.addresses} gives the smallest TTL of the answers."""
        result = []
        self.resolver.addresses("a.example.test").addCallback(result.append)
        self.assertEqual(result, [(["192.0.2.1", "2001:db8::1"], 30)])


class Record:
    def __init__(self, name, priority, weight):
        self.name, self.priority, self.weight = name, priority, weight

    def __repr__(self):
        return self.name


class SrvOrderTests(SynchronousTestCase):
    """L{order_srv}: RFC 2782's priority order and weighted draw."""

    def test_priority_first(self) -> None:
        """Lower priority values are always tried first."""
        records = [Record("c", 30, 100), Record("a", 10, 0), Record("b", 20, 5)]
        for seed in range(20):
            self.assertEqual([r.name for r in order_srv(records, random.Random(seed))], ["a", "b", "c"])

    def test_weights(self) -> None:
        """Within a priority, a record is drawn first in proportion to its
        weight (3:1 here); a weight-0 record almost never comes first."""
        records = [Record("heavy", 1, 75), Record("light", 1, 25), Record("zero", 1, 0)]
        rng = random.Random(7)
        firsts = Counter(order_srv(records, rng)[0].name for _ in range(4000))
        self.assertTrue(abs(firsts["heavy"] / 4000 - 0.74) < 0.04, firsts)
        self.assertTrue(abs(firsts["light"] / 4000 - 0.25) < 0.04, firsts)
        # RFC 2782: a weight-0 record is first only when the draw is 0.
        self.assertLess(firsts["zero"], 100)

    def test_all_zero_weights(self) -> None:
        """Records all of weight 0 are all kept."""
        records = [Record("a", 1, 0), Record("b", 1, 0)]
        self.assertEqual(sorted(r.name for r in order_srv(records, random.Random(3))), ["a", "b"])


class HostWatcherTests(SynchronousTestCase):
    """L{HostWatcher} keeps a name's addresses fresh by TTL."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.answers = {"carrier.test": (["192.0.2.1"], 120)}
        self.changes = []
        self.watcher = HostWatcher(["carrier.test"], self.lookup, lambda n, a: self.changes.append((n, a)), self.clock)

    def lookup(self, name):
        answer = self.answers[name]
        if isinstance(answer, Exception):
            return defer.fail(answer)
        return defer.succeed(answer)

    def test_refresh_by_ttl(self) -> None:
        """Resolved at start; again once the TTL ran out, reporting the change."""
        self.watcher.start()
        self.assertEqual(self.changes, [("carrier.test", ["192.0.2.1"])])
        self.answers["carrier.test"] = (["192.0.2.2"], 120)
        self.clock.advance(119)
        self.assertEqual(len(self.changes), 1)
        self.clock.advance(1)
        self.assertEqual(self.changes[-1], ("carrier.test", ["192.0.2.2"]))

    def test_unchanged_is_not_reported(self) -> None:
        """The same addresses again are not a change."""
        self.watcher.start()
        self.clock.advance(120)
        self.assertEqual(len(self.changes), 1)

    def test_ttl_bounds(self) -> None:
        """A TTL of 0 does not make it query in a loop (30 s minimum)."""
        self.answers["carrier.test"] = (["192.0.2.1"], 0)
        self.watcher.start()
        self.assertEqual([c.getTime() for c in self.clock.getDelayedCalls()], [30.0])

    def test_failure_keeps_addresses(self) -> None:
        """A failed refresh keeps the last addresses and retries later."""
        self.watcher.start()
        self.answers["carrier.test"] = DNSQueryTimeoutError("carrier.test")
        self.clock.advance(120)
        self.assertEqual(self.watcher.addresses, {"carrier.test": ["192.0.2.1"]})
        self.assertEqual(len(self.changes), 1)
        self.answers["carrier.test"] = (["192.0.2.3"], 120)
        self.clock.advance(60)
        self.assertEqual(self.changes[-1], ("carrier.test", ["192.0.2.3"]))

    def test_stop(self) -> None:
        """Stopped, it schedules nothing more."""
        self.watcher.start()
        self.watcher.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])


TRUNKS = """
[proxy.trunks.named]
dest = "sip:carrier.test"
inbound_hosts = ["edge.carrier.test", "sip:edge2.carrier.test:5060", "192.0.2.200"]

[proxy.trunks.fixed]
dest = "sips:carrier.test:5071"
transport = "TCP"
backup_dest = "sip:192.0.2.100;transport=tcp"
"""


class TrunkNameTests(SynchronousTestCase):
    """L{TrunkSet} with host names: what to resolve and what it becomes."""

    def setUp(self) -> None:
        config = parse_config_text("[proxy]\n" + TRUNKS)
        self.trunks = TrunkSet(config.proxy.trunks, task.Clock())

    def test_host_name(self) -> None:
        """The name inside the ways inbound hosts and dests are written."""
        self.assertEqual(host_name("sip:Edge.Carrier.test:5060;transport=tcp"), "edge.carrier.test")
        self.assertEqual(host_name("edge.carrier.test."), "edge.carrier.test")
        self.assertIsNone(host_name("192.0.2.0/24"))
        self.assertIsNone(host_name("[2001:db8::1]:5060"))

    def test_host_names(self) -> None:
        """Every name among inbound_hosts, dest and backup_dest, once."""
        self.assertEqual(self.trunks.host_names(), ["edge.carrier.test", "edge2.carrier.test", "carrier.test"])

    def test_resolved_names_are_recognised(self) -> None:
        """Once a name's addresses are given, requests from them are the
        trunk's; new addresses replace the old ones."""
        self.assertIsNone(self.trunks.for_source("192.0.2.10"))
        self.assertEqual(self.trunks.ignored_hosts, [("named", "edge.carrier.test"), ("named", "sip:edge2.carrier.test:5060")])
        self.trunks.set_addresses("edge.carrier.test", ["192.0.2.10", "2001:db8::10"])
        self.assertEqual(self.trunks.for_source("192.0.2.10"), "named")
        self.assertEqual(self.trunks.for_source("2001:db8::10"), "named")
        self.assertEqual(self.trunks.ignored_hosts, [("named", "sip:edge2.carrier.test:5060")])
        self.trunks.set_addresses("edge.carrier.test", ["192.0.2.11"])
        self.assertIsNone(self.trunks.for_source("192.0.2.10"))
        self.assertEqual(self.trunks.for_source("192.0.2.11"), "named")
        self.assertEqual(self.trunks.for_source("192.0.2.200"), "named")

    def test_dest_names_are_recognised(self) -> None:
        """A dest given by name is a source once resolved, as dest IPs are."""
        self.trunks.set_addresses("carrier.test", ["192.0.2.30"])
        self.assertEqual(self.trunks.for_source("192.0.2.30"), "named")

    def test_locations(self) -> None:
        """What RFC 3263 needs: no port and no transport let DNS choose;
        the trunk's transport and the URI's port and parameter are kept."""
        self.assertEqual(self.trunks.locations("named"), [TrunkLocation("carrier.test", None, None, False)])
        self.assertEqual(
            self.trunks.locations("fixed"),
            [TrunkLocation("carrier.test", 5071, "tcp", True), TrunkLocation("192.0.2.100", None, "tcp", False)],
        )


CALL_ZONE = {
    "_sip._udp.carrier.test": [srv(10, 0, 5070, b"primary.carrier.test"), srv(20, 0, 5080, b"secondary.carrier.test")],
    "primary.carrier.test": [dns.Record_A("198.51.100.1")],
    "secondary.carrier.test": [dns.Record_A("198.51.100.2")],
    "proxy.carrier.test": [dns.Record_A("198.51.100.7"), dns.Record_A("198.51.100.8")],
}

CALL_TOML = """
[proxy.trunks.carrier]
dest = "sip:carrier.test"

[[proxy.routes]]
name = "out"
dest = "carrier"
[proxy.routes.match]
"to.user" = "^9"
"""


PEER_TOML = """
[[proxy.routes]]
name = "peer"
[proxy.routes.match]
"to.host" = "proxy.carrier.test"
"""


class TrunkFailoverTests(SynchronousTestCase):
    """Calls to a trunk named in DNS: every target in turn (RFC 3263 4.3)."""

    def setUp(self) -> None:
        from rustpbx_py.test.call_fakes import CallHarness

        self.harness = CallHarness()
        self.harness.setup_module(toml=CALL_TOML, contacts=())
        self.core = self.harness.core
        self.harness.context.dns = SipResolver(MemoryAuthority("carrier.test", CALL_ZONE))

    def test_failover_on_503(self) -> None:
        """The first SRV target answers 503: the INVITE goes to the next
        one (a new transaction), whose 200 reaches the caller."""
        from rustpbx_py.test.call_fakes import SDP_ANSWER

        tx, call = self.harness.invite(uri="sip:9555@example.com")
        first = self.core.last("INVITE")
        self.assertEqual(first.flow.remote, ("198.51.100.1", 5070))
        first.answer(503)
        second = self.core.last("INVITE")
        self.assertEqual(second.flow.remote, ("198.51.100.2", 5080))
        self.assertNotEqual(second.request.top_via, first.request.top_via)
        second.answer(200, body=SDP_ANSWER)
        self.assertEqual(tx.last.status, 200)
        self.assertEqual(call.record.trunk, "carrier")

    def test_failover_on_timeout(self) -> None:
        """A transaction timeout (408 from the transaction layer) moves on too."""
        tx, call = self.harness.invite(uri="sip:9555@example.com")
        self.core.last("INVITE").answer(408, to_tag=None)
        self.assertEqual(self.core.last("INVITE").flow.remote, ("198.51.100.2", 5080))

    def test_unreachable_target_is_skipped(self) -> None:
        """A target whose connection is refused is passed over at once."""
        from rustpbx_py.protocols.transports import TransportError

        resolve = self.core.resolve

        def refusing(transport, host, port):
            if host == "198.51.100.1":
                return defer.fail(TransportError("connection refused"))
            return resolve(transport, host, port)

        self.core.resolve = refusing
        tx, call = self.harness.invite(uri="sip:9555@example.com")
        self.assertEqual([t.flow.remote for t in self.core.requests("INVITE")], [("198.51.100.2", 5080)])

    def test_nothing_resolves(self) -> None:
        """A trunk whose name resolves to nothing: 503 to the caller."""
        self.harness.context.dns = SipResolver(MemoryAuthority("other.test", {}))
        tx, call = self.harness.invite(uri="sip:9555@example.com")
        self.assertEqual(tx.last.status, 503)

    def test_request_uri_host(self) -> None:
        """A call forwarded to a remote Request-URI host tries each of
        its addresses in turn."""
        self.harness.setup_module(toml=PEER_TOML, contacts=())
        self.harness.context.dns = SipResolver(MemoryAuthority("carrier.test", CALL_ZONE))
        self.core = self.harness.core
        tx, call = self.harness.invite(uri="sip:alice@proxy.carrier.test")
        first = self.core.last("INVITE")
        self.assertEqual(first.flow.remote, ("198.51.100.7", 5060))
        first.answer(503)
        self.assertEqual(self.core.last("INVITE").flow.remote, ("198.51.100.8", 5060))


REGISTER_TOML = """
[proxy.trunks.carrier]
dest = "sip:carrier.test"
username = "acct"
password = "s3cret"
register_enabled = true
register_expires = 300
"""


class TrunkRegistrationDnsTests(SynchronousTestCase):
    """A registering trunk named in DNS registers at its first working target."""

    def setUp(self) -> None:
        from rustpbx_py.call.trunk_registration import TrunkRegistrar
        from rustpbx_py.test.call_fakes import FakeCore

        self.clock = task.Clock()
        self.core = FakeCore(self.clock)
        self.zone = dict(CALL_ZONE)
        config = parse_config_text("[proxy]\n" + REGISTER_TOML)
        resolver = SipResolver(MemoryAuthority("carrier.test", self.zone))
        self.registrar = TrunkRegistrar(config.proxy, TrunkSet(config.proxy.trunks, self.clock), self.core, self.clock, resolver)
        self.registrar.start()
        self.registration = self.registrar.registrations["carrier"]

    def targets(self):
        return [tx.flow.remote for tx in self.core.requests("REGISTER")]

    def test_srv_failover(self) -> None:
        """The REGISTER goes to the first SRV target; its 503 sends the
        next REGISTER to the second at once, whose 200 registers."""
        self.assertEqual(self.targets(), [("198.51.100.1", 5070)])
        self.core.last("REGISTER").answer(503)
        self.assertEqual(self.targets(), [("198.51.100.1", 5070), ("198.51.100.2", 5080)])
        self.core.last("REGISTER").answer(200, headers=[("Expires", "300")])
        self.assertEqual(self.registration.state, "registered")
        self.assertEqual(self.core.last("REGISTER").request.uri, "sip:carrier.test")

    def test_all_targets_fail(self) -> None:
        """Every target failing (503, then a timeout) is a failed round:
        back-off, then the name is looked up again and the first target
        tried first."""
        self.core.last("REGISTER").answer(503)
        self.core.last("REGISTER").answer(408, to_tag=None)
        self.assertEqual(self.registration.state, "failed")
        self.assertEqual(len(self.targets()), 2)
        self.clock.advance(5)
        self.assertEqual(self.targets()[-1], ("198.51.100.1", 5070))

    def test_other_failures_do_not_fail_over(self) -> None:
        """A 403 is the provider's answer, not an outage: no failover."""
        self.core.last("REGISTER").answer(403)
        self.assertEqual(self.registration.state, "failed")
        self.assertEqual(len(self.targets()), 1)


class ServiceAddressTests(SynchronousTestCase):
    """L{SipResolver.service_addresses}: who a named dest may send from."""

    def test_name_and_targets(self) -> None:
        """The name's own addresses, then its SRV targets' addresses."""
        zone = dict(CALL_ZONE, **{"carrier.test": [dns.Record_A("198.51.100.9", ttl=90)]})
        result = []
        SipResolver(MemoryAuthority("carrier.test", zone)).service_addresses("carrier.test").addCallback(result.append)
        self.assertEqual(result, [(["198.51.100.9", "198.51.100.1", "198.51.100.2"], 90)])


class CloseTests(TestCase):
    """L{SipResolver.close} leaves nothing behind on the real reactor."""

    @defer.inlineCallbacks
    def test_close_abandons_queries(self) -> None:
        """A name server that never answers: closing the resolver ends the
        look-up (no target), closes its port and cancels its timeouts, so
        the reactor is clean when the service has stopped."""
        from twisted.internet import reactor
        from twisted.internet.protocol import DatagramProtocol

        silent = reactor.listenUDP(0, DatagramProtocol(), interface="127.0.0.1")
        self.addCleanup(silent.stopListening)
        resolver = SipResolver(servers=[("127.0.0.1", silent.getHost().port)], reactor=reactor)
        pending = resolver.locate("carrier.test")
        yield task.deferLater(reactor, 0.05, lambda: None)
        self.assertFalse(pending.called)
        resolver.close()
        targets = yield pending
        self.assertEqual(targets, [])

    def test_stopped_watcher_is_quiet(self) -> None:
        """An answer (or failure) arriving after stop changes and logs nothing."""
        clock = task.Clock()
        answer = defer.Deferred()
        changes = []
        watcher = HostWatcher(["carrier.test"], lambda name: answer, lambda n, a: changes.append(a), clock)
        watcher.start()
        watcher.stop()
        answer.callback((["192.0.2.1"], 60))
        self.assertEqual((changes, clock.getDelayedCalls()), ([], []))
