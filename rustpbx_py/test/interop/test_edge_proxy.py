"""
Kamailio as a record-routing edge proxy in front of the PBX (issue 11).

The test writes a minimal kamailio.cfg: REGISTERs get a Path (with the
phone's received address) and go to the PBX; every new request from a
phone is record-routed and relayed to the PBX; requests with a Route
(in-dialog ones, and the PBX's INVITEs along a registration's Path) are
loose-routed and logged.  Two SIPp phones register through it and call
each other both ways.  A call only completes if the PBX copied the edge's
Record-Route into its 200 (RFC 3261 12.1.1): without it the caller's ACK
and BYE would carry no Route, and this edge refuses in-dialog requests
that are not routed through it (404).  The edge's log then shows the
caller's ACK and BYE, and the PBX's BYE to the callee, passing through.
"""

from __future__ import annotations

import os
import shutil
import signal

from twisted.internet import defer, error, protocol, reactor, task
from twisted.trial.unittest import SkipTest, TestCase

from rustpbx_py.test.interop.support import SippMixin, call_pbx_toml, free_udp_port, require_tool, start_pbx_toml

KAMAILIO_CFG = """#!KAMAILIO
# Written by rustpbx_py/test/interop/test_edge_proxy.py: a record-routing
# edge in front of the PBX at 127.0.0.1:{pbx_port}.
debug=1
log_stderror=yes
children=1
auto_aliases=no
dns=no
rev_dns=no
use_dns_cache=off
listen=udp:127.0.0.1:{port}

loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "path.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"

# A Route taken from a Path with ;received= goes to that address.
modparam("path", "use_received", 1)

request_route {{
	if (!mf_process_maxfwd_header("10")) {{
		sl_send_reply("483", "Too Many Hops");
		exit;
	}}
	if (is_method("REGISTER")) {{
		add_path_received();
		$du = "sip:127.0.0.1:{pbx_port}";
		t_relay();
		exit;
	}}
	if (!has_totag() && $si == "127.0.0.1" && $sp == {pbx_port}) {{
		# A new request of the PBX along a registration's Path: the Route
		# is ours, its ;received= is where the phone is.
		loose_route();
		xlog("L_NOTICE", "EDGE routed $rm $ru from $si:$sp to $du\\n");
		record_route();
		t_relay();
		exit;
	}}
	if (has_totag() && loose_route()) {{
		xlog("L_NOTICE", "EDGE routed $rm $ru from $si:$sp\\n");
		t_relay();
		exit;
	}}
	if (has_totag()) {{
		if (is_method("ACK")) {{
			if (t_check_trans()) {{
				t_relay();
			}}
			exit;
		}}
		xlog("L_NOTICE", "EDGE unrouted $rm $ru from $si:$sp\\n");
		sl_send_reply("404", "Not routed through this edge");
		exit;
	}}
	if (is_method("CANCEL")) {{
		if (t_check_trans()) {{
			t_relay();
		}}
		exit;
	}}
	t_check_trans();
	record_route();
	$du = "sip:127.0.0.1:{pbx_port}";
	t_relay();
}}
"""


class _Kamailio(protocol.ProcessProtocol):
    """Kamailio in the foreground; its log (stderr) kept in memory."""

    def __init__(self) -> None:
        self.log = b""
        self.ended = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.log += data

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        self.ended.callback(None)

    def text(self) -> str:
        return self.log.decode("utf-8", "replace")


class EdgeProxyTests(SippMixin, TestCase):
    """SIPp phones -> Kamailio (record_route, Path) -> PBX, calling both ways."""

    timeout = 180

    @defer.inlineCallbacks
    def start_kamailio(self, pbx_port: int):
        exe = shutil.which("kamailio") or ("/usr/sbin/kamailio" if os.path.exists("/usr/sbin/kamailio") else None)
        if exe is None:
            raise SkipTest("kamailio is not installed (.ci/run installs it)")
        rundir = os.path.abspath(self.mktemp())
        os.makedirs(rundir)
        port = free_udp_port()
        cfg = os.path.join(rundir, "kamailio.cfg")
        with open(cfg, "w") as f:
            f.write(KAMAILIO_CFG.format(port=port, pbx_port=pbx_port))
        args = [exe, "-f", cfg, "-DD", "-E", "-Y", rundir, "-P", os.path.join(rundir, "kamailio.pid"), "-m", "64", "-M", "8"]
        if os.geteuid() == 0:
            args += ["-u", "root", "-g", "root"]
        self.kamailio = _Kamailio()
        process = reactor.spawnProcess(self.kamailio, exe, args, env=dict(os.environ), path=rundir)

        def stop():
            try:
                process.signalProcess(signal.SIGTERM)
            except error.ProcessExitedAlready:
                return None
            return self.kamailio.ended

        self.addCleanup(stop)
        # Kamailio parses its config and forks in well under a second; the
        # REGISTERs retransmit anyway.
        for _ in range(50):
            yield task.deferLater(reactor, 0.1, lambda: None)
            if b"ERROR" in self.kamailio.log or self.kamailio.ended.called:
                break
            if os.path.exists(os.path.join(rundir, "kamailio.pid")):
                break
        self.assertFalse(self.kamailio.ended.called, self.kamailio.text()[-3000:])
        return port

    @defer.inlineCallbacks
    def register(self, user: str, password: str, port: int):
        out, err, code = yield self.sipp_run("call_register.xml", port, ["-s", user, "-au", user, "-ap", password, "-m", "1"])
        self.assertEqual(code, 0, (out + err).decode("utf-8", "replace")[-2000:] + self.kamailio.text()[-2000:])

    @defer.inlineCallbacks
    def call(self, caller: str, password: str, callee: str, callee_port: int):
        """C{caller} calls C{callee} (who answers on C{callee_port}) through
        the edge; returns the port the caller sent from."""
        answering = self.sipp_run("edge_uas.xml", callee_port, ["-m", "1"], remote=False, timeout=60)
        caller_port = free_udp_port()
        calling = self.sipp_run(
            "edge_uac.xml",
            caller_port,
            ["-s", callee, "-au", caller, "-ap", password, "-key", "user", caller, "-m", "1"],
            timeout=60,
        )
        # Both ends finish (or time out) before anything is judged.
        (_, (out, err, code)), (_, (cout, cerr, ccode)) = yield defer.DeferredList([calling, answering])
        self.assertEqual(code, 0, (out + err).decode("utf-8", "replace")[-3000:] + self.kamailio.text()[-3000:])
        self.assertEqual(ccode, 0, (cout + cerr).decode("utf-8", "replace")[-3000:])
        return caller_port

    @defer.inlineCallbacks
    def test_calls_both_ways_through_edge(self):
        """Both phones register through Kamailio (with Path); caller -> 1002
        and 1002 -> caller complete; for each call Kamailio routed the
        caller's ACK and BYE (its Record-Route was in the PBX's 200) and
        the PBX's BYE to the callee (the callee's route set); the PBX saw
        the registrations from the edge with the Path kept."""
        self.sipp = require_tool("sipp")
        pbx = yield start_pbx_toml(self, call_pbx_toml())
        pbx_port = pbx.ports["UDP"]
        self.port = yield self.start_kamailio(pbx_port)
        phones = {"caller": ("caller-secret", free_udp_port()), "1002": ("callee-secret", free_udp_port())}
        for user, (password, port) in phones.items():
            yield self.register(user, password, port)
            (binding,) = pbx.context.locator.lookup(f"{user}@127.0.0.1")
            self.assertIn(f"127.0.0.1:{self.port}", " ".join(binding.path))
        for caller, callee in (("caller", "1002"), ("1002", "caller")):
            password = phones[caller][0]
            caller_port = yield self.call(caller, password, callee, phones[callee][1])
            log = self.kamailio.text()
            for method in ("ACK", "BYE"):
                self.assertIn(f"EDGE routed {method} sip:", log)
                self.assertTrue(
                    any(f"EDGE routed {method}" in line and line.endswith(f"from 127.0.0.1:{caller_port}") for line in log.splitlines()),
                    f"{caller}'s {method} did not pass through the edge:\n{log[-3000:]}",
                )
            for method in ("INVITE", "ACK", "BYE"):
                # The PBX's INVITE along the callee's Path, then its ACK
                # and BYE along the callee's route set.
                self.assertTrue(
                    any(f"EDGE routed {method}" in line and f"from 127.0.0.1:{pbx_port}" in line for line in log.splitlines()),
                    f"the PBX's {method} did not pass through the edge:\n{log[-3000:]}",
                )
        self.assertNotIn("EDGE unrouted", self.kamailio.text())
        rows = yield pbx.context.store.run_query("SELECT status_code, hangup_reason FROM call_records")
        self.assertEqual([tuple(r) for r in rows], [(200, "byCaller"), (200, "byCaller")])
