#!/usr/bin/env python3
"""
RTP relay benchmark: how many concurrent G.711 calls (20 ms packets, 50
packets per second each way) the built-in relay carries on one core with
under 0.1 % loss, and how many packets per second that is; beside the
same load generator looped back to itself without any relay (the ceiling
of the tool on this machine).

    .venv/bin/python bench/relay.py                       # ramp 100, 200, ... calls
    .venv/bin/python bench/relay.py --calls 500 --seconds 20 --profile /tmp/relay.prof
    .venv/bin/python bench/relay.py --json                # figures as JSON

Layout: this process is the load generator; the relay runs in a child
process (C{bench/relay.py --serve}) pinned to one CPU (the generator to
the other one when there are two), driven over its stdin/stdout with one
JSON line per command.  The child creates each call through the real
L{rustpbx_py.media.session.BuiltinEngine} offer/answer (SDP naming the
generator's sockets, latching on), so the packets take the production
path: latch check, RFC 3550 statistics, C{sendto}.

The generator (L{run_load}) is reusable for another relay (rtpengine):
it takes a C{setup} callable that receives the generator's endpoint
addresses of every call and returns where each side must send.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import select
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

Address = tuple[str, int]
Setup = Callable[[list[tuple[Address, Address]]], list[tuple[Address, Address]]]

PTIME = 0.020
PAYLOAD = b"\xd5" * 152            # 20 ms of G.711 A-law silence after the 8-byte send time
HEADER = struct.Struct("!BBHII")


# -- the load generator ------------------------------------------------------

@dataclass
class LoadResult:
    calls: int
    seconds: float
    sent: int
    received: int
    generator_cpu: float          # CPU seconds of the generator while it ran
    blocked: int = 0              # sends refused by the generator's own socket buffer
    late: int = 0                 # received more than LATE after they were sent
    worst_delay: float = 0.0
    mean_delay: float = 0.0

    @property
    def lost_or_late(self) -> float:
        """What a phone would miss: packets never received or too late."""
        return 0.0 if not self.sent else (max(0, self.sent - self.received) + self.late) / self.sent

    @property
    def loss(self) -> float:
        return 0.0 if not self.sent else max(0, self.sent - self.received) / self.sent

    @property
    def offered_pps(self) -> float:
        return self.sent / self.seconds


def _socket(rcvbuf: int = 4 << 20) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for option, size in ((socket.SO_RCVBUF, rcvbuf), (socket.SO_SNDBUF, rcvbuf)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, size)
        except OSError:
            pass
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


def run_load(calls: int, setup: Setup, seconds: float = 10.0, sockets_per_side: int = 8,
             drain: float = 0.5) -> LoadResult:
    """
    Run C{calls} bidirectional G.711 streams for C{seconds} and count
    what comes back.

    Each call has a caller side and a callee side; the generator's sockets
    (C{sockets_per_side} per side, shared round-robin by the calls) are
    its endpoints.  C{setup([(caller address, callee address), ...])}
    returns, per call, (where the caller sends, where the callee sends):
    the relay's two ports for that call, or for the reference the other
    side's own address.  Calls start spread over one 20 ms period (phones'
    clocks are not aligned), then each side sends a packet every 20 ms
    with its own SSRC, sequence number and timestamp.  Loss is counted
    over all calls after a short drain.
    """
    callers = [_socket() for _ in range(sockets_per_side)]
    callees = [_socket() for _ in range(sockets_per_side)]
    endpoints = [(callers[i % sockets_per_side].getsockname(),
                  callees[i % sockets_per_side].getsockname()) for i in range(calls)]
    targets = setup(endpoints)
    # one row per (call, side): socket, target, ssrc, seq, ts
    streams = []
    for i, (to_callee, to_caller) in enumerate(targets):
        streams.append([callers[i % sockets_per_side], tuple(to_callee), 2 * i + 1, 0, 0])
        streams.append([callees[i % sockets_per_side], tuple(to_caller), 2 * i + 2, 0, 0])
    slots = 20                                       # one slot per ms of the 20 ms period
    by_slot: list[list] = [[] for _ in range(slots)]
    for n, stream in enumerate(streams):
        by_slot[(n // 2) % slots].append(stream)
    poller = select.epoll()
    receivers = {s.fileno(): s for s in callers + callees}
    for fd in receivers:
        poller.register(fd, select.EPOLLIN)
    sent = received = blocked = 0
    delays = _Delays()
    pack = HEADER.pack
    stamp = _SENT_AT.pack
    header_bytes = 0x80
    cpu0 = time.process_time()
    start = time.monotonic()
    end = start + seconds
    slot = 0
    next_at = start
    while True:
        now = time.monotonic()
        if now >= next_at:
            if now >= end:
                break
            for stream in by_slot[slot]:
                sock, target, ssrc, seq, ts = stream
                try:
                    sock.sendto(pack(header_bytes, 8, seq, ts, ssrc) + stamp(now) + PAYLOAD, target)
                    sent += 1
                except BlockingIOError:
                    sent += 1                        # counted: lost at the sender's buffer
                    blocked += 1
                stream[3] = (seq + 1) & 0xFFFF
                stream[4] = (ts + 160) & 0xFFFFFFFF
            slot = (slot + 1) % slots
            next_at += PTIME / slots
            continue
        for fd, _ in poller.poll(max(0.0, next_at - now)):
            received += _drain(receivers[fd], delays)
    stop = time.monotonic() + drain
    while time.monotonic() < stop:
        for fd, _ in poller.poll(0.05):
            received += _drain(receivers[fd], delays)
    cpu = time.process_time() - cpu0
    poller.close()
    for sock in callers + callees:
        sock.close()
    return LoadResult(calls, seconds, sent, received, cpu, blocked, delays.late, delays.worst,
                      delays.total / max(1, received))


class _Delays:
    """One-way delays of the packets received: the send time rides in the
    first 8 bytes of the payload (the relay forwards payloads untouched)."""

    __slots__ = ("late", "worst", "total", "count")

    def __init__(self) -> None:
        self.late = 0            # packets later than LATE
        self.worst = 0.0
        self.total = 0.0
        self.count = 0


LATE = 0.100                     # a packet this late is as good as lost to a phone's jitter buffer
_SENT_AT = struct.Struct("!d")


def _drain(sock: socket.socket, delays: _Delays) -> int:
    count = 0
    recv = sock.recv
    now = time.monotonic()
    unpack = _SENT_AT.unpack_from
    while True:
        try:
            data = recv(2048)
        except BlockingIOError:
            return count
        count += 1
        delay = now - unpack(data, 12)[0]
        delays.total += delay
        if delay > delays.worst:
            delays.worst = delay
            if delay > LATE:
                delays.late += 1
        elif delay > LATE:
            delays.late += 1


def loopback(endpoints: list[tuple[Address, Address]]) -> list[tuple[Address, Address]]:
    """The reference set-up: each side sends straight to the other one."""
    return [(callee, caller) for caller, callee in endpoints]


# -- the relay under test (child process) -------------------------------------

@dataclass
class BenchPolicy:
    """What L{BuiltinEngine} reads of a call's media policy."""
    rtp_start_port: int
    rtp_end_port: int
    local_ip: str = "127.0.0.1"
    external_ip: Optional[str] = None
    latching: bool = True
    probation_packets: int = 6
    rtp_timeout: float = 0
    mode: str = "all"
    codecs: tuple = ("pcma",)
    strategy: str = "performance"
    srtp_b: Optional[bool] = None


def _sdp(address: Address, session: int) -> bytes:
    host, port = address
    return (f"v=0\r\no=bench {session} 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n"
            f"a=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\na=sendrecv\r\n").encode()


def serve(start: int, end: int, profile: Optional[str]) -> None:
    """
    The relay process: reads JSON commands on stdin, one a line, answers
    one JSON line each on stdout:

      {"setup": [[caller, callee], ...]}  -> {"targets": [[to_callee, to_caller], ...]}
      {"stats": true}                     -> {"cpu": s, "relayed": packets, "dropped": n, ...}
      {"teardown": true}                  -> {"closed": n}
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    from twisted.internet import epollreactor
    epollreactor.install()
    from twisted.internet import reactor
    from twisted.internet import stdio
    from twisted.protocols.basic import LineReceiver

    from rustpbx_py.media.session import BuiltinEngine
    from rustpbx_py.sip.sdp import SessionDescription

    engine = BuiltinEngine(reactor)
    policy = BenchPolicy(start, end)
    sessions = []
    profiler = None
    if profile:
        import cProfile
        profiler = cProfile.Profile()

    def answer_of(command: dict) -> dict:
        nonlocal sessions
        if "setup" in command:
            targets = []
            for caller, callee in command["setup"]:
                n = len(sessions)
                session = engine.session(f"bench-{n}", policy)
                sessions.append(session)
                offer = session.offer("a", SessionDescription.parse(_sdp(tuple(caller), n)), None)
                answer = session.answer("b", SessionDescription.parse(_sdp(tuple(callee), n)), None)
                offered, answered = offer.result, answer.result
                targets.append([[answered.connection.address, answered.media[0].port],
                                [offered.connection.address, offered.media[0].port]])
            if profiler is not None:
                profiler.enable()
            return {"targets": targets}
        if "stats" in command:
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(profile)
            usage = resource.getrusage(resource.RUSAGE_SELF)
            relayed = received = dropped = lost = errors = 0
            for session in sessions:
                for stream in session.streams:
                    for side in stream.sides.values():
                        relayed += side.sent.packets
                        received += side.received.packets
                        dropped += side.latch.dropped
                        lost += side.received.lost
                        errors += side.send_errors
            return {"cpu": usage.ru_utime + usage.ru_stime, "relayed": relayed, "received": received,
                    "dropped": dropped, "lost_in": lost, "send_errors": errors,
                    "max_rss_kb": usage.ru_maxrss}
        if "teardown" in command:
            closed = len(sessions)
            for session in sessions:
                session.close()
            sessions = []
            return {"closed": closed}
        return {"error": f"unknown command {command!r}"}

    class Control(LineReceiver):
        delimiter = b"\n"
        MAX_LENGTH = 1 << 26             # a set-up line names every call's addresses

        def lineReceived(self, line: bytes) -> None:
            self.sendLine(json.dumps(answer_of(json.loads(line))).encode())

        def connectionLost(self, reason) -> None:
            if reactor.running:
                reactor.stop()

    stdio.StandardIO(Control())
    reactor.run()


def _realtime(pid: int = 0) -> bool:
    """Run C{pid} (0: this process) under SCHED_FIFO, so that on a shared
    machine it runs whenever it has work, as on a core of its own (needs
    root or CAP_SYS_NICE; the kernel's RT throttling still leaves 5 % to
    the others)."""
    try:
        os.sched_setscheduler(pid, os.SCHED_FIFO, os.sched_param(10))
    except (AttributeError, PermissionError, OSError) as e:
        print(f"--realtime: not possible here ({e}); measuring under normal scheduling",
              file=sys.stderr)
        return False
    return True


class RelayProcess:
    """The relay child, as the generator's C{setup} and a stats source."""

    def __init__(self, start: int, end: int, cpu: Optional[int], profile: Optional[str],
                 python: Optional[str] = None, realtime: bool = False) -> None:
        command = [python or sys.executable, os.path.abspath(__file__), "--serve",
                   "--ports", f"{start}-{end}"]
        if profile:
            command += ["--profile", profile]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True, bufsize=1)
        if cpu is not None and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(self.process.pid, {cpu})
        if realtime:
            _realtime(self.process.pid)

    def ask(self, command: dict) -> dict:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def setup(self, endpoints: list[tuple[Address, Address]]) -> list[tuple[Address, Address]]:
        return [(tuple(a), tuple(b)) for a, b in self.ask({"setup": endpoints})["targets"]]

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(10)


# -- the driver -------------------------------------------------------------

def measure_relay(calls: int, seconds: float, ports: tuple[int, int], cpu: Optional[int],
                  profile: Optional[str] = None, python: Optional[str] = None,
                  realtime: bool = False) -> dict:
    """One step: a fresh relay process, C{calls} calls for C{seconds}."""
    relay = RelayProcess(ports[0], ports[1], cpu, profile, python, realtime)
    try:
        before = relay.ask({"stats": True}) if not profile else {"cpu": 0.0, "relayed": 0}
        wall0 = time.monotonic()
        result = run_load(calls, relay.setup, seconds)
        wall = time.monotonic() - wall0
        after = relay.ask({"stats": True})
        relay.ask({"teardown": True})
    finally:
        relay.close()
    relay_cpu = after["cpu"] - before["cpu"]
    return {"calls": calls, "offered_pps": round(result.offered_pps),
            "relayed_pps": round((after["relayed"] - before["relayed"]) / result.seconds),
            "loss_pct": round(100 * result.lost_or_late, 3), "never_received": result.sent - result.received,
            "late": result.late, "mean_delay_ms": round(1000 * result.mean_delay, 2),
            "worst_delay_ms": round(1000 * result.worst_delay, 1),
            "relay_cpu_pct": round(100 * relay_cpu / wall, 1),
            "generator_cpu_pct": round(100 * result.generator_cpu / wall, 1),
            "generator_blocked": result.blocked,
            "relay_received_pps": round((after["received"] - before.get("received", 0)) / result.seconds),
            "relay_dropped": after["dropped"], "send_errors": after["send_errors"],
            "relay_rss_mb": round(after["max_rss_kb"] / 1024, 1)}


def measure_loopback(calls: int, seconds: float) -> dict:
    result = run_load(calls, loopback, seconds)
    return {"calls": calls, "offered_pps": round(result.offered_pps),
            "loss_pct": round(100 * result.lost_or_late, 3), "never_received": result.sent - result.received,
            "late": result.late, "mean_delay_ms": round(1000 * result.mean_delay, 2),
            "worst_delay_ms": round(1000 * result.worst_delay, 1),
            "generator_cpu_pct": round(100 * result.generator_cpu / (seconds + 0.5), 1)}


def ramp(measure: Callable[[int], dict], steps: Sequence[int], limit: float = 0.1,
         report: Callable[[dict], None] = lambda row: None) -> tuple[list[dict], Optional[int]]:
    """Steps in order until one loses more than C{limit} %; the last
    passing step's calls."""
    rows, best = [], None
    for calls in steps:
        row = measure(calls)
        row["pass"] = row["loss_pct"] < limit
        rows.append(row)
        report(row)
        if not row["pass"]:
            break
        best = calls
    return rows, best


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ports", default="20000-39999", help="RTP port range of the relay")
    parser.add_argument("--profile", help="cProfile the relay's packet path into this file")
    parser.add_argument("--calls", type=int, help="one step with this many calls (no ramp)")
    parser.add_argument("--steps", default="100,200,300,400,500,600,700,800,1000,1200,1500",
                        help="calls per ramp step")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per step")
    parser.add_argument("--no-reference", action="store_true", help="skip the loopback reference")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--pin", action="store_true",
                        help="pin the relay to the first CPU and the generator to the others (on a "
                             "quiet machine; on a shared one a pinned relay waits for its CPU)")
    parser.add_argument("--realtime", action="store_true",
                        help="run the relay and the generator under SCHED_FIFO: on a shared "
                             "machine, stands for the core of their own the figures are about")
    parser.add_argument("--python", help="interpreter of the relay process (default: this one), "
                                         "e.g. /usr/bin/python3 for Debian's Python and Twisted")
    args = parser.parse_args(argv)
    start, end = (int(p) for p in args.ports.split("-"))
    if args.serve:
        serve(start, end, args.profile)
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    relay_cpu = cpus[0] if cpus and args.pin else None
    if relay_cpu is not None and len(cpus) > 1:
        os.sched_setaffinity(0, set(cpus[1:]))        # the generator away from the relay's core
    steps = [args.calls] if args.calls else [int(s) for s in args.steps.split(",")]
    if args.realtime and not _realtime():
        args.realtime = False

    def show(kind: str) -> Callable[[dict], None]:
        return (lambda row: None) if args.json else (lambda row: print(kind, json.dumps(row), flush=True))

    reference, reference_best = ([], None) if args.no_reference else ramp(
        lambda calls: measure_loopback(calls, args.seconds), steps, report=show("loopback"))
    relay_rows, relay_best = ramp(
        lambda calls: measure_relay(calls, args.seconds, (start, end), relay_cpu, args.profile,
                                    args.python, args.realtime),
        steps, report=show("relay"))
    summary = {"cpus": len(cpus), "relay_cpu": relay_cpu, "seconds_per_step": args.seconds,
               "relay_python": args.python or sys.executable, "realtime": args.realtime,
               "loopback": reference, "loopback_max_calls": reference_best,
               "relay": relay_rows, "relay_max_calls": relay_best,
               "relay_max_pps": max((r["relayed_pps"] for r in relay_rows if r["pass"]), default=0)}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"built-in relay: {relay_best} concurrent G.711 calls under 0.1 % loss "
              f"({summary['relay_max_pps']} packets/s relayed) on one core; "
              f"loopback reference: {reference_best if reference else 'skipped'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
