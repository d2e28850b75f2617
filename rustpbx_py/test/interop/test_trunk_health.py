"""
Trunk health with real peers: a SIPp carrier that answers OPTIONS (and
calls) is up and takes the route's calls; once its process is gone it is
marked down and the next call goes to the route's other trunk (another
SIPp); started again, it answers the probes, is marked up and takes calls
again.
"""

from __future__ import annotations

import os

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from rustpbx_py.call import trunk_health
from rustpbx_py.test.interop.support import SippMixin, _Collector, call_pbx_toml, free_udp_port, require_tool, scenario, start_pbx_toml

TOML = call_pbx_toml() + """
[proxy.trunks.primary]
dest = "sip:127.0.0.1:{primary}"
direction = "outbound"
health_check_enabled = true
health_check_interval_secs = 1
health_check_probe_count = 2

[proxy.trunks.secondary]
dest = "sip:127.0.0.1:{secondary}"
direction = "outbound"

[[proxy.routes]]
name = "out"
priority = 10
match = {{ "to.user" = "^9([0-9]+)$" }}
rewrite = {{ "to.user" = "{{1}}" }}
dest = ["primary", "secondary"]
# crc32("primary-first") is even: primary first while both are up.
select = "hash"
hash_key = "primary-first"
"""


class TrunkHealthInteropTests(SippMixin, TestCase):
    timeout = 150

    def carrier(self, port: int):
        """A SIPp carrier on C{port} answering OPTIONS and calls until
        killed; returns its process."""
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        args = [self.sipp, "-sf", scenario("trunk_uas.xml"), "-i", "127.0.0.1", "-p", str(port), "-nostdin", "-m", "100000", "-trace_err"]
        done: defer.Deferred = defer.Deferred()
        process = reactor.spawnProcess(_Collector(done, None), args[0], args, env=dict(os.environ), path=workdir)

        def kill():
            if not done.called:
                process.signalProcess("KILL")
            return done

        self.addCleanup(kill)
        return process, kill

    @defer.inlineCallbacks
    def wait_state(self, name: str, state: str, within: float = 30.0):
        trunks = self.pbx.context.trunks
        for _ in range(int(within * 10)):
            if trunks.trunk_status(name)["state"] == state:
                return trunks.trunk_status(name)
            yield task.deferLater(reactor, 0.1, lambda: None)
        self.fail(f"trunk {name} not {state} within {within} s: {trunks.trunk_status(name)}")

    @defer.inlineCallbacks
    def call(self):
        out, err, code = yield self.sipp_run(
            "call_uac.xml", free_udp_port(), ["-s", "9555", "-au", "caller", "-ap", "caller-secret", "-m", "1"], timeout=40
        )
        self.assertEqual(code, 0, (out + err).decode("utf-8", "replace")[-3000:])
        rows = yield self.pbx.context.store.run_query("SELECT trunk FROM call_records ORDER BY start_time")
        return [r[0] for r in rows]

    @defer.inlineCallbacks
    def test_silent_trunk_skipped_then_restored(self):
        self.sipp = require_tool("sipp")
        # No answer within 2 s is a failed probe (10 s in production).
        self.patch(trunk_health, "PROBE_TIMEOUT", 2.0)
        primary, secondary = free_udp_port(), free_udp_port()
        self.pbx = yield start_pbx_toml(self, TOML.format(primary=primary, secondary=secondary))
        self.port = self.pbx.ports["UDP"]
        events = []
        self.pbx.context.trunks.status_observers.append(lambda name, up: events.append((name, up)))
        _, kill_primary = self.carrier(primary)
        self.carrier(secondary)

        status = yield self.wait_state("primary", "up")
        self.assertEqual(status["options"], "ok")
        self.assertLess(status["rtt"], 1.0)
        trunks = yield self.call()
        self.assertEqual(trunks, ["primary"])

        yield kill_primary()
        status = yield self.wait_state("primary", "down")
        self.assertEqual(status["failures"], 2)
        self.assertEqual(events, [("primary", False)])
        trunks = yield self.call()
        self.assertEqual(trunks, ["primary", "secondary"])

        self.carrier(primary)
        yield self.wait_state("primary", "up")
        self.assertEqual(events, [("primary", False), ("primary", True)])
        trunks = yield self.call()
        self.assertEqual(trunks, ["primary", "secondary", "primary"])
        self.assertEqual(self.pbx.context.trunks.trunk_status("secondary")["state"], "unknown")
