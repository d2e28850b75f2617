#!/usr/bin/env python3
"""
What SQLite's ``synchronous`` setting costs the registrar: REGISTER
bindings written through the PBX's own store (rustpbx_py.store.db with
its group-commit writer and the registrar's upsert), with
``synchronous = NORMAL`` and ``FULL``, on a database file in this
directory's file system (not tmpfs: the cost is the fsync).

    .venv/bin/python bench/sqlite_durability.py [--writes 3000] [--in-flight 100]

Two figures per setting: one phone at a time (each REGISTER waits for its
commit before the next: commits per second, the fsync latency bound) and
``--in-flight`` REGISTERs outstanding at once (what the group commit
sustains: bindings per second).  CPU load on the machine changes the
second figure; the first is the disk's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from twisted.internet import defer, reactor, task  # noqa: E402

from rustpbx_py import registrar as R  # noqa: E402
from rustpbx_py.store import db as DB  # noqa: E402
from rustpbx_py.store.group_commit import GroupCommit  # noqa: E402


def row(i: int) -> tuple:
    now = time.time()
    values = {c: None for c in R._COLUMNS}
    values.update(
        aor=f"{10000 + i % 1000}@example.com", binding_key=f"key-{i % 1000}", contact=f"<sip:{i}@192.0.2.1:5060>",
        params="", call_id=f"reg-{i}", cseq=i, expires=3600, expires_at=now + 3600, registered_at=now, path="",
        transport="UDP", source_host="192.0.2.1", source_port=5060, user_agent="bench", nat=0,
    )
    return tuple(values[c] for c in R._COLUMNS)


@defer.inlineCallbacks
def measure(mode: str, writes: int, in_flight: int, directory: str):
    DB.SQLITE_SYNCHRONOUS = mode
    path = os.path.join(directory, f"{mode}.sqlite3")
    store = DB.Database("sqlite://" + path)
    yield store.migrate()
    writer = GroupCommit(store)
    serial = max(100, writes // 10)
    began = time.perf_counter()
    for i in range(serial):
        yield writer.submit([(R._UPSERT, row(i))])
    serial_rate = serial / (time.perf_counter() - began)
    before = writer.commits
    began = time.perf_counter()
    pending = set()
    for i in range(writes):
        d = writer.submit([(R._UPSERT, row(i))])
        pending.add(d)
        d.addBoth(lambda r, d=d: pending.discard(d))
        while len(pending) >= in_flight:
            yield task.deferLater(reactor, 0, lambda: None)
    yield writer.drained()
    batched_rate = writes / (time.perf_counter() - began)
    commits = writer.commits - before
    store.close()
    return serial_rate, batched_rate, commits


@defer.inlineCallbacks
def main(args):
    directory = tempfile.mkdtemp(prefix="sqlite-durability-", dir=HERE)
    try:
        for mode in ("NORMAL", "FULL"):
            serial, batched, commits = yield measure(mode, args.writes, args.in_flight, directory)
            print(f"synchronous={mode}: one at a time {serial:.0f} REGISTER/s; "
                  f"{args.in_flight} in flight {batched:.0f} REGISTER/s ({commits} commits)")
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        reactor.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=3000)
    parser.add_argument("--in-flight", type=int, default=100)
    reactor.callWhenRunning(main, parser.parse_args())
    reactor.run()
