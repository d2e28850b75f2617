"""
Reliable provisional responses (RFC 3262) through the B2BUA between SIPp
agents that both do 100rel: the callee's reliable 183 reaches the caller
reliably (with the PBX's own RSeq), the caller's PRACK reaches the callee
(with the callee's RSeq in RAck), and the PRACK's 200 comes back.
"""

from __future__ import annotations

import json

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from rustpbx_py.test.interop.support import SippMixin, free_udp_port, require_tool, start_pbx_toml
from rustpbx_py.test.interop.test_session_timer import PBX_TOML


class PrackInteropTests(SippMixin, TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_prack_end_to_end(self):
        """
        Both scenarios check what they receive (Supported: 100rel at the
        callee, Require: 100rel and an RSeq at the caller, RAck 42 1 INVITE
        at the callee, 200 to the PRACK at the caller) and exit 0; the
        call is then answered and ended by the caller.
        """
        self.sipp = require_tool("sipp")
        self.pbx = yield start_pbx_toml(self, PBX_TOML)
        self.port = self.pbx.ports["UDP"]
        callee_port = free_udp_port()
        yield self.register_callee(callee_port)
        callee = self.sipp_run("prack_uas.xml", callee_port, ["-m", "1"], remote=False, timeout=50)
        out, err, code = yield self.sipp_run(
            "prack_uac.xml", free_udp_port(), ["-s", "1002", "-au", "caller", "-ap", "caller-secret", "-m", "1"], timeout=50
        )
        self.assertEqual(code, 0, (out + err).decode("utf-8", "replace")[-3000:])
        out, err, code = yield callee
        self.assertEqual(code, 0, (out + err).decode("utf-8", "replace")[-3000:])
        rows = yield self.pbx.context.store.run_query("SELECT status_code, hangup_reason, sip_flow FROM call_records")
        self.assertEqual([(r[0], r[1]) for r in rows], [(200, "byCaller")])
        pracks = [i["leg"] for i in json.loads(rows[0][2]) if i["message"].startswith("PRACK ")]
        self.assertEqual(pracks, ["a", "b"])
