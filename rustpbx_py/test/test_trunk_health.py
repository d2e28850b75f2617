"""
Tests for L{rustpbx_py.call.trunk_health}: trunks with
C{health_check_enabled} are probed with OPTIONS by the real core on a
L{task.Clock}; a trunk that stops answering is marked down after
C{health_check_probe_count} failures, left out by routes (its calls go to
the next trunk, or its fallback), and marked up by its first 2xx.
"""

from __future__ import annotations

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from rustpbx_py.call import trunk_health
from rustpbx_py.config import ConfigError, parse_config_text
from rustpbx_py.sip.message import Request, Response
from rustpbx_py.test.sip_phones import Network, Phone

T1 = ("198.51.100.5", 5060)
T2 = ("198.51.100.6", 5060)
T3 = ("198.51.100.7", 5060)
USERS = [{"type": "memory", "users": [{"username": "alice", "password": "wonderland"}]}]


def trunk(address, **extra):
    table = {"dest": f"sip:{address[0]}:{address[1]}", "health_check_enabled": True}
    table.update(extra)
    return table


class Carrier(Phone):
    """A trunk's SIP server: answers OPTIONS with C{options_status} (200
    by default) and calls with 180 + 200, and counts what it got."""

    options_status = 200

    def __init__(self, net, address, name="carrier"):
        super().__init__(net, "carrier", None, address, address)
        #: The name of the trunk it serves.
        self.name = name
        self.options: list = []
        self.invites: list = []

    def _request_received(self, request: Request) -> None:
        if request.method == "OPTIONS":
            self.options.append(request)
            if self.options_status != 200:
                self._respond(request, self.options_status)
                return
        if request.method == "INVITE" and request.call_id not in self._incoming:
            self.invites.append(request)
        super()._request_received(request)

    def silent(self) -> None:
        """Stop answering anything (datagrams to it are lost)."""
        del self.net.phones[self.public]

    def back(self) -> None:
        self.net.phones[self.public] = self


class ConfigTests(SynchronousTestCase):
    def test_defaults(self):
        """RustPBX's defaults: off, every 30 s, down after 3 failures."""
        config = parse_config_text('[proxy.trunks.t]\ndest = "sip:198.51.100.5"\n')
        t = config.proxy.trunks["t"]
        self.assertEqual(
            (t.health_check_enabled, t.health_check_interval_secs, t.health_check_probe_count, t.health_check_fallback_trunk),
            (False, 30, 3, None),
        )
        self.assertEqual(config.warnings, [])

    def test_set(self):
        config = parse_config_text(
            "[proxy.trunks.t]\ndest = \"sip:198.51.100.5\"\nhealth_check_enabled = true\n"
            "health_check_interval_secs = 5\nhealth_check_probe_count = 2\nhealth_check_fallback_trunk = \"u\"\n"
            "[proxy.trunks.u]\ndest = \"sip:198.51.100.6\"\n"
        )
        t = config.proxy.trunks["t"]
        self.assertEqual((t.health_check_enabled, t.health_check_interval_secs, t.health_check_probe_count, t.health_check_fallback_trunk), (True, 5, 2, "u"))

    def test_invalid(self):
        """Bad values are named by file and key."""
        with self.assertRaises(ConfigError) as e:
            parse_config_text(
                "[proxy.trunks.t]\ndest = \"sip:198.51.100.5\"\nhealth_check_enabled = \"yes\"\n"
                "health_check_interval_secs = 0\nhealth_check_probe_count = -1\nhealth_check_fallback_trunk = \"uu\"\n"
                "[proxy.trunks.u]\ndest = \"sip:198.51.100.6\"\n",
                path="pbx.toml",
            )
        text = "\n".join(e.exception.problems)
        self.assertIn("pbx.toml: proxy.trunks.t.health_check_enabled: expected", text)
        self.assertIn("pbx.toml: proxy.trunks.t.health_check_interval_secs: expected an integer >= 1", text)
        self.assertIn("pbx.toml: proxy.trunks.t.health_check_probe_count: expected an integer >= 1", text)

    def test_unknown_fallback(self):
        with self.assertRaises(ConfigError) as e:
            parse_config_text(
                "[proxy.trunks.t]\ndest = \"sip:198.51.100.5\"\nhealth_check_fallback_trunk = \"uu\"\n"
                "[proxy.trunks.u]\ndest = \"sip:198.51.100.6\"\n",
                path="pbx.toml",
            )
        self.assertEqual(
            e.exception.problems,
            ['pbx.toml: proxy.trunks.t.health_check_fallback_trunk: expected the name of another defined trunk (defined: "u"), found "uu"; did you mean "u"?'],
        )

    def test_self_fallback(self):
        with self.assertRaises(ConfigError):
            parse_config_text('[proxy.trunks.t]\ndest = "sip:198.51.100.5"\nhealth_check_fallback_trunk = "t"\n')


class ProbeTests(SynchronousTestCase):
    """One PBX (real core, modules) and scripted carriers on a clock."""

    def build(self, trunks, routes=None):
        self.clock = task.Clock()
        self.clock.advance(1_000_000)
        proxy = {"realms": ["example.com"], "user_backends": USERS, "trunks": trunks}
        if routes is not None:
            proxy["routes"] = routes
        self.net = Network(self.clock, **proxy)
        self.addCleanup(self.net.stop)
        self.trunks = self.net.module("call").trunks
        self.events: list = []
        self.trunks.status_observers.append(lambda name, up: self.events.append((name, up)))

    def start(self):
        """The call module starts the probes on the reactor's next turn."""
        self.net.advance(0.5)

    def test_up(self):
        """The first probe goes out at once; its 200 marks the trunk up
        (no event: a trunk is up until it is down) with its RTT."""
        self.build({"t1": trunk(T1), "t2": {"dest": "sip:198.51.100.6"}})
        carrier = Carrier(self.net, T1, "t1")
        self.start()
        (options,) = carrier.options
        self.assertEqual(options.uri, "sip:health@198.51.100.5:5060")
        sent_by = options.top_via.split()[1].split(";")[0]
        self.assertTrue(options.get("from").startswith(f"<sip:health-check@{sent_by}>;tag="), options.get("from"))
        self.assertEqual(options.get("cseq"), "1 OPTIONS")
        self.assertEqual(options.get("to"), "<sip:health@198.51.100.5:5060>")
        status = self.trunks.trunk_status("t1")
        self.assertEqual((status["state"], status["options"], status["failures"], status["last_error"]), ("up", "ok", 0, None))
        self.assertIsNotNone(status["rtt"])
        self.assertGreaterEqual(status["rtt"], 0)
        self.assertEqual(status["last_probe"], self.clock.seconds())
        self.assertEqual(status["registration"], None)
        self.assertEqual(self.trunks.trunk_status("t2")["state"], "unknown")
        self.assertEqual(self.trunks.trunk_status("t2")["options"], "off")
        self.assertEqual(self.events, [])
        # Every interval (30 s) after the previous answer.
        self.net.advance(29)
        self.assertEqual(len(carrier.options), 1)
        self.net.advance(1.5)
        self.assertEqual(len(carrier.options), 2)
        self.assertEqual(self.net.lost, [], "no OPTIONS to t2")

    def test_down_after_threshold_then_back(self):
        """With the carrier silent, each probe times out after 10 s; the
        third failure in a row marks it down (one trunk.down event), the
        probes go on, and the first 200 marks it up again."""
        self.build({"t1": trunk(T1, health_check_interval_secs=5)})
        carrier = Carrier(self.net, T1, "t1")
        self.start()
        carrier.silent()
        self.net.advance(5)  # second probe sent, unanswered
        self.net.advance(10)
        status = self.trunks.trunk_status("t1")
        self.assertEqual((status["state"], status["options"], status["failures"]), ("up", "failed", 1))
        self.assertIn("no answer to OPTIONS within 10 s", status["last_error"])
        self.net.advance(15)
        self.assertEqual(self.trunks.trunk_status("t1")["failures"], 2)
        self.assertTrue(self.trunks.is_up("t1"))
        self.net.advance(15)
        self.assertEqual(self.trunks.trunk_status("t1")["state"], "down")
        self.assertFalse(self.trunks.is_up("t1"))
        self.assertEqual(self.events, [("t1", False)])
        self.net.advance(60)
        self.assertEqual(self.events, [("t1", False)], "one event per transition")
        self.assertGreater(self.trunks.trunk_status("t1")["failures"], 3)
        carrier.back()
        self.net.advance(15)
        status = self.trunks.trunk_status("t1")
        self.assertEqual((status["state"], status["options"], status["failures"]), ("up", "ok", 0))
        self.assertEqual(self.events, [("t1", False), ("t1", True)])

    def test_reload_revives_a_changed_down_trunk(self):
        """A reload that changes a down trunk's settings starts it afresh:
        it is tried again and the observers hear it is up; a reload that
        leaves its settings alone keeps it down."""
        self.build({"t1": trunk(T1, health_check_interval_secs=5)})
        carrier = Carrier(self.net, T1, "t1")
        self.start()
        carrier.silent()
        self.net.advance(50)
        self.assertFalse(self.trunks.is_up("t1"))
        self.assertEqual(self.events, [("t1", False)])
        same = {"t1": self.trunks.get("t1")}
        self.trunks.replace(same)
        self.assertFalse(self.trunks.is_up("t1"))
        self.assertEqual(self.events, [("t1", False)])
        from dataclasses import replace

        self.trunks.replace({"t1": replace(self.trunks.get("t1"), health_check_interval_secs=6)})
        self.assertTrue(self.trunks.is_up("t1"))
        self.assertEqual(self.trunks.trunk_status("t1")["state"], "unknown")
        self.assertEqual(self.events, [("t1", False), ("t1", True)])

    def test_non_2xx_is_a_failure(self):
        """Only a 2xx counts, as in RustPBX: a 404 or 503 is a failure."""
        self.build({"t1": trunk(T1, health_check_interval_secs=5, health_check_probe_count=2)})
        carrier = Carrier(self.net, T1, "t1")
        carrier.options_status = 503
        self.start()
        status = self.trunks.trunk_status("t1")
        self.assertEqual((status["state"], status["failures"], status["last_error"]), ("unknown", 1, "OPTIONS answered 503 Service Unavailable"))
        carrier.options_status = 404
        self.net.advance(5)
        self.assertEqual(self.trunks.trunk_status("t1")["state"], "down")
        self.assertEqual(self.events, [("t1", False)])
        carrier.options_status = 200
        self.net.advance(5)
        self.assertEqual(self.trunks.trunk_status("t1")["state"], "up")

    def test_probes_do_not_overlap(self):
        """A probe waits for the previous one's end: never two in flight,
        even with an interval shorter than the timeout."""
        self.build({"t1": trunk(T1, health_check_interval_secs=1)})
        carrier = Carrier(self.net, T1, "t1")
        self.start()
        carrier.silent()
        probe = self.net.module("call").trunk_health.probes["t1"]
        sent = probe.probes
        self.net.advance(1)
        self.assertEqual(probe.probes, sent + 1)
        self.net.advance(9.5)
        self.assertEqual(probe.probes, sent + 1, "the second probe is still waiting for its answer")
        self.net.advance(2)
        self.assertEqual(probe.probes, sent + 2)

    def test_late_answer_ignored(self):
        """A 200 that arrives after the probe timed out counts for nothing."""
        self.build({"t1": trunk(T1, health_check_interval_secs=60, health_check_probe_count=1)})
        carrier = Carrier(self.net, T1, "t1")
        held = []
        carrier.transmit = held.append
        self.start()
        self.net.advance(10.5)
        self.assertEqual(self.trunks.trunk_status("t1")["state"], "down")
        late = held[0]  # the answers to the OPTIONS and its retransmissions
        self.assertIsInstance(late, Response)
        self.net.send(late.to_bytes(), T1)
        self.assertEqual(self.trunks.trunk_status("t1")["state"], "down")

    def test_disabled_trunk_not_probed(self):
        self.build({"t1": trunk(T1, disabled=True)})
        carrier = Carrier(self.net, T1, "t1")
        self.start()
        self.assertEqual(carrier.options, [])
        self.assertEqual(self.net.module("call").trunk_health.probes, {})

    def test_stop(self):
        """Stopping the module stops the probes."""
        self.build({"t1": trunk(T1)})
        carrier = Carrier(self.net, T1, "t1")
        self.start()
        self.net.module("call").stop()
        self.net.advance(120)
        self.assertEqual(len(carrier.options), 1)

    # -- routing ------------------------------------------------------------------

    def call(self, callee="5551234"):
        alice = self.net.phones.get(("203.0.113.10", 40000)) or Phone(self.net, "alice", "wonderland", ("203.0.113.10", 40000))
        alice.call(callee, 5)
        self.net.advance(1)
        return alice

    def route(self, dest, **extra):
        table = {"name": "out", "match": {"to.user": "^555"}, "action": "forward", "dest": dest}
        table.update(extra)
        return [table]

    def make_down(self, carrier):
        carrier.silent()
        self.net.advance(5 + 3 * 15)
        self.assertFalse(self.trunks.is_up(carrier.name))

    def test_down_trunk_skipped(self):
        """A call routed to [t1, t2] goes to t1 while it is up, to t2 while
        t1 is down, and to t1 again once it answers OPTIONS again."""
        self.build({"t1": trunk(T1, health_check_interval_secs=5), "t2": trunk(T2, health_check_interval_secs=5)}, self.route(["t1", "t2"], select="hash", hash_key="same"))
        c1, c2 = Carrier(self.net, T1, "t1"), Carrier(self.net, T2, "t2")
        self.start()
        alice = self.call()
        self.assertEqual((len(c1.invites), len(c2.invites)), (1, 0))
        self.net.advance(10)
        self.make_down(c1)
        alice = self.call()
        self.assertEqual((len(c1.invites), len(c2.invites)), (1, 1))
        self.assertEqual(alice.answers.count(("INVITE", 200)), 2)
        c1.back()
        self.net.advance(15)
        self.assertTrue(self.trunks.is_up("t1"))
        self.call()
        self.assertEqual((len(c1.invites), len(c2.invites)), (2, 1))

    def test_rr_spreads_over_live_trunks(self):
        """select = "rr" turns over the live trunks only."""
        self.build({"t1": trunk(T1, health_check_interval_secs=5), "t2": trunk(T2), "t3": trunk(T3)}, self.route(["t1", "t2", "t3"]))
        c1, c2, c3 = Carrier(self.net, T1, "t1"), Carrier(self.net, T2, "t2"), Carrier(self.net, T3, "t3")
        self.start()
        self.make_down(c1)
        for _ in range(4):
            self.call()
            self.net.advance(10)
        self.assertEqual((len(c1.invites), len(c2.invites), len(c3.invites)), (0, 2, 2))

    def test_all_down_fails(self):
        """Every trunk of the route down and no fallback: 503, nothing sent."""
        self.build({"t1": trunk(T1, health_check_interval_secs=5)}, self.route(["t1"]))
        c1 = Carrier(self.net, T1, "t1")
        self.start()
        self.make_down(c1)
        c1.back()
        c1.options_status = 503  # alive on the wire, still not 2xx
        alice = self.call()
        self.assertEqual(c1.invites, [])
        self.assertIn(("INVITE", 503), alice.answers)

    def test_fallback_trunk(self):
        """A down trunk's health_check_fallback_trunk takes its calls,
        even when the route does not list it."""
        self.build(
            {"t1": trunk(T1, health_check_interval_secs=5, health_check_fallback_trunk="spare"), "spare": trunk(T3)},
            self.route(["t1"]),
        )
        c1, spare = Carrier(self.net, T1, "t1"), Carrier(self.net, T3, "spare")
        self.start()
        self.make_down(c1)
        alice = self.call()
        self.assertEqual((len(c1.invites), len(spare.invites)), (0, 1))
        self.assertIn(("INVITE", 200), alice.answers)

    def test_down_fallback_not_used(self):
        """A fallback that is down itself is not tried."""
        self.build(
            {"t1": trunk(T1, health_check_interval_secs=5, health_check_fallback_trunk="spare"), "spare": trunk(T3, health_check_interval_secs=5)},
            self.route(["t1"]),
        )
        c1, spare = Carrier(self.net, T1, "t1"), Carrier(self.net, T3, "spare")
        self.start()
        spare.silent()
        self.make_down(c1)
        self.assertFalse(self.trunks.is_up("spare"))
        alice = self.call()
        self.assertIn(("INVITE", 503), alice.answers)


class PerIpTests(SynchronousTestCase):
    """health_check_per_ip: dest and every inbound host are probed each
    round; any target failing fails the round (RustPBX's code)."""

    def test_targets(self):
        from rustpbx_py.call.trunk_health import per_ip_targets
        from rustpbx_py.call.trunks import TrunkDestination

        found = per_ip_targets(
            TrunkDestination("udp", "198.51.100.5", 5060),
            ["198.51.100.6", "198.51.100.5", "198.51.100.7:5070", "10.0.0.0/8", "192.0.2.9/32", "[2001:db8::1]:5062", "sip:carrier.example", "198.51.100.6"],
            "198.51.100.5:5060",
        )
        self.assertEqual(
            found,
            [
                ("198.51.100.6:5060", ("udp", "198.51.100.6", 5060)),
                ("198.51.100.7:5070", ("udp", "198.51.100.7", 5070)),
                ("192.0.2.9:5060", ("udp", "192.0.2.9", 5060)),
                ("[2001:db8::1]:5062", ("udp", "2001:db8::1", 5062)),
                ("carrier.example:5060", ("udp", "carrier.example", 5060)),
            ],
        )

    def test_any_target_down(self):
        clock = task.Clock()
        net = Network(clock, trunks={"t1": trunk(T1, health_check_per_ip=True, inbound_hosts=[T2[0]], health_check_interval_secs=5, health_check_probe_count=2)})
        self.addCleanup(net.stop)
        trunks = net.module("call").trunks
        c1, c2 = Carrier(net, T1, "t1"), Carrier(net, T2, "t1-second")
        net.advance(0.5)
        self.assertEqual([o.uri for o in c1.options + c2.options], ["sip:health@198.51.100.5:5060", "sip:health@198.51.100.6:5060"])
        status = trunks.trunk_status("t1")
        self.assertEqual(status["state"], "up")
        self.assertEqual([(t["target"], t["healthy"]) for t in status["per_ip"]], [("198.51.100.5:5060", True), ("198.51.100.6:5060", True)])
        c2.silent()
        net.advance(5 + 15 + 15)
        status = trunks.trunk_status("t1")
        self.assertEqual(status["state"], "down", "dest answers, the inbound host does not")
        self.assertEqual(status["last_error"], "198.51.100.6:5060: no answer to OPTIONS within 10 s")
        self.assertEqual([(t["target"], t["healthy"]) for t in status["per_ip"]], [("198.51.100.5:5060", True), ("198.51.100.6:5060", False)])
        self.assertIsNotNone(status["rtt"])
        c2.back()
        net.advance(15)
        self.assertEqual(trunks.trunk_status("t1")["state"], "up")

    def test_off_by_default(self):
        """Without it, only dest is probed and there is no per_ip list."""
        clock = task.Clock()
        net = Network(clock, trunks={"t1": trunk(T1, inbound_hosts=[T2[0]])})
        self.addCleanup(net.stop)
        c1, c2 = Carrier(net, T1, "t1"), Carrier(net, T2, "other")
        net.advance(0.5)
        self.assertEqual((len(c1.options), len(c2.options)), (1, 0))
        self.assertIsNone(net.module("call").trunks.trunk_status("t1")["per_ip"])


class RegistrationStatusTests(SynchronousTestCase):
    def test_registration_in_status(self):
        """A registering trunk's status carries its registration state."""
        clock = task.Clock()
        net = Network(clock, trunks={"t1": trunk(T1, username="acct", password="pw", register_enabled=True)})
        self.addCleanup(net.stop)
        carrier = Carrier(net, T1)
        net.advance(0.5)
        status = net.module("call").trunks.trunk_status("t1")
        self.assertEqual(status["registration"]["state"], "registered")
        self.assertEqual(status["state"], "up")
        self.assertEqual(len(carrier.options), 1)


class ConstantsTests(SynchronousTestCase):
    def test_timeout(self):
        """RustPBX waits 10 s for an OPTIONS answer."""
        self.assertEqual(trunk_health.PROBE_TIMEOUT, 10.0)
