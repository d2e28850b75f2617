"""
JsSIP 3.x in node (the SIP stack of most browser softphones) against the
PBX over ws:// (ws_port) and wss:// (wss_port): two password users
register with digest, one calls the other, the callee answers, the caller
hangs up.  The script is C{interop/js/jssip_call.js}; node has no WebRTC,
so it offers and answers a fixed SDP and the test checks that each side
got the other's unchanged.
"""

from __future__ import annotations

import json
import os

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from rustpbx_py.test.interop.jssip import JS_DIR, require_js
from rustpbx_py.test.interop.support import run_tool, start_pbx_toml
from rustpbx_py.test.tls import self_signed_for

USERS = """
[[proxy.user_backends]]
type = "memory"

[[proxy.user_backends.users]]
username = "alice"
password = "alice-secret"

[[proxy.user_backends.users]]
username = "bob"
password = "bob-secret"
"""

PBX = """
ssl_certificate = "{cert}"
ssl_private_key = "{key}"

[proxy]
addr = "127.0.0.1"
udp_port = 0
ws_port = 0
wss_port = 0
""" + USERS


class JsSipNodeTests(TestCase):
    timeout = 90

    @defer.inlineCallbacks
    def setUp(self):
        self.node = require_js()
        self.cert, key = self_signed_for(self)
        self.pbx = yield start_pbx_toml(self, PBX.format(cert=self.cert, key=key))

    @defer.inlineCallbacks
    def run_jssip(self, url, call=True):
        options = {
            "url": url,
            "domain": "127.0.0.1",
            "caller": ["alice", "alice-secret"],
            "callee": ["bob", "bob-secret"],
            "call": call,
            "timeout_ms": 30000,
        }
        # The test certificate is trusted the way a deployment would trust
        # a private CA: NODE_EXTRA_CA_CERTS, no verification switched off.
        args = ["/usr/bin/env", f"NODE_EXTRA_CA_CERTS={self.cert}", self.node,
                os.path.join(JS_DIR, "jssip_call.js"), json.dumps(options)]
        out, err, code = yield run_tool(args, timeout=60, cwd=JS_DIR)
        text = (out + err).decode("utf-8", "replace")
        lines = [line for line in out.decode("utf-8", "replace").splitlines() if line.startswith("{")]
        self.assertTrue(lines, text[-3000:])
        result = json.loads(lines[-1])
        self.assertEqual(code, 0, text[-3000:])
        return result

    def assertCall(self, result):
        self.assertEqual([(r["user"], r["status"]) for r in result["registered"]], [("alice", 200), ("bob", 200)])
        self.assertEqual(
            result["steps"],
            ["callee: INVITE from alice", "caller: progress", "caller: confirmed", "caller: ended by local", "callee: ended by remote"],
        )
        self.assertIn("o=offerer ", result["callee_offer"])
        self.assertIn("m=audio ", result["callee_offer"])
        self.assertIn("o=answerer ", result["caller_answer"])

    @defer.inlineCallbacks
    def test_ws_register_and_call(self):
        """Over ws:// both register (digest with their passwords: the PBX
        challenges every REGISTER) and the call is set up, answered and hung up; each side got the
        other's SDP."""
        result = yield self.run_jssip(f"ws://127.0.0.1:{self.pbx.ports['WS']}/ws")
        self.assertCall(result)

    @defer.inlineCallbacks
    def test_wss_register_and_call(self):
        """The same over wss:// (wss_port), node verifying the PBX's
        certificate against the test CA."""
        result = yield self.run_jssip(f"wss://127.0.0.1:{self.pbx.ports['WSS']}/ws")
        self.assertCall(result)
