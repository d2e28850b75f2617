"""
Trunk registration with a real SIPp registrar: the PBX REGISTERs a trunk
with C{register_enabled}, answers the 401 with the trunk's credentials,
refreshes before the (short) granted expiry, and unregisters when the
service stops.
"""

from __future__ import annotations

import os

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from rustpbx_py.config import load_config
from rustpbx_py.server import PbxService
from rustpbx_py.test.interop.support import SippMixin, free_udp_port, loopback_web, require_tool

TOML = """
[proxy]
addr = "127.0.0.1"
udp_port = 0

[proxy.trunks.carrier]
dest = "sip:127.0.0.1:{carrier_port}"
username = "carrier"
password = "carrier-secret"
register_enabled = true
register_expires = 1
"""


def start_stoppable(testcase, toml_text: str):
    """
    Start a PBX from C{toml_text}; the test may stop it itself (the
    cleanup only stops a service still running).  Fires with the service.
    """
    base = os.path.abspath(testcase.mktemp())
    os.makedirs(base)
    path = os.path.join(base, "pbx.toml")
    with open(path, "w") as f:
        f.write(f'database_url = "sqlite:///{base}/pbx.sqlite3"\n' + toml_text)
    service = PbxService(loopback_web(load_config(path), toml_text), reactor)
    service.startService()
    testcase.addCleanup(lambda: service.stopService() if service.running else None)
    service.database_url = f"sqlite:///{base}/pbx.sqlite3"
    return service.ready


class TrunkRegisterInteropTests(SippMixin, TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_register_refresh_unregister(self):
        """
        With register_expires = 1 (the smallest the config allows) the SIPp
        registrar sees: a REGISTER asking for 1 s, which it challenges; the
        answer with Authorization for user "carrier", granted 1 s; the
        refresh half a second later, granted 3600 s; and, when the service
        stops, the REGISTER with Expires: 0.  SIPp's scenario checks each
        and exits 0.
        """
        self.sipp = require_tool("sipp")
        carrier_port = free_udp_port()
        carrier = self.sipp_run("carrier_register_uas.xml", carrier_port, ["-m", "1"], remote=False, timeout=50)
        pbx = yield start_stoppable(self, TOML.format(carrier_port=carrier_port))
        module = next(m for m in pbx.modules if m.name == "call")
        refreshed = defer.Deferred()

        def watch(registration):
            if registration.registrations == 2 and not refreshed.called:
                refreshed.callback(registration)

        module.trunk_registrar.observers.append(watch)
        registration = yield refreshed
        self.assertEqual((registration.state, registration.expires), ("registered", 3600))
        yield pbx.stopService()
        self.assertEqual(registration.state, "unregistered")
        out, err, code = yield carrier
        self.assertEqual(code, 0, (out + err).decode("utf-8", "replace")[-3000:])
