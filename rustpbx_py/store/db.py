# -*- test-case-name: rustpbx_py.test.test_store -*-
"""
The database: SQLite by default (embedded, nothing to set up), PostgreSQL
when several nodes share state.

Queries run in a thread pool through L{twisted.enterprise.adbapi}, so the
reactor never waits on disk.  The schema is a numbered list of SQL files in
C{rustpbx_py/store/migrations/}, applied in order and recorded in the
C{schema_migrations} table; each feature adds its own file.
"""

from __future__ import annotations

import os
import re
from typing import Any, Iterable, List, Optional, Sequence, Tuple
from urllib.parse import unquote, urlparse

from twisted.enterprise import adbapi
from twisted.internet import defer
from twisted.logger import Logger

MIGRATIONS_DIR = os.path.join(os.path.dirname(__file__), "migrations")
_MIGRATION_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class DatabaseError(Exception):
    """A database URL or server we cannot use; the message says why."""


def migrations(directory: str = MIGRATIONS_DIR) -> List[Tuple[int, str, str]]:
    """(version, name, sql) of every migration file, in version order."""
    found = []
    for filename in sorted(os.listdir(directory)):
        m = _MIGRATION_RE.match(filename)
        if m is None:
            continue
        with open(os.path.join(directory, filename), encoding="utf-8") as f:
            found.append((int(m.group(1)), m.group(2), f.read()))
    versions = [v for v, _, _ in found]
    if len(set(versions)) != len(versions):
        raise DatabaseError(f"two migrations share a version number in {directory}")
    return found


def split_statements(sql: str) -> List[str]:
    """The statements of a migration file (no semicolons inside literals)."""
    lines = [ln for ln in sql.splitlines() if not ln.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


class Database:
    """
    One connection pool and the dialect facts the queries need.

    Query text is written with C{?} placeholders; for PostgreSQL they are
    rewritten to C{%s}.
    """

    log = Logger()

    def __init__(self, url: str, pool: Optional[adbapi.ConnectionPool] = None) -> None:
        self.url = url
        parsed = urlparse(url)
        self.dialect = "postgresql" if parsed.scheme in ("postgres", "postgresql") else parsed.scheme
        if pool is not None:
            self.pool = pool
        elif self.dialect == "sqlite":
            path = sqlite_path(url)
            if path != ":memory:":
                os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            # One connection: SQLite serialises writers anyway, and a single
            # connection keeps an in-memory database one database.
            self.pool = adbapi.ConnectionPool(
                "sqlite3",
                path,
                check_same_thread=False,
                cp_min=1,
                cp_max=1,
                cp_openfun=_sqlite_setup,
            )
        elif self.dialect == "postgresql":
            try:
                import psycopg2  # noqa: F401
            except ImportError:
                raise DatabaseError(
                    f"database_url {url!r} needs PostgreSQL support: install psycopg2 (python3-psycopg2)"
                )
            self.pool = adbapi.ConnectionPool(
                "psycopg2",
                dsn=url,
                cp_min=1,
                cp_max=4,
                cp_reconnect=True,
            )
        else:
            raise DatabaseError(
                f"database_url {url!r}: expected sqlite:///path or postgresql://user@host/db"
            )

    def _sql(self, sql: str) -> str:
        if self.dialect == "postgresql":
            return sql.replace("?", "%s")
        return sql

    def run_query(self, sql: str, params: Sequence[Any] = ()) -> defer.Deferred:
        """Fire with every row of a SELECT."""
        return self.pool.runQuery(self._sql(sql), tuple(params))

    def run_operation(self, sql: str, params: Sequence[Any] = ()) -> defer.Deferred:
        """Run one INSERT/UPDATE/DELETE; fires with None once committed."""
        return self.pool.runOperation(self._sql(sql), tuple(params))

    def run_many(self, statements: Iterable[Tuple[str, Sequence[Any]]]) -> defer.Deferred:
        """Run several statements in one transaction (all or nothing)."""
        statements = [(self._sql(s), tuple(p)) for s, p in statements]

        def work(txn):
            for sql, params in statements:
                txn.execute(sql, params)

        return self.pool.runInteraction(work)

    def run_interaction(self, fn, *args, **kw) -> defer.Deferred:
        """Run C{fn(cursor, ...)} in one transaction in the pool's thread."""
        return self.pool.runInteraction(fn, *args, **kw)

    def migrate(self, directory: str = MIGRATIONS_DIR) -> defer.Deferred:
        """
        Bring the schema up to date: apply, in one transaction each, the
        migrations not yet recorded.  Fires with the list of versions applied.
        """
        pending = migrations(directory)
        dialect = self.dialect
        sql = self._sql

        def work(txn):
            txn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
            )
            txn.execute("SELECT version FROM schema_migrations")
            done = {row[0] for row in txn.fetchall()}
            applied = []
            import time

            for version, name, text in pending:
                if version in done:
                    continue
                for statement in split_statements(text):
                    if dialect == "postgresql":
                        statement = statement.replace("AUTOINCREMENT", "")
                    txn.execute(statement)
                txn.execute(
                    sql("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)"),
                    (version, name, time.time()),
                )
                applied.append(version)
            return applied

        d = self.pool.runInteraction(work)

        def logged(applied):
            if applied:
                self.log.info("database {url}: applied migrations {applied}", url=self.url, applied=applied)
            return applied

        return d.addCallback(logged)

    def close(self) -> None:
        """Stop the pool's threads."""
        if self.pool.running:
            self.pool.close()


def sqlite_path(url: str) -> str:
    """The file of a C{sqlite:} URL: C{sqlite:///abs}, C{sqlite://rel}, C{sqlite::memory:}."""
    if url in ("sqlite::memory:", "sqlite://:memory:", "sqlite:///:memory:"):
        return ":memory:"
    rest = url[len("sqlite:") :]
    if rest.startswith("///"):
        return unquote(rest[2:])
    if rest.startswith("//"):
        return unquote(rest[2:])
    return unquote(rest)


def _sqlite_setup(conn) -> None:
    """Write-ahead logging: readers never block the writer, and a crash keeps
    every committed row."""
    cur = conn.cursor()
    try:
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
    except Exception:  # an in-memory database has no WAL; that is fine
        pass
    cur.close()
