"""
Connection limits against a real flood: a child process opens 2,000 idle
TCP connections to the PBX from 127.0.0.1; the PBX keeps 200 of them
(tcp_max_connections_per_ip), closes the rest at once with one warning
instead of a log line each, and SIPp still registers over TCP from
127.0.0.2 while the flood holds its connections.
"""

from __future__ import annotations

import json
import sys

from twisted.internet import defer, reactor, task
from twisted.logger import eventAsText, globalLogPublisher
from twisted.trial.unittest import TestCase

from rustpbx_py.test.interop.support import SippMixin, free_udp_port, require_tool, run_tool, start_pbx_toml

FLOOD = r"""
import json, resource, select, socket, sys, time
count, port, hold = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
ready = sys.argv[4] if len(sys.argv) > 4 else None
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
socks = {}
# In batches smaller than the listen backlog, so that no SYN is dropped
# and retried seconds later: the flood lands at once.
while len(socks) < count:
    batch = []
    for _ in range(min(40, count - len(socks))):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        socks[s.fileno()] = s
        batch.append(s)
    poller = select.poll()
    for s in batch:
        poller.register(s, select.POLLOUT)
    pending, deadline = {s.fileno() for s in batch}, time.monotonic() + 5
    while pending and time.monotonic() < deadline:
        for fd, _ in poller.poll(100):
            pending.discard(fd)
            poller.unregister(fd)
def closed_by_peer():
    poller = select.poll()
    for s in socks.values():
        poller.register(s, select.POLLIN)
    shut = 0
    for fd, _ in poller.poll(0):
        try:
            if socks[fd].recv(1) == b"":
                shut += 1
        except OSError:
            shut += 1
    return shut
print("connected", flush=True)
if ready:
    open(ready, "w").close()
time.sleep(hold / 2)
first = closed_by_peer()
time.sleep(hold / 2)
print(json.dumps({"opened": len(socks), "closed_early": first, "closed_late": closed_by_peer()}), flush=True)
"""

PBX = """
[proxy]
addr = "0.0.0.0"
udp_port = 0
tcp_port = 0
# Off here, so the held connections stay for the whole test (the unit
# tests drive that timeout with a clock).
tcp_first_message_timeout = 0

[[proxy.user_backends]]
type = "memory"

[[proxy.user_backends.users]]
username = "1002"
password = "callee-secret"
"""


class ConnectionFloodTests(SippMixin, TestCase):
    timeout = 150

    @defer.inlineCallbacks
    def test_flood_from_one_address_does_not_stop_another(self):
        """2,000 idle connections from 127.0.0.1: 200 held, 1,800 closed at
        once, one "refusing" warning; SIPp registers (digest) over TCP from
        127.0.0.2 meanwhile; no EMFILE."""
        self.sipp = require_tool("sipp")
        warnings = []

        def observe(event):
            text = eventAsText(event, includeTimestamp=False, includeSystem=False)
            if "refusing TCP connections" in text or "EMFILE" in text or "Could not accept" in text:
                warnings.append(text)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        pbx = yield start_pbx_toml(self, PBX)
        limits = pbx.core.transports.stream_factory["TCP"].limits
        flood = run_tool([sys.executable, "-c", FLOOD, "2000", str(pbx.ports["TCP"]), "30"], timeout=90)
        for _ in range(1200):
            if limits.refused >= 1800:
                break
            yield task.deferLater(reactor, 0.05, lambda: None)
        if limits.refused < 1800:
            out, err, code = yield flood
            self.fail(f"flood: counts {limits.counts}, refused {limits.refused}, open {limits.open}; flood said {out!r} {err[-2000:]!r} {code}")
        self.assertEqual(limits.counts.get("127.0.0.1"), 200)
        self.assertEqual(limits.refused, 1800)

        self.port = pbx.ports["TCP"]
        out, err, code = yield self.sipp_run(
            "call_register.xml", free_udp_port(),
            ["-t", "t1", "-s", "1002", "-au", "1002", "-ap", "callee-secret", "-m", "1"],
            local_ip="127.0.0.2", timeout=30,
        )
        self.assertEqual(code, 0, (out + err).decode("utf-8", "replace")[-2000:])
        self.assertEqual(limits.counts.get("127.0.0.1"), 200)

        out, err, code = yield flood
        report = json.loads(out.decode().strip().splitlines()[-1])
        self.assertEqual(report["opened"], 2000, report)
        self.assertEqual(report["closed_early"], 1800, report)
        self.assertEqual(report["closed_late"], 1800, report)
        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn("127.0.0.1 holds 200 connections", warnings[0])
        for _ in range(100):
            if "127.0.0.1" not in limits.counts:
                break
            yield task.deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(limits.counts, {})


LOW_LIMIT = r"""
import resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
from twisted.scripts.twistd import run
sys.argv = ["twistd"] + sys.argv[1:]
run()
"""


def free_tcp_port() -> int:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class LowFileLimitTests(SippMixin, TestCase):
    """
    The PBX as the service runs it (twistd, its own process) with an
    open-files limit of 1,024, the usual default without systemd's
    LimitNOFILE: a flood of 2,000 connections would take every descriptor.
    """

    timeout = 240

    @defer.inlineCallbacks
    def run_pbx_and_flood(self, per_ip: int):
        """Start twistd with the limit, flood it from 127.0.0.1, register
        with SIPp from 127.0.0.2; (flood report, SIPp exit code, PBX log)."""
        import os

        self.sipp = require_tool("sipp")
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        tcp = free_tcp_port()
        config = os.path.join(base, "pbx.toml")
        with open(config, "w") as f:
            f.write(f'database_url = "sqlite:///{base}/pbx.sqlite3"\nhttp_addr = "127.0.0.1:0"\n' + PBX.replace("udp_port = 0", f"udp_port = {free_udp_port()}")
                    .replace("tcp_port = 0", f"tcp_port = {tcp}\ntcp_max_connections_per_ip = {per_ip}"))
        log = os.path.join(base, "pbx.log")
        pbx = run_tool([sys.executable, "-c", LOW_LIMIT, "-n", f"--pidfile={base}/pbx.pid", f"--logfile={log}", "pbx", "--config", config],
                       timeout=150, cwd=base)
        for _ in range(300):
            if os.path.exists(log) and "modules:" in open(log).read():
                break
            yield task.deferLater(reactor, 0.1, lambda: None)
        ready = os.path.join(base, "flood-connected")
        flood = run_tool([sys.executable, "-c", FLOOD, "2000", str(tcp), "40", ready], timeout=120)
        for _ in range(600):
            if os.path.exists(ready):
                break
            yield task.deferLater(reactor, 0.1, lambda: None)
        self.assertTrue(os.path.exists(ready), "the flood did not finish connecting")
        self.port = tcp
        out, err, sipp_code = yield self.sipp_run(
            "call_register.xml", free_udp_port(),
            ["-t", "t1", "-s", "1002", "-au", "1002", "-ap", "callee-secret", "-m", "1"],
            local_ip="127.0.0.2", timeout=20,
        )
        out, err, code = yield flood
        report = json.loads(out.decode().strip().splitlines()[-1])
        with open(os.path.join(base, "pbx.pid")) as f:
            os.kill(int(f.read().strip()), 15)
        yield pbx
        with open(log) as f:
            text = f.read()
        return report, sipp_code, text

    @defer.inlineCallbacks
    def test_per_source_cap_keeps_room(self):
        """With the default per-source cap the flood holds 200 connections
        and SIPp registers from 127.0.0.2; the log has one refusal warning
        and no accept() error."""
        report, sipp_code, text = yield self.run_pbx_and_flood(200)
        self.assertIn("open files limit 1024", text)
        self.assertEqual(report["opened"] - report["closed_early"], 200, report)
        self.assertEqual(sipp_code, 0, text[-3000:])
        self.assertEqual(text.count("refusing TCP connections"), 1, text[-3000:])
        self.assertNotIn("EMFILE", text)
        self.assertNotIn("Could not accept", text)

    @defer.inlineCallbacks
    def test_total_cap_refuses_cleanly(self):
        """Without a useful per-source cap (5,000) the flood reaches the
        total cap (1,024 less the 128 kept: 896 connections): everyone else
        is refused too, SIPp cannot register from 127.0.0.2 (why the
        per-source cap exists), but the refusals are clean: one warning
        naming tcp_max_connections, no accept() error, no EMFILE."""
        report, sipp_code, text = yield self.run_pbx_and_flood(5000)
        self.assertEqual(report["opened"] - report["closed_early"], 896, report)
        self.assertNotEqual(sipp_code, 0)
        self.assertEqual(text.count("refusing TCP connections"), 1, text[-3000:])
        self.assertIn("(proxy.tcp_max_connections)", text)
        self.assertNotIn("EMFILE", text)
        self.assertNotIn("Could not accept", text)
