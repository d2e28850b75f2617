"""
Waiting in tests that run on the real reactor (real sockets, another
process): poll a condition on the reactor's clock, fail the test with
what was awaited when it does not come true in time.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet import defer, reactor, task


@defer.inlineCallbacks
def until(testcase, condition: Callable[[], object], what: str, timeout: float = 10.0, step: float = 0.05):
    """Fire once C{condition()} is true; fail C{testcase} after C{timeout} s."""
    for _ in range(max(1, int(timeout / step))):
        if condition():
            return
        yield task.deferLater(reactor, step, lambda: None)
    testcase.fail(f"timed out waiting for {what}")
