"""
pjsua2 (pjsip, from the C{pjsua2-python} wheel) over TLS: two password
users register to the PBX's TLS listener, verifying its certificate, and
one calls the other through it (answered, audio on pjsip's null device,
hung up by the caller).  Each user agent is a child process running
C{pjsua2_tls_ua.py}.
"""

from __future__ import annotations

import json
import os
import sys

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import SkipTest, TestCase

from rustpbx_py.test.interop.support import run_tool, start_pbx_toml
from rustpbx_py.test.interop.test_jssip_node import USERS
from rustpbx_py.test.tls import write_self_signed

SCRIPT = os.path.join(os.path.dirname(__file__), "pjsua2_tls_ua.py")

PBX = """
ssl_certificate = "{cert}"
ssl_private_key = "{key}"

[proxy]
addr = "127.0.0.1"
udp_port = 0
tls_port = 0
""" + USERS


class Pjsua2TlsTests(TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_register_and_call_over_tls(self):
        """bob registers over TLS and waits; alice registers and calls him;
        he answers, she hangs up: both child processes report every step
        and exit 0, and the PBX saw their TLS connections."""
        try:
            import pjsua2  # noqa: F401
        except ImportError:
            raise SkipTest("pjsua2-python is not installed (make test installs the test extras)")
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        cert, key = write_self_signed(base, "127.0.0.1")
        pbx = yield start_pbx_toml(self, PBX.format(cert=cert, key=key))
        port = pbx.ports["TLS"]
        ready = os.path.join(base, "callee-ready")

        def ua(**options):
            options.update(port=port, ca=cert)
            return run_tool([sys.executable, SCRIPT, json.dumps(options)], timeout=60, cwd=base)

        callee = ua(role="callee", user="bob", password="bob-secret", ready_file=ready)
        for _ in range(300):
            if os.path.exists(ready) or callee.called:
                break
            yield task.deferLater(reactor, 0.1, lambda: None)
        self.assertTrue(os.path.exists(ready), "the callee did not register")
        flows = [f for f in pbx.core.transports.flows if f.startswith("tls:")]
        self.assertEqual(len(flows), 1, flows)
        caller = yield ua(role="caller", user="alice", password="alice-secret", callee="bob")
        callee = yield callee
        reports = {}
        for name, (out, err, code) in (("caller", caller), ("callee", callee)):
            lines = [line for line in out.decode("utf-8", "replace").splitlines() if line.startswith("{")]
            self.assertTrue(lines, (out + err).decode("utf-8", "replace")[-3000:])
            reports[name] = json.loads(lines[-1])
            self.assertEqual(code, 0, (name, reports[name], err.decode("utf-8", "replace")[-2000:]))
        self.assertEqual(
            reports["caller"]["steps"],
            ["registered", "CALLING 0", "CONNECTING 200", "CONFIRMED 200", "DISCONNECTED 200"],
        )
        self.assertEqual(reports["callee"]["steps"][:2], ["registered", "incoming"])
        self.assertIn("CONFIRMED 200", reports["callee"]["steps"])
        self.assertEqual(reports["callee"]["steps"][-1], "DISCONNECTED 200")
