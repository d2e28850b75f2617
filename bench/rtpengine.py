#!/usr/bin/env python3
"""
rtpengine beside the built-in relay: the same G.711 load (bench/relay.py's
generator: 50 packets per second each way per call, 20 ms apart), the same
ramp of concurrent calls, in the same run: the loopback reference, the
built-in relay, then a userspace rtpengine (Debian rtpengine-daemon, no
kernel module), each under the same scheduling (--pin: both on the first
CPU, the generator on the others; --realtime: SCHED_FIFO, as
bench/relay.py).

    .venv/bin/python bench/rtpengine.py                      # all three ramps
    .venv/bin/python bench/rtpengine.py --only rtpengine --calls 500
    .venv/bin/python bench/rtpengine.py --json

Each rtpengine step starts a fresh daemon (``--num-threads`` worker threads,
on the relay CPU with --pin) and sets every call up over the ng protocol the way
L{rustpbx_py.media.rtpengine} does (offer from the caller's tag, answer
from the callee's, trust-address, origin and session c= replaced); the
packets then never touch Python.  "relayed_pps" for rtpengine is what the
generator got back per second; its CPU is the daemon's (all threads)
from /proc.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from typing import Callable, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import relay as relay_bench  # noqa: E402  (bench/relay.py)

from rustpbx_py.media import bencode  # noqa: E402

Address = tuple[str, int]
_AUDIO = re.compile(rb"m=audio (\d+) ")


def _free_udp_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class RtpengineProcess:
    """A userspace rtpengine on 127.0.0.1, as the generator's C{setup}."""

    def __init__(self, start: int, end: int, cpu: Optional[int], threads: int = 2,
                 realtime: bool = False) -> None:
        binary = shutil.which("rtpengine")
        if binary is None:
            raise SystemExit("rtpengine is not installed (Debian: apt install rtpengine-daemon)")
        self.ng_port = _free_udp_port()
        args = [binary, "--foreground", "--config-file=none", "--table=-1", "--interface=127.0.0.1",
                f"--listen-ng=127.0.0.1:{self.ng_port}", f"--port-min={start}", f"--port-max={end}",
                "--log-stderr", "--log-level=3", f"--num-threads={threads}", "--delete-delay=0",
                "--timeout=600", "--max-sessions=100000"]

        def pin() -> None:
            # set before exec: every thread rtpengine starts inherits both
            if cpu is not None and hasattr(os, "sched_setaffinity"):
                os.sched_setaffinity(0, {cpu})
            if realtime:
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))

        import tempfile
        self.log = tempfile.TemporaryFile()     # never a pipe: a full pipe would stall the daemon
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self.log,
                                        preexec_fn=pin)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.prefix = os.urandom(4).hex()
        self.count = 0
        for _ in range(50):
            try:
                self.ng({"command": "ping"})
                break
            except TimeoutError:
                if self.process.poll() is not None:
                    self.log.seek(0)
                    raise SystemExit("rtpengine exited: " + self.log.read().decode()[-2000:])
        else:
            raise SystemExit("rtpengine does not answer ng pings")

    def ng(self, command: dict, tries: int = 10) -> dict:
        self.count += 1
        cookie = f"{self.prefix}_{self.count}".encode()
        data = cookie + b" " + bencode.encode(command)
        for _ in range(tries):
            self.sock.sendto(data, ("127.0.0.1", self.ng_port))
            try:
                while True:
                    reply = self.sock.recv(65536)
                    got, _, body = reply.partition(b" ")
                    if got == cookie:
                        answer = bencode.decode(body)
                        if answer.get("result") not in (b"ok", b"pong"):
                            raise RuntimeError(f"rtpengine: {answer}")
                        return answer
            except (TimeoutError, socket.timeout):
                continue
        raise TimeoutError("rtpengine did not answer")

    def setup(self, endpoints: list[tuple[Address, Address]]) -> list[tuple[Address, Address]]:
        targets = []
        t0 = time.monotonic()
        for n, (caller, callee) in enumerate(endpoints):
            call = f"bench-{self.prefix}-{n}"
            common = {"call-id": call, "flags": ["trust-address"], "replace": ["origin", "session-connection"],
                      "ICE": "remove", "DTLS": "off"}
            offer = self.ng({**common, "command": "offer", "from-tag": "a",
                             "sdp": relay_bench._sdp(tuple(caller), n)})
            answer = self.ng({**common, "command": "answer", "from-tag": "a", "to-tag": "b",
                              "sdp": relay_bench._sdp(tuple(callee), n)})
            to_callee = int(_AUDIO.search(answer["sdp"]).group(1))   # the port facing the caller
            to_caller = int(_AUDIO.search(offer["sdp"]).group(1))    # the port facing the callee
            targets.append((("127.0.0.1", to_callee), ("127.0.0.1", to_caller)))
        self.setup_seconds = time.monotonic() - t0
        return targets

    def cpu_seconds(self) -> float:
        """utime + stime of the daemon, all threads."""
        with open(f"/proc/{self.process.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float:
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
        return 0.0

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.sock.close()
        self.log.seek(0)
        self.errors = self.log.read().decode("utf-8", "replace").splitlines()
        self.log.close()


def measure_rtpengine(calls: int, seconds: float, ports: tuple[int, int], cpu: Optional[int],
                      threads: int = 2, realtime: bool = False) -> dict:
    """One step: a fresh daemon, C{calls} calls for C{seconds}; the row
    has the fields of bench/relay.py's measure_relay (loss counts packets
    never received or later than its LATE)."""
    daemon = RtpengineProcess(ports[0], ports[1], cpu, threads, realtime)
    try:
        result_box = {}

        def setup(endpoints):
            targets = daemon.setup(endpoints)
            result_box["cpu0"] = daemon.cpu_seconds()
            result_box["wall0"] = time.monotonic()
            return targets

        result = relay_bench.run_load(calls, setup, seconds)
        wall = time.monotonic() - result_box["wall0"]
        cpu = daemon.cpu_seconds() - result_box["cpu0"]
        rss = daemon.rss_mb()
    finally:
        daemon.close()
    return {"calls": calls, "offered_pps": round(result.offered_pps),
            "relayed_pps": round(result.received / result.seconds),
            "loss_pct": round(100 * result.lost_or_late, 3), "never_received": result.sent - result.received,
            "late": result.late, "mean_delay_ms": round(1000 * result.mean_delay, 2),
            "worst_delay_ms": round(1000 * result.worst_delay, 1), "relay_cpu_pct": round(100 * cpu / wall, 1),
            "generator_cpu_pct": round(100 * result.generator_cpu / wall, 1),
            "setup_calls_per_s": round(calls / daemon.setup_seconds) if daemon.setup_seconds else None,
            "relay_rss_mb": rss, "daemon_log_lines": len(daemon.errors)}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ports", default="20000-39999", help="RTP port range of the built-in relay")
    parser.add_argument("--rtpengine-ports", default="40000-59999", help="RTP port range of rtpengine")
    parser.add_argument("--threads", type=int, default=2, help="rtpengine --num-threads (on the relay CPU with --pin)")
    parser.add_argument("--calls", type=int, help="one step with this many calls (no ramp)")
    parser.add_argument("--steps", default="100,200,300,400,500,600,700,800,1000,1200,1500,2000,2500,3000",
                        help="calls per ramp step")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per step")
    parser.add_argument("--only", choices=("loopback", "builtin", "rtpengine"), action="append",
                        help="run only these ramps (repeatable); default all three")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--pin", action="store_true",
                        help="pin the relays to the first CPU and the generator to the others (quiet machine)")
    parser.add_argument("--realtime", action="store_true",
                        help="relays and generator under SCHED_FIFO (bench/relay.py --realtime)")
    args = parser.parse_args(argv)
    only = set(args.only or ("loopback", "builtin", "rtpengine"))
    ports = tuple(int(p) for p in args.ports.split("-"))
    rtpe_ports = tuple(int(p) for p in args.rtpengine_ports.split("-"))
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    relay_cpu = cpus[0] if cpus and args.pin else None
    if relay_cpu is not None and len(cpus) > 1:
        os.sched_setaffinity(0, set(cpus[1:]))        # the generator away from the relays' core
    steps = [args.calls] if args.calls else [int(s) for s in args.steps.split(",")]
    if args.realtime and not relay_bench._realtime():
        args.realtime = False

    def show(kind: str) -> Callable[[dict], None]:
        return (lambda row: None) if args.json else (lambda row: print(kind, json.dumps(row), flush=True))

    summary: dict = {"cpus": len(cpus), "relay_cpu": relay_cpu, "realtime": args.realtime,
                     "seconds_per_step": args.seconds}
    ramps = (
        ("loopback", lambda calls: relay_bench.measure_loopback(calls, args.seconds)),
        ("builtin", lambda calls: relay_bench.measure_relay(calls, args.seconds, ports, relay_cpu,
                                                            realtime=args.realtime)),
        ("rtpengine", lambda calls: measure_rtpengine(calls, args.seconds, rtpe_ports, relay_cpu,
                                                      args.threads, args.realtime)),
    )
    for name, measure in ramps:
        if name not in only:
            continue
        rows, best = relay_bench.ramp(measure, steps, report=show(name))
        summary[name] = rows
        summary[f"{name}_max_calls"] = best
        summary[f"{name}_max_pps"] = max((r.get("relayed_pps", r["offered_pps"]) for r in rows if r["pass"]), default=0)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print("max concurrent G.711 calls under 0.1 % loss: " + ", ".join(
            f"{name} {summary.get(name + '_max_calls')} ({summary.get(name + '_max_pps')} packets/s)"
            for name, _ in ramps if name in only))
    return 0


if __name__ == "__main__":
    sys.exit(main())
