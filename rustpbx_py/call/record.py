# -*- test-case-name: rustpbx_py.test.test_call_record -*-
"""
Call records and the SIP flow kept with them.

A record is inserted when the call starts and completed when it ends; at
start-up, rows a crash left open are closed with reason C{bySystem}, so no
call is ever missing from the history.
"""

from __future__ import annotations

import json
from typing import List, Optional

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from rustpbx_py.interfaces import ICallRecordSink
from rustpbx_py.randomness import random_hex
from rustpbx_py.store.group_commit import GroupCommit

# Hangup reasons (RustPBX's names).
BY_CALLER = "byCaller"
BY_CALLEE = "byCallee"
CANCELED = "canceled"
NO_ANSWER = "noAnswer"
REJECTED = "rejected"
FAILED = "failed"
SERVER_UNAVAILABLE = "serverUnavailable"
SESSION_EXPIRED = "sessionExpired"
BY_SYSTEM = "bySystem"
#: No RTP either way for rtp_timeout (RustPBX's name).
RTP_TIMEOUT = "rtpTimeout"
#: The call reached max_call_duration (RustPBX's name).
AUTOHANGUP = "autohangup"


class SipFlow:
    """
    The messages of one call, both legs, at most C{limit} of them.

    Each message is kept as the bytes it was at that moment: a received one
    as it arrived, a sent one as it left (a relayed message may be edited
    afterwards); the dicts of L{items} are made only
    when the record is written.
    """

    __slots__ = ("_entries", "limit", "dropped")

    def __init__(self, limit: int) -> None:
        self._entries: List[tuple] = []
        self.limit = limit
        self.dropped = 0

    def add(self, when: float, leg: str, direction: str, peer, message) -> None:
        """Keep C{message}: a parsed or built message, or the bytes sent."""
        if len(self._entries) >= self.limit:
            self.dropped += 1
            return
        if isinstance(message, bytes):
            data = message
        else:
            data = message.received if direction == "in" else None
            if data is None:
                data = message.to_bytes()
        self._entries.append((when, leg, direction, peer, data))

    @property
    def items(self) -> List[dict]:
        """The messages as C{time}, C{leg}, C{direction}, C{peer}, C{message} dicts."""
        return [
            {
                "time": when,
                "leg": leg,
                "direction": direction,
                "peer": f"{peer[0]}:{peer[1]}" if peer else "",
                "message": data.decode("utf-8", "replace"),
            }
            for when, leg, direction, peer, data in self._entries
        ]


class CallRecord:
    """What one call leaves behind."""

    def __init__(self, call_id: str, caller: str, callee: str, start_time: float, flow_limit: int) -> None:
        self.id = random_hex(8)
        self.call_id = call_id
        self.caller = caller
        self.callee = callee
        self.direction = "internal"
        self.route: Optional[str] = None
        self.trunk: Optional[str] = None
        self.start_time = start_time
        self.ring_time: Optional[float] = None
        self.answer_time: Optional[float] = None
        self.end_time: Optional[float] = None
        self.status_code: Optional[int] = None
        self.hangup_reason: Optional[str] = None
        self.sip_flow = SipFlow(flow_limit)
        #: The media side (L{rustpbx_py.call.media.CallMedia.summary}):
        #: mode, anchored, reason, and per leg the codec, local and remote
        #: (latched) addresses and C{in}/C{out} packets, bytes, lost and
        #: jitter_ms.  None when the call never reached an offer.
        self.media: Optional[dict] = None

    def as_row(self, with_flow: bool = True) -> tuple:
        """The row's values; without the SIP flow (NULL) when C{with_flow} is false."""
        return (
            self.id,
            self.call_id,
            self.caller,
            self.callee,
            self.direction,
            self.route,
            self.trunk,
            self.start_time,
            self.ring_time,
            self.answer_time,
            self.end_time,
            self.status_code,
            self.hangup_reason,
            json.dumps(self.sip_flow.items) if with_flow else None,
            json.dumps(self.media) if self.media is not None else None,
        )


_COLUMNS = (
    "id, call_id, caller, callee, direction, route, trunk, start_time, ring_time, "
    "answer_time, end_time, status_code, hangup_reason, sip_flow, media"
)
_INSERT = f"INSERT INTO call_records ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
#: The final write replaces the row the call's start inserted, or inserts
#: it when that insert failed (one statement; SQLite 3.24+, PostgreSQL 9.5+).
_SAVE = _INSERT + " ON CONFLICT (id) DO UPDATE SET {}".format(
    ", ".join(f"{c} = excluded.{c}" for c in (c.strip() for c in _COLUMNS.split(",")) if c != "id")
)


@implementer(ICallRecordSink)
class CallRecordStore:
    """Writes call records to the C{call_records} table."""

    log = Logger()

    def __init__(self, db) -> None:
        self.db = db
        # One writer for inserts and final saves: a call's save is always
        # committed after its insert, and many calls share a transaction.
        self._writer = GroupCommit(db)

    def opened(self, record: CallRecord) -> defer.Deferred:
        """
        Insert the row of a call that just started.  Its SIP flow is
        written with the final state: the row is there so that a crash
        cannot lose the call, and the flow of two messages is not worth a
        second copy of every INVITE in the database.
        """
        return self._guard(self._writer.submit([(_INSERT, record.as_row(with_flow=False))]))

    def save(self, record: CallRecord) -> defer.Deferred:
        """Write the final state of a call (replace its row)."""
        return self._guard(self._writer.submit([(_SAVE, record.as_row())]))

    def drained(self) -> defer.Deferred:
        """Fires once every record submitted so far is written."""
        return self._writer.drained()

    def close_orphans(self, now: float) -> defer.Deferred:
        """Close the rows a previous run left open (it stopped or crashed)."""
        return self.db.run_operation(
            "UPDATE call_records SET end_time = ?, hangup_reason = ? WHERE end_time IS NULL",
            (now, BY_SYSTEM),
        )

    def recent(self, limit: int = 100) -> defer.Deferred:
        """The latest records, newest first, as dicts."""
        d = self.db.run_query(f"SELECT {_COLUMNS} FROM call_records ORDER BY start_time DESC LIMIT ?", (limit,))
        names = [c.strip() for c in _COLUMNS.split(",")]
        return d.addCallback(lambda rows: [dict(zip(names, row)) for row in rows])

    def _guard(self, d: defer.Deferred) -> defer.Deferred:
        def failed(f):
            self.log.failure("could not write a call record", f)

        return d.addErrback(failed)
