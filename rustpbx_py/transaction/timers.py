# -*- test-case-name: rustpbx_py.test.test_transaction -*-
"""The RFC 3261 timer values (section 17 and table 4), from the config."""

from __future__ import annotations

from collections import deque
from typing import Deque, Optional


class TimerValues:
    """
    T1, T2, T4 and 64*T1 in seconds.  RustPBX lets C{t1_timer} and
    C{t1x64_timer} be set separately; T2 and T4 keep the RFC's values.
    """

    __slots__ = ("t1", "t2", "t4", "t1x64")

    def __init__(self, t1_ms: int = 500, t1x64_ms: int = 32000, t2: float = 4.0, t4: float = 5.0) -> None:
        self.t1 = t1_ms / 1000.0
        self.t1x64 = t1x64_ms / 1000.0
        self.t2 = t2
        self.t4 = t4


class _QueuedTimer:
    """One timer of a L{FixedDelayQueue} (the part of a DelayedCall a
    L{TimerSet} uses: C{active} and C{cancel})."""

    __slots__ = ("deadline", "fn", "args", "pending")

    def __init__(self, deadline: float, fn, args) -> None:
        self.deadline = deadline
        self.fn = fn
        self.args = args
        self.pending = True

    def active(self) -> bool:
        return self.pending

    def cancel(self) -> None:
        self.pending = False


class FixedDelayQueue:
    """
    Timers that all run for the same delay (64*T1: Timers B, F, H, J, L,
    M), fired at their exact deadlines in the order they were started,
    with one reactor call for the whole queue.

    Every transaction starts one or two of these; as separate C{callLater}s
    they kept a heap of a hundred thousand entries at a few thousand
    transactions per second, each push and pop comparing DelayedCalls in
    Python.  With one delay, start order is deadline order: a deque does.
    """

    def __init__(self, clock, delay: float) -> None:
        self.clock = clock
        self.delay = delay
        self._queue: Deque[_QueuedTimer] = deque()
        self._call = None
        self._firing = False

    def start(self, fn, *args) -> _QueuedTimer:
        """Call C{fn(*args)} after L{delay} seconds, unless cancelled."""
        timer = _QueuedTimer(self.clock.seconds() + self.delay, fn, args)
        self._queue.append(timer)
        if self._call is None and not self._firing:
            # The queue was empty: this timer is its head.
            self._call = self.clock.callLater(self.delay, self._fire)
        return timer

    def _fire(self) -> None:
        self._call = None
        queue = self._queue
        now = self.clock.seconds()
        self._firing = True
        try:
            while queue and queue[0].deadline <= now:
                timer = queue.popleft()
                if timer.pending:
                    timer.pending = False
                    timer.fn(*timer.args)
        finally:
            self._firing = False
            while queue and not queue[0].pending:
                queue.popleft()
            if queue:
                self._call = self.clock.callLater(max(0.0, queue[0].deadline - now), self._fire)

    def stop(self) -> None:
        """Cancel every timer (the service is stopping)."""
        for timer in self._queue:
            timer.pending = False
        self._queue.clear()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None


class TimerSet:
    """
    The running timers of one transaction, cancelled together.  A timer
    whose delay is that of C{fixed} (a L{FixedDelayQueue}) goes in that
    queue; the others are C{callLater}s.
    """

    __slots__ = ("clock", "calls", "fixed")

    def __init__(self, clock, fixed: Optional[FixedDelayQueue] = None) -> None:
        self.clock = clock
        self.calls: dict = {}
        self.fixed = fixed

    def start(self, name: str, delay: float, fn, *args) -> None:
        self.stop(name)
        fixed = self.fixed
        if fixed is not None and delay == fixed.delay:
            self.calls[name] = fixed.start(self._fire, name, fn, args)
            return
        self.calls[name] = self.clock.callLater(delay, self._fire, name, fn, args)

    def _fire(self, name, fn, args) -> None:
        self.calls.pop(name, None)
        fn(*args)

    def stop(self, name: str) -> None:
        call = self.calls.pop(name, None)
        if call is not None and call.active():
            call.cancel()

    def stop_all(self) -> None:
        for call in self.calls.values():
            if call.active():
                call.cancel()
        self.calls.clear()
