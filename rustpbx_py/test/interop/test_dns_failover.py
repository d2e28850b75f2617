"""
RFC 3263 for real: a C{twisted.names} name server started by the test on
loopback serves NAPTR, SRV and A records for C{carrier.test}; the PBX asks
it (C{proxy.dns_servers}) for the trunk's host names.  A call through the
trunk meets a first SRV target (a SIPp UAS) that answers 503 and fails over
to the second, which answers; a call from the address of a trunk's
C{inbound_hosts} name is recognised as the trunk's.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.names import dns
from twisted.trial.unittest import TestCase

from rustpbx_py.test.dns_fakes import MemoryAuthority, serve_zone
from rustpbx_py.test.interop.support import SippMixin, call_pbx_toml, free_udp_port, require_tool, start_pbx_toml

TOML = call_pbx_toml(
    'dns_servers = ["127.0.0.1:{dns_port}"]',
    """
[proxy.trunks.carrier]
dest = "sip:carrier.test"
direction = "outbound"

[proxy.trunks.provider]
dest = "sip:192.0.2.1:5060"
inbound_hosts = ["edge.carrier.test"]
direction = "inbound"

[[proxy.routes]]
name = "to-carrier"
priority = 10
match = { "to.user" = "^9([0-9]+)$" }
rewrite = { "to.user" = "{1}" }
dest = "carrier"
""",
)


def zone(broken_port: int, good_port: int) -> MemoryAuthority:
    """carrier.test: NAPTR -> _sip._udp SRV -> a (priority 10, broken)
    then b (priority 20, answers); edge.carrier.test is 127.0.0.2."""
    return MemoryAuthority(
        "carrier.test",
        {
            "carrier.test": [dns.Record_NAPTR(10, 10, b"s", b"SIP+D2U", b"", b"_sip._udp.carrier.test", ttl=60)],
            "_sip._udp.carrier.test": [
                dns.Record_SRV(10, 0, broken_port, b"a.carrier.test", ttl=60),
                dns.Record_SRV(20, 0, good_port, b"b.carrier.test", ttl=60),
            ],
            "a.carrier.test": [dns.Record_A("127.0.0.1", ttl=60)],
            "b.carrier.test": [dns.Record_A("127.0.0.1", ttl=60)],
            "edge.carrier.test": [dns.Record_A("127.0.0.2", ttl=60)],
        },
    )


class DnsFailoverTests(SippMixin, TestCase):
    """Trunks located through a real name server."""

    timeout = 120

    @defer.inlineCallbacks
    def start(self, proxy_lines: str = ""):
        self.sipp = require_tool("sipp")
        self.broken_port, self.good_port = free_udp_port(), free_udp_port()
        server = serve_zone(zone(self.broken_port, self.good_port))
        self.addCleanup(server.stopListening)
        toml = TOML.replace("{dns_port}", str(server.getHost().port))
        self.pbx = yield start_pbx_toml(self, toml.replace("[proxy]\n", "[proxy]\n" + proxy_lines, 1))
        self.port = self.pbx.ports["UDP"]

    @defer.inlineCallbacks
    def test_failover_to_second_srv_target(self):
        """The call to 9555 goes to the first SRV target, which answers
        503; the PBX sends it to the second target, which answers, and
        the caller's call completes."""
        yield self.start()
        broken = self.sipp_run("call_uas_unavailable.xml", self.broken_port, ["-m", "1"], remote=False)
        good = self.sipp_run("call_uas.xml", self.good_port, ["-m", "1"], remote=False)
        out, err, code = yield self.sipp_run(
            "call_uac.xml", free_udp_port(), ["-s", "9555", "-au", "caller", "-ap", "caller-secret", "-m", "1"]
        )
        self.assertEqual(code, 0, (out + err).decode("utf-8", "replace")[-3000:])
        for uas in (broken, good):
            out, err, code = yield uas
            self.assertEqual(code, 0, (out + err).decode("utf-8", "replace")[-3000:])
        rows = yield self.pbx.context.store.run_query("SELECT trunk, direction, status_code FROM call_records")
        self.assertEqual(list(rows), [("carrier", "outbound", 200)])

    @defer.inlineCallbacks
    def test_failover_from_silent_target(self):
        """Nobody listens at the first SRV target (UDP: the PBX cannot see
        the ICMP error on its unconnected socket): the INVITE times out
        (timer B, 64*T1, shortened here to 3.2 s) and the call goes to the
        second target, which answers."""
        yield self.start("t1_timer = 50\nt1x64_timer = 3200\n")
        good = self.sipp_run("call_uas.xml", self.good_port, ["-m", "1"], remote=False)
        out, err, code = yield self.sipp_run(
            "call_uac.xml", free_udp_port(), ["-s", "9555", "-au", "caller", "-ap", "caller-secret", "-m", "1"]
        )
        self.assertEqual(code, 0, (out + err).decode("utf-8", "replace")[-3000:])
        out, err, code = yield good
        self.assertEqual(code, 0, (out + err).decode("utf-8", "replace")[-3000:])
        rows = yield self.pbx.context.store.run_query("SELECT trunk, status_code FROM call_records")
        self.assertEqual(list(rows), [("carrier", 200)])

    @defer.inlineCallbacks
    def test_inbound_host_by_name(self):
        """edge.carrier.test (127.0.0.2) in the provider's inbound_hosts:
        its call reaches the registered user without a challenge."""
        yield self.start()
        self.assertEqual(self.pbx.context.trunks.for_source("127.0.0.2"), "provider")
        callee_port = free_udp_port()
        yield self.register_callee(callee_port)
        callee = self.sipp_run("call_uas.xml", callee_port, ["-m", "1"], remote=False)
        out, err, code = yield self.sipp_run(
            "call_uac_noauth.xml", free_udp_port(), ["-s", "1002", "-m", "1"], local_ip="127.0.0.2"
        )
        self.assertEqual(code, 0, (out + err).decode("utf-8", "replace")[-3000:])
        out, err, code = yield callee
        self.assertEqual(code, 0, (out + err).decode("utf-8", "replace")[-3000:])
        rows = yield self.pbx.context.store.run_query("SELECT trunk, direction, status_code FROM call_records")
        self.assertEqual(list(rows), [("provider", "inbound", 200)])
