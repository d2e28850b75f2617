"""
Calls through the B2BUA between real SIPp user agents: a callee registers
with digest and then serves calls; a caller authenticates with 407 and
places them.
"""

from __future__ import annotations

import os

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from rustpbx_py.test.interop.support import (
    SippMixin,
    call_pbx_toml,
    free_udp_port,
    require_tool,
    scenario,
    start_pbx_toml,
)

PBX_TOML = call_pbx_toml("passthrough_failure = {passthrough}\nmax_ring_time = {ring}\n")


class CallTests(SippMixin, TestCase):
    """SIPp caller -> PBX (auth, registrar, call) -> registered SIPp callee."""

    timeout = 180

    @defer.inlineCallbacks
    def setup_callee(self, passthrough: bool = True, ring: int = 60):
        self.sipp = require_tool("sipp")
        text = PBX_TOML.format(passthrough="true" if passthrough else "false", ring=ring)
        self.pbx = yield start_pbx_toml(self, text)
        self.port = self.pbx.ports["UDP"]
        self.callee_port = free_udp_port()
        yield self.register_callee(self.callee_port)
        bindings = self.pbx.context.locator.lookup("1002@127.0.0.1")
        self.assertEqual(len(bindings), 1)

    def callee(self, name: str, calls: int):
        return self.sipp_run(name, self.callee_port, ["-m", str(calls)], remote=False)

    def caller(self, name: str, calls: int, rate: int = 10, extra=()):
        return self.sipp_run(
            name,
            free_udp_port(),
            ["-s", "1002", "-au", "caller", "-ap", "caller-secret", "-m", str(calls), "-r", str(rate)] + list(extra),
        )

    def fail_scenario(self, code: int) -> str:
        with open(scenario("call_uac_fail.xml.in")) as f:
            text = f.read().replace("@CODE@", str(code))
        path = os.path.abspath(self.mktemp()) + ".xml"
        with open(path, "w") as f:
            f.write(text)
        return path

    @defer.inlineCallbacks
    def records(self):
        """The call records, once every call has ended and its final write
        is committed: SIPp exits as soon as it has sent its last message,
        which can be before the PBX's group-commit writer wrote the record."""
        calls = next(m for m in self.pbx.modules if m.name == "call")
        for _ in range(100):
            yield calls.records.drained()
            rows = yield self.pbx.context.store.run_query(
                "SELECT status_code, hangup_reason, answer_time, end_time, sip_flow FROM call_records"
            )
            if all(row[3] is not None for row in rows):
                break
            yield task.deferLater(reactor, 0.1, lambda: None)
        return rows

    @defer.inlineCallbacks
    def test_500_calls(self):
        """500 authenticated calls at 20 per second all complete (SIPp exit 0
        on both sides), and each leaves an answered, caller-ended record."""
        yield self.setup_callee()
        callee = self.callee("call_uas.xml", 500)
        out, err, code = yield self.caller("call_uac.xml", 500, rate=20)
        self.assertEqual(code, 0, (out + err).decode("utf-8", "replace")[-3000:])
        out, err, code = yield callee
        self.assertEqual(code, 0, (out + err).decode("utf-8", "replace")[-3000:])
        yield next(m for m in self.pbx.modules if m.name == "call").stop()
        rows = yield self.records()
        self.assertEqual(len(rows), 500)
        self.assertEqual({(r[0], r[1]) for r in rows}, {(200, "byCaller")})
        self.assertTrue(all(r[2] is not None and r[3] >= r[2] for r in rows))
        self.assertIn("INVITE sip:1002@", rows[0][4])

    @defer.inlineCallbacks
    def test_ringing_40s_answered(self):
        """A callee that rings for 40 s, beyond 64*T1 (32 s with the default
        T1), and then answers: the call is up and ends with the caller's
        BYE (Timer B stops at the 180; max_ring_time is 60 s here)."""
        yield self.setup_callee()
        callee = self.callee("call_uas_ring40.xml", 1)
        out, err, code = yield self.caller("call_uac.xml", 1)
        self.assertEqual(code, 0, (out + err).decode("utf-8", "replace")[-3000:])
        out, err, code = yield callee
        self.assertEqual(code, 0, (out + err).decode("utf-8", "replace")[-3000:])
        rows = yield self.pbx.context.store.run_query("SELECT status_code, hangup_reason, start_time, answer_time FROM call_records")
        self.assertEqual([(r[0], r[1]) for r in rows], [(200, "byCaller")])
        self.assertGreaterEqual(rows[0][3] - rows[0][2], 40)

    @defer.inlineCallbacks
    def test_cancel_while_ringing(self):
        """A CANCEL while the callee rings gives the caller 487, and the
        callee gets its own CANCEL."""
        yield self.setup_callee()
        callee = self.callee("call_uas_ring.xml", 1)
        out, err, code = yield self.caller("call_uac_cancel.xml", 1)
        self.assertEqual(code, 0, (out + err).decode("utf-8", "replace")[-3000:])
        out, err, code = yield callee
        self.assertEqual(code, 0, (out + err).decode("utf-8", "replace")[-3000:])
        rows = yield self.records()
        self.assertEqual([(r[0], r[1]) for r in rows], [(487, "canceled")])

    @defer.inlineCallbacks
    def test_busy_passthrough(self):
        """The callee's 486 reaches the caller as 486 (passthrough_failure)."""
        yield self.setup_callee()
        callee = self.callee("call_uas_busy.xml", 1)
        out, err, code = yield self.caller(self.fail_scenario(486), 1)
        self.assertEqual(code, 0, (out + err).decode("utf-8", "replace")[-3000:])
        yield callee
        rows = yield self.records()
        self.assertEqual([(r[0], r[1]) for r in rows], [(486, "rejected")])

    @defer.inlineCallbacks
    def test_busy_generic(self):
        """With passthrough_failure = false the caller gets 480 instead."""
        yield self.setup_callee(passthrough=False)
        callee = self.callee("call_uas_busy.xml", 1)
        out, err, code = yield self.caller(self.fail_scenario(480), 1)
        self.assertEqual(code, 0, (out + err).decode("utf-8", "replace")[-3000:])
        yield callee

    @defer.inlineCallbacks
    def test_unregistered_callee(self):
        """A known user with no registration gets 480."""
        self.sipp = require_tool("sipp")
        self.pbx = yield start_pbx_toml(self, PBX_TOML.format(passthrough="true", ring=60))
        self.port = self.pbx.ports["UDP"]
        out, err, code = yield self.caller(self.fail_scenario(480), 1)
        self.assertEqual(code, 0, (out + err).decode("utf-8", "replace")[-3000:])
