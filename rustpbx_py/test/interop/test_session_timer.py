"""
Session timers (RFC 4028) with real SIPp user agents: a caller asks for a
90 s session and never refreshes it; after 90 - min(32, 90/3) = 60 seconds
the PBX ends the call with BYE to both the caller and the callee.

This test takes about a minute of real time: the interval cannot be
shorter than RFC 4028's 90 s minimum.
"""

from __future__ import annotations

import json

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from rustpbx_py.test.interop.support import SippMixin, call_pbx_toml, free_udp_port, require_tool, start_pbx_toml

PBX_TOML = call_pbx_toml("session_timer = true\nsession_expires = 1800\n")


class SessionTimerInteropTests(SippMixin, TestCase):
    """A session nobody refreshes is torn down on both legs."""

    timeout = 150

    @defer.inlineCallbacks
    def test_unrefreshed_session_expires(self):
        """
        The SIPp caller sends C{Session-Expires: 90} with C{Supported:
        timer} and gets C{90;refresher=uac} with C{Require: timer} back;
        the callee is offered our 1800 s.  Nobody refreshes: about 60 s
        after the answer both SIPp agents receive BYE and answer 200 (their
        scenarios end there, exit 0), and the record says sessionExpired.
        """
        self.sipp = require_tool("sipp")
        self.pbx = yield start_pbx_toml(self, PBX_TOML)
        self.port = self.pbx.ports["UDP"]
        callee_port = free_udp_port()
        yield self.register_callee(callee_port)
        callee = self.sipp_run("call_uas.xml", callee_port, ["-m", "1"], remote=False, timeout=140)
        out, err, code = yield self.sipp_run(
            "st_uac_norefresh.xml",
            free_udp_port(),
            ["-s", "1002", "-au", "caller", "-ap", "caller-secret", "-m", "1"],
            timeout=140,
        )
        self.assertEqual(code, 0, (out + err).decode("utf-8", "replace")[-3000:])
        out, err, code = yield callee
        self.assertEqual(code, 0, (out + err).decode("utf-8", "replace")[-3000:])
        rows = yield self.pbx.context.store.run_query(
            "SELECT status_code, hangup_reason, answer_time, end_time, sip_flow FROM call_records"
        )
        self.assertEqual([(r[0], r[1]) for r in rows], [(200, "sessionExpired")])
        status, reason, answered, ended, flow = rows[0]
        self.assertTrue(59.0 <= ended - answered <= 63.0, ended - answered)
        items = json.loads(flow)
        b_invite = next(i["message"] for i in items if i["leg"] == "b" and i["message"].startswith("INVITE "))
        self.assertIn("Session-Expires: 1800\r\n", b_invite)
        byes = [i for i in items if i["direction"] == "out" and i["message"].startswith("BYE ")]
        self.assertEqual(sorted(i["leg"] for i in byes), ["a", "b"])
