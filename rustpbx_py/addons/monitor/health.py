# -*- test-case-name: rustpbx_py.test.test_monitor -*-
"""
C{GET /healthz}: is this PBX alive, and is it ready for traffic?

RustPBX's probe only says the process runs.  An admin's load balancer or
Kubernetes wants more: readiness fails (503) when the event loop lags
behind its timers (the PBX answers late, phones retransmit), when the
database does not answer C{SELECT 1} in time (REGISTERs and call records
would fail), or when no SIP listener is bound.  C{/healthz/live} is the
bare liveness probe: the event loop answered, so the process is not stuck.
"""

from __future__ import annotations

import time
from typing import Optional

from twisted.internet import defer, task
from twisted.logger import Logger

from rustpbx_py import __version__

#: How often the event-loop lag is sampled, seconds.
LAG_INTERVAL = 0.5
#: Samples the worst lag is taken over (the last 10 s).
LAG_WINDOW = 20


class LagProbe:
    """
    A timer that should fire every L{LAG_INTERVAL} seconds: how late it
    fires is how long the reactor was busy with something else.
    """

    def __init__(self, clock, interval: float = LAG_INTERVAL) -> None:
        self.clock = clock
        self.interval = interval
        self.samples: list = []
        self._expected: Optional[float] = None
        self._loop: Optional[task.LoopingCall] = None

    def start(self) -> None:
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = self.clock
        self._expected = self.clock.seconds() + self.interval
        self._loop.start(self.interval, now=False)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def _tick(self) -> None:
        now = self.clock.seconds()
        if self._expected is not None:
            self.samples.append(max(now - self._expected, 0.0))
            del self.samples[:-LAG_WINDOW]
        self._expected = now + self.interval

    @property
    def lag(self) -> float:
        """The worst lag over the window, seconds (0 before any sample)."""
        return max(self.samples, default=0.0)


class Health:
    """The checks behind /healthz."""

    log = Logger()

    def __init__(self, context, lag: LagProbe, lag_limit: float, database_timeout: float) -> None:
        self.context = context
        self.lag = lag
        self.lag_limit = lag_limit
        self.database_timeout = database_timeout
        self.started = time.time()

    def live(self) -> dict:
        return {"status": "ok", "uptime_seconds": int(time.time() - self.started), "version": __version__}

    @defer.inlineCallbacks
    def check(self):
        """Fires with (ready, body)."""
        reactor = {"ok": self.lag.lag <= self.lag_limit, "lag_seconds": round(self.lag.lag, 4), "limit_seconds": self.lag_limit}
        database = yield self._database()
        listeners = self._listeners()
        ready = reactor["ok"] and database["ok"] and listeners["ok"]
        body = self.live()
        body.update(
            status="ok" if ready else "unavailable",
            ready=ready,
            active_calls=len(getattr(_call_module(self.context), "calls", ()) or ()),
            checks={"reactor": reactor, "database": database, "sip_listeners": listeners},
        )
        return ready, body

    def _database(self) -> defer.Deferred:
        store = getattr(self.context, "store", None)
        if store is None:
            return defer.succeed({"ok": True, "detail": "no database configured"})
        clock = self.context.reactor
        began = time.monotonic()
        try:
            d = store.run_query("SELECT 1")
        except Exception as e:
            return defer.succeed({"ok": False, "error": str(e) or type(e).__name__})
        d.addTimeout(self.database_timeout, clock)

        def answered(_):
            return {"ok": True, "seconds": round(time.monotonic() - began, 4)}

        def failed(f):
            if f.check(defer.TimeoutError):
                error = f"no answer within {self.database_timeout:g} s"
            else:
                error = " ".join(str(f.value).split()) or type(f.value).__name__
            return {"ok": False, "error": error}

        return d.addCallbacks(answered, failed)

    def _listeners(self) -> dict:
        transports = self.context.core.transports
        bound = {name: f"{host}:{port}" for name, (host, port) in transports.listening.items()}
        closed = [name for name, port in self._ports() if not port]
        ok = bool(bound) and not closed
        out = {"ok": ok, "bound": bound}
        if closed:
            out["closed"] = closed
        return out

    def _ports(self):
        """(transport, still open) of each UDP listener."""
        for protocol in self.context.core.transports.udp:
            yield "UDP", getattr(protocol, "transport", None) is not None


def _call_module(context):
    for module in getattr(context, "modules", None) or ():
        if getattr(module, "name", None) == "call":
            return module
    return None
