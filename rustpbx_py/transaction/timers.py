# -*- test-case-name: rustpbx_py.test.test_transaction -*-
"""The RFC 3261 timer values (section 17 and table 4), from the config."""

from __future__ import annotations


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


class TimerSet:
    """The running timers of one transaction, cancelled together."""

    __slots__ = ("clock", "calls")

    def __init__(self, clock) -> None:
        self.clock = clock
        self.calls: dict = {}

    def start(self, name: str, delay: float, fn, *args) -> None:
        self.stop(name)
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
