"""
Stopping the PBX while a call is up: both SIPp agents get a BYE, and the
call record is written, closed with reason bySystem ("nothing lost when
the PBX stops while calls are up").
"""

from __future__ import annotations

import json

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from rustpbx_py.store.db import Database
from rustpbx_py.test.interop.support import SippMixin, call_pbx_toml, free_udp_port, require_tool
from rustpbx_py.test.interop.test_trunk_register import start_stoppable

TOML = call_pbx_toml()


class Probe:
    """An addon-shaped observer that fires when a call is answered."""

    id = "probe"

    def __init__(self) -> None:
        self.answered = defer.Deferred()

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def on_call_event(self, name, call) -> None:
        if name == "answered" and not self.answered.called:
            self.answered.callback(call)


class CallStopInteropTests(SippMixin, TestCase):
    timeout = 90

    @defer.inlineCallbacks
    def test_stop_with_call_up(self):
        """
        A SIPp caller calls a registered SIPp callee; once the call is
        answered the service stops.  Both agents receive BYE and answer it
        (their scenarios end there, exit 0); after the service is gone the
        database holds the call, answered (200), ended, reason bySystem,
        with its SIP flow including both BYEs.
        """
        self.sipp = require_tool("sipp")
        pbx = yield start_stoppable(self, TOML)
        self.port = pbx.ports["UDP"]
        probe = Probe()
        pbx.context.addons.append(probe)
        callee_port = free_udp_port()
        yield self.register_callee(callee_port)
        callee = self.sipp_run("call_uas.xml", callee_port, ["-m", "1"], remote=False, timeout=60)
        caller = self.sipp_run(
            "call_uac_wait_bye.xml",
            free_udp_port(),
            ["-s", "1002", "-au", "caller", "-ap", "caller-secret", "-m", "1"],
            timeout=60,
        )
        yield probe.answered
        yield pbx.stopService()
        for run in (caller, callee):
            out, err, code = yield run
            self.assertEqual(code, 0, (out + err).decode("utf-8", "replace")[-3000:])
        db = Database(pbx.database_url)
        self.addCleanup(db.close)
        rows = yield db.run_query("SELECT status_code, hangup_reason, answer_time, end_time, sip_flow FROM call_records")
        self.assertEqual([(r[0], r[1]) for r in rows], [(200, "bySystem")])
        self.assertIsNotNone(rows[0][3])
        byes = [i["leg"] for i in json.loads(rows[0][4]) if i["direction"] == "out" and i["message"].startswith("BYE ")]
        self.assertEqual(sorted(byes), ["a", "b"])
