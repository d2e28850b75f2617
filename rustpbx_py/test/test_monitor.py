"""
Tests for the monitor addon (L{rustpbx_py.addons.monitor}): its
configuration tables, every metric moving when its event happens (on a
whole PBX on a clock with scripted phones), the exposition parsed back by
prometheus_client's own parser, /healthz, the snapshot and the live feed.
"""

from __future__ import annotations

import json
import os
from typing import Optional

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from rustpbx_py import config as config_module
from rustpbx_py.addons.monitor.addon import MonitorAddon
from rustpbx_py.addons.monitor.config import MetricsConfig, MonitorConfig
from rustpbx_py.addons.monitor.feed import EventLog
from rustpbx_py.addons.monitor.metrics import BUCKETS, FastHistogram
from rustpbx_py.config import ConfigError, _any_str, _int, _key, parse_config_text
from rustpbx_py.store.db import DatabaseError
from rustpbx_py.test.sip_phones import PBX_ADDRESS, Network, Phone

USERS = [
    {
        "type": "memory",
        "users": [{"username": "alice", "password": "a-pw"}, {"username": "bob", "password": "b-pw"}],
    }
]

#: RustPBX's metric names the issue lists (src/metrics.rs, observability addon).
RUSTPBX_NAMES = [
    "rustpbx_info",
    "rustpbx_sip_transactions_running",
    "rustpbx_sip_transactions_received",
    "rustpbx_sip_transactions_rejected",
    "rustpbx_sip_transaction_latency_seconds",
    "rustpbx_sip_dialogs_active",
    "rustpbx_sip_registrations_active",
    "rustpbx_sip_registrations_succeeded",
    "rustpbx_sip_registrations_failed",
    "rustpbx_calls",
    "rustpbx_call_duration_seconds",
    "rustpbx_sip_responses",
    "rustpbx_trunk_calls",
    "rustpbx_trunk_status",
    "rustpbx_auth_attempts",
    "rustpbx_auth_failure",
    "rustpbx_rtp_packets_sent",
    "rustpbx_rtp_packets_received",
    "rustpbx_rtp_packets_lost",
    "rustpbx_rtp_jitter_seconds",
    "rustpbx_process_resident_memory_bytes",
    "rustpbx_process_open_fds",
    "rustpbx_process_uptime_seconds",
    "rustpbx_network_connections",
]


def scrape(addon) -> dict:
    """The addon's exposition, parsed back: family name -> family."""
    text = generate_latest(addon.registry).decode("utf-8")
    return {family.name: family for family in text_string_to_metric_families(text)}


def sample(families: dict, name: str, **labels) -> Optional[float]:
    """The value of sample C{name} with exactly C{labels} (None: absent)."""
    for family in families.values():
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return None


def render(resource, path: bytes = b"", client: str = "127.0.0.1", headers: Optional[dict] = None, args: Optional[dict] = None) -> DummyRequest:
    """Render C{resource} for a GET; the request once finished."""
    request = DummyRequest([p for p in path.split(b"/") if p])
    request.method = b"GET"
    request.client = IPv4Address("TCP", client, 40000)
    for name, value in (headers or {}).items():
        request.requestHeaders.setRawHeaders(name, [value])
    request.args = args or {}
    result = resource.render(request)
    if result is not NOT_DONE_YET:
        request.write(result)
        request.finish()
    return request


def body(request) -> dict:
    return json.loads(b"".join(request.written))


class ConfigTablesTests(SynchronousTestCase):
    """Addon tables are validated like every other key."""

    def test_defaults(self):
        """Without the tables, the monitor gets RustPBX's defaults."""
        config = parse_config_text('[proxy]\naddons = ["monitor"]\n')
        self.assertEqual(config.addon_tables["metrics"], MetricsConfig())
        self.assertEqual(config.addon_tables["monitor"], MonitorConfig())
        self.assertEqual((MetricsConfig().path, MetricsConfig().healthz_path), ("/metrics", "/healthz"))
        self.assertEqual(config.warnings, [])

    def test_values(self):
        """RustPBX's [metrics] keys and our [monitor] keys are read typed."""
        config = parse_config_text(
            '[proxy]\naddons = ["monitor"]\n[metrics]\ntoken = "s3cret"\npath = "/prom"\n'
            '[monitor]\nlisten = "127.0.0.1:9180"\nfeed_replay = 10\nreactor_lag_limit = 0.5\n'
        )
        self.assertEqual(config.addon_tables["metrics"].token, "s3cret")
        self.assertEqual(config.addon_tables["metrics"].path, "/prom")
        self.assertEqual(config.addon_tables["monitor"].listen, "127.0.0.1:9180")
        self.assertEqual(config.addon_tables["monitor"].feed_replay, 10)
        self.assertEqual(config.addon_tables["monitor"].reactor_lag_limit, 0.5)

    def test_problems(self):
        """Unknown keys (with a suggestion) and wrong values are refused,
        each message naming the file and the key path."""
        with self.assertRaises(ConfigError) as caught:
            parse_config_text(
                '[proxy]\naddons = ["monitor"]\n[metrics]\ntokn = "x"\npath = "metrics"\n[monitor]\nlisten = "nowhere"\nfeed_replay = -1\n',
                "<pbx.toml>",
            )
        problems = caught.exception.problems
        self.assertEqual(len(problems), 4, problems)
        self.assertIn('<pbx.toml>: metrics.tokn: unknown key; did you mean "token"?', problems)
        self.assertTrue(any(p.startswith("<pbx.toml>: metrics.path: expected a URL path") for p in problems))
        self.assertTrue(any(p.startswith("<pbx.toml>: monitor.listen: expected an address") for p in problems))
        self.assertTrue(any(p.startswith("<pbx.toml>: monitor.feed_replay: expected an integer 0-1000000") for p in problems))

    def test_table_of_a_disabled_addon(self):
        """A table whose addon is not enabled is checked and loads with a warning."""
        config = parse_config_text('[monitor]\nfeed_replay = 5\n', "<pbx.toml>")
        self.assertEqual(config.addon_tables["monitor"].feed_replay, 5)
        self.assertEqual(len(config.warnings), 1)
        self.assertIn('<pbx.toml>: monitor: the [monitor] table configures the "monitor" addon', config.warnings[0])

    def test_third_party_table(self):
        """Any addon plugin's table works the same way (the mechanism is not
        the monitor's): its dataclass of _key fields is built and checked."""
        from dataclasses import dataclass

        @dataclass
        class FancyConfig:
            greeting: str = _key(_any_str, "hello", doc="What to say.")
            times: int = _key(_int(1, 3), 1, doc="How often.")

        tables = dict(config_module.addon_config_tables())
        tables["fancy"] = ("fancy", FancyConfig)
        self.patch(config_module, "_addon_tables_cache", tables)
        config = parse_config_text('[proxy]\naddons = ["fancy"]\n[fancy]\ngreeting = "hi"\n')
        self.assertEqual(config.addon_tables["fancy"], FancyConfig(greeting="hi", times=1))
        with self.assertRaises(ConfigError) as caught:
            parse_config_text('[fancy]\ntimes = 4\n', "<pbx.toml>")
        self.assertEqual(caught.exception.problems, ["<pbx.toml>: fancy.times: expected an integer 1-3, found 4"])

    def test_plugin_found(self):
        """The monitor's tables come from its plugin, found by getPlugins."""
        tables = config_module.addon_config_tables(refresh=True)
        self.assertEqual(tables["metrics"], ("monitor", MetricsConfig))
        self.assertEqual(tables["monitor"], ("monitor", MonitorConfig))


class FastHistogramTests(SynchronousTestCase):
    def test_buckets(self):
        """Cumulative buckets with Prometheus's 'le' semantics (a value on a
        bound counts in that bucket) and RustPBX's bounds."""
        h = FastHistogram()
        for v in (0.005, 0.006, 2.0, 100.0):
            h.observe(v)
        buckets = dict(h.buckets())
        self.assertEqual(len(buckets), len(BUCKETS) + 1)
        self.assertEqual((buckets["0.005"], buckets["0.01"], buckets["2.5"], buckets["60.0"], buckets["+Inf"]), (1, 2, 3, 3, 4))
        self.assertAlmostEqual(h.sum, 102.011)


class PbxMixin:
    """A whole PBX on a clock (real core, modules) with the monitor addon
    and two phones, alice and bob."""

    monitor_toml = ""
    #: More [proxy] settings.
    proxy: dict = {}

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.net = Network(self.clock, user_backends=USERS, realms=["example.com"], auth_failure_delay=1.0, **self.proxy)
        self.addCleanup(self.net.stop)
        context = self.net.context
        context.config.addon_tables = dict(parse_config_text('[proxy]\naddons = ["monitor"]\n' + self.monitor_toml).addon_tables)
        context.core.transports.listening["UDP"] = PBX_ADDRESS
        self.addon = MonitorAddon(context)
        context.addons = [self.addon]
        self.addon.start()
        self.addCleanup(self.addon.stop)
        self.alice = Phone(self.net, "alice", "a-pw", ("203.0.113.1", 5060), ("10.0.0.1", 5060))
        self.bob = Phone(self.net, "bob", "b-pw", ("203.0.113.2", 5060), ("10.0.0.2", 5060))

    def events(self, prefix: str = "") -> list:
        return [e["type"] for e in self.addon.events.events if e["type"].startswith(prefix)]


class MetricsTests(PbxMixin, SynchronousTestCase):
    """Each metric moves when its event happens."""

    def test_names(self):
        """Every RustPBX metric name the issue lists is exposed, and the
        text parses with prometheus_client's parser."""
        families = scrape(self.addon)
        for name in RUSTPBX_NAMES:
            self.assertIn(name, families)
        self.assertEqual(families["rustpbx_calls"].type, "counter")
        self.assertEqual(families["rustpbx_call_duration_seconds"].type, "histogram")
        info = families["rustpbx_info"].samples[0]
        self.assertEqual(set(info.labels), {"version", "node"})

    def test_register(self):
        """A REGISTER answered 401 then 200: registrations, auth, responses,
        latency and the live bindings all move; a refresh and an
        unregistration too."""
        before = scrape(self.addon)
        self.assertEqual(sample(before, "rustpbx_sip_registrations_active"), 0)
        self.alice.register(120)
        self.assertEqual(self.alice.answers, [("REGISTER", 401), ("REGISTER", 200)])
        after = scrape(self.addon)
        self.assertEqual(sample(after, "rustpbx_sip_registrations_active"), 1)
        self.assertEqual(sample(after, "rustpbx_sip_registrations_total", realm="example.com"), 2)
        self.assertEqual(sample(after, "rustpbx_sip_registrations_succeeded_total", realm="example.com"), 1)
        self.assertEqual(sample(after, "rustpbx_auth_attempts_total", method="REGISTER"), 1)
        self.assertEqual(sample(after, "rustpbx_auth_success_total", method="REGISTER"), 1)
        self.assertEqual(sample(after, "rustpbx_sip_responses_total", status_class="4xx", status_code="401", method="REGISTER"), 1)
        self.assertEqual(sample(after, "rustpbx_sip_responses_total", status_class="2xx", status_code="200", method="REGISTER"), 1)
        self.assertEqual(sample(after, "rustpbx_sip_transaction_latency_seconds_count"), 2)
        self.assertEqual(sample(after, "rustpbx_sip_transactions_received_total"), 2)
        self.assertEqual(self.events("registration."), ["registration.added"])
        self.alice.register(120)
        self.assertEqual(self.events("registration."), ["registration.added", "registration.refreshed"])
        self.alice.register(0)
        families = scrape(self.addon)
        self.assertEqual(sample(families, "rustpbx_sip_unregistrations_total", realm="example.com"), 1)
        self.assertEqual(sample(families, "rustpbx_sip_registrations_active"), 0)
        self.assertEqual(self.events("registration."), ["registration.added", "registration.refreshed", "registration.removed"])
        removed = self.addon.events.events[-1]["data"]
        self.assertEqual(removed["aor"], "alice@example.com")

    def test_expiry(self):
        """A binding that runs out is a registration.expired event."""
        self.alice.register(60)
        self.net.advance(120, step=30)
        self.assertIn("registration.expired", self.events("registration."))
        self.assertEqual(sample(scrape(self.addon), "rustpbx_sip_registrations_active"), 0)

    def test_register_failure(self):
        """A wrong password: an auth failure with its reason, and a failed
        registration once the delayed 403 goes out."""
        self.alice.register(120, password="wrong")
        self.net.advance(2)
        self.assertEqual(self.alice.answers, [("REGISTER", 401), ("REGISTER", 403)])
        families = scrape(self.addon)
        self.assertEqual(sample(families, "rustpbx_auth_failure_total", method="REGISTER", reason="wrong password"), 1)
        self.assertEqual(sample(families, "rustpbx_sip_registrations_failed_total", realm="example.com", reason="forbidden"), 1)
        self.assertEqual(sample(families, "rustpbx_sip_registrations_active"), 0)

    def test_call(self):
        """An answered call: calls_total ok, duration and talk time, dialogs,
        and the call events in order."""
        self.alice.register(3600)
        self.bob.register(3600)
        self.alice.call("bob", 2.0)
        self.assertEqual(self.bob.calls_answered, 1)
        self.assertEqual(sample(scrape(self.addon), "rustpbx_sip_dialogs_active"), 1)
        self.net.advance(3)
        self.assertEqual(self.alice.calls_ended, 1)
        families = scrape(self.addon)
        self.assertEqual(sample(families, "rustpbx_calls_total", direction="internal", result="ok", status="completed"), 1)
        self.assertEqual(sample(families, "rustpbx_call_duration_seconds_count", direction="internal"), 1)
        self.assertEqual(sample(families, "rustpbx_call_talk_time_seconds_count", direction="internal"), 1)
        self.assertEqual(sample(families, "rustpbx_call_talk_time_seconds_bucket", direction="internal", le="2.5"), 1)
        self.assertEqual(sample(families, "rustpbx_call_talk_time_seconds_bucket", direction="internal", le="1.0"), 0)
        self.assertEqual(sample(families, "rustpbx_sip_dialogs_created_total", direction="internal"), 1)
        self.assertEqual(sample(families, "rustpbx_sip_invite_latency_seconds_count", direction="internal"), 1)
        self.assertEqual(sample(families, "rustpbx_sip_dialogs_active"), 0)
        self.assertEqual(sample(families, "rustpbx_auth_attempts_total", method="INVITE"), 1)
        self.assertEqual(self.events("call."), ["call.created", "call.ringing", "call.answered", "call.ended"])
        ended = self.addon.events.events[-1]
        self.assertEqual((ended["data"]["caller"], ended["data"]["callee"]), ("alice@example.com", "bob@example.com"))
        seqs = [e["seq"] for e in self.addon.events.events]
        self.assertEqual(seqs, sorted(seqs))
        self.assertEqual(len(set(seqs)), len(seqs))

    def test_failed_call(self):
        """A call to nobody registered is counted as rejected."""
        self.alice.register(3600)
        self.alice.call("carol", 1.0)
        self.net.advance(2)
        status = [s for m, s in self.alice.answers if m == "INVITE"][-1]
        self.assertGreaterEqual(status, 400)
        calls = scrape(self.addon)["rustpbx_calls"].samples
        self.assertEqual([(s.labels["result"], s.labels["status"], s.value) for s in calls], [("rejected", "failed", 1)])
        self.assertEqual(self.events("call."), ["call.created", "call.ended"])

    def test_rtp_from_record(self):
        """An anchored call's final media figures become the RTP metrics."""
        from rustpbx_py.call.record import CallRecord

        record = CallRecord("c1", "a", "b", self.clock.seconds(), 10)
        record.status_code = 200
        record.answer_time = record.start_time + 1
        record.end_time = record.start_time + 5
        leg = lambda pin, pout, lost, jitter: {"codec": "PCMU", "in": {"packets": pin, "bytes": 0, "lost": lost, "jitter_ms": jitter}, "out": {"packets": pout, "bytes": 0, "lost": 0, "jitter_ms": 0.0}}  # noqa: E731
        record.media = {"mode": "auto", "anchored": True, "legs": {"a": leg(200, 190, 3, 12.0), "b": leg(190, 200, 0, 2.0)}}
        self.addon.on_call_record(record)
        families = scrape(self.addon)
        self.assertEqual(sample(families, "rustpbx_rtp_packets_received_total", codec="PCMU"), 390)
        self.assertEqual(sample(families, "rustpbx_rtp_packets_sent_total", codec="PCMU"), 390)
        self.assertEqual(sample(families, "rustpbx_rtp_packets_lost_total", direction="inbound"), 3)
        self.assertEqual(sample(families, "rustpbx_rtp_jitter_seconds_bucket", direction="inbound", le="0.01"), 0)
        self.assertEqual(sample(families, "rustpbx_rtp_jitter_seconds_bucket", direction="inbound", le="0.025"), 1)

    def test_overload(self):
        """Requests refused for overload count as rejected transactions."""
        self.net.core.max_concurrency = -1
        self.alice.options()
        families = scrape(self.addon)
        self.assertEqual(sample(families, "rustpbx_sip_transactions_rejected_total", reason="max_concurrency"), 1)
        self.assertEqual(sample(families, "rustpbx_sip_responses_total", status_class="5xx", status_code="503", method="OPTIONS"), 1)


CARRIER = ("198.51.100.9", 5060)


class TrunkTests(PbxMixin, SynchronousTestCase):
    """A trunk probed with OPTIONS going silent, then answering again."""

    proxy = {
        "trunks": {
            "carrier": {
                "dest": "sip:198.51.100.9:5060",
                "health_check_enabled": True,
                "health_check_interval_secs": 5,
                "health_check_probe_count": 2,
            }
        }
    }

    def test_down_then_up(self):
        """rustpbx_trunk_status drops to 0 when the carrier stops answering
        OPTIONS (trunk.down on the feed, the snapshot's trunk down with its
        failures) and is 1 again once it answers (trunk.up, with an RTT)."""
        families = scrape(self.addon)
        self.assertEqual(sample(families, "rustpbx_trunk_status", trunk_id="carrier"), 1)
        self.net.advance(40)
        self.assertEqual(sample(scrape(self.addon), "rustpbx_trunk_status", trunk_id="carrier"), 0)
        self.assertEqual(self.events("trunk."), ["trunk.down"])
        (trunk,) = self.addon.snapshot()["trunks"]
        self.assertEqual((trunk["name"], trunk["up"], trunk["state"]), ("carrier", False, "down"))
        self.assertGreaterEqual(trunk["failures"], 2)
        Phone(self.net, "carrier", None, CARRIER, CARRIER)
        self.net.advance(10)
        self.assertEqual(sample(scrape(self.addon), "rustpbx_trunk_status", trunk_id="carrier"), 1)
        self.assertEqual(self.events("trunk."), ["trunk.down", "trunk.up"])
        up = self.addon.events.events[-1]["data"]
        self.assertEqual((up["trunk"], up["state"]), ("carrier", "up"))
        self.assertIsNotNone(up["rtt"])


class TrunkCallTests(PbxMixin, SynchronousTestCase):
    """Calls routed to a trunk are counted per trunk."""

    proxy = {
        "trunks": {"carrier": {"dest": "sip:198.51.100.9:5060"}},
        "routes": [{"name": "out", "match": {"to.user": "^9"}, "dest": "carrier"}],
    }

    def test_trunk_calls(self):
        """An answered call through the trunk and one it fails (nobody
        there: no answer) move rustpbx_trunk_calls_total and
        rustpbx_trunk_calls_failed_total."""
        self.alice.register(3600)
        carrier = Phone(self.net, "carrier", None, CARRIER, CARRIER)
        self.alice.call("9123", 1.0)
        self.net.advance(2)
        self.assertEqual(carrier.calls_answered, 1)
        del self.net.phones[CARRIER]
        self.alice.call("9456", 1.0)
        self.net.advance(40)
        families = scrape(self.addon)
        calls = {tuple(sorted(s.labels.items())): s.value for s in families["rustpbx_trunk_calls"].samples}
        self.assertEqual(calls, {(("direction", "outbound"), ("trunk_id", "carrier")): 2})
        failed = families["rustpbx_trunk_calls_failed"].samples
        self.assertEqual([(s.labels["trunk_id"], s.value) for s in failed], [("carrier", 1)])
        self.assertEqual(sample(families, "rustpbx_trunk_latency_seconds_count", trunk_id="carrier"), 1)
        results = {s.labels["result"]: s.value for s in families["rustpbx_calls"].samples}
        self.assertEqual(results["ok"], 1)


class MetricsPageTests(PbxMixin, SynchronousTestCase):
    monitor_toml = '[metrics]\ntoken = "s3cret"\n'

    def test_token(self):
        """With a token, /metrics answers 401 (RustPBX's WWW-Authenticate)
        without it or with a wrong one, the exposition with it."""
        page = self.addon.web_resources()["metrics"]
        refused = render(page)
        self.assertEqual(refused.responseCode, 401)
        self.assertEqual(refused.responseHeaders.getRawHeaders(b"www-authenticate"), [b'Bearer realm="metrics"'])
        self.assertEqual(render(page, headers={b"authorization": b"Bearer nope"}).responseCode, 401)
        served = render(page, headers={b"authorization": b"Bearer s3cret"})
        self.assertIn(served.responseCode, (None, 200))
        text = b"".join(served.written).decode()
        names = {f.name for f in text_string_to_metric_families(text)}
        self.assertIn("rustpbx_calls", names)

    def test_healthz_needs_no_token(self):
        request = render(self.addon.web_resources()["healthz"])
        self.assertEqual(request.responseCode, 200)


class PathsTests(PbxMixin, SynchronousTestCase):
    monitor_toml = '[metrics]\npath = "/prom/metrics"\nhealthz_path = "/health"\n'

    def test_paths(self):
        """[metrics] path and healthz_path decide where the pages are mounted."""
        self.assertEqual(
            sorted(self.addon.web_resources()),
            ["api/monitor/feed", "api/monitor/snapshot", "health", "prom/metrics"],
        )


class DisabledTests(PbxMixin, SynchronousTestCase):
    monitor_toml = "[metrics]\nenabled = false\n"

    def test_disabled(self):
        """[metrics] enabled = false: neither /metrics nor /healthz (RustPBX)."""
        self.assertEqual(sorted(self.addon.web_resources()), ["api/monitor/feed", "api/monitor/snapshot"])


class RaisingStore:
    """A database that cannot be reached."""

    def run_query(self, sql, params=()):
        return defer.fail(DatabaseError("could not connect to server: Connection refused"))


class SilentStore:
    """A database that never answers."""

    def run_query(self, sql, params=()):
        return defer.Deferred()


class HealthTests(PbxMixin, SynchronousTestCase):
    """/healthz: 200 when ready, 503 with the failing check otherwise."""

    def healthz(self, path=b""):
        request = render(self.addon.web_resources()["healthz"], path)
        return request.responseCode, body(request)

    def test_ready(self):
        self.net.context.store = None
        code, answer = self.healthz()
        self.assertEqual(code, 200)
        self.assertEqual((answer["status"], answer["ready"]), ("ok", True))
        self.assertEqual(set(answer["checks"]), {"reactor", "database", "sip_listeners"})
        self.assertEqual(answer["checks"]["sip_listeners"]["bound"], {"UDP": "192.0.2.1:5060"})

    def test_database_unreachable(self):
        """A database that refuses: 503, and the body says why."""
        self.net.context.store = RaisingStore()
        code, answer = self.healthz()
        self.assertEqual(code, 503)
        self.assertFalse(answer["ready"])
        self.assertEqual(answer["checks"]["database"], {"ok": False, "error": "could not connect to server: Connection refused"})
        code, answer = self.healthz(b"live")
        self.assertEqual((code, answer["status"]), (200, "ok"))

    def test_database_silent(self):
        """A database that does not answer within database_timeout: 503."""
        self.net.context.store = SilentStore()
        request = render(self.addon.web_resources()["healthz"])
        self.assertFalse(request.finished)
        self.clock.advance(2.0)
        self.assertEqual(request.responseCode, 503)
        self.assertEqual(body(request)["checks"]["database"]["error"], "no answer within 2 s")

    def test_reactor_lag(self):
        """Timers firing late (the event loop busy) make the PBX not ready."""
        self.net.context.store = None
        self.clock.advance(0.5)
        self.clock.advance(3.0)  # the probe's timer fires 2.5 s late
        code, answer = self.healthz()
        self.assertEqual(code, 503)
        self.assertEqual(answer["checks"]["reactor"]["ok"], False)
        self.assertEqual(answer["checks"]["reactor"]["lag_seconds"], 2.5)

    def test_no_listener(self):
        self.net.context.store = None
        self.net.core.transports.listening.clear()
        code, answer = self.healthz()
        self.assertEqual(code, 503)
        self.assertFalse(answer["checks"]["sip_listeners"]["ok"])


class SnapshotTests(PbxMixin, SynchronousTestCase):
    """/api/monitor/snapshot."""

    def test_contents(self):
        """Calls (legs, state, codecs, times), registrations, transactions by
        method and state, and the feed's sequence number."""
        self.alice.register(3600)
        self.bob.register(3600)
        self.alice.call("bob", 10.0)
        request = render(self.addon.web_resources()["api/monitor/snapshot"])
        snapshot = body(request)
        self.assertEqual(snapshot["seq"], self.addon.events.seq)
        self.assertEqual(sorted(r["aor"] for r in snapshot["registrations"]), ["alice@example.com", "bob@example.com"])
        (call,) = snapshot["calls"]
        self.assertEqual(call["state"], "answered")
        self.assertEqual([leg["name"] for leg in call["legs"]], ["a", "b"])
        self.assertIn("codecs", call)
        self.assertIsNotNone(call["answer_time"])
        self.assertIn("by_method", snapshot["transactions"]["server"])
        self.assertEqual(snapshot["trunks"], [])

    def test_loopback_only_without_token(self):
        """Without a token the live state is for loopback clients only."""
        page = self.addon.web_resources()["api/monitor/snapshot"]
        self.assertEqual(render(page, client="198.51.100.7").responseCode, 401)
        self.assertIn(render(page).responseCode, (None, 200))


class SnapshotTokenTests(PbxMixin, SynchronousTestCase):
    monitor_toml = '[monitor]\ntoken = "t0k"\n'

    def test_token(self):
        page = self.addon.web_resources()["api/monitor/snapshot"]
        self.assertEqual(render(page).responseCode, 401)
        self.assertIn(render(page, client="198.51.100.7", headers={b"authorization": b"Bearer t0k"}).responseCode, (None, 200))
        self.assertIn(render(page, client="198.51.100.7", args={b"token": [b"t0k"]}).responseCode, (None, 200))


class EventLogTests(SynchronousTestCase):
    def test_since(self):
        """Resume: the events after SEQ while they are all kept; None when
        some fell out of the buffer or SEQ is from another run."""
        log = EventLog(task.Clock(), 3)
        for i in range(5):
            log.publish("call.created", {"i": i})
        self.assertEqual([e["seq"] for e in log.since(3)], [4, 5])
        self.assertEqual([e["seq"] for e in log.since(2)], [3, 4, 5])
        self.assertEqual(log.since(5), [])
        self.assertIsNone(log.since(1))
        self.assertIsNone(log.since(9))


class _Request:
    def __init__(self, params):
        self.params = params


class FeedProtocolTests(SynchronousTestCase):
    """The feed's first messages and its slow-client guard, without sockets."""

    def client(self, log, params=None, backlog=0):
        from rustpbx_py.addons.monitor.feed import FeedFactory

        factory = FeedFactory(log, lambda: {"calls": []})
        proto = factory.buildProtocol(None)
        sent = []
        proto.sendMessage = lambda payload, isBinary=False: sent.append(json.loads(payload))
        dropped = []
        proto.dropConnection = lambda abort=False: dropped.append(abort)
        proto.transport = type("T", (), {"dataBuffer": b"x" * backlog, "_tempDataLen": 0})()
        proto.onConnect(_Request(params or {}))
        proto.onOpen()
        return proto, sent, dropped

    def test_first_messages(self):
        """No ?after: a snapshot with the current seq; ?after=SEQ: resume and
        the missed events; a SEQ no longer kept: a snapshot; junk: a snapshot."""
        log = EventLog(task.Clock(), 2)
        for i in range(3):
            log.publish("call.created", {"i": i})
        _, sent, _ = self.client(log)
        self.assertEqual([(m["type"], m["seq"]) for m in sent], [("snapshot", 3)])
        _, sent, _ = self.client(log, {"after": ["2"]})
        self.assertEqual([(m["type"], m["seq"]) for m in sent], [("resume", 2), ("call.created", 3)])
        _, sent, _ = self.client(log, {"after": ["0"]})
        self.assertEqual([m["type"] for m in sent], ["snapshot"])
        _, sent, _ = self.client(log, {"after": ["x"]})
        self.assertEqual([m["type"] for m in sent], ["snapshot"])

    def test_live_and_slow_client(self):
        """Events reach an open client; one that does not read (megabytes
        queued) is dropped and no longer listens."""
        from rustpbx_py.addons.monitor.feed import MAX_CLIENT_BACKLOG

        log = EventLog(task.Clock(), 10)
        proto, sent, dropped = self.client(log)
        log.publish("trunk.down", {"trunk": "carrier"})
        self.assertEqual(sent[-1]["type"], "trunk.down")
        proto.transport.dataBuffer = b"x" * (MAX_CLIENT_BACKLOG + 1)
        log.publish("trunk.up", {"trunk": "carrier"})
        self.assertEqual(dropped, [True])
        self.assertEqual(log.listeners, [])
        self.assertEqual(sent[-1]["type"], "trunk.down")
