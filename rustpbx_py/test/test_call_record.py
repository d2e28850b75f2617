"""
Tests for L{rustpbx_py.call.record}: the SIP flow kept with a call, and
L{CallRecordStore} writing rows to a real SQLite database (insert at start,
final row at end, orphans closed as bySystem).
"""

from __future__ import annotations

import json
import os

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase, TestCase

from rustpbx_py.call import record as R
from rustpbx_py.call.record import CallRecord, CallRecordStore, SipFlow
from rustpbx_py.store.db import Database
from rustpbx_py.test.fakes import make_request


class SipFlowTests(SynchronousTestCase):
    def test_bounded(self):
        """At most C{limit} messages are kept; the others are counted."""
        flow = SipFlow(2)
        for i in range(5):
            flow.add(float(i), "a", "in", ("192.0.2.1", 5060), make_request("INFO", cseq=i + 1))
        self.assertEqual([item["time"] for item in flow.items], [0.0, 1.0])
        self.assertEqual(flow.dropped, 3)

    def test_item(self):
        """Each item names the time, leg, direction, peer and message text."""
        flow = SipFlow(10)
        flow.add(1.5, "b", "out", ("192.0.2.7", 5080), make_request("BYE"))
        (item,) = flow.items
        self.assertEqual((item["time"], item["leg"], item["direction"], item["peer"]), (1.5, "b", "out", "192.0.2.7:5080"))
        self.assertTrue(item["message"].startswith("BYE sip:bob@example.com SIP/2.0\r\n"))

    def test_zero(self):
        """sip_flow_max_items = 0 keeps no flow."""
        flow = SipFlow(0)
        flow.add(0.0, "a", "in", None, make_request())
        self.assertEqual((flow.items, flow.dropped), ([], 1))


class StoreTests(TestCase):
    """Rows in a migrated SQLite database."""

    @defer.inlineCallbacks
    def setUp(self):
        path = os.path.abspath(self.mktemp()) + ".sqlite3"
        self.db = Database("sqlite:///" + path)
        self.addCleanup(self.db.close)
        yield self.db.migrate()
        self.store = CallRecordStore(self.db)

    def record(self, call_id="c1", start=100.0):
        record = CallRecord(call_id, "alice@example.com", "bob@example.com", start, 10)
        record.sip_flow.add(start, "a", "in", ("192.0.2.10", 5060), make_request(call_id=call_id))
        return record

    @defer.inlineCallbacks
    def rows(self):
        rows = yield self.db.run_query(
            "SELECT id, call_id, start_time, answer_time, end_time, status_code, hangup_reason, sip_flow FROM call_records ORDER BY start_time"
        )
        return rows

    @defer.inlineCallbacks
    def test_opened_then_saved(self):
        """A row appears when the call starts (open: no end time) and holds
        the final state once saved; the SIP flow is stored as JSON."""
        record = self.record()
        yield self.store.opened(record)
        (row,) = yield self.rows()
        self.assertEqual((row[0], row[1], row[4]), (record.id, "c1", None))
        record.answer_time, record.end_time = 101.0, 130.0
        record.status_code, record.hangup_reason = 200, R.BY_CALLEE
        yield self.store.save(record)
        (row,) = yield self.rows()
        self.assertEqual(row[2:7], (100.0, 101.0, 130.0, 200, R.BY_CALLEE))
        flow = json.loads(row[7])
        self.assertEqual(flow[0]["leg"], "a")

    @defer.inlineCallbacks
    def test_orphans_closed(self):
        """Rows left open by a run that stopped are closed with bySystem at
        the given time; finished rows are untouched."""
        open_record = self.record("open")
        done = self.record("done", start=50.0)
        done.end_time, done.hangup_reason, done.status_code = 60.0, R.BY_CALLER, 200
        yield self.store.opened(open_record)
        yield self.store.save(done)
        yield self.store.close_orphans(500.0)
        rows = yield self.rows()
        self.assertEqual([(r[1], r[4], r[6]) for r in rows], [("done", 60.0, R.BY_CALLER), ("open", 500.0, R.BY_SYSTEM)])

    @defer.inlineCallbacks
    def test_recent(self):
        """recent() lists records newest first as dicts."""
        for i in range(3):
            yield self.store.save(self.record(f"c{i}", start=float(i)))
        found = yield self.store.recent(2)
        self.assertEqual([r["call_id"] for r in found], ["c2", "c1"])


class OrderTests(SynchronousTestCase):
    """The final write never overtakes the insert (a pool may reorder them)."""

    @staticmethod
    def kind(statements) -> str:
        return "replace" if "ON CONFLICT" in statements[0][0] else "insert"

    def test_save_waits_for_insert(self):
        """save() issued while the insert is pending runs after it."""
        calls = []
        pending = defer.Deferred()
        kind = self.kind

        class SlowDb:
            def run_many(self, statements):
                calls.append(kind(statements))
                return pending if len(calls) == 1 else defer.succeed(None)

        store = CallRecordStore(SlowDb())
        record = CallRecord("c", "a", "b", 0.0, 10)
        store.opened(record)
        saved = store.save(record)
        self.assertEqual(calls, ["insert"])
        pending.callback(None)
        self.assertEqual(calls, ["insert", "replace"])
        self.assertIsNone(self.successResultOf(saved))

    def test_records_share_a_transaction(self):
        """Records submitted while a write is in flight go in one transaction."""
        batches = []
        pending = defer.Deferred()

        class SlowDb:
            def run_many(self, statements):
                batches.append(list(statements))
                return pending if len(batches) == 1 else defer.succeed(None)

        store = CallRecordStore(SlowDb())
        for i in range(3):
            store.opened(CallRecord(f"c{i}", "a", "b", 0.0, 10))
        self.assertEqual([len(b) for b in batches], [1])
        pending.callback(None)
        self.assertEqual([len(b) for b in batches], [1, 2])
        self.assertIsNone(self.successResultOf(store.drained()))

    def test_failed_insert_still_saves(self):
        """A failed insert is logged and the final row is still written."""
        calls = []
        kind = self.kind

        class FailingDb:
            def run_many(self, statements):
                calls.append(kind(statements))
                if len(calls) == 1:
                    return defer.fail(RuntimeError("disk full"))
                return defer.succeed(None)

        store = CallRecordStore(FailingDb())
        record = CallRecord("c", "a", "b", 0.0, 10)
        store.opened(record)
        store.save(record)
        self.assertEqual(calls, ["insert", "replace"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
