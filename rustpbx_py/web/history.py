# -*- test-case-name: rustpbx_py.test.test_web_history -*-
"""
The call history for the console and the API: searching the
C{call_records} table (by number, date range and status, paginated), one
record with its SIP flow and media figures, the hourly counts of the
dashboard's chart, and the CSV export.

Statuses are RustPBX's (its reporter's): C{completed} (answered),
C{missed} (nobody answered: cancelled or no answer), C{failed} (refused or
failed before an answer); ours adds C{active} for a call still going (its
row is written when it starts).  Queries use C{?} placeholders and portable
SQL, so they run on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import calendar
import csv
import io
import json
import time
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from twisted.internet import defer

COLUMNS = (
    "id", "call_id", "caller", "callee", "direction", "route", "trunk", "start_time", "ring_time",
    "answer_time", "end_time", "status_code", "hangup_reason",
)
STATUSES = ("completed", "missed", "failed", "active")
DIRECTIONS = ("inbound", "outbound", "internal")
#: Hangup reasons of a call nobody answered that count as missed, not failed.
MISSED_REASONS = ("canceled", "noAnswer")
MAX_LIMIT = 500
DEFAULT_LIMIT = 50

_MISSED_SQL = "('canceled', 'noAnswer')"
_STATUS_SQL = {
    "completed": "answer_time IS NOT NULL AND end_time IS NOT NULL",
    "missed": f"answer_time IS NULL AND end_time IS NOT NULL AND hangup_reason IN {_MISSED_SQL}",
    "failed": (f"answer_time IS NULL AND end_time IS NOT NULL "
               f"AND (hangup_reason IS NULL OR hangup_reason NOT IN {_MISSED_SQL})"),
    "active": "end_time IS NULL",
}


class FilterError(ValueError):
    """A search parameter the admin can fix: C{field} names it."""

    def __init__(self, field: str, message: str) -> None:
        ValueError.__init__(self, message)
        self.field = field
        self.message = message


def record_status(row: Dict[str, Any]) -> str:
    """RustPBX's status of a record (see the module docstring)."""
    if row.get("end_time") is None:
        return "active"
    if row.get("answer_time") is not None:
        return "completed"
    if row.get("hangup_reason") in MISSED_REASONS:
        return "missed"
    return "failed"


def talk_time(row: Dict[str, Any], now: Optional[float] = None) -> float:
    """Seconds from the answer to the end (to C{now} while active); 0 unanswered."""
    answered = row.get("answer_time")
    if answered is None:
        return 0.0
    end = row.get("end_time")
    if end is None:
        end = now if now is not None else answered
    return max(float(end) - float(answered), 0.0)


def parse_day(value: str, field: str, end: bool = False) -> Optional[float]:
    """
    A date (C{YYYY-MM-DD}, UTC: the whole day, its end when C{end}) or a
    date and time (C{YYYY-MM-DDTHH:MM[:SS]}, UTC) as Unix seconds; "" is None.
    """
    value = (value or "").strip()
    if not value:
        return None
    for fmt, whole_day in (("%Y-%m-%d", True), ("%Y-%m-%dT%H:%M:%S", False), ("%Y-%m-%dT%H:%M", False),
                           ("%Y-%m-%d %H:%M:%S", False), ("%Y-%m-%d %H:%M", False)):
        try:
            parsed = time.strptime(value, fmt)
        except ValueError:
            continue
        seconds = float(calendar.timegm(parsed))
        if whole_day and end:
            seconds += 86400
        return seconds
    raise FilterError(field, f"{field}: expected a date YYYY-MM-DD (UTC) or YYYY-MM-DDTHH:MM, got {value!r}")


@dataclass
class RecordFilter:
    """
    What to search: C{number} (part of the caller or callee, or a whole
    Call-ID), C{since}/C{until} (Unix seconds: start time at or after,
    before), C{status} (one of L{STATUSES}), C{direction}; C{offset} and
    C{limit} page the newest-first result.
    """

    number: str = ""
    since: Optional[float] = None
    until: Optional[float] = None
    status: str = ""
    direction: str = ""
    offset: int = 0
    limit: int = DEFAULT_LIMIT

    @classmethod
    def from_args(cls, args: Dict[str, Any]) -> "RecordFilter":
        """
        From query arguments (C{q} or C{number}, C{from}/C{date_from},
        C{to}/C{date_to}, C{status}, C{direction}, C{offset}, C{limit});
        values may be bytes or lists of them, as in C{request.args}.
        Raises L{FilterError} naming the bad field.
        """

        def arg(*names: str) -> str:
            for name in names:
                value = args.get(name, args.get(name.encode()))
                if isinstance(value, (list, tuple)):
                    value = value[0] if value else None
                if isinstance(value, bytes):
                    value = value.decode("utf-8", "replace")
                if value not in (None, ""):
                    return str(value).strip()
            return ""

        status = arg("status").lower()
        if status in ("any", "all"):
            status = ""
        if status and status not in STATUSES:
            raise FilterError("status", f"status: expected one of {', '.join(STATUSES)}, got {status!r}")
        direction = arg("direction").lower()
        if direction in ("any", "all"):
            direction = ""
        if direction and direction not in DIRECTIONS:
            raise FilterError("direction", f"direction: expected one of {', '.join(DIRECTIONS)}, got {direction!r}")
        since = parse_day(arg("from", "date_from"), "from")
        until = parse_day(arg("to", "date_to"), "to", end=True)
        if since is not None and until is not None and until <= since:
            raise FilterError("to", "to: the end of the range is before its start")
        return cls(
            number=arg("q", "number"),
            since=since,
            until=until,
            status=status,
            direction=direction,
            offset=_integer(arg("offset"), "offset", 0, 0, None),
            limit=_integer(arg("limit"), "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
        )

    def where(self) -> Tuple[str, List[Any]]:
        """The WHERE clause (or "") and its parameters."""
        clauses: List[str] = []
        params: List[Any] = []
        if self.number:
            pattern = "%" + self.number.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            clauses.append("(caller LIKE ? ESCAPE '\\' OR callee LIKE ? ESCAPE '\\' OR call_id = ?)")
            params += [pattern, pattern, self.number]
        if self.since is not None:
            clauses.append("start_time >= ?")
            params.append(self.since)
        if self.until is not None:
            clauses.append("start_time < ?")
            params.append(self.until)
        if self.status:
            clauses.append(f"({_STATUS_SQL[self.status]})")
        if self.direction:
            clauses.append("direction = ?")
            params.append(self.direction)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params

    def query_string(self, **changes: Any) -> str:
        """These filters (with C{changes}) as a URL query, for page links."""
        from urllib.parse import urlencode

        values = {
            "q": self.number,
            "from": _day(self.since),
            "to": _day(self.until, end=True),
            "status": self.status,
            "direction": self.direction,
            "offset": self.offset or "",
            "limit": self.limit if self.limit != DEFAULT_LIMIT else "",
        }
        values.update(changes)
        return urlencode({k: v for k, v in values.items() if v not in ("", None)})


def _day(seconds: Optional[float], end: bool = False) -> str:
    if seconds is None:
        return ""
    if end and seconds % 86400 == 0:
        seconds -= 86400
    if seconds % 86400 == 0:
        return time.strftime("%Y-%m-%d", time.gmtime(seconds))
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def _integer(value: str, field: str, default: int, low: int, high: Optional[int]) -> int:
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise FilterError(field, f"{field}: expected a whole number, got {value!r}")
    if number < low or (high is not None and number > high):
        bound = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise FilterError(field, f"{field}: expected a number {bound}, got {number}")
    return number


def _row(names: Sequence[str], values: Sequence[Any]) -> Dict[str, Any]:
    row = dict(zip(names, values))
    row["status"] = record_status(row)
    row["talk_time"] = talk_time(row)
    return row


def search(db, flt: RecordFilter) -> defer.Deferred:
    """
    The records C{flt} selects, newest first, one page of them: fires with
    C{{"items": [...], "total", "offset", "limit"}} (the API's page shape);
    each item has the L{COLUMNS}, C{status} and C{talk_time}, no SIP flow.
    """
    where, params = flt.where()
    listing = (f"SELECT {', '.join(COLUMNS)} FROM call_records{where} "
               f"ORDER BY start_time DESC, id LIMIT ? OFFSET ?")
    counting = f"SELECT COUNT(*) FROM call_records{where}"

    @defer.inlineCallbacks
    def run():
        rows = yield db.run_query(listing, tuple(params) + (flt.limit, flt.offset))
        total = yield db.run_query(counting, tuple(params))
        return {
            "items": [_row(COLUMNS, r) for r in rows],
            "total": int(total[0][0]) if total else 0,
            "offset": flt.offset,
            "limit": flt.limit,
        }

    return run()


def get_record(db, record_id: str) -> defer.Deferred:
    """
    One record by its id (or, failing that, the newest with that Call-ID),
    with C{sip_flow} (a list of items) and C{media} (a dict or None)
    decoded; fires with None when there is none.
    """
    names = COLUMNS + ("sip_flow", "media")
    select = f"SELECT {', '.join(names)} FROM call_records WHERE "

    @defer.inlineCallbacks
    def run():
        rows = yield db.run_query(select + "id = ?", (record_id,))
        if not rows:
            rows = yield db.run_query(select + "call_id = ? ORDER BY start_time DESC LIMIT 1", (record_id,))
        if not rows:
            return None
        row = _row(names, rows[0])
        row["sip_flow"] = _json(row.get("sip_flow"), [])
        row["media"] = _json(row.get("media"), None)
        return row

    return run()


def _json(text: Optional[str], default: Any) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


@dataclass
class HourCount:
    """Calls that started in one hour: how many, and how many failed."""

    start: float
    calls: int = 0
    failed: int = 0


def hourly_counts(db, now: float, hours: int = 24) -> defer.Deferred:
    """
    Calls and failures per hour over the last C{hours} (the current hour
    last), in one query with a conditional sum per hour: no
    database-specific date function, and the start-time index bounds it.
    Fires with a list of L{HourCount}.
    """
    end = (int(now) // 3600 + 1) * 3600
    starts = [float(end - (hours - i) * 3600) for i in range(hours)]
    sums = []
    for start in starts:
        within = f"start_time >= {start!r} AND start_time < {start + 3600!r}"
        sums.append(f"SUM(CASE WHEN {within} THEN 1 ELSE 0 END)")
        sums.append(f"SUM(CASE WHEN {within} AND ({_STATUS_SQL['failed']}) THEN 1 ELSE 0 END)")
    sql = f"SELECT {', '.join(sums)} FROM call_records WHERE start_time >= ? AND start_time < ?"
    d = db.run_query(sql, (starts[0], float(end)))

    def counted(rows):
        values = list(rows[0]) if rows else []
        out = []
        for i, start in enumerate(starts):
            calls = values[2 * i] if 2 * i < len(values) else 0
            failed = values[2 * i + 1] if 2 * i + 1 < len(values) else 0
            out.append(HourCount(start, int(calls or 0), int(failed or 0)))
        return out

    return d.addCallback(counted)


CSV_COLUMNS = (
    "id", "call_id", "caller", "callee", "direction", "status", "status_code", "hangup_reason", "route",
    "trunk", "start_time", "ring_time", "answer_time", "end_time", "talk_time",
)


def _iso(value: Any) -> str:
    if value is None:
        return ""
    seconds = float(value)
    whole = int(seconds)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int((seconds - whole) * 1000):03d}Z"


def _cell(value: Any) -> str:
    """
    A CSV cell that a spreadsheet will not run as a formula (a caller name
    is whatever the phone put in From): text starting with C{= @}, a tab
    or a carriage return, or with C{+ -} not followed by a digit, gets a
    leading apostrophe; phone numbers (C{+4930...}) stay as they are.
    """
    text = "" if value is None else str(value)
    if text[:1] in ("=", "@", "\t", "\r") or (text[:1] in ("+", "-") and not text[1:2].isdigit()):
        return "'" + text
    return text


def records_csv(rows: Iterable[Dict[str, Any]]) -> bytes:
    """Records as CSV (UTF-8, a header line, times in ISO 8601 UTC, talk time in seconds)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        cells = []
        for name in CSV_COLUMNS:
            value = row.get(name)
            if name.endswith("_time") and name != "talk_time":
                cells.append(_iso(value))
            elif name == "talk_time":
                cells.append(f"{float(value or 0):.3f}")
            else:
                cells.append(_cell(value))
        writer.writerow(cells)
    return out.getvalue().encode("utf-8")


def export(db, flt: RecordFilter, maximum: int = 100000) -> defer.Deferred:
    """
    Every record C{flt} selects (newest first, at most C{maximum}, the
    page ignored) as CSV bytes.
    """
    where, params = flt.where()
    sql = f"SELECT {', '.join(COLUMNS)} FROM call_records{where} ORDER BY start_time DESC, id LIMIT ?"
    d = db.run_query(sql, tuple(params) + (maximum,))
    return d.addCallback(lambda rows: records_csv(_row(COLUMNS, r) for r in rows))


def format_time(seconds: Optional[float]) -> str:
    """Unix seconds as C{YYYY-MM-DD HH:MM:SS} UTC, "" for None."""
    if seconds is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(seconds)))


def format_duration(seconds: Optional[float]) -> str:
    """Seconds as C{M:SS} or C{H:MM:SS}."""
    total = int(float(seconds or 0))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def media_rows(media: Optional[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """
    The per-leg figures of a record's C{media} column, flattened for a
    table: C{leg}, C{codec}, C{local}, C{remote} (host:port), and for
    C{in}/C{out} C{packets}, C{bytes}, C{lost}, C{jitter_ms}.
    """
    legs = (media or {}).get("legs") or {}
    out = []
    for name in ("a", "b"):
        leg = legs.get(name)
        if not isinstance(leg, dict):
            continue
        row: Dict[str, Any] = {"leg": name, "codec": leg.get("codec") or ""}
        for where in ("local", "remote"):
            addr = leg.get(where)
            row[where] = f"{addr[0]}:{addr[1]}" if isinstance(addr, (list, tuple)) and len(addr) == 2 else ""
        for way in ("in", "out"):
            figures = leg.get(way) or {}
            for key in ("packets", "bytes", "lost", "jitter_ms"):
                row[f"{way}_{key}"] = figures.get(key, 0)
        row["dropped"] = leg.get("dropped", 0)
        out.append(row)
    return out


__all__ = [
    "RecordFilter", "FilterError", "search", "get_record", "hourly_counts", "HourCount", "export",
    "records_csv", "record_status", "talk_time", "media_rows", "format_time", "format_duration", "STATUSES", "DIRECTIONS",
]
