"""
The monitor addon on a real PBX over real sockets: its HTTP pages and the
WebSocket feed (snapshot, events, resume after reconnect) while SIPp
registers and calls; and a real Prometheus server (Debian's C{prometheus})
scraping the PBX while SIPp places calls, whose HTTP API then returns the
expected C{rustpbx_calls_total}, with a screenshot of its graph page.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import urllib.parse

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, connectWS
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, protocol, reactor, task
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.client import Agent, Headers, readBody

from rustpbx_py.test.interop.support import (
    SippMixin,
    artefacts_dir,
    call_pbx_toml,
    free_udp_port,
    require_tool,
    start_pbx_toml,
)


def free_tcp_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@defer.inlineCallbacks
def http_get(url: str, headers=None):
    """(code, body bytes) of a GET."""
    agent = Agent(reactor)
    response = yield agent.request(b"GET", url.encode("ascii"), Headers(headers or {}))
    data = yield readBody(response)
    return response.code, data


class FeedClient(WebSocketClientProtocol):
    """Collects the feed's messages; C{factory.opened} fires once open."""

    def onOpen(self):
        self.factory.client = self
        if not self.factory.opened.called:
            self.factory.opened.callback(self)

    def onMessage(self, payload, isBinary):
        self.factory.messages.append(json.loads(payload))
        waiters, self.factory.waiters = self.factory.waiters, []
        for d in waiters:
            d.callback(None)

    def onClose(self, wasClean, code, reason):
        if not self.factory.closed.called:
            self.factory.closed.callback(None)
        if not self.factory.opened.called:
            self.factory.opened.errback(Exception(f"feed refused: {code} {reason}"))


@defer.inlineCallbacks
def open_feed(testcase, url: str):
    factory = WebSocketClientFactory(url)
    factory.protocol = FeedClient
    factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0)
    factory.messages = []
    factory.waiters = []
    factory.opened = defer.Deferred()
    factory.closed = defer.Deferred()
    connector = connectWS(factory)

    def close():
        if not factory.closed.called:
            factory.client.sendClose()
            return factory.closed
        return None

    testcase.addCleanup(connector.disconnect)
    testcase.addCleanup(close)
    yield factory.opened
    return factory


@defer.inlineCallbacks
def wait_messages(factory, count: int, timeout: float = 30.0):
    """Wait until the feed sent C{count} messages in all."""
    deadline = time.monotonic() + timeout
    while len(factory.messages) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"waited for {count} feed messages, got {[m['type'] for m in factory.messages]}")
        d = defer.Deferred()
        factory.waiters.append(d)
        timer = reactor.callLater(0.5, lambda: d.called or d.callback(None))
        yield d
        if timer.active():
            timer.cancel()
    return factory.messages


class MonitorPbxMixin(SippMixin):
    """A PBX (auth, registrar, call) with the monitor on its own listener."""

    monitor_toml = ""

    @defer.inlineCallbacks
    def start_pbx(self):
        self.sipp = require_tool("sipp")
        text = call_pbx_toml('addons = ["monitor"]\n', '[monitor]\nlisten = "127.0.0.1:0"\n' + self.monitor_toml)
        self.pbx = yield start_pbx_toml(self, text)
        self.port = self.pbx.ports["UDP"]
        (addon,) = self.pbx.addons
        self.addon = addon
        # The console's site serves the monitor (start_pbx_toml binds it
        # on 127.0.0.1:0); [monitor] listen is then not used.
        self.assertIsNone(addon.port)
        self.http_port = self.pbx.ports["HTTP"]
        self.base = f"http://127.0.0.1:{self.http_port}"
        self.callee_port = free_udp_port()

    @defer.inlineCallbacks
    def calls(self, count: int, rate: int = 10):
        """SIPp places C{count} authenticated calls to a registered SIPp callee."""
        callee = self.sipp_run("call_uas.xml", self.callee_port, ["-m", str(count)], remote=False)
        out, err, code = yield self.sipp_run(
            "call_uac.xml",
            free_udp_port(),
            ["-s", "1002", "-au", "caller", "-ap", "caller-secret", "-m", str(count), "-r", str(rate)],
        )
        self.assertEqual(code, 0, (out + err).decode("utf-8", "replace")[-3000:])
        out, err, code = yield callee
        self.assertEqual(code, 0, (out + err).decode("utf-8", "replace")[-3000:])
        # SIPp exits on its last message: let the PBX finish the calls.
        calls = next(m for m in self.pbx.modules if m.name == "call")
        for _ in range(100):
            if not calls.calls:
                break
            yield task.deferLater(reactor, 0.05, lambda: None)


class MonitorHttpTests(MonitorPbxMixin, TestCase):
    """/metrics, /healthz, the snapshot and the feed over real sockets."""

    timeout = 180
    monitor_toml = "feed_replay = 10\n"

    @defer.inlineCallbacks
    def test_pages_and_feed(self):
        """The feed sends a snapshot, then SIPp's registration as it
        happens; a client that reconnects with ?after=SEQ gets exactly the
        events it missed, in order, and one whose SEQ fell out of the
        replay buffer gets a fresh snapshot.  /metrics counts the calls,
        /healthz is ready and the snapshot lists the registration."""
        yield self.start_pbx()
        feed_url = f"ws://127.0.0.1:{self.http_port}/api/monitor/feed"
        first = yield open_feed(self, feed_url)
        (snapshot,) = yield wait_messages(first, 1)
        self.assertEqual((snapshot["type"], snapshot["seq"]), ("snapshot", 0))
        self.assertEqual(snapshot["data"]["registrations"], [])
        yield self.register_callee(self.callee_port)
        messages = yield wait_messages(first, 2)
        added = messages[1]
        self.assertEqual((added["type"], added["seq"]), ("registration.added", 1))
        self.assertEqual(added["data"]["aor"], "1002@127.0.0.1")
        first.client.sendClose()
        yield first.closed

        yield self.calls(3)
        # 3 calls x (created, ringing, answered, ended) = seq 2..13; 10 kept.
        self.assertEqual(self.addon.events.seq, 13)
        resumed = yield open_feed(self, feed_url + "?after=5")
        messages = yield wait_messages(resumed, 9)
        self.assertEqual(messages[0]["type"], "resume")
        self.assertEqual(messages[0]["data"], {"missed": 8})
        self.assertEqual([m["seq"] for m in messages[1:]], list(range(6, 14)))
        self.assertEqual({m["type"] for m in messages[1:]} - {"call.created", "call.ringing", "call.answered", "call.ended"}, set())
        self.assertEqual([m["data"]["callee"] for m in messages[1:]], ["1002@127.0.0.1"] * 8)
        stale = yield open_feed(self, feed_url + "?after=1")
        (fresh,) = yield wait_messages(stale, 1)
        self.assertEqual((fresh["type"], fresh["seq"]), ("snapshot", 13))

        code, body = yield http_get(self.base + "/metrics")
        self.assertEqual(code, 200)
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        calls = {(s.labels["direction"], s.labels["result"]): s.value for s in families["rustpbx_calls"].samples}
        self.assertEqual(calls, {("internal", "ok"): 3})
        code, body = yield http_get(self.base + "/healthz")
        self.assertEqual(code, 200, body)
        self.assertTrue(json.loads(body)["ready"])
        code, body = yield http_get(self.base + "/api/monitor/snapshot")
        self.assertEqual(code, 200)
        snapshot = json.loads(body)
        self.assertEqual([r["aor"] for r in snapshot["registrations"]], ["1002@127.0.0.1"])
        self.assertEqual(snapshot["seq"], 13)


class OwnListenerTests(TestCase):
    """Without the console's site, the addon serves on [monitor] listen."""

    @defer.inlineCallbacks
    def test_own_listener(self):
        from rustpbx_py.addons.monitor.config import MonitorConfig
        from rustpbx_py.config import default_config
        from rustpbx_py.test.interop.support import start_service

        config = default_config(addr="127.0.0.1", udp_port=0, addons=["monitor"])
        config.database_url = "sqlite:///" + os.path.abspath(self.mktemp()) + ".sqlite3"
        config.addon_tables["monitor"] = MonitorConfig(listen="127.0.0.1:0")
        pbx = yield start_service(self, config)
        self.assertIsNone(pbx.web)
        (addon,) = pbx.addons
        base = f"http://127.0.0.1:{addon.port.getHost().port}"
        code, body = yield http_get(base + "/healthz")
        self.assertEqual(code, 200, body)
        self.assertEqual(json.loads(body)["checks"]["sip_listeners"]["bound"], {"UDP": f"127.0.0.1:{pbx.ports['UDP']}"})
        code, body = yield http_get(base + "/metrics")
        self.assertEqual(code, 200)
        self.assertIn(b"rustpbx_info{", body)


PROMETHEUS_YML = """
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: rustpbx
    metrics_path: /metrics
    authorization:
      credentials: {token}
    static_configs:
      - targets: ['127.0.0.1:{port}']
"""


class _Process(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.ended = defer.Deferred()
        self.output = []

    def outReceived(self, data):
        self.output.append(data)

    def errReceived(self, data):
        self.output.append(data)

    def processEnded(self, reason):
        self.ended.callback(None)


class PrometheusTests(MonitorPbxMixin, TestCase):
    """A real Prometheus scrapes the PBX while SIPp places calls."""

    timeout = 240
    monitor_toml = '[metrics]\ntoken = "scrape-secret"\n'

    def start_prometheus(self, workdir: str) -> int:
        binary = shutil.which("prometheus")
        if binary is None:
            raise SkipTest("Debian's prometheus is not installed (.ci/run installs it)")
        port = free_tcp_port()
        config = os.path.join(workdir, "prometheus.yml")
        with open(config, "w") as f:
            f.write(PROMETHEUS_YML.format(port=self.http_port, token="scrape-secret"))
        self.prometheus = _Process()
        args = [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={os.path.join(workdir, 'data')}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ]
        transport = reactor.spawnProcess(self.prometheus, binary, args, env=os.environ.copy(), path=workdir)

        def stop():
            if not self.prometheus.ended.called:
                transport.signalProcess("TERM")
            return self.prometheus.ended

        self.addCleanup(stop)
        return port

    @defer.inlineCallbacks
    def query(self, port: int, expr: str):
        url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        code, body = yield http_get(url)
        if code != 200:
            return None
        result = json.loads(body)["data"]["result"]
        return result

    @defer.inlineCallbacks
    def wait_value(self, port: int, expr: str, expected: float, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        result = None
        while time.monotonic() < deadline:
            try:
                result = yield self.query(port, expr)
            except Exception:  # Prometheus not listening yet
                result = None
            if result and float(result[0]["value"][1]) == expected:
                return result
            yield task.deferLater(reactor, 0.5, lambda: None)
        raise AssertionError(f"{expr}: expected {expected}, last answer {result}; prometheus said {b''.join(self.prometheus.output)[-2000:]!r}")

    @defer.inlineCallbacks
    def test_scrape_during_calls(self):
        """Prometheus scrapes /metrics (with the bearer token) every second
        while SIPp places 40 calls in two bursts; its query API then
        returns rustpbx_calls_total{result="ok"} = 40, and the target is
        up.  A screenshot of Prometheus's graph of the counter is saved."""
        yield self.start_pbx()
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        port = self.start_prometheus(workdir)
        yield self.wait_value(port, 'up{job="rustpbx"}', 1)
        yield self.register_callee(self.callee_port)
        yield self.calls(20, rate=5)
        yield task.deferLater(reactor, 3, lambda: None)
        yield self.calls(20, rate=10)
        result = yield self.wait_value(port, 'sum(rustpbx_calls_total{result="ok"})', 40)
        self.assertEqual(result[0]["value"][1], "40")
        by_labels = yield self.query(port, "rustpbx_calls_total")
        self.assertEqual([(r["metric"]["direction"], r["metric"]["result"], r["metric"]["status"]) for r in by_labels],
                         [("internal", "ok", "completed")])
        registrations = yield self.wait_value(port, "rustpbx_sip_registrations_active", 1)
        self.assertTrue(registrations)
        yield task.deferLater(reactor, 2, lambda: None)
        yield self.screenshot(port)

    @defer.inlineCallbacks
    def screenshot(self, port: int):
        """Prometheus's own graph page, in headless Chromium (skipped
        quietly when Chromium or Selenium is missing: the scrape is the
        test)."""
        try:
            from rustpbx_py.test.interop.test_jssip_chromium import require_chromium

            chromium, driver = require_chromium()
            import selenium  # noqa: F401
        except (SkipTest, ImportError):
            return
        query = urllib.parse.urlencode(
            {"g0.expr": "sum by (result) (rustpbx_calls_total)", "g0.tab": "0", "g0.range_input": "30s", "g0.stacked": "0"}
        )
        url = f"http://127.0.0.1:{port}/graph?{query}"
        path = os.path.join(artefacts_dir("monitor"), "prometheus-calls.png")
        yield deferToThread(_shoot, chromium, driver, url, path)
        self.assertTrue(os.path.getsize(path) > 10000)


def _shoot(chromium: str, driver: str, url: str, path: str) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from rustpbx_py.test.interop.test_jssip_chromium import CHROMIUM_FLAGS

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(driver), options=options)
    try:
        browser.set_window_size(1280, 1000)
        browser.get(url)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            drawn = browser.execute_script("return document.querySelectorAll('canvas, svg.uplot, .graph-chart canvas, .u-over').length")
            if drawn:
                break
            time.sleep(0.3)
        time.sleep(2)
        browser.save_screenshot(path)
    finally:
        browser.quit()


class TrunkFeedTests(SippMixin, TestCase):
    """A SIPp carrier going silent, seen through the monitor."""

    timeout = 150

    @defer.inlineCallbacks
    def trunk_status(self, base: str) -> float:
        code, body = yield http_get(base + "/metrics")
        self.assertEqual(code, 200)
        for family in text_string_to_metric_families(body.decode()):
            if family.name == "rustpbx_trunk_status":
                return {s.labels["trunk_id"]: s.value for s in family.samples}["primary"]
        return None

    @defer.inlineCallbacks
    def test_trunk_down_and_up(self):
        """The carrier answers OPTIONS: rustpbx_trunk_status{trunk_id="primary"}
        is 1; killed, the feed says trunk.down (with its failures) and the
        gauge is 0; started again, trunk.up (with the OPTIONS round trip)
        and 1."""
        from rustpbx_py.call import trunk_health
        from rustpbx_py.test.interop.test_trunk_health import TOML, TrunkHealthInteropTests

        self.sipp = require_tool("sipp")
        self.patch(trunk_health, "PROBE_TIMEOUT", 2.0)
        primary, secondary = free_udp_port(), free_udp_port()
        text = TOML.format(primary=primary, secondary=secondary).replace("[proxy]\n", '[proxy]\naddons = ["monitor"]\n', 1)
        self.pbx = yield start_pbx_toml(self, text)
        base = f"http://127.0.0.1:{self.pbx.ports['HTTP']}"
        feed = yield open_feed(self, f"ws://127.0.0.1:{self.pbx.ports['HTTP']}/api/monitor/feed")
        _, kill = TrunkHealthInteropTests.carrier(self, primary)
        yield self.until(lambda: self.pbx.context.trunks.trunk_status("primary")["state"] == "up")
        value = yield self.trunk_status(base)
        self.assertEqual(value, 1)

        yield kill()
        yield self.until(lambda: any(m["type"] == "trunk.down" for m in feed.messages))
        down = next(m for m in feed.messages if m["type"] == "trunk.down")
        self.assertEqual((down["data"]["trunk"], down["data"]["state"], down["data"]["failures"]), ("primary", "down", 2))
        value = yield self.trunk_status(base)
        self.assertEqual(value, 0)

        TrunkHealthInteropTests.carrier(self, primary)
        yield self.until(lambda: any(m["type"] == "trunk.up" for m in feed.messages))
        up = next(m for m in feed.messages if m["type"] == "trunk.up")
        self.assertEqual((up["data"]["trunk"], up["data"]["state"]), ("primary", "up"))
        self.assertLess(up["data"]["rtt"], 1.0)
        self.assertGreater(up["seq"], down["seq"])
        value = yield self.trunk_status(base)
        self.assertEqual(value, 1)

    @defer.inlineCallbacks
    def until(self, predicate, within: float = 30.0):
        for _ in range(int(within * 10)):
            if predicate():
                return
            yield task.deferLater(reactor, 0.1, lambda: None)
        self.fail("condition not met within %s s" % within)
