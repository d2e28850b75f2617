#!/usr/bin/env python3
"""
Memory soak: SIPp places a long run of calls through a PBX started as
``twistd pbx`` (the garbage-collector tuning of a real deployment), and the
PBX's resident memory is sampled against the number of calls completed.

    .venv/bin/python bench/soak.py                       # 100,000 calls at 100/s, ~17 min + 7 min
    .venv/bin/python bench/soak.py --calls 180000        # the 30-minute soak (+ 7 min)
    .venv/bin/python bench/soak.py --calls 5000 --json out.json

Every call is the benchmark's: INVITE, 407, ACK, INVITE with credentials,
100/180/200, ACK, 1 s hold, BYE, 200, from the users 10000..10999 to the
callee 20000 (bench/scenarios/uac_auth.xml and uas.xml), each call record
written to the SQLite database.  After the last call the soak goes on
sampling for C{--settle} seconds (420 by default: every transaction has
expired after 64*T1 = 32 s, the nonce-counts of the last calls after the
nonce lifetime, 300 s, and the PBX's housekeeping, every 60 s, prunes
them).

What it prints: RSS after 1,000, 10,000, 50,000... calls, at the end and
every minute after it; the growth per 10,000 calls between 1,000 and the end; and
whether the RSS after the wait is within 20 % of the 1,000-call level
(issue 12's criterion: memory returns once the calls are over).  Exit status 0 when it is, 1 when not, 2 when calls failed.
The PBX runs with C{PYTHONMALLOC=malloc}, as the systemd unit starts it
(C{--pymalloc}: without).

Calls fail when the PBX does not get the CPU it needs (about 4 ms per
call, 40 % of a core at 100 calls/s): UDP messages then wait in, and
overflow, its socket's receive buffer, SIPp retransmits, and the extra
load feeds itself.  On a machine shared with other jobs use C{--nice -10}
(the PBX's and SIPp's scheduling autogroups: a plain C{nice} does nothing
against other sessions' jobs when the kernel groups them) or a lower
C{--rate}: the soak measures memory, not speed.  It prints the PBX's CPU per call and the machine's
UDP receive-buffer drops (C{RcvbufErrors} of /proc/net/snmp) during the
run, which say whether failed calls were the machine's doing.  It imports the harness of bench/run.py and
nothing from rustpbx_py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import run as bench  # noqa: E402  (bench/run.py)


def udp_receive_drops() -> int:
    """The machine's UDP datagrams dropped for a full receive buffer so far
    (C{RcvbufErrors} in /proc/net/snmp; 0 where there is none)."""
    try:
        with open("/proc/net/snmp") as f:
            rows = [line.split() for line in f if line.startswith("Udp:")]
        return int(rows[1][rows[0].index("RcvbufErrors")])
    except (OSError, ValueError, IndexError):
        return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process C{pid} so far."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def prioritise(pid: int, nice: int) -> None:
    """
    Give process C{pid} the nice value C{nice}, and its scheduling
    autogroup too: with C{kernel.sched_autogroup_enabled} (the default on
    desktop and many server kernels) every session is its own group and
    groups share the CPU equally whatever their processes' nice values, so
    only the group's nice (C{/proc/PID/autogroup}) lifts the soak above the
    other jobs of a shared machine.  Negative values need root; failures
    are ignored.
    """
    try:
        os.setpriority(os.PRIO_PROCESS, pid, nice)
    except OSError:
        pass
    try:
        with open(f"/proc/{pid}/autogroup", "w") as f:
            f.write(str(nice))
    except OSError:
        pass


#: Call counts at which the RSS is reported.
MARKS = (1000, 10000, 20000, 50000, 100000, 200000, 400000)


def successful_calls(directory: str) -> int:
    """SIPp's cumulative successful calls, from its statistics file."""
    stats = bench.read_stats(os.path.join(directory, "stats.csv"))
    try:
        return int(stats.get("SuccessfulCall(C)", "0") or 0)
    except ValueError:
        return 0


def soak(calls: int, rate: float, settle: float = 420.0, keep: str = "", nice: int = 0) -> dict:
    raw = keep or bench.tempfile.mkdtemp(prefix="rustpbx-soak-")
    os.makedirs(raw, exist_ok=True)
    users_csv = bench.write_injection(os.path.join(raw, "users.csv"), bench.bench_users())
    callee_csv = bench.write_injection(os.path.join(raw, "callee.csv"), [bench.CALLEE])
    server = bench.PbxServer(raw)
    server.start("soak")
    if nice:
        prioritise(server.child.pid, nice)
    samples = []
    settling = []  # (seconds after the last call, RSS)
    sipps = []  # stopped whatever ends the soak: an interrupted run left them calling
    try:
        callee_port = bench.free_port()
        reg_dir = os.path.join(raw, "register")
        reg = bench.run_sipp("sipp-callee-register", reg_dir, bench.sipp_args(
            "register.xml", reg_dir, callee_port, "u1", remote=server.address(), calls=1, rate=1,
            injection=callee_csv, timeout=15), 20)
        if reg.successful != 1:
            raise SystemExit(f"the callee could not register: {reg.first_error}")
        limit = calls / rate + 60.0
        uas_dir = os.path.join(raw, "callee")
        uas = bench.start_sipp("sipp-callee", uas_dir, bench.sipp_args(
            "uas.xml", uas_dir, callee_port, "u1", calls=calls, uac=False, service=bench.CALLEE, timeout=limit + 5))
        sipps.append(uas)
        if nice:
            prioritise(uas.pid, nice)
        time.sleep(0.3)
        uac_dir = os.path.join(raw, "caller")
        uac = bench.start_sipp("sipp-caller", uac_dir, bench.sipp_args(
            "uac_auth.xml", uac_dir, bench.free_port(), "u1", remote=server.address(), calls=calls, rate=rate,
            injection=users_csv, service=bench.CALLEE, timeout=limit))
        sipps.append(uac)
        if nice:
            prioritise(uac.pid, nice)
        started = time.monotonic()
        drops_before, cpu_before = udp_receive_drops(), cpu_seconds(server.child.pid)
        while uac.alive() and time.monotonic() - started < limit + 5:
            time.sleep(1.0)
            samples.append((successful_calls(uac_dir), bench.memory_bytes([server.child.pid]), time.monotonic() - started))
        result = bench.finish_sipp(uac, uac_dir, 5.0)
        bench.finish_sipp(uas, uas_dir, 5.0)
        done = time.monotonic() - started
        drops, cpu = udp_receive_drops() - drops_before, cpu_seconds(server.child.pid) - cpu_before
        waited = 0.0
        while waited < settle:
            step = min(10.0, settle - waited)
            time.sleep(step)
            waited += step
            settling.append((round(waited), bench.memory_bytes([server.child.pid])))
        after_wait = bench.memory_bytes([server.child.pid])
    finally:
        for sipp in sipps:
            if sipp.alive():
                sipp.stop(grace=2.0)
        server.stop()
        server.cleanup()
    first = next((rss for n, rss, _ in samples if n >= 1000), None)
    end_calls, end_rss = (samples[-1][0], samples[-1][1]) if samples else (0, None)
    per_10k = None
    if first is not None and end_rss is not None and end_calls > 1000:
        start_at = next(n for n, rss, _ in samples if n >= 1000)
        per_10k = (end_rss - first) / max(1, end_calls - start_at) * 10000
    return {
        "calls": calls,
        "rate": rate,
        "successful": result.successful,
        "failed": result.failed,
        "seconds": round(done, 1),
        "cpu_ms_per_call": round(cpu * 1000 / max(1, calls), 2),
        "udp_receive_drops": drops,
        "rss_after_1000": first,
        "rss_at_end": end_rss,
        "rss_after_wait": after_wait,
        "growth_per_10000_calls": per_10k,
        "within_20_percent": (first is not None and after_wait <= first * 1.2),
        "at_calls": {mark: next((rss for n, rss, _ in samples if n >= mark), None) for mark in MARKS if mark <= calls},
        "samples": samples,
        "settling": settling,
        "raw": raw,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100000)
    parser.add_argument("--rate", type=float, default=100.0,
                        help="calls per second (default 100: what the PBX sustains on a shared 2-core machine)")
    parser.add_argument("--settle", type=float, default=420.0,
                        help="seconds to wait after the last call (default: the nonce lifetime, 300 s, and a round "
                             "of the PBX's housekeeping, every 60 s, for the nonce-counts of the last calls to go)")
    parser.add_argument("--pymalloc", action="store_true",
                        help="run the PBX with Python's own small-object allocator instead of the systemd unit's "
                             "PYTHONMALLOC=malloc")
    parser.add_argument("--json", help="write the result (with every sample) to this file")
    parser.add_argument("--nice", type=int, default=0,
                        help="nice value of the PBX and SIPp and of their scheduling autogroups (e.g. -10, as root, on "
                             "a machine shared with other jobs: the soak measures memory, and calls that fail for want "
                             "of CPU stay up in the PBX)")
    args = parser.parse_args(argv)
    # A SIGTERM stops the PBX and SIPp too (the finally of soak()).
    bench.signal.signal(bench.signal.SIGTERM, lambda *_: sys.exit(3))
    # The PBX inherits this environment (bench/run.py starts it so).
    if args.pymalloc:
        os.environ.pop("PYTHONMALLOC", None)
    else:
        os.environ["PYTHONMALLOC"] = "malloc"
    result = soak(args.calls, args.rate, args.settle, nice=args.nice)
    mb = lambda v: "n/a" if v is None else f"{v / 1048576:.1f} MB"  # noqa: E731
    print(f"calls: {result['successful']} successful, {result['failed']} failed, in {result['seconds']} s")
    print(f"PBX CPU per call: {result['cpu_ms_per_call']} ms; UDP datagrams dropped for a full receive buffer "
          f"(whole machine) during the calls: {result['udp_receive_drops']}")
    print(f"RSS after 1,000 calls: {mb(result['rss_after_1000'])}; at the end: {mb(result['rss_at_end'])}; "
          f"{args.settle:.0f} s later: {mb(result['rss_after_wait'])}")
    print("RSS at " + ", ".join(f"{n:,} calls: {mb(v)}" for n, v in result["at_calls"].items()))
    print("after the last call: " + ", ".join(f"{t} s: {mb(v)}" for t, v in result["settling"] if t % 60 == 0 or t == 40))
    growth = result["growth_per_10000_calls"]
    print(f"growth per 10,000 calls: {'n/a' if growth is None else f'{growth / 1024:.0f} KB'}")
    print("within 20 % of the 1,000-call level: " + ("yes" if result["within_20_percent"] else "NO"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    if result["failed"]:
        return 2
    return 0 if result["within_20_percent"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
