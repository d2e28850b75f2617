"""
Calls through trunks with SIPp peers: an outbound call leaves through a
route and a trunk whose carrier challenges with 407; a call from a trunk's
inbound host reaches a registered user without being challenged.
"""

from __future__ import annotations

import json

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from rustpbx_py.test.interop.support import SippMixin, call_pbx_toml, free_udp_port, require_tool, start_pbx_toml

TRUNK_TOML = call_pbx_toml() + """
[proxy.trunks.carrier]
dest = "sip:127.0.0.1:{carrier_port}"
username = "carrier"
password = "carrier-secret"
direction = "outbound"

[proxy.trunks.provider]
dest = "sip:127.0.0.2:5060"
inbound_hosts = ["127.0.0.2"]
direction = "inbound"

[[proxy.routes]]
name = "to-carrier"
priority = 10
match = {{ "to.user" = "^9([0-9]+)$" }}
rewrite = {{ "to.user" = "{{1}}" }}
dest = "carrier"
"""


class TrunkCallTests(SippMixin, TestCase):
    """Trunks, for real."""

    timeout = 120

    @defer.inlineCallbacks
    def start(self):
        self.sipp = require_tool("sipp")
        self.carrier_port = free_udp_port()
        self.pbx = yield start_pbx_toml(self, TRUNK_TOML.format(carrier_port=self.carrier_port))
        self.port = self.pbx.ports["UDP"]

    @defer.inlineCallbacks
    def test_outbound_through_challenging_carrier(self):
        """A call to 9555 matches the route, is rewritten to 555 and leaves
        through the carrier trunk, which challenges with 407; the PBX answers
        with the trunk's credentials and the call completes."""
        yield self.start()
        carrier = self.sipp_run("carrier_uas_auth.xml", self.carrier_port, ["-m", "1"], remote=False)
        out, err, code = yield self.sipp_run(
            "call_uac.xml",
            free_udp_port(),
            ["-s", "9555", "-au", "caller", "-ap", "caller-secret", "-m", "1"],
        )
        self.assertEqual(code, 0, (out + err).decode("utf-8", "replace")[-3000:])
        out, err, code = yield carrier
        self.assertEqual(code, 0, (out + err).decode("utf-8", "replace")[-3000:])
        rows = yield self.pbx.context.store.run_query(
            "SELECT route, trunk, direction, status_code, hangup_reason, sip_flow FROM call_records"
        )
        self.assertEqual([r[:5] for r in rows], [("to-carrier", "carrier", "outbound", 200, "byCaller")])
        flow = json.loads(rows[0][5])
        invites = [m["message"] for m in flow if m["leg"] == "b" and m["direction"] == "out" and m["message"].startswith("INVITE sip:555@127.0.0.1")]
        self.assertEqual(len(invites), 2)
        self.assert_valid_digest(invites[1], "carrier", "carrier-secret")

    def assert_valid_digest(self, text: str, username: str, password: str) -> None:
        """The Proxy-Authorization of C{text} is right for the password."""
        from rustpbx_py.sip.digest import compute_ha1, compute_response
        from rustpbx_py.sip.headers import parse_auth_params
        from rustpbx_py.sip.message import parse_message

        request = parse_message(text.encode())
        _, params = parse_auth_params(request.get("proxy-authorization"))
        self.assertEqual(params["username"], username)
        ha1 = compute_ha1("MD5", username, params["realm"], password)
        expected = compute_response(
            "MD5", ha1, "INVITE", params["uri"], params["nonce"], params.get("nc"), params.get("cnonce"), params.get("qop")
        )
        self.assertEqual(params["response"], expected)
        self.assertEqual(params["uri"], request.uri)

    @defer.inlineCallbacks
    def test_inbound_from_trunk_host(self):
        """A call from the provider's inbound host reaches the registered
        user without a 407 challenge."""
        yield self.start()
        self.callee_port = free_udp_port()
        yield self.register_callee(self.callee_port)
        callee = self.sipp_run("call_uas.xml", self.callee_port, ["-m", "1"], remote=False)
        # The provider's address: SIPp binds 127.0.0.2 (the whole of
        # 127.0.0.0/8 is loopback).
        out, err, code = yield self.sipp_run(
            "call_uac_noauth.xml", free_udp_port(), ["-s", "1002", "-m", "1"], local_ip="127.0.0.2"
        )
        self.assertEqual(code, 0, (out + err).decode("utf-8", "replace")[-3000:])
        out, err, code = yield callee
        self.assertEqual(code, 0, (out + err).decode("utf-8", "replace")[-3000:])
        rows = yield self.pbx.context.store.run_query("SELECT trunk, direction, status_code FROM call_records")
        self.assertEqual(list(rows), [("provider", "inbound", 200)])
