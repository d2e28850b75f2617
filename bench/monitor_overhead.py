"""
The monitor addon's cost on the hot path, in-process: CPU seconds per
registration and per call of the whole PBX (real core, transaction layer,
modules; scripted UDP phones and a task.Clock, rustpbx_py/test/sip_phones.py)
with and without the addon, alternating rounds so that a busy machine
affects both alike, plus the cost of one /metrics render.

    .venv/bin/python bench/monitor_overhead.py [--rounds 6] [--calls 2000]

Figures are CPU time of this process (time.process_time), not wall time:
other load on the machine does not count.  bench/README.md has a reference
run.
"""

from __future__ import annotations

import argparse
import gc
import heapq
import statistics
import sys
import time

from twisted.internet import task

sys.path.insert(0, __file__.rsplit("/bench/", 1)[0])

from rustpbx_py.test.sip_phones import PBX_ADDRESS, Network, Phone  # noqa: E402

class HeapClock(task.Clock):
    """
    task.Clock with a heap: Twisted's sorts every pending call on each
    callLater, which at thousands of live transaction timers costs more
    than the PBX itself and would drown what is measured here.
    """

    def __init__(self) -> None:
        task.Clock.__init__(self)
        self._heap: list = []
        self._order = 0

    def callLater(self, delay, callable, *args, **kw):
        from twisted.internet.base import DelayedCall

        call = DelayedCall(self.seconds() + delay, callable, args, kw, lambda c: None, self._push, seconds=self.seconds)
        self._push(call)
        return call

    def _push(self, call) -> None:
        self._order += 1
        heapq.heappush(self._heap, (call.time, self._order, call))

    def getDelayedCalls(self):
        return [c for _, _, c in self._heap if not (c.cancelled or c.called)]

    def advance(self, amount: float) -> None:
        self.rightNow += amount
        heap = self._heap
        while heap and heap[0][0] <= self.rightNow:
            when, _, call = heapq.heappop(heap)
            if call.cancelled or call.called or when != call.time:
                continue
            call.called = 1
            call.func(*call.args, **call.kw)


USERS = [{"type": "memory", "users": [{"username": f"u{i}", "password": f"pw{i}"} for i in range(200)]}]


def build(monitor: bool):
    clock = HeapClock()
    net = Network(clock, user_backends=USERS, realms=["example.com"], auth_failure_delay=0.0)
    addon = None
    if monitor:
        from rustpbx_py.addons.monitor.addon import MonitorAddon
        from rustpbx_py.config import parse_config_text

        context = net.context
        context.config.addon_tables = parse_config_text('[proxy]\naddons = ["monitor"]\n').addon_tables
        context.core.transports.listening["UDP"] = PBX_ADDRESS
        addon = MonitorAddon(context)
        addon.hook_seconds = {"registration": 0.0, "call": 0.0}
        for name in ("_answered", "_binding", "on_call_event", "on_call_record"):
            setattr(addon, name, _timed(addon, getattr(addon, name)))
        context.addons = [addon]
        addon.start()
    return clock, net, addon


#: Which figure a hook's time counts for, by the phase being run.
PHASE = ["registration"]


def _timed(addon, fn):
    """C{fn}, adding the seconds it takes to C{addon.hook_seconds}."""
    clock = time.thread_time  # CPU time: preemption on a busy machine does not count

    def timed(*args):
        began = clock()
        try:
            return fn(*args)
        finally:
            addon.hook_seconds[PHASE[0]] += clock() - began

    return timed


def run(monitor: bool, calls: int) -> tuple:
    """CPU seconds for C{calls} registrations, then C{calls} calls."""
    clock, net, addon = build(monitor)
    phones = [Phone(net, f"u{i}", f"pw{i}", (f"203.0.113.{i % 250 + 1}", 5060 + i // 250), ("10.0.0.1", 5060)) for i in range(200)]
    gc.collect()
    PHASE[0] = "registration"
    began = time.process_time()
    for i in range(calls):
        phones[i % 200].register(3600)
    registered = time.process_time() - began
    PHASE[0] = "call"
    began = time.process_time()
    for i in range(calls):
        phones[i % 200].call(f"u{(i + 1) % 200}", 1.0)
        if i % 50 == 49:
            net.advance(1.5)
    net.advance(3)
    called = time.process_time() - began
    render = hooks = None
    if addon is not None:
        hooks = {k: v / calls for k, v in addon.hook_seconds.items()}
        from prometheus_client import generate_latest

        began = time.process_time()
        for _ in range(20):
            text = generate_latest(addon.registry)
        render = ((time.process_time() - began) / 20, len(text))
        addon.stop()
    answered = sum(p.calls_established for p in phones)
    net.stop()
    return registered / calls, called / calls, answered, render, hooks


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args(argv)
    figures = {False: ([], []), True: ([], [])}
    renders = []
    hooks = {"registration": [], "call": []}
    for r in range(args.rounds):
        for monitor in (False, True) if r % 2 == 0 else (True, False):
            reg, call, answered, render, spent = run(monitor, args.calls)
            if spent:
                for k, v in spent.items():
                    hooks[k].append(v)
            if answered != args.calls:
                print(f"warning: {answered} of {args.calls} calls answered", file=sys.stderr)
            figures[monitor][0].append(reg)
            figures[monitor][1].append(call)
            if render:
                renders.append(render)
    print(f"{args.rounds} rounds of {args.calls} registrations and {args.calls} calls each, median CPU time:")
    for what, index in (("registration (401 + 200)", 0), ("call (407, INVITE, 180, 200, ACK, BYE)", 1)):
        without = statistics.median(figures[False][index]) * 1e6
        with_ = statistics.median(figures[True][index]) * 1e6
        spent = statistics.median(hooks["registration" if index == 0 else "call"]) * 1e6
        print(f"  per {what}: {without:.0f} us without the monitor, {with_:.0f} us with it ({(with_ / without - 1) * 100:+.1f} %);"
              f" {spent:.1f} us of it in the monitor's hooks")
    seconds, size = statistics.median(r[0] for r in renders), renders[-1][1]
    print(f"  one /metrics render: {seconds * 1000:.2f} ms ({size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
