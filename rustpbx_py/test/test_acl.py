"""
Tests for L{rustpbx_py.modules.acl}.
"""

from twisted.internet import task
from twisted.logger import globalLogPublisher
from twisted.plugin import IPlugin, getPlugins
from twisted.trial.unittest import SynchronousTestCase

import rustpbx_py.plugins
from rustpbx_py.interfaces import ABORT, CONTINUE, IProxyModule, IProxyModuleFactory
from rustpbx_py.modules.acl import (
    AclError,
    AclModule,
    FrequencyLimiter,
    compile_rules,
    parse_frequency,
    source_address,
)
from rustpbx_py.test.fakes import Attrs, FakeServerContext, make_tx, proxy_config


def acl(**overrides):
    """An acl module over a config with C{overrides}, on a fresh clock."""
    clock = task.Clock()
    return AclModule(proxy_config(**overrides), clock), clock


def run(module, host="192.0.2.10", port=5060, **request_args):
    """Offer a request from C{host} to C{module}: (action, tx)."""
    tx = make_tx(remote=(host, port), **request_args)
    return module.on_transaction_begin(tx), tx


class RuleTests(SynchronousTestCase):
    """C{acl_rules}: first match wins, no match denies, no rules allow."""

    def assertAllowed(self, module, host):
        action, tx = run(module, host)
        self.assertEqual((action, tx.context.spam), (CONTINUE, False), f"{host} should pass")
        self.assertEqual(tx.responses, [])

    def assertDropped(self, module, host):
        action, tx = run(module, host)
        self.assertEqual((action, tx.context.spam), (ABORT, True), f"{host} should be dropped")
        self.assertEqual(tx.responses, [], "a dropped request gets no answer")

    def test_default_allows_everybody(self):
        """RustPBX's default rules (allow all, deny all) let anybody in, IPv4 and IPv6."""
        module, _ = acl()
        self.assertAllowed(module, "203.0.113.9")
        self.assertAllowed(module, "2001:db8::1")

    def test_no_rules_at_all(self):
        """A module given an empty rule list allows everybody."""
        module = AclModule(Attrs(acl_rules=[]), task.Clock())
        self.assertAllowed(module, "198.51.100.1")

    def test_deny_all(self):
        """C{deny all} drops every source silently."""
        module, _ = acl(acl_rules=["deny all"])
        self.assertDropped(module, "192.0.2.10")
        self.assertDropped(module, "::1")

    def test_single_ip(self):
        """An address rule matches that address only; unmatched sources are denied."""
        module, _ = acl(acl_rules=["allow 192.0.2.10"])
        self.assertAllowed(module, "192.0.2.10")
        self.assertDropped(module, "192.0.2.11")

    def test_cidr_v4(self):
        """A CIDR rule matches its whole network."""
        module, _ = acl(acl_rules=["allow 10.0.0.0/8", "deny all"])
        self.assertAllowed(module, "10.200.3.4")
        self.assertDropped(module, "11.0.0.1")

    def test_cidr_v6(self):
        """IPv6 CIDR rules work, and do not match IPv4 sources."""
        module, _ = acl(acl_rules=["allow 2001:db8::/32", "deny all"])
        self.assertAllowed(module, "2001:db8:1::5")
        self.assertDropped(module, "2001:db9::5")
        self.assertDropped(module, "10.0.0.1")

    def test_ipv4_mapped(self):
        """An IPv4 peer seen through a dual-stack socket (::ffff:a.b.c.d) matches IPv4 rules."""
        module, _ = acl(acl_rules=["allow 192.0.2.0/24", "deny all"])
        self.assertAllowed(module, "::ffff:192.0.2.7")

    def test_first_match_wins(self):
        """Order matters: the first matching rule decides."""
        module, _ = acl(acl_rules=["deny 10.1.0.0/16", "allow 10.0.0.0/8", "deny all"])
        self.assertDropped(module, "10.1.2.3")
        self.assertAllowed(module, "10.2.2.3")
        module, _ = acl(acl_rules=["allow 10.0.0.0/8", "deny 10.1.0.0/16", "deny all"])
        self.assertAllowed(module, "10.1.2.3")

    def test_string_rules(self):
        """Rules given as text (hand-built configs) compile like the config's AclRule objects."""
        self.assertEqual(
            [(a, str(n) if n else None) for a, n in compile_rules(["allow 10.0.0.1", "deny all"])],
            [(True, "10.0.0.1/32"), (False, None)],
        )
        self.assertRaises(AclError, compile_rules, ["permit all"])
        self.assertRaises(AclError, compile_rules, ["allow 10.0.0.300"])

    def test_source_address(self):
        """Brackets and zone ids are removed; host names are not addresses."""
        self.assertEqual(str(source_address("[fe80::1%eth0]")), "fe80::1")
        self.assertIsNone(source_address("pbx.example.com"))


class TrunkTests(SynchronousTestCase):
    """Traffic from a trunk's hosts bypasses the rules and is labelled."""

    TRUNKS = {
        "carrier": {"dest": "sip:203.0.113.5:5060", "inbound_hosts": ["198.51.100.0/24"]},
        "special": {"dest": "sip:gw.example.net", "inbound_hosts": ["198.51.100.77", "2001:db8:5::/48"]},
        "out-only": {"dest": "sip:192.0.2.200", "direction": "outbound"},
    }

    def test_bypass_and_label(self):
        """A request from an inbound host passes C{deny all} and names its trunk."""
        module, _ = acl(acl_rules=["deny all"], trunks=self.TRUNKS)
        action, tx = run(module, "198.51.100.20")
        self.assertEqual(action, CONTINUE)
        self.assertEqual(tx.context.trunk, "carrier")
        self.assertFalse(tx.context.spam)

    def test_longest_prefix(self):
        """The most specific inbound network wins (a /32 inside another trunk's /24)."""
        module, _ = acl(acl_rules=["deny all"], trunks=self.TRUNKS)
        self.assertEqual(run(module, "198.51.100.77")[1].context.trunk, "special")
        self.assertEqual(run(module, "2001:db8:5::9")[1].context.trunk, "special")

    def test_dest_counts_as_inbound(self):
        """As in RustPBX, a trunk's dest address is one of its sources."""
        module, _ = acl(acl_rules=["deny all"], trunks=self.TRUNKS)
        self.assertEqual(run(module, "203.0.113.5")[1].context.trunk, "carrier")

    def test_outbound_only_trunk(self):
        """An outbound-only trunk's dest is not a trusted source."""
        module, _ = acl(acl_rules=["deny all"], trunks=self.TRUNKS)
        action, tx = run(module, "192.0.2.200")
        self.assertEqual(action, ABORT)
        self.assertIsNone(tx.context.trunk)

    def test_forms(self):
        """Inbound hosts may be written address:port, [v6]:port or sip:URI; host names are skipped."""
        from rustpbx_py.call.trunks import TrunkSet
        from rustpbx_py.config import parse_config_text

        config = parse_config_text(
            '[proxy.trunks.a]\ndest = "sip:192.0.2.9"\n'
            'inbound_hosts = ["192.0.2.1:5060", "[2001:db8::1]:5060", "sip:192.0.2.2;transport=tcp"]\n'
        )
        trunks = TrunkSet(config.proxy.trunks)
        self.assertEqual(trunks.for_source("192.0.2.2"), "a")
        self.assertEqual(trunks.for_source("2001:db8::1"), "a")
        self.assertEqual(trunks.for_source("192.0.2.1"), "a")
        self.assertIsNone(trunks.for_source("192.0.2.3"))


class UserAgentTests(SynchronousTestCase):
    """C{ua_black_list} and C{ua_white_list}."""

    def test_default_black_list(self):
        """The default list drops sipvicious ("friendly-scanner") whatever its case or version."""
        module, _ = acl()
        for ua in ("friendly-scanner", "Friendly-Scanner 1.8", "sipvicious friendly-scanner", "PPLSIP/2"):
            action, tx = run(module, user_agent=ua)
            self.assertEqual((action, tx.context.spam), (ABORT, True), ua)
        self.assertEqual(run(module, user_agent="Linphone/5.0")[0], CONTINUE)

    def test_missing_user_agent_without_white_list(self):
        """Without a white list, a request without User-Agent passes."""
        module, _ = acl()
        self.assertEqual(run(module, user_agent=None)[0], CONTINUE)

    def test_white_list(self):
        """With a white list only matching user agents pass; no User-Agent is rejected."""
        module, _ = acl(ua_white_list=["yealink", "Linphone"])
        self.assertEqual(run(module, user_agent="Yealink SIP-T46S 66.86")[0], CONTINUE)
        self.assertEqual(run(module, user_agent="linphone-desktop/5")[0], CONTINUE)
        action, tx = run(module, user_agent="Zoiper 5")
        self.assertEqual((action, tx.context.spam), (ABORT, True))
        action, tx = run(module, user_agent=None)
        self.assertEqual((action, tx.context.spam), (ABORT, True))

    def test_black_list_beats_white_list(self):
        """A user agent on both lists is refused."""
        module, _ = acl(ua_white_list=["phone"], ua_black_list=["badphone"])
        self.assertEqual(run(module, user_agent="BadPhone 1")[0], ABORT)
        self.assertEqual(run(module, user_agent="GoodPhone 1")[0], CONTINUE)

    def test_applies_to_trunks(self):
        """The User-Agent check comes first, even for trunk sources (as in RustPBX)."""
        module, _ = acl(trunks={"c": {"dest": "sip:198.51.100.1"}})
        action, tx = run(module, "198.51.100.1", user_agent="friendly-scanner")
        self.assertEqual(action, ABORT)


class LogCatcher:
    """Collects the events logged while it is installed."""

    def __init__(self, testcase):
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        testcase.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def count(self, text):
        return sum(1 for e in self.events if text in e.get("log_format", ""))


class FrequencyLimiterTests(SynchronousTestCase):
    """C{frequency_limiter}: N requests per sliding window per source address."""

    def test_limit_and_other_source(self):
        """
        The request above the limit is dropped silently while another
        source is still served.
        """
        module, clock = acl(frequency_limiter="5/10s")
        for i in range(5):
            self.assertEqual(run(module, "192.0.2.10")[0], CONTINUE, f"request {i}")
        action, tx = run(module, "192.0.2.10")
        self.assertEqual((action, tx.context.spam, tx.responses), (ABORT, True, []))
        self.assertEqual(run(module, "192.0.2.11")[0], CONTINUE)

    def test_window_slides(self):
        """A source is served again once its requests have left the window."""
        module, clock = acl(frequency_limiter="5/10s")
        for _ in range(5):
            run(module, "192.0.2.10")
        clock.advance(9)
        self.assertEqual(run(module, "192.0.2.10")[0], ABORT)
        clock.advance(11)
        for i in range(5):
            self.assertEqual(run(module, "192.0.2.10")[0], CONTINUE, f"request {i} after the window")
        self.assertEqual(run(module, "192.0.2.10")[0], ABORT)

    def test_sliding_not_fixed(self):
        """
        A burst at the end of one fixed window followed by a burst at the
        start of the next is still limited: the window slides.
        """
        limiter = FrequencyLimiter(10, 10.0, task.Clock())
        clock = limiter._clock
        clock.advance(9.5)
        self.assertEqual(sum(limiter.allow("a") for _ in range(10)), 10)
        clock.advance(1.0)  # t = 10.5: a new fixed window, but 95% of the old one overlaps
        self.assertEqual(sum(limiter.allow("a") for _ in range(10)), 0)
        clock.advance(5.0)  # t = 15.5: 45% of the old window still overlaps
        # The estimate assumes the old window's requests were spread evenly:
        # ceil(10 * 0.45) = 5 of them still count, so 5 more may pass.
        self.assertEqual(sum(limiter.allow("a") for _ in range(10)), 5)

    def test_boundary_exact(self):
        """A burst straddling a fixed-window boundary gets exactly the limit, not one more."""
        limiter = FrequencyLimiter(20, 60.0, task.Clock())
        limiter._clock.advance(59.99)
        allowed = sum(limiter.allow("a") for _ in range(15))
        limiter._clock.advance(0.02)
        allowed += sum(limiter.allow("a") for _ in range(15))
        self.assertEqual(allowed, 20)

    def test_logged_once_per_window(self):
        """A flood is logged once per window per source, not once per request."""
        catcher = LogCatcher(self)
        module, clock = acl(frequency_limiter="2/10s")
        for _ in range(50):
            run(module, "192.0.2.10")
        for _ in range(50):
            run(module, "192.0.2.11")
        self.assertEqual(catcher.count("frequency limit"), 2)
        clock.advance(10)
        for _ in range(50):
            run(module, "192.0.2.10")
        self.assertEqual(catcher.count("frequency limit"), 3)

    def test_idle_sources_forgotten(self):
        """Memory is bounded: sources idle for a window are pruned, and a hard cap holds."""
        limiter = FrequencyLimiter(3, 10.0, task.Clock(), max_sources=100)
        for i in range(100):
            limiter.allow(f"10.0.0.{i}")
        self.assertEqual(len(limiter), 100)
        limiter.allow("10.0.1.1")
        self.assertEqual(len(limiter), 100, "the cap evicts the least recently seen")
        limiter._clock.advance(25)
        limiter.allow("10.0.2.1")
        self.assertEqual(len(limiter), 1)

    def test_ipv6_per_64(self):
        """IPv6 sources are counted per /64, so rotating addresses in one subscriber prefix does not escape."""
        module, _ = acl(frequency_limiter="3/10s")
        for i in range(3):
            self.assertEqual(run(module, f"2001:db8:1:2::{i + 1}")[0], CONTINUE)
        self.assertEqual(run(module, "2001:db8:1:2::99")[0], ABORT)
        self.assertEqual(run(module, "2001:db8:1:3::1")[0], CONTINUE, "another /64 is another source")

    def test_trunk_not_limited(self):
        """A trunk's traffic is not rate limited (a busy carrier is not a flood)."""
        module, _ = acl(frequency_limiter="2/10s", trunks={"c": {"dest": "sip:198.51.100.1"}})
        for _ in range(10):
            self.assertEqual(run(module, "198.51.100.1")[0], CONTINUE)

    def test_parse(self):
        """The limiter setting is read from the config's FrequencyLimit or from text."""
        self.assertEqual(parse_frequency(Attrs(count=100, window_seconds=60)), (100, 60.0))
        self.assertEqual(parse_frequency("300/5m"), (300, 300.0))
        self.assertEqual(parse_frequency("10/s"), (10, 1.0))
        self.assertIsNone(parse_frequency(None))
        self.assertRaises(AclError, parse_frequency, "lots")


class LimiterCreditTests(SynchronousTestCase):
    """Refunds and trust: what keeps an office behind one NAT from being cut off."""

    def test_credit_refunds(self):
        """Credited requests no longer count; credit never goes below zero."""
        clock = task.Clock()
        limiter = FrequencyLimiter(3, 60, clock)
        for _ in range(3):
            self.assertTrue(limiter.allow("a"))
        self.assertFalse(limiter.allow("a"))
        limiter.credit("a", 2)
        self.assertTrue(limiter.allow("a"))
        self.assertTrue(limiter.allow("a"))
        self.assertFalse(limiter.allow("a"))
        limiter.credit("a", 100)
        for _ in range(3):
            self.assertTrue(limiter.allow("a"))
        self.assertFalse(limiter.allow("a"), "a large credit is no line of credit")

    def test_credit_previous_window(self):
        """A refund for a request counted in the previous window lowers the estimate too."""
        clock = task.Clock()
        limiter = FrequencyLimiter(2, 60, clock)
        limiter.allow("a")
        limiter.allow("a")
        clock.advance(61)  # previous window: 2, still weighing in
        self.assertFalse(limiter.allow("a"))
        limiter.credit("a", 2)
        self.assertTrue(limiter.allow("a"))

    def test_trust_expires(self):
        """A source is trusted for an hour after it authenticated, then not."""
        clock = task.Clock()
        limiter = FrequencyLimiter(2, 60, clock)
        self.assertFalse(limiter.trusted("a"))
        limiter.credit("a", 0)
        self.assertTrue(limiter.trusted("a"))
        self.assertFalse(limiter.trusted("b"))
        clock.advance(3599)
        self.assertTrue(limiter.trusted("a"))
        clock.advance(1)
        self.assertFalse(limiter.trusted("a"))

    def test_credit_set_on_counted_requests(self):
        """The module hands a refund to the counted request's context; a trunk's request gets none."""
        module, clock = acl(frequency_limiter="2/60s", trunks={"carrier": {"dest": "sip:198.51.100.1"}})
        action, tx = run(module, "192.0.2.10", method="REGISTER", uri="sip:example.com")
        self.assertEqual(action, CONTINUE)
        run(module, "192.0.2.10")
        self.assertEqual(run(module, "192.0.2.10")[0], ABORT)
        tx.context.credit(1)
        self.assertEqual(run(module, "192.0.2.10")[0], CONTINUE)
        _, trunk_tx = run(module, "198.51.100.1")
        self.assertIsNone(trunk_tx.context.credit)

    def test_keepalives_of_trusted_sources(self):
        """OPTIONS to the PBX itself is not counted from a source that
        authenticated, is counted from a stranger (svmap), and OPTIONS to a
        user or in-dialog OPTIONS is always counted."""
        module, clock = acl(frequency_limiter="3/60s")
        for _ in range(3):
            run(module, "192.0.2.66", method="OPTIONS", uri="sip:example.com")
        self.assertEqual(run(module, "192.0.2.66", method="OPTIONS", uri="sip:example.com")[0], ABORT)
        module.limiter.credit("192.0.2.10", 0)  # what a successful login does
        for i in range(50):
            self.assertEqual(run(module, "192.0.2.10", method="OPTIONS", uri="sip:example.com")[0], CONTINUE, i)
        for _ in range(3):
            run(module, "192.0.2.10", method="OPTIONS", uri="sip:bob@example.com")
        self.assertEqual(run(module, "192.0.2.10", method="OPTIONS", uri="sip:bob@example.com")[0], ABORT)
        self.assertEqual(run(module, "192.0.2.10", method="OPTIONS", uri="sip:example.com", to_tag="t")[0], ABORT)
        self.assertEqual(run(module, "192.0.2.10", method="OPTIONS", uri="sip:example.com")[0], CONTINUE)


class PluginTests(SynchronousTestCase):
    """The acl module is found as a plugin and builds from a server context."""

    def test_plugin(self):
        """getPlugins finds a factory named "acl" that builds an IProxyModule for every method."""
        factories = {p.name: p for p in getPlugins(IProxyModuleFactory, rustpbx_py.plugins)}
        factory = factories["acl"]
        self.assertTrue(IPlugin.providedBy(factory))
        module = factory.build(FakeServerContext(proxy_config()))
        self.assertTrue(IProxyModule.providedBy(module))
        self.assertEqual(module.name, "acl")
        self.assertEqual(module.allow_methods(), ["*"])


class ScreenTests(SynchronousTestCase):
    """With a SIP core the checks run in its screen, before anything answers."""

    class Core:
        def __init__(self):
            self.screens = []

        def dialog_lookup(self, request):
            return False

        def addressed_to_self(self, request):
            return request.ruri.user is None

    def module(self, **overrides):
        clock = task.Clock()
        core = self.Core()
        module = AclModule(proxy_config(**overrides), clock, core=core)
        module.start()
        return module, core

    def test_joins_and_leaves_the_core(self):
        """start() adds the screen to the core, stop() takes it away."""
        module, core = self.module()
        self.assertEqual(core.screens, [module.screen])
        module.stop()
        self.assertEqual(core.screens, [])

    def test_screen_drops_scanner(self):
        """The screen says drop for a black-listed User-Agent and lets others pass."""
        module, core = self.module()
        bad = make_tx(user_agent="friendly-scanner")
        good = make_tx(user_agent="Linphone/5.0")
        self.assertTrue(module.screen(bad.request, bad.flow))
        self.assertFalse(module.screen(good.request, good.flow))

    def test_pipeline_only_tags_trunks_after_screen(self):
        """Once screening, the pipeline stage only names the trunk: the limiter
        is not counted twice."""
        module, core = self.module(
            frequency_limiter="1/60s",
            trunks={"t": {"dest": "sip:192.0.2.50", "inbound_hosts": ["192.0.2.50"]}},
        )
        tx = make_tx(remote=("192.0.2.10", 5060))
        self.assertFalse(module.screen(tx.request, tx.flow))
        self.assertEqual(module.on_transaction_begin(tx), CONTINUE)
        self.assertFalse(tx.context.spam)
        again = make_tx(remote=("192.0.2.10", 5060))
        self.assertTrue(module.screen(again.request, again.flow))
        trunk_tx = make_tx(remote=("192.0.2.50", 5060))
        self.assertFalse(module.screen(trunk_tx.request, trunk_tx.flow))
        module.on_transaction_begin(trunk_tx)
        self.assertEqual(trunk_tx.context.trunk, "t")
