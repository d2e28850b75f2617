"""
Tests for L{rustpbx_py.server.PbxService}: start-up failures an admin can
cause are one log line naming what to fix, not a traceback.
"""

from __future__ import annotations

import os

from twisted.internet import defer, reactor
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from rustpbx_py.config import default_config
from rustpbx_py.server import PbxService, StartupError


class DatabaseStartTests(TestCase):
    @defer.inlineCallbacks
    def start_with(self, url: str):
        """Start a PBX without listeners on C{url}; the failure and the
        error-level log events of its start-up."""
        config = default_config(udp_port=None, tcp_port=None, addr="127.0.0.1")
        config.database_url = url
        events = []
        observer = events.append
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.patch(reactor, "stop", lambda: None)  # _start_failed stops the reactor
        service = PbxService(config, reactor)
        service.startService()
        self.addCleanup(service.stopService)
        failure = None
        try:
            yield service.ready
        except BaseException as e:  # StartupError is a SystemExit
            failure = e
        errors = [e for e in events if e.get("log_level") is not None and e["log_level"].name in ("error", "critical")]
        return failure, errors

    @defer.inlineCallbacks
    def test_read_only_database(self):
        """A database that cannot be written (here opened read-only) stops
        start-up with one line naming the file; nothing logs a traceback."""
        path = os.path.abspath(self.mktemp()) + ".sqlite3"
        with open(path, "wb"):
            pass
        failure, errors = yield self.start_with(f"sqlite://{path}?mode=ro")
        self.assertIsInstance(failure, StartupError)
        self.assertEqual(len(errors), 1, errors)
        self.assertIsNone(errors[0].get("log_failure"))
        text = formatEvent(errors[0])
        self.assertIn(path, text)
        self.assertNotIn("\n", text)
        self.assertIn("read", text)

    @defer.inlineCallbacks
    def test_migrated_then_read_only(self):
        """A database already migrated but now read-only is found at start
        (a write probe), not at the first REGISTER."""
        path = os.path.abspath(self.mktemp()) + ".sqlite3"
        from rustpbx_py.store.db import Database

        store = Database(f"sqlite://{path}")
        yield store.migrate()
        store.close()
        failure, errors = yield self.start_with(f"sqlite://{path}?mode=ro")
        self.assertIsInstance(failure, StartupError)
        self.assertEqual(len(errors), 1, errors)
        self.assertIn(path, formatEvent(errors[0]))


class FullCollectionTests(SynchronousTestCase):
    def test_scheduled(self):
        """A full collection runs every GC_FULL_INTERVAL seconds, on the
        injected clock, until stopped."""
        from twisted.internet import task

        from rustpbx_py.server import GC_FULL_INTERVAL, FullCollections

        clock = task.Clock()
        runs = []
        collections = FullCollections(clock, collect=lambda: runs.append(clock.seconds()) or 0)
        collections.start()
        clock.advance(GC_FULL_INTERVAL - 1)
        self.assertEqual(runs, [])
        clock.advance(1)
        clock.advance(GC_FULL_INTERVAL)
        self.assertEqual(runs, [GC_FULL_INTERVAL, 2 * GC_FULL_INTERVAL])
        collections.stop()
        clock.advance(GC_FULL_INTERVAL)
        self.assertEqual(len(runs), 2)

    def test_housekeeping(self):
        """Every HOUSEKEEPING_INTERVAL seconds the housekeeping callables
        run (one that raises is logged, the others still run), then the
        trim; the full collection only every GC_FULL_INTERVAL."""
        from twisted.internet import task

        from rustpbx_py.server import GC_FULL_INTERVAL, HOUSEKEEPING_INTERVAL, FullCollections

        clock = task.Clock()
        events = []

        def broken():
            raise ValueError("broken")

        collections = FullCollections(
            clock,
            collect=lambda: events.append("collect") or 0,
            housekeeping=[broken, lambda: events.append("prune")],
            trim=lambda: events.append("trim") or 1,
        )
        collections.start()
        clock.advance(HOUSEKEEPING_INTERVAL)
        self.assertEqual(events, ["prune", "trim"])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        ticks = int(GC_FULL_INTERVAL / HOUSEKEEPING_INTERVAL)
        for _ in range(ticks - 1):
            clock.advance(HOUSEKEEPING_INTERVAL)
        self.assertEqual(events.count("prune"), ticks)
        self.assertEqual(events.count("collect"), 1)
        self.assertEqual(events[-3:], ["prune", "collect", "trim"])
        self.flushLoggedErrors(ValueError)
        collections.stop()

    def test_malloc_trim(self):
        """malloc_trim: glibc's, callable, where the C library has it."""
        import ctypes

        from rustpbx_py.server import malloc_trim

        trim = malloc_trim()
        if not hasattr(ctypes.CDLL(None), "malloc_trim"):
            self.assertIsNone(trim)
        else:
            self.assertIn(trim(), (0, 1))
