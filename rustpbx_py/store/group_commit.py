# -*- test-case-name: rustpbx_py.test.test_registrar -*-
"""
Group commit: many small writes, one database transaction per batch.

A REGISTER must not be answered 200 before its binding is committed, and a
call record must not be lost; but one transaction (and one trip to the
database thread) per write costs more than the write itself.  Statements
submitted while a commit is in flight all go in the next one, in the order
they were submitted, so the database sees writes in submission order.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

Statement = Tuple[str, Sequence[Any]]


class GroupCommit:
    """
    Batches of statements for a L{rustpbx_py.store.db.Database}'s
    C{run_many}.  Each submitter's Deferred fires once its statements are
    committed.  If a batch of several submissions fails, each is retried
    alone, in order, so one bad write fails only its own submitter.

    @param store: the database, or None to fire every submission at once
        (a memory-only registry).
    """

    log = Logger()

    def __init__(self, store: Optional[Any]) -> None:
        self.store = store
        self._queue: List[Tuple[List[Statement], defer.Deferred]] = []
        self._busy = False
        self._idle: List[defer.Deferred] = []
        #: Transactions committed (or attempted) so far.
        self.commits = 0

    def submit(self, statements: List[Statement]) -> defer.Deferred:
        """Queue C{statements}; fires with None once committed."""
        d: defer.Deferred = defer.Deferred()
        if self.store is None:
            d.callback(None)
            return d
        self._queue.append((statements, d))
        if not self._busy:
            self._flush()
        return d

    def drained(self) -> defer.Deferred:
        """Fires once every submitted write finished."""
        if not self._busy:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._idle.append(d)
        return d

    def _flush(self) -> None:
        batch, self._queue = self._queue, []
        self._busy = True
        statements = [s for stmts, _ in batch for s in stmts]
        self.commits += 1
        dw = self.store.run_many(statements)

        def done(_):
            for _stmts, d in batch:
                d.callback(None)

        def failed(f: Failure):
            if len(batch) == 1:
                batch[0][1].errback(f)
                return None
            self.log.failure("a batch of {n} writes failed; retrying one by one", f, n=len(batch))
            return self._one_by_one(batch)

        dw.addCallbacks(done, failed)
        dw.addBoth(self._next)

    def _one_by_one(self, batch: List[Tuple[List[Statement], defer.Deferred]]) -> defer.Deferred:
        """Each submission of a failed batch in its own transaction, in order."""
        chain: defer.Deferred = defer.succeed(None)
        for statements, d in batch:

            def alone(_, statements=statements, d=d):
                dw = self.store.run_many(statements)
                dw.addCallbacks(d.callback, d.errback)
                return dw.addErrback(lambda f: None)

            chain.addCallback(alone)
        return chain

    def _next(self, _=None) -> None:
        if self._queue:
            self._flush()
            return
        self._busy = False
        waiting, self._idle = self._idle, []
        for d in waiting:
            d.callback(None)
