#!/usr/bin/env python3
"""
What each call leaves behind, by allocation site: the short, in-process
companion of bench/soak.py.

The PBX of the tests (rustpbx_py/test/sip_phones.py: the real core,
transaction layer, UDP protocol and modules, the default config, a
simulated clock and scripted phones) takes calls at a steady rate, and
tracemalloc compares what is allocated at the end of the run, and again
after the windows of ended calls closed, with what was allocated after the
first calls.  It prints the sizes of the PBX's per-call tables and the
allocation sites that kept the most, per call.

    .venv/bin/python bench/retained.py                 # 20,000 calls at 200/s
    .venv/bin/python bench/retained.py --calls 5000 --top 25

No SIPp and no sockets: minutes of simulated traffic take seconds, and the
figures do not depend on the machine's load.  RSS is not measured here
(bench/soak.py does that against a real twistd).
"""

from __future__ import annotations

import argparse
import gc
import heapq
import itertools
import os
import sys
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet.base import DelayedCall  # noqa: E402

from rustpbx_py.test.sip_phones import Network, Phone  # noqa: E402

class HeapClock:
    """
    L{task.Clock}'s interface on a heap: task.Clock sorts its whole list of
    delayed calls on every C{callLater} and every call it runs, which is
    quadratic with the thousands of timers of a few seconds of traffic
    (200 calls took half a minute after the first 1,000).
    """

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list = []
        self._order = itertools.count()
        self._live = 0
        self._cancellations = 0

    def seconds(self) -> float:
        return self.now

    def _push(self, dc) -> None:
        heapq.heappush(self._heap, (dc.getTime(), next(self._order), dc))

    def _cancelled(self, dc) -> None:
        # As the reactor does: cancelled calls stay in the heap until they
        # are more than half of it, then it is rebuilt without them.
        self._live -= 1
        self._cancellations += 1
        if self._cancellations > 50 and self._cancellations > len(self._heap) >> 1:
            self._cancellations = 0
            self._heap = [e for e in self._heap if not (e[2].cancelled or e[2].called) and e[0] == e[2].getTime()]
            heapq.heapify(self._heap)

    def callLater(self, delay, fn, *args, **kw):
        dc = DelayedCall(self.now + delay, fn, args, kw, self._cancelled, self._push, self.seconds)
        self._live += 1
        self._push(dc)
        return dc

    def getDelayedCalls(self):
        return [dc for _, _, dc in self._heap if not (dc.cancelled or dc.called)]

    def pending(self) -> int:
        return self._live

    def advance(self, amount: float) -> None:
        self.now += amount
        heap = self._heap
        while heap and heap[0][0] <= self.now:
            when, _, dc = heapq.heappop(heap)
            if dc.cancelled or dc.called or when != dc.getTime():
                continue  # cancelled, or reset to another time (pushed again)
            dc.called = 1
            self._live -= 1
            dc.func(*dc.args, **dc.kw)


USERS = [
    {
        "type": "memory",
        "users": [{"username": "alice", "password": "a-pw"}, {"username": "bob", "password": "b-pw"}],
    }
]


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def malloc_trim() -> str:
    import ctypes

    try:
        return str(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return "no glibc"


def tables(net: Network) -> dict:
    """The sizes of the tables that hold something per call."""
    call = net.module("call")
    auth = net.module("auth")
    layer = net.core.transactions
    return {
        "server transactions": len(layer.server),
        "client transactions": len(layer.client),
        "long-timer queue": len(getattr(layer.long_timers, "_queue", ()) or ()),
        "calls": len(call.calls),
        "legs": len(call.legs),
        "ended B Call-IDs (late 2xx)": len(call.ended_b_calls),
        "leg forget timers": len(call._forgets),
        "auth dialog cache": len(auth.dialog_cache) if auth.dialog_cache is not None else 0,
        "nonce-counts": len(auth.nonces),
        "pending clock calls": net.clock.pending(),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rate", type=float, default=200.0, help="calls per simulated second")
    parser.add_argument("--hold", type=float, default=1.0, help="seconds each call lasts")
    parser.add_argument("--after", type=float, default=300.0, help="simulated seconds to wait after the last call")
    parser.add_argument("--top", type=int, default=15, help="allocation sites to print")
    parser.add_argument("--frames", type=int, default=1, help="traceback depth of a site")
    parser.add_argument("--rss", dest="trace", action="store_false",
                        help="measure RSS (and what malloc_trim gives back) instead of tracing allocations")
    args = parser.parse_args(argv)

    from twisted.logger import globalLogPublisher

    # One log line per call: no observer may keep them.
    globalLogPublisher._observers = []
    clock = HeapClock()
    net = Network(clock, user_backends=USERS, realms=["example.com"])
    alice = Phone(net, "alice", "a-pw", ("203.0.113.1", 5060), ("10.0.0.1", 5060))
    bob = Phone(net, "bob", "b-pw", ("203.0.113.2", 5060), ("10.0.0.2", 5060))
    alice.register(3600)
    bob.register(3600)
    # What twistd adds (rustpbx_py.server): the collector's tuning and the
    # housekeeping every minute.
    from rustpbx_py.call.dialog import forget_tags
    from rustpbx_py.server import GC_GEN2_THRESHOLD, FullCollections
    from rustpbx_py.server import malloc_trim as trim

    gen0, gen1, _ = gc.get_threshold()
    gc.set_threshold(gen0, gen1, GC_GEN2_THRESHOLD)
    prunes = [m.prune for m in net.modules if callable(getattr(m, "prune", None))]
    FullCollections(clock, housekeeping=prunes + [forget_tags], trim=trim()).start()
    step = 0.5
    per_step = max(1, int(args.rate * step))

    def run(calls: int) -> None:
        done = 0
        while done < calls:
            for _ in range(min(per_step, calls - done)):
                alice.call("bob", args.hold)
            done += per_step
            net.advance(step, step)
            # The scripted phones' own bookkeeping is not the PBX's.
            del alice.answers[:]
            del bob.answers[:]
            bob._incoming.clear()

    def measure(label: str, calls: int):
        gc.collect()
        if not args.trace:
            before = rss()
            trimmed = malloc_trim()
            print(f"\n== {label}: {calls} calls, RSS {before / 1048576:.1f} MB, "
                  f"{rss() / 1048576:.1f} MB after malloc_trim ({trimmed})")
            for name, size in tables(net).items():
                print(f"   {name:30} {size}")
            return None
        snap = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap>")]
        )
        total = sum(s.size for s in snap.statistics("filename"))
        print(f"\n== {label}: {calls} calls, {total / 1048576:.1f} MB traced")
        for name, size in tables(net).items():
            print(f"   {name:30} {size}")
        return snap

    run(200)
    if args.trace:
        tracemalloc.start(args.frames)
    run(1000 - 200)
    first = measure("after the first 1,000", 1000)
    run(args.calls - 1000)
    end = measure("at the end", args.calls)
    net.advance(40, step)
    measure("40 s later", args.calls)
    net.advance(max(0.0, args.after - 40), 1.0)
    later = measure(f"{args.after:.0f} s later", args.calls)
    n = args.calls - 1000
    if not args.trace:
        return 0
    for label, snap in (("at the end", end), (f"{args.after:.0f} s later", later)):
        diff = snap.compare_to(first, "traceback" if args.frames > 1 else "lineno")
        grown = sum(d.size_diff for d in diff)
        print(f"\n== kept since the first 1,000 calls, {label}: {grown / 1024:.0f} KB, {grown / n:.0f} bytes per call")
        for d in diff[: args.top]:
            if d.size_diff <= 0:
                continue
            where = "\n      ".join(d.traceback.format()[-2 * args.frames :]) if args.frames > 1 else str(d.traceback[0])
            print(f"  {d.size_diff / n:8.1f} B/call  {d.count_diff:+8d} blocks  {where}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
