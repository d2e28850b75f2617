"""
HEP export's cost on the hot path, in-process: CPU seconds per call of the
whole PBX (real core, transaction layer, modules; scripted UDP phones on a
clock, rustpbx_py/test/sip_phones.py) with HEP export off (no tap on the
core) and on (every message encoded and written to an in-memory socket),
alternating rounds so that a busy machine affects both alike.

    .venv/bin/python bench/hep_overhead.py [--rounds 6] [--calls 2000]

Figures are CPU time of this process (time.process_time).  bench/README.md
has a reference run.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, __file__.rsplit("/bench/", 1)[0])

from monitor_overhead import USERS, HeapClock  # noqa: E402

from rustpbx_py.protocols.hep import HepExporter  # noqa: E402
from rustpbx_py.test.core_wire import MemoryUDPSocket  # noqa: E402
from rustpbx_py.test.sip_phones import Network, Phone  # noqa: E402


class _Reactor:
    """The exporter's reactor: the bench clock and a socket that counts."""

    def __init__(self, clock) -> None:
        self.clock = clock
        self.bytes = 0

    def seconds(self) -> float:
        return self.clock.seconds()

    def listenUDP(self, port, protocol, interface=""):
        def count(data, addr):
            self.bytes += len(data)

        return MemoryUDPSocket(("0.0.0.0", 40000), count)


def run(hep: bool, calls: int) -> tuple:
    """CPU seconds per call (407, INVITE, 180, 200, ACK, BYE on both legs)."""
    clock = HeapClock()
    net = Network(clock, user_backends=USERS, realms=["example.com"], auth_failure_delay=0.0)
    reactor = _Reactor(clock)
    if hep:
        exporter = HepExporter(reactor, net.core, "192.0.2.99", 9060, capture_id=2001, password="pw")
        exporter.start()
    phones = [Phone(net, f"u{i}", f"pw{i}", (f"203.0.113.{i % 250 + 1}", 5060 + i // 250), ("10.0.0.1", 5060)) for i in range(200)]
    for phone in phones:
        phone.register(3600)
    gc.collect()
    began = time.process_time()
    for i in range(calls):
        phones[i % 200].call(f"u{(i + 1) % 200}", 1.0)
        if i % 50 == 49:
            net.advance(1.5)
    net.advance(3)
    spent = time.process_time() - began
    answered = sum(p.calls_established for p in phones)
    net.stop()
    return spent / calls, answered, reactor.bytes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args(argv)
    figures = {False: [], True: []}
    exported = 0
    for r in range(args.rounds):
        for hep in (False, True) if r % 2 == 0 else (True, False):
            per_call, answered, size = run(hep, args.calls)
            if answered != args.calls:
                print(f"warning: {answered} of {args.calls} calls answered", file=sys.stderr)
            figures[hep].append(per_call)
            exported = max(exported, size)
    without = statistics.median(figures[False]) * 1e6
    with_ = statistics.median(figures[True]) * 1e6
    print(f"{args.rounds} rounds of {args.calls} calls, median CPU time per call:")
    print(f"  {without:.0f} us with HEP export off, {with_:.0f} us with it on ({(with_ / without - 1) * 100:+.1f} %);"
          f" {exported / args.calls:.0f} bytes of HEP per call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
