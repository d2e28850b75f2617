#!/usr/bin/env python3
"""
rustpbx_py benchmarks: ``make bench`` (or ``.venv/bin/python bench/run.py``).

Runs every benchmark against the PBX and, in the same invocation, against
the references -- Kamailio 5.6 (bench/kamailio/kamailio.cfg), the Sippy
B2BUA (PyPI ``sippy`` in bench/.venv-sippy) and SIPp talking to SIPp with
no server in between -- each started and stopped here, on 127.0.0.1, on
free ports.  Writes one Markdown report, bench/results/latest.md, and
keeps every SIPp statistics file, error log and server log under
bench/results/raw/<time>/ (git-ignored).  bench/README.md explains each
figure.

Each benchmark ramps the offered load in steps of at most 15 s with a
bounded number of calls and reports the highest step that passed: every
call (or registration) succeeded, nothing was retransmitted, and the
achieved rate was at least 95 % of the target.  For every step it also
reports the server's CPU seconds and peak RSS (from /proc) and the median
response time (SIPp's -trace_rtt).

This is not a test: nothing here asserts anything, and ``make test`` does
not run it.  It only needs the Python standard library (it runs with the
project venv's interpreter, but imports nothing from rustpbx_py: the PBX
is started as ``twistd -n --pidfile= pbx --config FILE``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import glob
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SCENARIOS = os.path.join(HERE, "scenarios")
RESULTS = os.path.join(HERE, "results")
KAMAILIO_CFG = os.path.join(HERE, "kamailio", "kamailio.cfg")
PBX_TEMPLATE = os.path.join(HERE, "pbx-bench.toml")
#: Addons the PBX under test loads (--addons) and the /metrics scrape interval.
ADDONS: List[str] = []
SCRAPE_INTERVAL = 1.0
SIPPY_VENV = os.path.join(HERE, ".venv-sippy")
SETUP = os.path.join(HERE, "setup.sh")
PARSER_BENCH = os.path.join(HERE, "parser_bench.py")
PBX_VENV = os.path.join(ROOT, ".venv")

LOCAL = "127.0.0.1"

#: Users: USER_BASE .. USER_BASE+USERS-1, password "pw" + name; the callee of
#: the call benchmarks is CALLEE.  bench/kamailio/kamailio.cfg builds the same.
USERS = 1000
USER_BASE = 10000
CALLEE = "20000"


def password(user: str) -> str:
    return "pw" + user


#: Pass criterion: achieved rate at least this fraction of the target.
RATE_FRACTION = 0.95
#: A step never lasts longer than this (seconds of offered load).
MAX_STEP_SECONDS = 15.0

#: Display names of the systems under test, in table order.
NAMES = {
    "pbx": "rustpbx_py",
    "kamailio": "Kamailio",
    "sippy": "Sippy B2BUA",
    "sipp": "SIPp to SIPp",
    # Benchmark "workers" only (not a column of the summary).
    "pbx2": "rustpbx_py, two workers",
}

LOG_FILE = None  # type: Optional[object]


def log(text: str) -> None:
    line = time.strftime("%H:%M:%S ") + text
    print(line, file=sys.stderr, flush=True)
    if LOG_FILE is not None:
        LOG_FILE.write(line + "\n")
        LOG_FILE.flush()


# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------

LIVE: "set[Child]" = set()


class Child:
    """A process started by the harness, in its own session so that it and
    only it (with its own children) can be stopped; output to a log file."""

    def __init__(self, name: str, args: Sequence[str], log_path: str, cwd: Optional[str] = None,
                 env: Optional[dict] = None) -> None:
        self.name = name
        self.args = list(args)
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self._log.write(("$ " + " ".join(self.args) + "\n").encode())
        self._log.flush()
        self.popen = subprocess.Popen(
            self.args, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.pid = self.popen.pid
        self.started = time.monotonic()
        LIVE.add(self)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait(self, timeout: float) -> Optional[int]:
        try:
            return self.popen.wait(timeout=max(0.0, timeout))
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace: float = 3.0, sig: int = signal.SIGTERM) -> Optional[int]:
        """Signal the process, then kill its process group after C{grace}."""
        if self.alive():
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass
            if self.wait(grace) is None:
                try:
                    os.killpg(self.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                self.wait(5.0)
        else:
            # Children it left behind (a process group whose leader exited).
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        LIVE.discard(self)
        self._log.close()
        return self.popen.returncode

    def tail(self, lines: int = 15) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - 8192))
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def stop_all() -> None:
    for child in list(LIVE):
        child.stop(grace=1.0)


def free_port() -> int:
    """A port free on 127.0.0.1 for both UDP and TCP."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((LOCAL, 0))
            port = u.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                    t.bind((LOCAL, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port on 127.0.0.1")


# ---------------------------------------------------------------------------
# CPU and memory of the system under test, from /proc
# ---------------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _children_map() -> Dict[int, List[int]]:
    kids: Dict[int, List[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2:].split()
        kids.setdefault(int(fields[1]), []).append(int(entry))
    return kids


def process_tree(pid: int) -> List[int]:
    """C{pid} and all its descendants (Kamailio forks its workers)."""
    kids = _children_map()
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(kids.get(p, []))
    return tree


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time of the processes (fields 14 and 15 of stat)."""
    ticks = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2:].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / CLK_TCK


def _status_kb(pid: int, key: bytes) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def memory_bytes(pids: Sequence[int]) -> int:
    """VmRSS of a single process; for several (Kamailio's workers sharing
    one memory pool) the sum of their proportional set sizes, so that
    shared pages are counted once."""
    if len(pids) == 1:
        return _status_kb(pids[0], b"VmRSS:") * 1024
    return sum(_pss_kb(p) for p in pids) * 1024


class Usage:
    """Samples a server's memory every 100 ms in a thread; C{begin}/C{end}
    bracket a step and give its CPU seconds and peak memory."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.pids = process_tree(pid)
        self._peak = 0
        self._last = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._cpu0 = 0.0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def refresh(self) -> None:
        self.pids = process_tree(self.pid)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            value = memory_bytes(self.pids)
            with self._lock:
                self._last = value
                self._peak = max(self._peak, value)

    def close(self) -> None:
        self._stop.set()

    def now(self) -> int:
        return memory_bytes(self.pids)

    def cpu(self) -> float:
        return cpu_seconds(self.pids)

    def begin(self) -> None:
        self.refresh()
        with self._lock:
            self._peak = memory_bytes(self.pids)
        self._cpu0 = cpu_seconds(self.pids)

    def end(self) -> Tuple[float, int]:
        cpu = cpu_seconds(self.pids) - self._cpu0
        with self._lock:
            peak = max(self._peak, memory_bytes(self.pids))
        return cpu, peak

    def peak_since_begin(self) -> int:
        with self._lock:
            return max(self._peak, self._last)

    def measure_idle(self, seconds: float = 0.5) -> None:
        """The CPU the server uses doing nothing (Sippy polls)."""
        c0 = self.cpu()
        time.sleep(seconds)
        self.idle_cpu = (self.cpu() - c0) / seconds

    idle_cpu = 0.0

    def settle(self, limit: float = 5.0, busy: float = 0.1) -> None:
        """Wait (at most C{limit} s) until the server uses less than
        C{busy} of a core above its idle use: the backlog of a previous
        step is gone."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            c0 = self.cpu()
            time.sleep(0.25)
            if (self.cpu() - c0) / 0.25 < self.idle_cpu + busy:
                return


# ---------------------------------------------------------------------------
# SIPp
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class SippResult:
    """What one SIPp process said: its last statistics line, its response
    times (ms) and the first error it logged."""

    rc: Optional[int]
    stats: Dict[str, str]
    rtts: List[float]
    #: Seconds from SIPp's start to the last response time traced (the
    #: last 200 of a setup or registration).
    last_rtt: float
    first_error: str
    wall: float
    directory: str

    def count(self, key: str) -> int:
        try:
            return int(float(self.stats.get(key, "0") or 0))
        except ValueError:
            return 0

    @property
    def elapsed(self) -> float:
        """CurrentTime - StartTime of the last statistics line (SIPp's own
        clock), else the wall time of the process."""
        try:
            start = float(self.stats["StartTime"].split("\t")[-1])
            now = float(self.stats["CurrentTime"].split("\t")[-1])
            if now > start:
                return now - start
        except (KeyError, ValueError):
            pass
        return self.wall

    @property
    def successful(self) -> int:
        return self.count("SuccessfulCall(C)")

    @property
    def failed(self) -> int:
        return self.count("FailedCall(C)")

    @property
    def created(self) -> int:
        return self.count("TotalCallCreated")

    @property
    def retransmissions(self) -> int:
        return self.count("Retransmissions(C)")

    def failure_kinds(self) -> str:
        kinds = []
        for key, label in (
            ("FailedTimeoutOnRecv(C)", "receive timeout"),
            ("FailedMaxUDPRetrans(C)", "no answer after retransmissions"),
            ("FailedUnexpectedMessage(C)", "unexpected message"),
            ("FailedCallRejected(C)", "rejected"),
            ("FailedTcpConnect(C)", "TCP connect failed"),
            ("FailedTcpClosed(C)", "TCP connection closed"),
            ("FailedCannotSendMessage(C)", "cannot send"),
            ("FailedOutboundCongestion(C)", "outbound congestion"),
            ("FailedTimeoutOnSend(C)", "send timeout"),
        ):
            n = self.count(key)
            if n:
                kinds.append(f"{n} {label}")
        return ", ".join(kinds)


def read_stats(path: str) -> Dict[str, str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [line.rstrip("\n") for line in f if line.strip()]
    except OSError:
        return {}
    if len(lines) < 2:
        return {}
    header = lines[0].rstrip(";").split(";")
    values = lines[-1].rstrip(";").split(";")
    return dict(zip(header, values))


def read_rtts(directory: str) -> Tuple[List[float], float]:
    """The response times (ms) SIPp traced, and when the last one ended
    (seconds since SIPp started)."""
    values: List[float] = []
    last = 0.0
    for path in glob.glob(os.path.join(directory, "*_rtt.csv")):
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.strip().split(";")
                if len(parts) >= 2:
                    try:
                        values.append(float(parts[1]))
                        last = max(last, float(parts[0]) / 1000.0)
                    except ValueError:
                        pass
    return values, last


_EVENT = re.compile(r"\d{4}-\d\d-\d\d\t\d\d:\d\d:\d\d\.\d+\t\d+\.\d+: ")


def first_error(path: str) -> str:
    """The first event SIPp logged, on one line: what happened and, when a
    message was involved, its first line.  The end of a hold (a receive
    timeout that jumps to the hang-up) is not an error."""
    try:
        with open(path, "rb") as f:
            text = f.read(1 << 20).decode("utf-8", "replace")
    except OSError:
        return ""
    # SIPp does not always end an event with a newline: split on the stamps.
    # Preference: an event that says a call failed; then a receive timeout
    # cut short (SIPp truncates some events: it may be a failure or the end
    # of a hold); then anything else, e.g. "Dead call ... (successful),
    # received: ..." (a retransmission arriving after the call ended).
    cut, other = "", ""
    for event in _EVENT.split(text)[1:]:
        head = event.strip().splitlines()[0] if event.strip() else ""
        if not head or "jumping to label" in head:
            continue
        head = head.replace("received '", "received: ")[:240]
        if "receive timeout" in head and "without label" not in head:
            cut = cut or head
        elif re.search(r"abort|without label|unexpected|fail|error|unable", head, re.I):
            return head
        else:
            other = other or head
    return cut or other


SIPP = shutil.which("sipp") or "sipp"


def sipp_args(scenario: str, directory: str, local_port: int, transport: str, *, remote: Optional[str] = None,
              calls: int, rate: Optional[float] = None,
              injection: Optional[str] = None, service: Optional[str] = None, uac: bool = True,
              timeout: float = 60.0) -> List[str]:
    args = [SIPP]
    if remote:
        args.append(remote)
    args += [
        "-sf", scenario if os.path.isabs(scenario) else os.path.join(SCENARIOS, scenario),
        "-i", LOCAL, "-p", str(local_port), "-t", transport,
        "-m", str(calls), "-nostdin",
        "-trace_stat", "-stf", os.path.join(directory, "stats.csv"), "-fd", "1",
        "-trace_err", "-error_file", os.path.join(directory, "errors.log"),
        "-trace_screen", "-screen_file", os.path.join(directory, "screen.log"),
        "-timeout", f"{int(math.ceil(timeout))}s",
    ]
    if uac:
        args += ["-trace_rtt", "-rtt_freq", "1", "-recv_timeout", "10000"]
        args += ["-l", str(max(calls, 1))]
    if rate is not None:
        # -r is calls per -rp milliseconds: keep fractional rates exact.
        args += ["-r", str(max(1, int(round(rate * 10)))), "-rp", "10000"]
    if injection:
        args += ["-inf", injection]
    if service:
        args += ["-s", service]
    return args


#: The hold of the caller scenarios as written in them (ms).
SCENARIO_HOLD = 'timeout="1000" ontimeout="hangup"'


def caller_scenario(raw: str, authenticates: bool, hold_ms: int) -> str:
    """The caller scenario; for another hold than the 1 s written in it, a
    copy in the raw directory with the hold's timeout changed."""
    name = "uac_auth.xml" if authenticates else "uac.xml"
    if hold_ms == 1000:
        return name
    with open(os.path.join(SCENARIOS, name), encoding="iso-8859-1") as f:
        text = f.read()
    if SCENARIO_HOLD not in text:
        raise RuntimeError(f"bench/scenarios/{name}: no '{SCENARIO_HOLD}' to change the hold")
    path = os.path.join(raw, f"hold{hold_ms}-{name}")
    with open(path, "w", encoding="iso-8859-1") as f:
        f.write(text.replace(SCENARIO_HOLD, f'timeout="{int(hold_ms)}" ontimeout="hangup"'))
    return path


def start_sipp(name: str, directory: str, args: List[str]) -> Child:
    os.makedirs(directory, exist_ok=True)
    return Child(name, args, os.path.join(directory, "sipp.out"), cwd=directory)


def finish_sipp(child: Child, directory: str, limit: float) -> SippResult:
    rc = child.wait(limit)
    if rc is None:
        child.stop(grace=2.0, sig=signal.SIGUSR1)
        rc = None
    else:
        child.stop()
    wall = time.monotonic() - child.started
    rtts, last_rtt = read_rtts(directory)
    return SippResult(
        rc=rc,
        stats=read_stats(os.path.join(directory, "stats.csv")),
        rtts=rtts,
        last_rtt=last_rtt,
        first_error=first_error(os.path.join(directory, "errors.log")),
        wall=wall,
        directory=directory,
    )


def run_sipp(name: str, directory: str, args: List[str], limit: float) -> SippResult:
    return finish_sipp(start_sipp(name, directory, args), directory, limit)


def write_injection(path: str, users: Sequence[str]) -> str:
    with open(path, "w") as f:
        f.write("SEQUENTIAL\n")
        for user in users:
            f.write(f"{user};[authentication username={user} password={password(user)}]\n")
    return path


def bench_users() -> List[str]:
    return [str(USER_BASE + i) for i in range(USERS)]


# ---------------------------------------------------------------------------
# Systems under test
# ---------------------------------------------------------------------------


class StartFailed(Exception):
    pass


class Server:
    """One system under test, started and stopped by the harness."""

    key = ""
    #: Whether it challenges REGISTER / INVITE with digest.
    authenticates = True
    #: Whether the callee must register before the calls.
    needs_registration = True
    #: Whether it keeps per-dialog state (benchmark 3 is meaningful).
    dialog_state = True
    child: Optional[Child] = None
    usage: Optional[Usage] = None
    port = 0
    #: Why it cannot run a given benchmark, by benchmark name.
    unable: Dict[str, str]

    def __init__(self, raw: str) -> None:
        self.raw = raw
        self.unable = {}

    @property
    def name(self) -> str:
        return NAMES[self.key]

    def address(self) -> str:
        return f"{LOCAL}:{self.port}"

    def start(self, tag: str, **options) -> None:
        raise NotImplementedError

    #: A line of the server's log worth quoting when a step fails.
    error_line = re.compile(r"^\s*((?:builtins\.)?[\w.]*(?:Error|Exception)\w*: .+)$")

    def log_mark(self) -> int:
        try:
            return os.path.getsize(self.child.log_path) if self.child is not None else 0
        except OSError:
            return 0

    def log_errors(self, since: int) -> str:
        """The first error the server logged since C{since}, and how many
        error lines there were."""
        if self.child is None:
            return ""
        try:
            with open(self.child.log_path, "rb") as f:
                f.seek(since)
                text = f.read(4 << 20).decode("utf-8", "replace")
        except OSError:
            return ""
        first, count = "", 0
        for line in text.splitlines():
            m = self.error_line.match(line)
            if m:
                count += 1
                first = first or m.group(1).strip()
        if not count:
            return ""
        return f"{self.name} logged {count} error(s), first: {first[:200]}"

    def died(self) -> Optional[str]:
        if self.child is not None and not self.child.alive():
            return f"{self.name} exited (code {self.child.popen.returncode}): {last_line(self.child.tail(5))}"
        return None

    def stop(self) -> None:
        if self.usage is not None:
            self.usage.close()
            self.usage = None
        if self.child is not None:
            self.child.stop(grace=5.0)
            self.child = None

    def _wait_port(self, child: Child, transports: Sequence[str], limit: float,
                   ready: Optional[Callable[[], bool]] = None) -> None:
        """Wait until the server listens (its ports are taken) or exits."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if not child.alive():
                raise StartFailed(f"{self.name} exited at start (code {child.popen.returncode}): "
                                  f"{last_line(child.tail(8))}")
            if ready is not None:
                if ready():
                    return
            elif all(port_taken(self.port, t) for t in transports):
                return
            time.sleep(0.1)
        raise StartFailed(f"{self.name} did not listen on {self.address()} within {limit:.0f} s: "
                          f"{last_line(child.tail(8))}")


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no output)"


def port_taken(port: int, transport: str) -> bool:
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind((LOCAL, port))
        except OSError:
            return True
    return False


class PbxServer(Server):
    key = "pbx"

    def __init__(self, raw: str) -> None:
        Server.__init__(self, raw)
        self.modules_missing: List[str] = []
        self.modules: List[str] = template_modules()
        self.tmp = tempfile.mkdtemp(prefix="rustpbx-bench-")
        self.twistd = os.path.join(PBX_VENV, "bin", "twistd")
        self.python = os.path.join(PBX_VENV, "bin", "python")

    def probe(self) -> None:
        """Which of the wanted proxy modules the PBX has, today."""
        if not os.access(self.twistd, os.X_OK):
            for bench in BENCHMARKS:
                self.unable[bench] = f"{self.twistd} not found (run make test or make run once to build the venv)"
            return
        code = ("from rustpbx_py.server import find_factories\n"
                "from rustpbx_py.interfaces import IProxyModuleFactory\n"
                "print(' '.join(sorted(find_factories(IProxyModuleFactory))))\n")
        try:
            out = subprocess.run([self.python, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired:
            out = None
        if out is None or out.returncode != 0:
            why = "cannot list the PBX's modules: " + (last_line(out.stderr) if out else "timed out")
            for bench in BENCHMARKS:
                self.unable[bench] = why
            return
        available = set(out.stdout.split())
        wanted = template_modules()
        self.modules_missing = [m for m in wanted if m not in available]
        self.modules = [m for m in wanted if m in available]
        for need, benches in ((("auth", "registrar"), ("register", "calls", "dialogs")), (("call",), ("calls", "dialogs"))):
            missing = [m for m in need if m not in available]
            if missing:
                for bench in benches:
                    self.unable.setdefault(bench, "the PBX has no " + " and no ".join(repr(m) for m in missing)
                                           + " module yet")

    def start(self, tag: str, **options) -> None:
        self.port = free_port()
        config = os.path.join(self.raw, f"pbx-{tag}.toml")
        db_dir = tempfile.mkdtemp(prefix=f"db-{tag}-", dir=self.tmp)
        # Two workers (benchmark "workers") share one database file.
        database = options.get("database") or os.path.join(db_dir, "pbx.sqlite3")
        monitor_port = free_port()
        http_port = write_pbx_config(config, self.port, database, db_dir, self.modules, ADDONS, monitor_port)
        args = [self.twistd, "-n", "--pidfile=", "pbx", "--config", config]
        self.child = Child("pbx", args, os.path.join(self.raw, f"pbx-{tag}.log"), cwd=db_dir)
        log_path = self.child.log_path

        def ready() -> bool:
            try:
                with open(log_path, encoding="utf-8", errors="replace") as f:
                    text = f.read()
            except OSError:
                return False
            return ("listening for SIP over UDP" in text and "listening for SIP over TCP" in text) or (
                port_taken(self.port, "udp") and port_taken(self.port, "tcp"))

        try:
            self._wait_port(self.child, ("udp", "tcp"), 60.0, ready)
        except StartFailed:
            self.stop()
            raise
        time.sleep(0.3)
        self.usage = Usage(self.child.pid)
        self.usage.measure_idle()
        self.scraper = None
        if "monitor" in ADDONS and SCRAPE_INTERVAL > 0:
            urls = [f"http://{LOCAL}:{port}/metrics" for port in (monitor_port, http_port)]
            self.scraper = Scraper(urls, SCRAPE_INTERVAL)
            self.scraper.start()

    def stop(self) -> None:
        if getattr(self, "scraper", None) is not None:
            log("pbx monitor: " + self.scraper.stop())
            self.scraper = None
        Server.stop(self)

    def cleanup(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


class KamailioServer(Server):
    key = "kamailio"
    dialog_state = False
    error_line = re.compile(r"^.*?((?:ERROR|CRITICAL): .+)$")

    def start(self, tag: str, **options) -> None:
        exe = shutil.which("kamailio") or "/usr/sbin/kamailio"
        self.port = free_port()
        rundir = tempfile.mkdtemp(prefix="kamailio-bench-")
        self.rundir = rundir
        args = [
            exe, "-f", KAMAILIO_CFG, "-DD", "-E", "-m", "1024", "-M", "16",
            "-Y", rundir, "-P", os.path.join(rundir, "kamailio.pid"),
            "-l", f"udp:{LOCAL}:{self.port}", "-l", f"tcp:{LOCAL}:{self.port}",
            "-A", f"BENCH_USERS={USERS}", "-A", f"BENCH_USER_BASE={USER_BASE}", "-A", f"BENCH_CALLEE={CALLEE}",
        ]
        self.child = Child("kamailio", args, os.path.join(self.raw, f"kamailio-{tag}.log"), cwd=rundir)
        try:
            self._wait_port(self.child, ("udp", "tcp"), 20.0)
        except StartFailed:
            self.stop()
            raise
        time.sleep(1.0)  # workers forked, user table filled
        self.usage = Usage(self.child.pid)
        self.usage.measure_idle()

    def stop(self) -> None:
        Server.stop(self)
        if getattr(self, "rundir", None):
            shutil.rmtree(self.rundir, ignore_errors=True)


class SippyServer(Server):
    key = "sippy"
    authenticates = False
    needs_registration = False

    def start(self, tag: str, callee_port: int = 0, **options) -> None:
        exe = os.path.join(SIPPY_VENV, "bin", "b2bua")
        self.port = free_port()
        self.tmp = tempfile.mkdtemp(prefix="sippy-bench-")
        args = [
            exe, f"--sip_address={LOCAL}", f"--sip_port={self.port}", "--foreground=on",
            f"--static_route={LOCAL}:{callee_port}", f"--accept_ips={LOCAL}",
            "--auth_enable=off", "--acct_enable=off",
            f"--b2bua_socket={os.path.join(self.tmp, 'b2bua.sock')}",
            f"--logfile={os.path.join(self.raw, f'sippy-{tag}.b2bua.log')}",
        ]
        # Sippy logs every SIP message at INFO by default: measure the B2BUA,
        # not its log writing (warnings and errors still reach the log).
        env = dict(os.environ, SIPLOG_LVL="WARN")
        self.child = Child("sippy", args, os.path.join(self.raw, f"sippy-{tag}.log"), cwd=self.tmp, env=env)
        try:
            self._wait_port(self.child, ("udp",), 30.0)
        except StartFailed:
            self.stop()
            raise
        time.sleep(0.5)
        self.usage = Usage(self.child.pid)
        self.usage.measure_idle()

    def stop(self) -> None:
        Server.stop(self)
        if getattr(self, "tmp", None):
            shutil.rmtree(self.tmp, ignore_errors=True)


class SippDirect(Server):
    """No server: the caller talks straight to the callee (or the
    registering SIPp to a SIPp that answers 401 then 200)."""

    key = "sipp"
    authenticates = False
    needs_registration = False
    dialog_state = False

    def start(self, tag: str, **options) -> None:
        self.port = 0

    def stop(self) -> None:
        pass


# ---------------------------------------------------------------------------
# PBX configuration
# ---------------------------------------------------------------------------


def template_modules() -> List[str]:
    try:
        import tomllib
        with open(PBX_TEMPLATE, "rb") as f:
            return list(tomllib.load(f).get("proxy", {}).get("modules", []))
    except Exception:
        return ["acl", "auth", "registrar", "call"]


def _toml_str(text: str) -> str:
    return json.dumps(text)


def write_pbx_config(path: str, port: int, database: str, generated_dir: str, modules: Sequence[str],
                     addons: Sequence[str] = (), monitor_port: Optional[int] = None) -> int:
    """bench/pbx-bench.toml with this run's ports, database, modules,
    addons (C{--addons}; the monitor on C{monitor_port}) and the benchmark
    users appended; returns the http_addr port."""
    with open(PBX_TEMPLATE, encoding="utf-8") as f:
        text = f.read()
    http_port = free_port()
    replacements = {
        "http_addr": _toml_str(f"{LOCAL}:{http_port}"),
        "database_url": _toml_str("sqlite://" + database),
        "udp_port": str(port),
        "tcp_port": str(port),
        "generated_dir": _toml_str(generated_dir),
        "queue_dir": _toml_str(os.path.join(generated_dir, "queues")),
        "modules": "[" + ", ".join(_toml_str(m) for m in modules) + "]",
        "addons": "[" + ", ".join(_toml_str(a) for a in addons) + "]",
    }
    for key, value in replacements.items():
        text, n = re.subn(rf"(?m)^{re.escape(key)}\s*=.*$", f"{key} = {value}", text, count=1)
        if n != 1:
            raise RuntimeError(f"{PBX_TEMPLATE}: no line '{key} = ...' to fill in")
    if "monitor" in addons and monitor_port is not None:
        # Its own listener, used when the console's site does not serve it.
        text = text.rstrip("\n") + f"\n\n[monitor]\nlisten = {_toml_str(f'{LOCAL}:{monitor_port}')}\n"
    users = bench_users() + [CALLEE]
    lines = [text.rstrip("\n"), "", "# Added by bench/run.py: the benchmark users.",
             "[[proxy.user_backends]]", 'type = "memory"', "users = ["]
    for user in users:
        lines.append(f"  {{ username = {_toml_str(user)}, password = {_toml_str(password(user))} }},")
    lines.append("]")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return http_port


class Scraper(threading.Thread):
    """
    Scrapes the monitor's /metrics every C{interval} seconds, as Prometheus
    would, while a PBX with C{--addons monitor} runs: the overhead measured
    includes rendering the exposition, not only counting.
    """

    def __init__(self, urls: Sequence[str], interval: float) -> None:
        threading.Thread.__init__(self, daemon=True)
        self.urls = list(urls)
        self.interval = interval
        self.done = threading.Event()
        self.scrapes = 0
        self.failures = 0
        self.seconds = 0.0
        self.size = 0

    def run(self) -> None:
        import urllib.request

        while not self.done.wait(self.interval):
            began = time.monotonic()
            for url in self.urls:
                try:
                    with urllib.request.urlopen(url, timeout=5) as response:
                        self.size = len(response.read())
                    break
                except OSError:
                    continue
            else:
                self.failures += 1
                continue
            self.scrapes += 1
            self.seconds += time.monotonic() - began

    def stop(self) -> str:
        self.done.set()
        self.join(10)
        mean = self.seconds / self.scrapes * 1000 if self.scrapes else 0.0
        return f"{self.scrapes} scrapes of /metrics ({self.size} bytes, {mean:.1f} ms mean), {self.failures} failed"


# ---------------------------------------------------------------------------
# Steps, ramps and the pass criterion
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class Step:
    rate: float
    calls: int
    passed: bool
    reason: str = ""
    achieved: Optional[float] = None
    successful: int = 0
    retransmissions: int = 0
    median_ms: Optional[float] = None
    cpu_s: Optional[float] = None
    peak_rss: Optional[int] = None
    dialogs: Optional[int] = None
    raw: str = ""

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def judge(step: Step, uac: SippResult, uas: Optional[SippResult], hold_s: float, server: Server,
          log_mark: Optional[int] = None) -> Step:
    """Apply the pass criterion to one step; quote the server's log when
    the step failed."""
    problems = []
    step.successful = uac.successful
    step.retransmissions = uac.retransmissions + (uas.retransmissions if uas else 0)
    if uac.rtts:
        step.median_ms = statistics.median(uac.rtts)
    # Achieved rate: calls over the time from SIPp's start until the last
    # call was set up (its 200), so a server that falls behind the offered
    # rate shows it; without traced times, until the end less the hold.
    busy = uac.last_rtt if uac.rtts and len(uac.rtts) == uac.created else max(uac.elapsed - hold_s, 1e-3)
    step.achieved = uac.created / max(busy, 1e-3) if uac.created else 0.0
    if not uac.stats:
        problems.append("SIPp wrote no statistics (" + last_line(read_text(os.path.join(uac.directory, "sipp.out"))) + ")")
    elif uac.successful < step.calls:
        failed = step.calls - uac.successful
        kinds = uac.failure_kinds()
        text = f"{failed} of {step.calls} failed"
        if kinds:
            text += f" ({kinds})"
        if uac.rc is None:
            text += ", SIPp stopped at its time limit"
        if uac.first_error:
            text += f"; first: {uac.first_error}"
        problems.append(text)
    if step.retransmissions:
        problems.append(f"{step.retransmissions} retransmissions")
    # The answering SIPp counts a call it was still holding when the caller
    # closed its TCP connection at exit as failed: not the server's doing.
    if uas is not None and uas.rc is None:
        problems.append(f"the callee still had calls open after the caller finished "
                        f"({uas.count('CurrentCall')} at its last report: BYE not forwarded?)")
    uas_failed = (uas.failed - uas.count("FailedTcpClosed(C)")) if uas is not None else 0
    if uas_failed > 0:
        problems.append(f"callee: {uas_failed} failed ({uas.failure_kinds()})"
                        + (f"; first: {uas.first_error}" if uas.first_error else ""))
    if step.achieved is not None and step.achieved < RATE_FRACTION * step.rate and uac.successful:
        problems.append(f"achieved {step.achieved:.0f}/s, below {RATE_FRACTION:.0%} of {fmt_rate(step.rate)}/s")
    died = server.died()
    if died:
        problems.insert(0, died)
    if problems and log_mark is not None:
        errors = server.log_errors(log_mark)
        if errors:
            problems.append(errors)
    step.passed = not problems
    step.reason = "; ".join(problems)
    if step.passed:
        # SIPp logs the end of every hold: on a passing step that log is
        # megabytes of nothing.
        for result in (uac, uas):
            if result is not None:
                try:
                    os.remove(os.path.join(result.directory, "errors.log"))
                except OSError:
                    pass
    return step


def read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()[-4000:]
    except OSError:
        return ""


def fmt_rate(rate: float) -> str:
    return f"{rate:.0f}" if rate >= 10 or rate == int(rate) else f"{rate:.1f}"


@dataclasses.dataclass
class Ramp:
    steps: List[Step]
    best: Optional[Step]
    note: str = ""
    #: The best step is the highest rate tried: the real peak is higher.
    capped: bool = False
    #: This system does not take part in this benchmark (C{note} says why).
    skipped: bool = False

    @property
    def first_failure(self) -> str:
        if self.skipped:
            return f"— ({self.note})"
        if self.best is None and self.steps:
            return f"failed at first step ({fmt_rate(self.steps[0].rate)}/s): {self.steps[0].reason}"
        if self.best is None:
            return "failed at first step: " + (self.note or "not run")
        return ""


def ramp(run_step: Callable[[float], Step], start: float, cap: float, max_steps: int,
         refine: int = 2, server: Optional[Server] = None,
         reset: Optional[Callable[[], Optional[str]]] = None) -> Ramp:
    """Double the rate from C{start} until a step fails (or C{cap}), then
    bisect C{refine} times between the last pass and the first failure.
    After a failed step, C{reset} restarts the server (an overloaded server
    may still be working off its backlog or retransmitting to a callee that
    is gone) and says why it could not, if it could not."""
    steps: List[Step] = []
    best: Optional[Step] = None
    rate = start
    failed_rate: Optional[float] = None
    while len(steps) < max_steps:
        step = run_step(rate)
        steps.append(step)
        if not step.passed:
            failed_rate = rate
            break
        best = step
        if rate >= cap:
            break
        rate = min(cap, rate * 2)
    if best is not None and failed_rate is not None:
        lo, hi = best.rate, failed_rate
        for _ in range(refine):
            mid = round((lo + hi) / 2)
            if mid <= lo or mid >= hi:
                break
            if reset is not None and not steps[-1].passed:
                why = reset()
                if why:
                    return Ramp(steps, best, f"restart after a failed step failed: {why}")
            elif server is not None and server.died():
                break
            step = run_step(mid)
            steps.append(step)
            if step.passed:
                best, lo = step, mid
            else:
                hi = mid
    if best is not None and best.rate >= cap:
        return Ramp(steps, best, "the highest rate tried: the peak is higher", capped=True)
    return Ramp(steps, best)


# ---------------------------------------------------------------------------
# Benchmark 1: REGISTER with digest
# ---------------------------------------------------------------------------


class Bench:
    def __init__(self, args, raw: str) -> None:
        self.args = args
        self.raw = raw
        self.step_seconds = min(float(args.step_seconds), MAX_STEP_SECONDS)
        self.users_csv = write_injection(os.path.join(raw, "users.csv"), bench_users())
        self.callee_csv = write_injection(os.path.join(raw, "callee.csv"), [CALLEE])

    def count_for(self, rate: float, minimum: int = 10, maximum: int = 60000) -> int:
        return int(max(minimum, min(maximum, round(rate * self.step_seconds))))

    # -- REGISTER --------------------------------------------------------

    def register_step(self, server: Server, transport: str, tag: str, rate: float) -> Step:
        calls = self.count_for(rate)
        directory = os.path.join(self.raw, "register", f"{server.key}-{transport}", f"{int(rate):05d}")
        os.makedirs(directory, exist_ok=True)
        limit = calls / rate + 25.0
        t = "u1" if transport == "udp" else "t1"
        uas_child = None
        if server.key == "sipp":
            uas_port = free_port()
            uas_dir = os.path.join(directory, "registrar")
            uas_child = start_sipp("sipp-registrar", uas_dir, sipp_args(
                "register_uas.xml", uas_dir, uas_port, t, calls=calls, uac=False, timeout=limit))
            time.sleep(0.3)
            remote = f"{LOCAL}:{uas_port}"
        else:
            remote = server.address()
            server.usage.settle()
            server.usage.begin()
        mark = server.log_mark()
        uac = run_sipp("sipp-register", directory, sipp_args(
            "register.xml", directory, free_port(), t, remote=remote, calls=calls, rate=rate,
            injection=self.users_csv, timeout=limit), limit + 5)
        step = Step(rate=rate, calls=calls, passed=False, raw=os.path.relpath(directory, RESULTS))
        if server.usage is not None:
            step.cpu_s, step.peak_rss = server.usage.end()
        uas = None
        if uas_child is not None:
            uas = finish_sipp(uas_child, os.path.join(directory, "registrar"), 3.0)
        judge(step, uac, uas, 0.0, server, mark)
        log(f"  {server.name} REGISTER/{transport.upper()} {fmt_rate(rate)}/s x{calls}: "
            f"{'pass' if step.passed else 'FAIL'} achieved {step.achieved or 0:.0f}/s "
            f"median {fmt_ms(step.median_ms)} cpu {fmt_num(step.cpu_s, 2)} s "
            f"{'' if step.passed else step.reason[:300]}")
        return step

    def bench_register(self, server: Server, transport: str) -> Ramp:
        if "register" in server.unable:
            return Ramp([], None, server.unable["register"])
        tag = f"register-{transport}"
        try:
            server.start(tag)
        except StartFailed as e:
            return Ramp([], None, str(e))
        try:
            start = {"pbx": 50, "kamailio": 500, "sipp": 1000}.get(server.key, 100)
            cap = float(self.args.register_cap)
            return ramp(lambda r: self.register_step(server, transport, tag, r), start, cap, 10, server=server,
                        reset=lambda: self.restart(server, tag))
        finally:
            server.stop()

    def restart(self, server: Server, tag: str, callee_port: int = 0, register_dir: str = "") -> Optional[str]:
        """Stop and start C{server} again (registering the callee again when
        C{register_dir} is given); None, or why it failed."""
        server.stop()
        try:
            server.start(tag, callee_port=callee_port)
        except StartFailed as e:
            return str(e)
        if register_dir:
            return self.register_callee(server, callee_port, register_dir)
        return None

    # -- calls -------------------------------------------------------------

    def register_callee(self, server: Server, callee_port: int, directory: str) -> Optional[str]:
        """Register the callee's address with the server; None or why not."""
        if not server.needs_registration:
            return None
        result = run_sipp("sipp-callee-register", directory, sipp_args(
            "register.xml", directory, callee_port, "u1", remote=server.address(), calls=1, rate=1,
            injection=self.callee_csv, timeout=15), 20)
        if result.successful != 1:
            return "the callee could not register: " + (result.first_error or last_line(
                read_text(os.path.join(directory, "sipp.out"))))
        return None

    def call_step(self, server: Server, callee_port: int, rate: float, kind: str, calls: Optional[int] = None,
                  hold_ms: int = 1000) -> Step:
        calls = calls or self.count_for(rate)
        directory = os.path.join(self.raw, kind, server.key, f"{rate:08.1f}")
        os.makedirs(directory, exist_ok=True)
        limit = calls / rate + hold_ms / 1000.0 + 25.0
        uas_dir = os.path.join(directory, "callee")
        uas_child = start_sipp("sipp-callee", uas_dir, sipp_args(
            "uas.xml", uas_dir, callee_port, "u1", calls=calls, uac=False, service=CALLEE, timeout=limit + 5))
        time.sleep(0.3)
        if server.usage is not None:
            server.usage.settle()
            server.usage.begin()
        remote = f"{LOCAL}:{callee_port}" if server.key == "sipp" else server.address()
        scenario = caller_scenario(self.raw, server.authenticates, hold_ms)
        mark = server.log_mark()
        uac = run_sipp("sipp-caller", directory, sipp_args(
            scenario, directory, free_port(), "u1", remote=remote, calls=calls, rate=rate,
            injection=self.users_csv, service=CALLEE, timeout=limit), limit + 5)
        step = Step(rate=rate, calls=calls, passed=False, raw=os.path.relpath(directory, RESULTS))
        uas = finish_sipp(uas_child, uas_dir, 3.0)
        if server.usage is not None:
            step.cpu_s, step.peak_rss = server.usage.end()
        judge(step, uac, uas, hold_ms / 1000.0, server, mark)
        log(f"  {server.name} calls {fmt_rate(rate)}/s x{calls}: {'pass' if step.passed else 'FAIL'} "
            f"achieved {step.achieved or 0:.1f}/s median {fmt_ms(step.median_ms)} cpu {fmt_num(step.cpu_s, 2)} s "
            f"{'' if step.passed else step.reason[:300]}")
        return step

    def bench_calls(self, server: Server) -> Tuple[Ramp, Optional[Step]]:
        """The ramp, and a step at half the peak rate (for the median)."""
        if "calls" in server.unable:
            return Ramp([], None, server.unable["calls"]), None
        callee_port = free_port()
        try:
            server.start("calls", callee_port=callee_port)
        except StartFailed as e:
            return Ramp([], None, str(e)), None
        try:
            why = self.register_callee(server, callee_port, os.path.join(self.raw, "calls", server.key, "register"))
            if why:
                return Ramp([], None, why), None
            start = {"pbx": 10, "kamailio": 100, "sippy": 25, "sipp": 200}.get(server.key, 10)
            cap = float(self.args.calls_cap)
            register_dir = os.path.join(self.raw, "calls", server.key, "register-again")

            def reset() -> Optional[str]:
                return self.restart(server, "calls", callee_port, register_dir)

            result = ramp(lambda r: self.call_step(server, callee_port, r, "calls"), start, cap, 10, server=server,
                          reset=reset)
            half = None
            if result.best is not None and result.best.rate / 2.0 >= 1:
                why = reset() if not result.steps[-1].passed else None
                if not why:
                    half = self.call_step(server, callee_port, result.best.rate / 2.0, "calls-half-peak")
            return result, half
        finally:
            server.stop()

    # -- concurrent dialogs ------------------------------------------------

    def bench_dialogs(self, server: Server, peak: Optional[float], max_dialogs: int,
                      note: str = "") -> Tuple[Ramp, Optional[int]]:
        """Ramp to C{max_dialogs} established calls, held until all are up;
        returns the ramp (one step per block of dialogs) and the idle memory."""
        if "dialogs" in server.unable:
            return Ramp([], None, server.unable["dialogs"]), None
        if not peak:
            return Ramp([], None, "no call rate passed in the calls benchmark"), None
        rate = max(5.0, min(float(self.args.dialog_rate_cap), peak / 2.0))
        # Blocks of dialogs created in at most MAX_STEP_SECONDS each.
        block = 1000
        while block > 50 and block / rate > MAX_STEP_SECONDS:
            block //= 2
        total = min(max_dialogs, int(rate * float(self.args.dialog_ramp_seconds)) // block * block)
        if total < max_dialogs:
            note = (f"ramp limited to {total} dialogs: at {fmt_rate(rate)} calls/s more would take over "
                    f"{self.args.dialog_ramp_seconds} s")
        if total < block:
            return Ramp([], None, f"call rate {fmt_rate(rate)}/s too low for a {block}-dialog step"), None
        blocks = total // block
        plateau = 5.0
        ramp_seconds = total / rate
        hold_ms = int((ramp_seconds + plateau) * 1000)
        callee_port = free_port()
        try:
            server.start("dialogs", callee_port=callee_port)
        except StartFailed as e:
            return Ramp([], None, str(e)), None
        base = os.path.join(self.raw, "dialogs", server.key)
        try:
            why = self.register_callee(server, callee_port, os.path.join(base, "register"))
            if why:
                return Ramp([], None, why), None
            warm = self.call_step(server, callee_port, 20.0, os.path.join("dialogs", server.key, "warm-up"),
                                  calls=40, hold_ms=200)
            if not warm.passed:
                return Ramp([], None, f"warm-up calls failed: {warm.reason}"), None
            server.usage.settle()
            time.sleep(1.0)
            idle = 0
            for _ in range(5):
                idle = max(idle, server.usage.now())
                time.sleep(0.2)
            limit = ramp_seconds + hold_ms / 1000.0 + 60.0
            uas_dir = os.path.join(base, "callee")
            uas_child = start_sipp("sipp-callee", uas_dir, sipp_args(
                "uas.xml", uas_dir, callee_port, "u1", calls=total, uac=False, service=CALLEE, timeout=limit))
            time.sleep(0.3)
            scenario = caller_scenario(self.raw, server.authenticates, hold_ms)
            server.usage.begin()
            mark = server.log_mark()
            t0 = time.monotonic()
            callers = []
            steps: List[Step] = []
            for k in range(blocks):
                due = t0 + k * block / rate
                time.sleep(max(0.0, due - time.monotonic()))
                directory = os.path.join(base, f"block-{k + 1:02d}")
                os.makedirs(directory, exist_ok=True)
                cpu0 = server.usage.cpu()
                child = start_sipp("sipp-caller", directory, sipp_args(
                    scenario, directory, free_port(), "u1", remote=server.address(), calls=block, rate=rate,
                    injection=self.users_csv, service=CALLEE, timeout=limit))
                callers.append((child, directory))
                # Memory and CPU while this block is being set up.
                end = t0 + (k + 1) * block / rate + 0.5
                peak = 0
                while time.monotonic() < end:
                    peak = max(peak, server.usage.now())
                    time.sleep(0.1)
                step = Step(rate=rate, calls=block, passed=False, dialogs=(k + 1) * block,
                            raw=os.path.relpath(directory, RESULTS))
                step.cpu_s = server.usage.cpu() - cpu0
                step.peak_rss = peak
                steps.append(step)
                log(f"  {server.name} dialogs: block {k + 1}/{blocks} started, {(k + 1) * block} dialogs, "
                    f"memory {fmt_mb(peak)}")
            # Plateau: every dialog is up.
            plateau_end = t0 + ramp_seconds + plateau
            plateau_peak = 0
            while time.monotonic() < plateau_end - 0.5:
                plateau_peak = max(plateau_peak, server.usage.now())
                time.sleep(0.1)
            steps[-1].peak_rss = max(steps[-1].peak_rss or 0, plateau_peak)
            for step, (child, directory) in zip(steps, callers):
                uac = finish_sipp(child, directory, max(1.0, limit - (time.monotonic() - t0)))
                judge(step, uac, None, hold_ms / 1000.0, server, mark)
            uas = finish_sipp(uas_child, uas_dir, 3.0)
            best = None
            for step in steps:
                if not step.passed:
                    break
                best = step
            if uas.retransmissions and best is not None:
                note = (note + "; " if note else "") + f"the callee saw {uas.retransmissions} retransmission(s)"
            for step in steps:
                log(f"  {server.name} dialogs {step.dialogs}: {'pass' if step.passed else 'FAIL'} "
                    f"memory {fmt_mb(step.peak_rss)} {'' if step.passed else step.reason[:300]}")
            return Ramp(steps, best, note), idle
        finally:
            server.stop()


# ---------------------------------------------------------------------------
# Two PBX workers sharing the database
# ---------------------------------------------------------------------------


class PbxWorkers:
    """Two PBX processes made from the same template (their own ports)
    pointing at one SQLite database file.  The "front-end" is the load
    split: each worker gets its own SIPp with half the rate and half the
    users, so a phone's traffic stays on one worker."""

    key = "pbx"
    name = "rustpbx_py, two workers"

    def __init__(self, pbx: PbxServer) -> None:
        self.raw = pbx.raw
        self.workers = [PbxServer(pbx.raw), PbxServer(pbx.raw)]
        for w in self.workers:
            w.modules = list(pbx.modules)
            w.unable = dict(pbx.unable)
        self.tmp = tempfile.mkdtemp(prefix="rustpbx-bench-workers-")

    def start(self, tag: str) -> None:
        db_dir = tempfile.mkdtemp(prefix=f"db-{tag}-", dir=self.tmp)
        database = os.path.join(db_dir, "pbx.sqlite3")
        try:
            for i, w in enumerate(self.workers):
                w.start(f"{tag}-worker{i + 1}", database=database)
        except StartFailed:
            self.stop()
            raise

    def stop(self) -> None:
        for w in self.workers:
            w.stop()

    def cleanup(self) -> None:
        for w in self.workers:
            w.cleanup()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def died(self) -> Optional[str]:
        return "; ".join(d for d in (w.died() for w in self.workers) if d) or None


def combine_steps(rate: float, halves: Sequence[Step], uacs: Sequence[SippResult], directory: str) -> Step:
    """One step of the two workers from the two halves, each judged against
    its own worker: it passes when both passed."""
    step = Step(rate=rate, calls=sum(h.calls for h in halves), passed=all(h.passed for h in halves),
                raw=os.path.relpath(directory, RESULTS))
    step.successful = sum(h.successful for h in halves)
    step.retransmissions = sum(h.retransmissions for h in halves)
    step.achieved = sum(h.achieved or 0.0 for h in halves)
    rtts = [x for u in uacs for x in u.rtts]
    step.median_ms = statistics.median(rtts) if rtts else None
    cpus = [h.cpu_s for h in halves if h.cpu_s is not None]
    step.cpu_s = sum(cpus) if cpus else None
    peaks = [h.peak_rss for h in halves if h.peak_rss]
    step.peak_rss = sum(peaks) if peaks else None
    step.reason = "; ".join(f"worker {i + 1}: {h.reason}" for i, h in enumerate(halves) if h.reason)
    return step


def split_users(bench_dir: str) -> List[str]:
    """Two injection files, the first and the second half of the users."""
    users = bench_users()
    half = len(users) // 2
    return [write_injection(os.path.join(bench_dir, f"users-worker{i + 1}.csv"), part)
            for i, part in enumerate((users[:half], users[half:]))]


class WorkersBench:
    """Benchmark "workers": the REGISTER/UDP ramp and the call ramp against
    two workers at once, the total rate split evenly."""

    def __init__(self, bench: "Bench", pair: PbxWorkers) -> None:
        self.bench = bench
        self.pair = pair
        self.base = os.path.join(bench.raw, "workers")
        os.makedirs(self.base, exist_ok=True)
        self.csvs = split_users(self.base)

    def _begin(self) -> List[int]:
        for w in self.pair.workers:
            w.usage.settle()
        marks = []
        for w in self.pair.workers:
            w.usage.begin()
            marks.append(w.log_mark())
        return marks

    def register_step(self, rate: float) -> Step:
        b = self.bench
        calls = b.count_for(rate / 2.0)
        directory = os.path.join(self.base, "register", f"{int(rate):05d}")
        limit = calls / (rate / 2.0) + 25.0
        marks = self._begin()
        children = []
        for i, w in enumerate(self.pair.workers):
            d = os.path.join(directory, f"worker{i + 1}")
            children.append((start_sipp(f"sipp-register-{i + 1}", d, sipp_args(
                "register.xml", d, free_port(), "u1", remote=w.address(), calls=calls, rate=rate / 2.0,
                injection=self.csvs[i], timeout=limit)), d))
        uacs = [finish_sipp(c, d, limit + 5) for c, d in children]
        halves = []
        for i, (w, uac) in enumerate(zip(self.pair.workers, uacs)):
            h = Step(rate=rate / 2.0, calls=calls, passed=False)
            h.cpu_s, h.peak_rss = w.usage.end()
            halves.append(judge(h, uac, None, 0.0, w, marks[i]))
        step = combine_steps(rate, halves, uacs, directory)
        log(f"  two workers REGISTER/UDP {fmt_rate(rate)}/s x{step.calls}: {'pass' if step.passed else 'FAIL'} "
            f"achieved {step.achieved or 0:.0f}/s median {fmt_ms(step.median_ms)} cpu {fmt_num(step.cpu_s, 2)} s "
            f"{'' if step.passed else step.reason[:300]}")
        return step

    def restart(self, tag: str, callee_port: int = 0) -> Optional[str]:
        self.pair.stop()
        try:
            self.pair.start(tag)
        except StartFailed as e:
            return str(e)
        if callee_port:
            return self.register_callee(callee_port)
        return None

    def bench_register(self) -> Ramp:
        if "register" in self.pair.workers[0].unable:
            return Ramp([], None, self.pair.workers[0].unable["register"])
        tag = "workers-register"
        try:
            self.pair.start(tag)
        except StartFailed as e:
            return Ramp([], None, str(e))
        try:
            return ramp(self.register_step, 100, float(self.bench.args.register_cap), 10,
                        reset=lambda: self.restart(tag))
        finally:
            self.pair.stop()

    def register_callee(self, callee_port: int) -> Optional[str]:
        """The callee registers with both workers, from the same port, so
        that either can reach it."""
        for i, w in enumerate(self.pair.workers):
            why = self.bench.register_callee(w, callee_port, os.path.join(
                self.base, "calls", f"register-callee-worker{i + 1}-{time.monotonic():.0f}"))
            if why:
                return f"worker {i + 1}: {why}"
        return None

    def call_step(self, callee_port: int, rate: float) -> Step:
        b = self.bench
        calls = b.count_for(rate / 2.0)
        directory = os.path.join(self.base, "calls", f"{rate:08.1f}")
        limit = calls / (rate / 2.0) + 1.0 + 25.0
        uas_dir = os.path.join(directory, "callee")
        uas_child = start_sipp("sipp-callee", uas_dir, sipp_args(
            "uas.xml", uas_dir, callee_port, "u1", calls=2 * calls, uac=False, service=CALLEE, timeout=limit + 5))
        time.sleep(0.3)
        marks = self._begin()
        scenario = caller_scenario(b.raw, True, 1000)
        children = []
        for i, w in enumerate(self.pair.workers):
            d = os.path.join(directory, f"worker{i + 1}")
            children.append((start_sipp(f"sipp-caller-{i + 1}", d, sipp_args(
                scenario, d, free_port(), "u1", remote=w.address(), calls=calls, rate=rate / 2.0,
                injection=self.csvs[i], service=CALLEE, timeout=limit)), d))
        uacs = [finish_sipp(c, d, limit + 5) for c, d in children]
        uas = finish_sipp(uas_child, uas_dir, 3.0)
        halves = []
        for i, (w, uac) in enumerate(zip(self.pair.workers, uacs)):
            h = Step(rate=rate / 2.0, calls=calls, passed=False)
            h.cpu_s, h.peak_rss = w.usage.end()
            # The callee is shared: judged once, with the first worker.
            halves.append(judge(h, uac, uas if i == 0 else None, 1.0, w, marks[i]))
        step = combine_steps(rate, halves, uacs, directory)
        log(f"  two workers calls {fmt_rate(rate)}/s x{step.calls}: {'pass' if step.passed else 'FAIL'} "
            f"achieved {step.achieved or 0:.1f}/s median {fmt_ms(step.median_ms)} cpu {fmt_num(step.cpu_s, 2)} s "
            f"{'' if step.passed else step.reason[:300]}")
        return step

    def bench_calls(self) -> Ramp:
        if "calls" in self.pair.workers[0].unable:
            return Ramp([], None, self.pair.workers[0].unable["calls"])
        tag = "workers-calls"
        callee_port = free_port()
        try:
            self.pair.start(tag)
        except StartFailed as e:
            return Ramp([], None, str(e))
        try:
            why = self.register_callee(callee_port)
            if why:
                return Ramp([], None, why)
            return ramp(lambda r: self.call_step(callee_port, r), 20, float(self.bench.args.calls_cap), 10,
                        reset=lambda: self.restart(tag, callee_port))
        finally:
            self.pair.stop()


# ---------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------


def bench_parser(raw: str) -> Tuple[Optional[dict], str]:
    if not os.path.exists(PARSER_BENCH):
        return None, "bench/parser_bench.py is not there yet"
    python = os.path.join(PBX_VENV, "bin", "python")
    if not os.access(python, os.X_OK):
        python = sys.executable
    try:
        out = subprocess.run([python, PARSER_BENCH, "--json"], cwd=ROOT, capture_output=True, text=True,
                             timeout=300)
    except subprocess.TimeoutExpired:
        return None, "bench/parser_bench.py did not finish within 300 s"
    with open(os.path.join(raw, "parser_bench.out"), "w") as f:
        f.write(out.stdout + out.stderr)
    if out.returncode != 0:
        return None, f"bench/parser_bench.py failed (exit {out.returncode}): {last_line(out.stderr or out.stdout)}"
    for line in reversed(out.stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line), ""
            except ValueError:
                break
    return None, "bench/parser_bench.py printed no JSON: " + last_line(out.stdout)


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


def fmt_num(value: Optional[float], digits: int = 0) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def fmt_ms(value: Optional[float]) -> str:
    if value is None:
        return "—"
    return "<1 ms" if value < 1 else f"{value:.0f} ms"


def fmt_mb(value: Optional[float]) -> str:
    if value is None:
        return "—"
    return f"{value / 1e6:,.1f} MB"


def cell_rate(r: Optional[Ramp], unit: str = "/s") -> str:
    if r is None:
        return "not run"
    if r.best is None:
        return r.first_failure
    text = ("≥ " if r.capped else "") + f"{fmt_rate(r.best.rate)}{unit}"
    if r.note:
        text += f" ({r.note})"
    return text


def peak(r: Optional[Ramp]) -> Optional[float]:
    return r.best.rate if r is not None and r.best is not None else None


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or not b:
        return None
    return a / b


def fmt_ratio(value: Optional[float], against: str, upper_bound: bool = False) -> str:
    """C{upper_bound}: the reference only gave a lower bound of its peak."""
    if value is None:
        return "—"
    return ("≤ " if upper_bound else "") + f"{value:.2f}× {against}"


def capped(r: Optional[Ramp]) -> bool:
    return r is not None and r.capped


def verdict(ok: Optional[bool]) -> str:
    return "—" if ok is None else ("**yes**" if ok else "no")


def md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def step_table(title: str, ramps: Dict[str, Optional[Ramp]], dialogs: bool = False) -> List[str]:
    out = [f"### {title}", ""]
    if dialogs:
        out += ["| system | dialogs | caller rate /s | passed | CPU s (block) | memory | note |",
                "|---|---:|---:|---|---:|---:|---|"]
    else:
        out += ["| system | target /s | calls | achieved /s | passed | median | CPU s | CPU ms per call | peak RSS | note |",
                "|---|---:|---:|---:|---|---:|---:|---:|---:|---|"]
    for key, r in ramps.items():
        if r is None:
            continue
        if not r.steps:
            out.append(f"| {NAMES[key]} | | | | | | | | | {md_escape(r.first_failure or r.note)} |"
                       if not dialogs else f"| {NAMES[key]} | | | | | | {md_escape(r.first_failure or r.note)} |")
            continue
        for s in r.steps:
            mark = "yes" if s.passed else "no"
            if s is r.best:
                mark = "**yes (best)**"
            note = md_escape(s.reason[:400]) if not s.passed else ""
            if dialogs:
                out.append(f"| {NAMES[key]} | {s.dialogs} | {fmt_rate(s.rate)} | {mark} | {fmt_num(s.cpu_s, 2)} | "
                           f"{fmt_mb(s.peak_rss)} | {note} |")
            else:
                per_call = (s.cpu_s * 1000.0 / s.calls) if s.cpu_s is not None and s.calls else None
                out.append(f"| {NAMES[key]} | {fmt_rate(s.rate)} | {s.calls} | {fmt_num(s.achieved, 0)} | {mark} | "
                           f"{fmt_ms(s.median_ms)} | {fmt_num(s.cpu_s, 2)} | {fmt_num(per_call, 2)} | "
                           f"{fmt_mb(s.peak_rss)} | {note} |")
    out.append("")
    return out


def tool_versions() -> Dict[str, str]:
    versions = {}
    try:
        out = subprocess.run([SIPP, "-v"], capture_output=True, text=True, timeout=10).stdout
        m = re.search(r"SIPp v?(\d[\w.\-]*\w)", out)
        versions["SIPp"] = m.group(1) if m else "?"
    except Exception:
        versions["SIPp"] = "missing"
    try:
        out = subprocess.run([shutil.which("kamailio") or "kamailio", "-v"], capture_output=True, text=True,
                             timeout=10).stdout
        m = re.search(r"version: kamailio ([\w.\-]+)", out)
        versions["Kamailio"] = m.group(1) if m else "?"
    except Exception:
        versions["Kamailio"] = "missing"
    try:
        out = subprocess.run([os.path.join(SIPPY_VENV, "bin", "python"), "-c",
                              "import importlib.metadata as m; print(m.version('sippy'))"],
                             capture_output=True, text=True, timeout=30).stdout.strip()
        versions["Sippy"] = out or "?"
    except Exception:
        versions["Sippy"] = "missing"
    return versions


def git_describe() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        return rev or "?"
    except Exception:
        return "?"


def render(report: dict) -> str:
    R = report
    lines = [
        "# rustpbx_py benchmarks",
        "",
        f"Written by `make bench` (bench/run.py) on {R['date']}: commit {R['commit']}, {R['machine']}, "
        f"load average {R['load']} at start; {', '.join(f'{k} {v}' for k, v in R['versions'].items())}. "
        f"Steps of {R['step_seconds']:g} s of offered load; whole run {R['duration']}. "
        + (f"PBX addons: {', '.join(R['addons'])} (/metrics scraped every {R['scrape_interval']:g} s). " if R.get("addons") else "")
        + "Raw SIPp statistics: bench/results/raw/ (not in git). What each figure means: bench/README.md.",
        "",
        "A step passes when every call or registration succeeded, nothing was retransmitted and the achieved "
        f"rate was at least {RATE_FRACTION:.0%} of the target; each figure below is the highest step that passed. "
        "Everything (SIPp, the server, the callee) shares the same 2 cores, so the figures are comparable "
        "with each other, not with other machines.",
        "",
        "## Summary",
        "",
        "| # | benchmark | rustpbx_py | Kamailio | Sippy B2BUA | SIPp to SIPp | ratio | target | met |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in R["summary"]:
        lines.append("| " + " | ".join(md_escape(str(c)) for c in row) + " |")
    lines += ["", "## Steps", ""]
    lines += R["details"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

BENCHMARKS = ("register", "calls", "dialogs", "rtp", "parser", "workers")


def ensure_tools(args) -> None:
    missing = []
    if not shutil.which("sipp"):
        missing.append("sipp")
    if not shutil.which("kamailio") and not os.path.exists("/usr/sbin/kamailio"):
        missing.append("kamailio")
    if not os.access(os.path.join(SIPPY_VENV, "bin", "b2bua"), os.X_OK):
        missing.append("sippy")
    if missing and not args.no_setup:
        log(f"missing: {', '.join(missing)}; running bench/setup.sh")
        subprocess.run(["bash", SETUP], check=False)
    global SIPP
    SIPP = shutil.which("sipp") or "sipp"


def prune_raw(keep: int) -> None:
    """Keep the raw data of the last C{keep} runs only."""
    runs = sorted(glob.glob(os.path.join(RESULTS, "raw", "2*T*Z")))
    for old in runs[:-keep] if keep else runs:
        shutil.rmtree(old, ignore_errors=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(BENCHMARKS),
                        help="comma-separated benchmarks to run: " + ", ".join(BENCHMARKS))
    parser.add_argument("--systems", default="pbx,kamailio,sippy,sipp",
                        help="comma-separated systems: pbx, kamailio, sippy, sipp")
    parser.add_argument("--step-seconds", type=float, default=3.0, help="offered load per step (max 15)")
    parser.add_argument("--register-cap", type=float, default=8000, help="highest REGISTER rate tried")
    parser.add_argument("--calls-cap", type=float, default=6400, help="highest call rate tried")
    parser.add_argument("--dialogs", type=int, default=5000, help="concurrent dialogs to reach")
    parser.add_argument("--dialog-rate-cap", type=float, default=250, help="highest call rate of the dialog ramp")
    parser.add_argument("--dialog-ramp-seconds", type=float, default=60,
                        help="longest time spent setting up dialogs")
    parser.add_argument("--sippy-dialogs", type=int, default=2000, help="dialogs the Sippy reference ramps to")
    parser.add_argument("--output", default=os.path.join(RESULTS, "latest.md"))
    parser.add_argument("--no-setup", action="store_true", help="do not run bench/setup.sh for missing tools")
    parser.add_argument("--addons", default="",
                        help='comma-separated addons the PBX loads (e.g. "monitor": its /metrics is then scraped)')
    parser.add_argument("--scrape-interval", type=float, default=1.0,
                        help="seconds between scrapes of /metrics with --addons monitor (0: none)")
    args = parser.parse_args(argv)
    global ADDONS, SCRAPE_INTERVAL
    ADDONS = [a for a in args.addons.split(",") if a]
    SCRAPE_INTERVAL = args.scrape_interval
    only = set(args.only.split(","))
    systems = [s for s in ("pbx", "kamailio", "sippy", "sipp") if s in set(args.systems.split(","))]

    started = time.monotonic()
    prune_raw(keep=4)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    raw = os.path.join(RESULTS, "raw", stamp)
    os.makedirs(raw, exist_ok=True)
    global LOG_FILE
    LOG_FILE = open(os.path.join(raw, "run.log"), "w")
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: (stop_all(), sys.exit(130)))

    ensure_tools(args)
    bench = Bench(args, raw)
    servers: Dict[str, Server] = {}
    for key in systems:
        servers[key] = {"pbx": PbxServer, "kamailio": KamailioServer, "sippy": SippyServer,
                        "sipp": SippDirect}[key](raw)
    if "pbx" in servers:
        servers["pbx"].probe()
        if servers["pbx"].modules_missing:
            log("PBX modules missing: " + ", ".join(servers["pbx"].modules_missing))
    if "kamailio" in servers and not (shutil.which("kamailio") or os.path.exists("/usr/sbin/kamailio")):
        for b in BENCHMARKS:
            servers["kamailio"].unable[b] = "kamailio is not installed (bench/setup.sh failed)"
    if "sippy" in servers and not os.access(os.path.join(SIPPY_VENV, "bin", "b2bua"), os.X_OK):
        for b in BENCHMARKS:
            servers["sippy"].unable[b] = "bench/.venv-sippy has no b2bua (bench/setup.sh failed)"
    # References that do not take part in a benchmark.
    if "sippy" in servers:
        servers["sippy"].unable["register"] = "not a registrar"
    if "kamailio" in servers:
        servers["kamailio"].unable["dialogs"] = "a transaction-stateful proxy keeps no dialog state"
    if "sipp" in servers:
        servers["sipp"].unable["dialogs"] = "no server"

    results: dict = {"register": {}, "calls": {}, "half": {}, "dialogs": {}, "idle": {}, "workers": {}}
    try:
        if "register" in only:
            for transport in ("udp", "tcp"):
                results["register"][transport] = {}
                for key, server in servers.items():
                    if key == "sippy":
                        continue
                    log(f"benchmark 1: REGISTER over {transport.upper()}, {server.name}")
                    results["register"][transport][key] = bench.bench_register(server, transport)
        if "calls" in only or "dialogs" in only:
            for key, server in servers.items():
                log(f"benchmark 2: calls, {server.name}")
                results["calls"][key], results["half"][key] = bench.bench_calls(server)
        if "dialogs" in only:
            for key, server in servers.items():
                if key in ("kamailio", "sipp"):
                    results["dialogs"][key] = Ramp([], None, server.unable.get("dialogs", ""), skipped=True)
                    continue
                log(f"benchmark 3: concurrent dialogs, {server.name}")
                target, note = args.dialogs, ""
                if key != "pbx" and args.sippy_dialogs < args.dialogs:
                    target, note = args.sippy_dialogs, f"the reference's ramp stops at {args.sippy_dialogs}"
                results["dialogs"][key], results["idle"][key] = bench.bench_dialogs(
                    server, peak(results["calls"].get(key)), target, note)
        if "workers" in only and "pbx" in servers:
            run_workers(bench, servers["pbx"], results)
        parser_result, parser_note = (None, "not run")
        if "parser" in only:
            log("benchmark 5: parser (bench/parser_bench.py)")
            parser_result, parser_note = bench_parser(raw)
    finally:
        stop_all()
        if "pbx" in servers:
            servers["pbx"].cleanup()

    duration = time.monotonic() - started
    summary, details = summarise(results, servers, parser_result, parser_note, args, only)
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_describe(),
        "machine": f"{os.cpu_count()} cores, {platform.system()} {platform.release()}, Python {platform.python_version()}",
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "versions": tool_versions(),
        "step_seconds": bench.step_seconds,
        "addons": list(ADDONS),
        "scrape_interval": SCRAPE_INTERVAL,
        "duration": f"{int(duration // 60)} min {int(duration % 60)} s",
        "summary": summary,
        "details": details,
    }
    text = render(report)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as f:
        f.write(text)
    with open(os.path.join(raw, "report.md"), "w", encoding="utf-8") as f:
        f.write(text)
    with open(os.path.join(raw, "results.json"), "w", encoding="utf-8") as f:
        json.dump(jsonable(results), f, indent=1, default=str)
    log(f"wrote {os.path.relpath(args.output, ROOT)} ({report['duration']}); raw data in {os.path.relpath(raw, ROOT)}")
    return 0


def run_workers(bench: Bench, pbx: PbxServer, results: dict) -> None:
    """Benchmark "workers": REGISTER/UDP and calls against two workers
    sharing the database, next to one worker's figures of the same run
    (measured here when benchmarks 1 and 2 did not run)."""
    w = results["workers"]
    one = results["register"].get("udp", {}).get("pbx")
    if one is None:
        log("benchmark workers: REGISTER over UDP, one worker")
        one = bench.bench_register(pbx, "udp")
        w["register-one-measured"] = True
    w["register-one"] = one
    pair = PbxWorkers(pbx)
    try:
        wb = WorkersBench(bench, pair)
        log("benchmark workers: REGISTER over UDP, two workers sharing the database")
        w["register-two"] = wb.bench_register()
        one = results["calls"].get("pbx")
        if one is None:
            log("benchmark workers: calls, one worker")
            one = bench.bench_calls(pbx)[0]
            w["calls-one-measured"] = True
        w["calls-one"] = one
        log("benchmark workers: calls, two workers sharing the database")
        w["calls-two"] = wb.bench_calls()
    finally:
        pair.stop()
        pair.cleanup()


def workers_summary(w: dict) -> Tuple[List[list], List[str]]:
    rows: List[list] = []
    details: List[str] = []
    for kind, title, unit in (("register", "REGISTER + digest (401, 200), UDP", "registrations/s"),
                              ("calls", "calls through the B2BUA, 407 auth, 1 s hold", "calls/s")):
        one, two = w.get(f"{kind}-one"), w.get(f"{kind}-two")
        if two is None:
            continue

        def cpu(r: Optional[Ramp]) -> str:
            if r is None or r.best is None or r.best.cpu_s is None:
                return ""
            return f", {fmt_num(r.best.cpu_s, 2)} CPU s in its {fmt_num(r.best.calls, 0)}-call step"

        cell = cell_rate(two) + cpu(two) + f"; one worker {cell_rate(one)}" + cpu(one)
        r = ratio(peak(two), peak(one))
        rows.append(["W", f"{title}, two workers sharing the database (load split in half by SIPp), {unit}",
                     cell, "—", "—", "—", fmt_ratio(r, "one worker", capped(one)), "— (no target)", "—"])
        ramps: Dict[str, Optional[Ramp]] = {}
        if w.get(f"{kind}-one-measured"):
            ramps["pbx"] = one
        ramps["pbx2"] = two
        details += step_table(f"W. Two workers sharing the database: {title} "
                              "(two workers: CPU s and peak RSS of both added)", ramps)
    return rows, details


def jsonable(results: dict) -> dict:
    def conv(v):
        if isinstance(v, Ramp):
            return {"best": v.best.as_dict() if v.best else None, "note": v.note,
                    "steps": [s.as_dict() for s in v.steps]}
        if isinstance(v, Step):
            return v.as_dict()
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v
    return conv(results)


def summarise(results: dict, servers: Dict[str, Server], parser_result: Optional[dict], parser_note: str,
              args, only: set) -> Tuple[List[list], List[str]]:
    rows: List[list] = []
    details: List[str] = []
    keys = ("pbx", "kamailio", "sippy", "sipp")

    def cells(values: Dict[str, str]) -> List[str]:
        return [values.get(k, "not run" if k in servers else "—") for k in keys]

    # 1. REGISTER
    for transport in ("udp", "tcp"):
        ramps = results["register"].get(transport)
        if ramps is None:
            continue
        values = {k: cell_rate(r) for k, r in ramps.items()}
        values["sippy"] = "— (not a registrar)"
        r = ratio(peak(ramps.get("pbx")), peak(ramps.get("kamailio")))
        ok = None if r is None else r >= 0.5
        if ramps.get("pbx") is not None and ramps["pbx"].best is None:
            ok = False
        if r is not None and capped(ramps.get("kamailio")) and r >= 0.5:
            ok = None  # only an upper bound of the ratio is known
        rows.append(["1", f"REGISTER + digest (401, 200), {transport.upper()}, 1,000 users, registrations/s",
                     *cells(values), fmt_ratio(r, "Kamailio", capped(ramps.get("kamailio"))), "≥ 0.5× Kamailio",
                     verdict(ok)])
        details += step_table(f"1. REGISTER with digest over {transport.upper()}", ramps)

    # 2. calls
    calls = results["calls"]
    if calls:
        values = {k: cell_rate(r) for k, r in calls.items()}
        if "kamailio" in values and calls["kamailio"].best is not None:
            values["kamailio"] += " (stateful proxy)"
        if "sippy" in values and calls["sippy"].best is not None:
            values["sippy"] += " (no caller auth)"
        p = peak(calls.get("pbx"))
        r_sippy = ratio(p, peak(calls.get("sippy")))
        r_kam = ratio(p, peak(calls.get("kamailio")))
        ok = None
        if r_sippy is not None or r_kam is not None:
            ok = (r_sippy is None or r_sippy >= 2) and (r_kam is None or r_kam >= 0.25)
        if ok and ((capped(calls.get("sippy")) and r_sippy is not None)
                   or (capped(calls.get("kamailio")) and r_kam is not None)):
            ok = None  # only an upper bound of a ratio is known
        if calls.get("pbx") is not None and calls["pbx"].best is None:
            ok = False
        ratios = (fmt_ratio(r_sippy, "Sippy", capped(calls.get("sippy"))),
                  fmt_ratio(r_kam, "Kamailio", capped(calls.get("kamailio"))))
        rows.append(["2", "calls through the B2BUA, 407 auth, callee registered, 1 s hold, calls/s", *cells(values),
                     "; ".join(x for x in ratios if x != "—") or "—",
                     "≥ 2× Sippy and ≥ 0.25× Kamailio", verdict(ok)])
        half = results["half"]
        hv = {}
        for k in keys:
            if k not in servers:
                continue
            s = half.get(k)
            if s is None:
                hv[k] = "—" if calls.get(k) is None or calls[k].best is None else "not run"
            elif not s.passed:
                hv[k] = f"{fmt_ms(s.median_ms)} at {fmt_rate(s.rate)}/s (step failed: {s.reason[:120]})"
            else:
                hv[k] = f"{fmt_ms(s.median_ms)} at {fmt_rate(s.rate)}/s"
        s = half.get("pbx")
        ok = None
        if s is not None and s.median_ms is not None:
            ok = s.passed and s.median_ms <= 5.0
        elif calls.get("pbx") is not None and calls["pbx"].best is None:
            ok = False
        rows.append(["2", "median setup time (first INVITE to 200, incl. 407) at half the peak rate", *cells(hv),
                     "—", "≤ 5 ms", verdict(ok)])
        details += step_table("2. Calls through the B2BUA (1 s hold)", calls)
        halves = {k: Ramp([v], v if v.passed else None) for k, v in half.items() if v is not None}
        if halves:
            details += step_table("2. Calls at half the peak rate (median setup time)", halves)

    # 3. dialogs
    dialogs = results["dialogs"]
    if dialogs:
        dv, mv = {}, {}
        per_dialog: Dict[str, Optional[float]] = {}
        for k, r in dialogs.items():
            idle = results["idle"].get(k)
            if r.best is None:
                dv[k] = r.first_failure
                mv[k] = "—"
                per_dialog[k] = None
                continue
            dv[k] = f"{r.best.dialogs}" + (f" ({r.note})" if r.note else "")
            if idle is not None and r.best.peak_rss:
                per = (r.best.peak_rss - idle) / r.best.dialogs
                per_dialog[k] = per
                mv[k] = f"{per / 1000:.1f} kB (idle {fmt_mb(idle)}, peak {fmt_mb(r.best.peak_rss)})"
            else:
                mv[k] = "—"
        pr = dialogs.get("pbx")
        reached = pr.best.dialogs if pr is not None and pr.best is not None else None
        ok_n = None if pr is None else (reached is not None and reached >= args.dialogs and reached >= 5000)
        rows.append(["3", "concurrent dialogs reached (long calls)", *cells(dv), "—", "≥ 5,000", verdict(ok_n)])
        per = per_dialog.get("pbx")
        ok_m = None if pr is None else (per is not None and per <= 100_000)
        rows.append(["3", "memory per dialog = (peak − idle) / dialogs", *cells(mv),
                     fmt_ratio(ratio(per, per_dialog.get("sippy")), "Sippy"), "≤ 0.1 MB (100 kB)", verdict(ok_m)])
        details += step_table("3. Concurrent dialogs", dialogs, dialogs=True)

    # Two workers
    if results.get("workers"):
        r, d = workers_summary(results["workers"])
        rows += r
        details += d

    # 4. RTP
    if "rtp" in only:
        rows.append(["4", "RTP relay", "media relay not implemented yet", "—", "—", "—", "—", "—", "skipped"])

    # 5. parser
    if "parser" in only:
        if parser_result:
            rates = parser_result.get("msgs_per_second", {})
            text = "; ".join(f"{k} {v:,} msg/s" for k, v in rates.items()) or json.dumps(parser_result)
        else:
            text = parser_note
        rows.append(["5", "SIP parser (bench/parser_bench.py, messages/s, one core)", text, "—", "—", "—", "—",
                     "— (no target)", "—"])
    return rows, details


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        stop_all()
