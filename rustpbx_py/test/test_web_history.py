"""
L{rustpbx_py.web.history} on a real migrated SQLite database, filled by
L{rustpbx_py.call.record.CallRecordStore} as the call module fills it:
search by number, date range, status and direction, pages, one record with
its flow and media, the dashboard's hourly counts and the CSV export.
"""

from __future__ import annotations

import csv
import io
import os

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase, TestCase

from rustpbx_py.call import record as R
from rustpbx_py.call.record import CallRecord, CallRecordStore
from rustpbx_py.store.db import Database
from rustpbx_py.test.fakes import make_request
from rustpbx_py.web import history
from rustpbx_py.web.history import FilterError, RecordFilter

#: 2026-12-03T10:00:00Z
DAY = 1796292000.0


def make_record(call_id: str, caller: str, callee: str, start: float, answered: bool = True,
                reason: str = R.BY_CALLER, status: int = 200, ended: bool = True) -> CallRecord:
    record = CallRecord(call_id, caller, callee, start, 10)
    record.sip_flow.add(start, "a", "in", ("192.0.2.10", 5060), make_request(call_id=call_id))
    record.status_code = status
    if answered:
        record.answer_time = start + 2
    if ended:
        record.end_time = start + 32
        record.hangup_reason = reason
    return record


class HistoryTestsMixin:
    """
    The queries on a database L{database} gives (SQLite here, PostgreSQL
    in interop/test_postgresql), filled with five calls.
    """

    def database(self) -> defer.Deferred:
        raise NotImplementedError

    @defer.inlineCallbacks
    def setUp(self):
        self.db = yield self.database()
        store = CallRecordStore(self.db)
        self.records = [
            make_record("c1", "alice@example.com", "bob@example.com", DAY),
            make_record("c2", "bob@example.com", "+493012345@carrier.example", DAY + 3600, answered=False,
                        reason=R.CANCELED, status=487),
            make_record("c3", "carol@example.com", "bob@example.com", DAY + 86400, answered=False,
                        reason=R.REJECTED, status=486),
            make_record("c4", "alice@example.com", "dave_1@example.com", DAY + 86400 + 60, ended=False),
            make_record("c5", "=cmd|' /C calc'!A0", "alice@example.com", DAY + 2 * 86400, answered=False,
                        reason=R.NO_ANSWER, status=480),
        ]
        self.records[1].direction = "outbound"
        self.records[1].media = {"mode": "all", "anchored": True, "reason": "media_proxy all", "legs": {
            "a": {"codec": "PCMU", "local": ["192.0.2.1", 30000], "remote": ["192.0.2.10", 4000],
                  "in": {"packets": 100, "bytes": 17200, "lost": 1, "jitter_ms": 2.5},
                  "out": {"packets": 99, "bytes": 17028, "lost": 0, "jitter_ms": 0.5}, "dropped": 0},
            "b": {"codec": "PCMA", "local": ["192.0.2.1", 30002], "remote": None,
                  "in": {}, "out": {}}}}
        for record in self.records:
            store.opened(record)
            if record.end_time is not None:
                store.save(record)
        yield store.drained()

    def ids(self, page):
        return [item["call_id"] for item in page["items"]]

    @defer.inlineCallbacks
    def test_search_all(self):
        """Without filters every record is listed, newest first, with its status and talk time."""
        page = yield history.search(self.db, RecordFilter())
        self.assertEqual(self.ids(page), ["c5", "c4", "c3", "c2", "c1"])
        self.assertEqual((page["total"], page["offset"], page["limit"]), (5, 0, history.DEFAULT_LIMIT))
        statuses = {item["call_id"]: item["status"] for item in page["items"]}
        self.assertEqual(statuses, {"c1": "completed", "c2": "missed", "c3": "failed", "c4": "active", "c5": "missed"})
        c1 = page["items"][-1]
        self.assertEqual((c1["caller"], c1["callee"], c1["talk_time"]), ("alice@example.com", "bob@example.com", 30.0))
        self.assertNotIn("sip_flow", c1)

    @defer.inlineCallbacks
    def test_search_number(self):
        """A number matches part of the caller or callee, or a whole Call-ID; LIKE wildcards are literal."""
        page = yield history.search(self.db, RecordFilter(number="alice"))
        self.assertEqual(self.ids(page), ["c5", "c4", "c1"])
        page = yield history.search(self.db, RecordFilter(number="+4930"))
        self.assertEqual(self.ids(page), ["c2"])
        page = yield history.search(self.db, RecordFilter(number="c3"))
        self.assertEqual(self.ids(page), ["c3"])
        page = yield history.search(self.db, RecordFilter(number="dave_"))
        self.assertEqual(self.ids(page), ["c4"])
        page = yield history.search(self.db, RecordFilter(number="e_1"))
        self.assertEqual(self.ids(page), ["c4"])
        page = yield history.search(self.db, RecordFilter(number="%"))
        self.assertEqual(self.ids(page), [])

    @defer.inlineCallbacks
    def test_search_dates_status_direction(self):
        """Date ranges are whole UTC days; status and direction narrow further."""
        flt = RecordFilter.from_args({b"from": [b"2026-12-03"], b"to": [b"2026-12-03"]})
        page = yield history.search(self.db, flt)
        self.assertEqual(self.ids(page), ["c2", "c1"])
        page = yield history.search(self.db, RecordFilter.from_args({"from": "2026-12-04"}))
        self.assertEqual(self.ids(page), ["c5", "c4", "c3"])
        page = yield history.search(self.db, RecordFilter.from_args({"status": "missed"}))
        self.assertEqual(self.ids(page), ["c5", "c2"])
        page = yield history.search(self.db, RecordFilter.from_args({"status": "failed"}))
        self.assertEqual(self.ids(page), ["c3"])
        page = yield history.search(self.db, RecordFilter.from_args({"status": "active"}))
        self.assertEqual(self.ids(page), ["c4"])
        page = yield history.search(self.db, RecordFilter.from_args({"status": "completed", "q": "alice"}))
        self.assertEqual(self.ids(page), ["c1"])
        page = yield history.search(self.db, RecordFilter.from_args({"direction": "outbound"}))
        self.assertEqual(self.ids(page), ["c2"])

    @defer.inlineCallbacks
    def test_pages(self):
        """offset and limit page the result; the total counts every match."""
        page = yield history.search(self.db, RecordFilter.from_args({"limit": "2", "offset": "2"}))
        self.assertEqual(self.ids(page), ["c3", "c2"])
        self.assertEqual((page["total"], page["offset"], page["limit"]), (5, 2, 2))
        page = yield history.search(self.db, RecordFilter(offset=10))
        self.assertEqual((page["items"], page["total"]), ([], 5))

    @defer.inlineCallbacks
    def test_get_record(self):
        """One record by id or Call-ID, its SIP flow and media decoded; None when unknown."""
        record = self.records[1]
        row = yield history.get_record(self.db, record.id)
        self.assertEqual(row["call_id"], "c2")
        self.assertEqual(row["status"], "missed")
        self.assertEqual(row["media"]["legs"]["a"]["codec"], "PCMU")
        self.assertEqual(len(row["sip_flow"]), 1)
        self.assertTrue(row["sip_flow"][0]["message"].startswith("INVITE "))
        by_call_id = yield history.get_record(self.db, "c2")
        self.assertEqual(by_call_id["id"], record.id)
        missing = yield history.get_record(self.db, "nope")
        self.assertIsNone(missing)
        active = yield history.get_record(self.db, "c4")
        self.assertEqual((active["status"], active["sip_flow"]), ("active", []))

    @defer.inlineCallbacks
    def test_hourly_counts(self):
        """
        The last 24 hours in hour buckets (current hour last): each counts
        the calls that started in it and those that failed.
        """
        now = DAY + 86400 + 1800  # 2026-12-04T10:30Z
        hours = yield history.hourly_counts(self.db, now)
        self.assertEqual(len(hours), 24)
        self.assertEqual(hours[-1].start, DAY + 86400)
        self.assertEqual(hours[0].start, DAY + 86400 - 23 * 3600)
        # c2 (missed, not failed) began the first hour; c3 (failed) and c4 the last.
        self.assertEqual([(h.calls, h.failed) for h in hours if h.calls], [(1, 0), (2, 1)])
        self.assertEqual(hours[0].calls, 1)
        self.assertEqual(hours[-1].calls, 2)
        later = yield history.hourly_counts(self.db, DAY + 3600 + 10, hours=2)
        self.assertEqual([(h.start, h.calls, h.failed) for h in later], [(DAY, 1, 0), (DAY + 3600, 1, 0)])

    @defer.inlineCallbacks
    def test_export(self):
        """
        The CSV has a header and one line per record the filter selects,
        times in ISO 8601 UTC; a caller that looks like a formula is
        defused, a +number is not.
        """
        data = yield history.export(self.db, RecordFilter(offset=3, limit=1))
        rows = list(csv.DictReader(io.StringIO(data.decode("utf-8"))))
        self.assertEqual([r["call_id"] for r in rows], ["c5", "c4", "c3", "c2", "c1"])
        c1 = rows[-1]
        self.assertEqual(c1["start_time"], "2026-12-03T10:00:00.000Z")
        self.assertEqual(c1["answer_time"], "2026-12-03T10:00:02.000Z")
        self.assertEqual((c1["status"], c1["talk_time"], c1["hangup_reason"]), ("completed", "30.000", "byCaller"))
        self.assertEqual(rows[0]["caller"], "'=cmd|' /C calc'!A0")
        self.assertEqual(rows[3]["callee"], "+493012345@carrier.example")
        self.assertEqual(rows[1]["end_time"], "")
        data = yield history.export(self.db, RecordFilter(status="failed"))
        self.assertEqual(len(data.decode().strip().split("\r\n")), 2)


class HistoryTests(HistoryTestsMixin, TestCase):
    """On a migrated SQLite database."""

    @defer.inlineCallbacks
    def database(self):
        path = os.path.abspath(self.mktemp()) + ".sqlite3"
        db = Database("sqlite:///" + path)
        self.addCleanup(db.close)
        yield db.migrate()
        return db


class FilterTests(SynchronousTestCase):
    def test_bad_values(self):
        """Bad values raise FilterError naming the field, with what was expected."""
        cases = [
            ({"status": "weird"}, "status"),
            ({"direction": "sideways"}, "direction"),
            ({"from": "03/12/2026"}, "from"),
            ({"to": "yesterday"}, "to"),
            ({"from": "2026-12-04", "to": "2026-12-03"}, "to"),
            ({"limit": "0"}, "limit"),
            ({"limit": "5000"}, "limit"),
            ({"offset": "-1"}, "offset"),
            ({"offset": "x"}, "offset"),
        ]
        for args, field in cases:
            with self.assertRaises(FilterError) as caught:
                RecordFilter.from_args(args)
            self.assertEqual(caught.exception.field, field, args)

    def test_any(self):
        """'any' status or direction is no filter (RustPBX's filter options)."""
        flt = RecordFilter.from_args({"status": "any", "direction": "ANY"})
        self.assertEqual((flt.status, flt.direction), ("", ""))

    def test_times(self):
        """A date and time is taken as UTC; a day's end is the next midnight."""
        flt = RecordFilter.from_args({"from": "2026-12-03T10:00", "to": "2026-12-03"})
        self.assertEqual((flt.since, flt.until), (DAY, DAY + 14 * 3600))

    def test_query_string(self):
        """The filters round-trip through the query string page links use."""
        flt = RecordFilter.from_args({"q": "alice", "from": "2026-12-03", "to": "2026-12-04", "status": "missed"})
        text = flt.query_string(offset=50)
        self.assertEqual(text, "q=alice&from=2026-12-03&to=2026-12-04&status=missed&offset=50")
        from urllib.parse import parse_qs

        again = RecordFilter.from_args(parse_qs(text))
        self.assertEqual((again.number, again.since, again.until, again.status, again.offset),
                         (flt.number, flt.since, flt.until, flt.status, 50))


class MediaRowsTests(SynchronousTestCase):
    def test_media_rows(self):
        """Each leg's codec, addresses and per-direction figures; a leg without figures shows zeros."""
        media = {"legs": {"a": {"codec": "PCMU", "local": ["192.0.2.1", 30000], "remote": ["192.0.2.10", 4000],
                                "in": {"packets": 5, "bytes": 860, "lost": 1, "jitter_ms": 2.5}, "out": {}},
                          "b": {"codec": None}}}
        a, b = history.media_rows(media)
        self.assertEqual((a["leg"], a["codec"], a["local"], a["remote"]), ("a", "PCMU", "192.0.2.1:30000", "192.0.2.10:4000"))
        self.assertEqual((a["in_packets"], a["in_lost"], a["in_jitter_ms"], a["out_packets"]), (5, 1, 2.5, 0))
        self.assertEqual((b["codec"], b["remote"], b["in_bytes"]), ("", "", 0))
        self.assertEqual(history.media_rows(None), [])
        self.assertEqual(history.media_rows({"mode": "none", "anchored": False}), [])
