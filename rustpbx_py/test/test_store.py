"""
Tests for L{rustpbx_py.store.db}: database URLs, the SQL text rewriting
that lets one query serve SQLite and PostgreSQL, migrations, and the
guarantees the registrar and call records rely on (all-or-nothing batches,
data surviving a restart) on real SQLite files.  PostgreSQL itself is in
L{rustpbx_py.test.interop.test_postgresql}.
"""

from __future__ import annotations

import os
import re

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase, TestCase

from rustpbx_py.store import db as store
from rustpbx_py.store.db import (
    Database,
    DatabaseError,
    migrations,
    postgresql_ddl,
    postgresql_query,
    redact,
    split_statements,
    sqlite_target,
)


def write_migrations(directory: str, files: dict) -> str:
    """A migrations directory holding C{files} (name -> SQL text)."""
    os.makedirs(directory, exist_ok=True)
    for name, text in files.items():
        with open(os.path.join(directory, name), "w", encoding="utf-8") as f:
            f.write(text)
    return directory


class URLTests(SynchronousTestCase):
    """Which database a URL names, and the refusals of URLs we cannot use."""

    def test_sqlite_forms(self):
        """
        sqlite:///abs is an absolute path, sqlite://rel and sqlite:rel are
        relative to the working directory, and sqlite::memory: (or
        sqlite://:memory:) is an in-memory database.
        """
        self.assertEqual(sqlite_target("sqlite:///var/lib/pbx/db.sqlite3"), ("/var/lib/pbx/db.sqlite3", None))
        self.assertEqual(sqlite_target("sqlite://data/db.sqlite3"), ("data/db.sqlite3", None))
        self.assertEqual(sqlite_target("sqlite:data/db.sqlite3"), ("data/db.sqlite3", None))
        self.assertEqual(sqlite_target("sqlite::memory:"), (":memory:", None))
        self.assertEqual(sqlite_target("sqlite://:memory:"), (":memory:", None))
        self.assertEqual(sqlite_target("sqlite:///:memory:"), (":memory:", None))
        self.assertEqual(sqlite_target("sqlite:///tmp/a%20b.sqlite3"), ("/tmp/a b.sqlite3", None))

    def test_sqlite_mode(self):
        """RustPBX's sqlx spelling C{?mode=rwc} is accepted; an unknown option is refused by name."""
        self.assertEqual(sqlite_target("sqlite://rustpbx.sqlite3?mode=rwc"), ("rustpbx.sqlite3", "rwc"))
        self.assertEqual(sqlite_target("sqlite:///x.db?mode=ro"), ("/x.db", "ro"))
        e = self.assertRaises(DatabaseError, sqlite_target, "sqlite:///x.db?cache=shared")
        self.assertIn("cache='shared'", str(e))
        self.assertIn("sqlite:///x.db?cache=shared", str(e))

    def test_sqlite_without_file(self):
        """C{sqlite://} names no file: refused with the forms we expect."""
        e = self.assertRaises(DatabaseError, Database, "sqlite://")
        self.assertIn("'sqlite://'", str(e))
        self.assertIn("sqlite:///ABSOLUTE/PATH", str(e))

    def test_bad_scheme(self):
        """
        A URL of another database is refused with a message naming the URL
        (password hidden) and every form that is expected.
        """
        e = self.assertRaises(DatabaseError, Database, "mysql://pbx:s3cret@db.example.com/pbx")
        message = str(e)
        self.assertIn("mysql://pbx:***@db.example.com/pbx", message)
        self.assertNotIn("s3cret", message)
        for form in ("sqlite:///", "sqlite://", "sqlite::memory:", "postgresql://", "postgres://"):
            self.assertIn(form, message)
        self.assertRaises(DatabaseError, Database, "/var/lib/pbx/db.sqlite3")
        self.assertRaises(DatabaseError, Database, "")

    def test_redact(self):
        """Passwords never reach a message or a log line; URLs without one are unchanged."""
        self.assertEqual(redact("postgresql://u:p%40ss@h:5433/db"), "postgresql://u:***@h:5433/db")
        self.assertEqual(redact("postgres://u@h/db"), "postgres://u@h/db")
        self.assertEqual(redact("sqlite:///x"), "sqlite:///x")

    def test_postgresql_dialect(self):
        """Both postgres:// and postgresql:// select PostgreSQL (checked on a given pool, no server needed)."""
        for url in ("postgres://u@h/db", "postgresql://u@h/db", "PostgreSQL://u@h/db"):
            self.assertEqual(Database(url, pool=object()).dialect, "postgresql")
        self.assertEqual(Database("sqlite::memory:", pool=object()).dialect, "sqlite")

    def test_postgresql_without_driver(self):
        """Without psycopg2 the message says what to install."""
        import sys

        saved = sys.modules.get("psycopg2", self)
        sys.modules["psycopg2"] = None  # import psycopg2 now raises ImportError
        self.addCleanup(lambda: sys.modules.pop("psycopg2") if saved is self else sys.modules.update(psycopg2=saved))
        e = self.assertRaises(DatabaseError, Database, "postgresql://pbx:pw@h/db")
        self.assertIn("psycopg2", str(e))
        self.assertIn("rustpbx-py[postgresql]", str(e))
        self.assertNotIn(":pw@", str(e))


class SQLTextTests(SynchronousTestCase):
    """Splitting migration files, and rewriting query text for psycopg2."""

    def test_split_statements(self):
        """
        Statements split at semicolons, but not at those inside string
        literals, quoted identifiers or comments; comments and empty
        statements are dropped.
        """
        sql = (
            "-- header; with a semicolon\n"
            "CREATE TABLE t (a TEXT DEFAULT 'x;y', \"b;c\" INTEGER); -- trailing; comment\n"
            "/* block; comment */ INSERT INTO t VALUES ('it''s; fine', 1);\n"
            ";;\n"
            "SELECT 1"
        )
        self.assertEqual(
            split_statements(sql),
            [
                "CREATE TABLE t (a TEXT DEFAULT 'x;y', \"b;c\" INTEGER)",
                "INSERT INTO t VALUES ('it''s; fine', 1)",
                "SELECT 1",
            ],
        )
        self.assertEqual(split_statements("-- only a comment\n"), [])

    def test_placeholders(self):
        """C{?} becomes C{%s} outside literals, quoted identifiers and comments, where it stays."""
        self.assertEqual(
            postgresql_query("SELECT a FROM t WHERE b = ? AND c = 'why?' AND \"d?\" = ? -- really?\n"),
            "SELECT a FROM t WHERE b = %s AND c = 'why?' AND \"d?\" = %s -- really?\n",
        )
        self.assertEqual(postgresql_query("UPDATE t SET a = ? /* ? */"), "UPDATE t SET a = %s /* ? */")

    def test_percent(self):
        """
        psycopg2 formats every query given parameters, so each literal C{%}
        (a LIKE pattern, a modulo) is doubled, in literals too.
        """
        self.assertEqual(
            postgresql_query("SELECT a % 2 FROM t WHERE b LIKE '50%?' AND c = ?"),
            "SELECT a %% 2 FROM t WHERE b LIKE '50%%?' AND c = %s",
        )

    def test_escaped_strings(self):
        """Doubled quotes and PostgreSQL E'' strings with backslash escapes end where the database ends them."""
        self.assertEqual(postgresql_query("SELECT 'a''?', ?"), "SELECT 'a''?', %s")
        self.assertEqual(postgresql_query("SELECT E'a\\'?', ?"), "SELECT E'a\\'?', %s")
        self.assertEqual(postgresql_query("SELECT $$a?$$, ?"), "SELECT $$a?$$, %s")

    def test_unterminated(self):
        """An unterminated literal is refused rather than rewritten half-way."""
        e = self.assertRaises(DatabaseError, postgresql_query, "SELECT 'oops FROM t WHERE a = ?")
        self.assertIn("unterminated", str(e))

    def test_autoincrement(self):
        """
        The one DDL translation: an auto-numbered INTEGER PRIMARY KEY
        AUTOINCREMENT becomes a PostgreSQL identity column; the word inside
        a literal is left alone, and AUTOINCREMENT anywhere else is refused.
        """
        self.assertEqual(
            postgresql_ddl("CREATE TABLE u (id integer  primary key\n AUTOINCREMENT, n TEXT DEFAULT 'AUTOINCREMENT')"),
            "CREATE TABLE u (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, n TEXT DEFAULT 'AUTOINCREMENT')",
        )
        self.assertRaises(DatabaseError, postgresql_ddl, "CREATE TABLE u (id BIGINT PRIMARY KEY AUTOINCREMENT)")

    def test_shipped_migrations_portable(self):
        """
        The migrations we ship parse, and use no type that means something
        else on PostgreSQL: REAL (4 bytes there: Unix times rounded to
        minutes), BOOLEAN (the code writes 0/1), DATETIME, or
        AUTOINCREMENT outside the portable phrase.
        """
        for version, name, text in migrations():
            for statement in split_statements(text):
                code = "".join(t for kind, t in store._spans(statement) if kind == "code")
                for word in ("REAL", "BOOLEAN", "DATETIME"):
                    self.assertIsNone(
                        re.search(rf"\b{word}\b", code, re.I), f"{version:04d}_{name}.sql uses {word}: {statement}"
                    )
                postgresql_ddl(statement)


class MigrationFilesTests(SynchronousTestCase):
    """Reading the migrations directory."""

    def test_order(self):
        """Files come in version order; other files are ignored."""
        d = write_migrations(
            self.mktemp(), {"0010_b.sql": "SELECT 2;", "0002_a.sql": "SELECT 1;", "README": "notes"}
        )
        self.assertEqual([(v, n) for v, n, _ in migrations(d)], [(2, "a"), (10, "b")])

    def test_duplicate_versions(self):
        """Two files of one version are refused, both named: one would never be applied."""
        d = write_migrations(self.mktemp(), {"0010_a.sql": "SELECT 1;", "0010_b.sql": "SELECT 2;"})
        e = self.assertRaises(DatabaseError, migrations, d)
        self.assertIn("0010_a.sql", str(e))
        self.assertIn("0010_b.sql", str(e))

    def test_misnamed(self):
        """A .sql file not named NNNN_name.sql is refused rather than silently skipped."""
        d = write_migrations(self.mktemp(), {"0010_a.sql": "SELECT 1;", "11_b.sql": "SELECT 2;"})
        e = self.assertRaises(DatabaseError, migrations, d)
        self.assertIn("11_b.sql", str(e))
        self.assertIn("0040_feature_name.sql", str(e))


class SQLiteTests(TestCase):
    """A real SQLite database through the thread pool."""

    def open(self, url=None) -> Database:
        if url is None:
            url = "sqlite:///" + os.path.abspath(self.mktemp()) + ".sqlite3"
        db = Database(url)
        self.addCleanup(db.close)
        return db

    @defer.inlineCallbacks
    def roundtrip(self, db: Database):
        yield db.run_operation("CREATE TABLE t (a TEXT)")
        yield db.run_operation("INSERT INTO t VALUES (?)", ("x",))
        rows = yield db.run_query("SELECT a FROM t")
        return rows

    @defer.inlineCallbacks
    def test_durable_commits(self):
        """A file database runs in WAL mode with synchronous = FULL (2):
        a commit the PBX acknowledged (a REGISTER's 200, a call record)
        survives a power cut, not only a crash of the PBX (NORMAL, 1,
        would lose the last commits; bench/sqlite_durability.py measures
        the cost)."""
        db = self.open()
        rows = yield db.run_query("PRAGMA synchronous")
        mode = yield db.run_query("PRAGMA journal_mode")
        self.assertEqual((rows, mode), ([(2,)], [("wal",)]))

    @defer.inlineCallbacks
    def test_absolute_url(self):
        """sqlite:///abs opens (and creates, directories included) that file."""
        path = os.path.join(os.path.abspath(self.mktemp()), "sub", "pbx.sqlite3")
        db = self.open("sqlite://" + path)
        self.assertEqual((yield self.roundtrip(db)), [("x",)])
        self.assertTrue(os.path.exists(path))

    @defer.inlineCallbacks
    def test_relative_url(self):
        """sqlite://rel opens a file relative to the working directory."""
        rel = self.mktemp() + ".sqlite3"
        self.assertFalse(os.path.isabs(rel))
        db = self.open("sqlite://" + rel)
        self.assertEqual((yield self.roundtrip(db)), [("x",)])
        self.assertTrue(os.path.exists(os.path.abspath(rel)))

    @defer.inlineCallbacks
    def test_memory_url(self):
        """sqlite::memory: is one database across queries (the pool holds one connection)."""
        db = self.open("sqlite::memory:")
        self.assertEqual((yield self.roundtrip(db)), [("x",)])
        yield db.migrate()
        rows = yield db.run_query("SELECT version FROM schema_migrations ORDER BY version")
        self.assertEqual([r[0] for r in rows], [v for v, _, _ in migrations()])

    @defer.inlineCallbacks
    def test_wal(self):
        """A file database runs in write-ahead-log mode (readers never block the writer)."""
        db = self.open()
        rows = yield db.run_query("PRAGMA journal_mode")
        self.assertEqual(rows, [("wal",)])

    @defer.inlineCallbacks
    def test_shipped_migrations(self):
        """The shipped migrations apply on SQLite and create the tables the PBX uses."""
        db = self.open()
        applied = yield db.migrate()
        self.assertEqual(applied, [v for v, _, _ in migrations()])
        rows = yield db.run_query("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        names = {r[0] for r in rows}
        self.assertTrue({"schema_migrations", "registrations", "users", "call_records"} <= names, names)
        yield db.run_operation("INSERT INTO users (username) VALUES (?)", ("alice",))
        yield db.run_operation("INSERT INTO users (username) VALUES (?)", ("bob",))
        rows = yield db.run_query("SELECT id, username FROM users ORDER BY id")
        self.assertEqual(rows, [(1, "alice"), (2, "bob")], "users.id numbers itself")

    @defer.inlineCallbacks
    def test_migrations_in_order_recorded(self):
        """
        Migrations apply in version order (a later file relies on an earlier
        one), and each is recorded with its name and time.
        """
        d = write_migrations(
            self.mktemp(),
            {
                "0020_fill.sql": "INSERT INTO t (a) VALUES ('two');",
                "0003_create.sql": "CREATE TABLE t (a TEXT);\nINSERT INTO t (a) VALUES ('one');",
                "0100_more.sql": "ALTER TABLE t ADD COLUMN b INTEGER NOT NULL DEFAULT 7;",
            },
        )
        db = self.open()
        applied = yield db.migrate(d)
        self.assertEqual(applied, [3, 20, 100])
        rows = yield db.run_query("SELECT a, b FROM t ORDER BY rowid")
        self.assertEqual(rows, [("one", 7), ("two", 7)])
        rows = yield db.run_query("SELECT version, name, applied_at FROM schema_migrations ORDER BY version")
        self.assertEqual([(v, n) for v, n, _ in rows], [(3, "create"), (20, "fill"), (100, "more")])
        self.assertTrue(all(t > 1e9 for _, _, t in rows))

    @defer.inlineCallbacks
    def test_migrate_again(self):
        """Running migrate again applies nothing, and applies only a file added since."""
        d = write_migrations(self.mktemp(), {"0001_create.sql": "CREATE TABLE t (a TEXT);"})
        db = self.open()
        self.assertEqual((yield db.migrate(d)), [1])
        self.assertEqual((yield db.migrate(d)), [])
        write_migrations(d, {"0002_fill.sql": "INSERT INTO t VALUES ('x');"})
        self.assertEqual((yield db.migrate(d)), [2])
        self.assertEqual((yield db.run_query("SELECT a FROM t")), [("x",)])

    @defer.inlineCallbacks
    def test_failing_migration(self):
        """
        A migration that fails rolls back whole (its CREATE TABLE too) and is
        not recorded; the ones before it stay; the error names the file; the
        ones after it wait.  Once fixed, migrate goes on from there.
        """
        d = write_migrations(
            self.mktemp(),
            {
                "0001_good.sql": "CREATE TABLE good (a TEXT);",
                "0002_bad.sql": "CREATE TABLE half (a TEXT);\nINSERT INTO nosuchtable VALUES (1);",
                "0003_later.sql": "CREATE TABLE later (a TEXT);",
            },
        )
        db = self.open()
        e = yield self.assertFailure(db.migrate(d), DatabaseError)
        self.assertIn("0002_bad.sql", str(e))
        self.assertIn("nosuchtable", str(e))
        rows = yield db.run_query("SELECT version FROM schema_migrations")
        self.assertEqual(rows, [(1,)])
        rows = yield db.run_query("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        self.assertEqual([r[0] for r in rows], ["good", "schema_migrations"])

        write_migrations(d, {"0002_bad.sql": "CREATE TABLE half (a TEXT);"})
        self.assertEqual((yield db.migrate(d)), [2, 3])

    @defer.inlineCallbacks
    def test_duplicate_versions_refused(self):
        """migrate refuses a directory with two files of one version, before applying anything."""
        d = write_migrations(self.mktemp(), {"0001_a.sql": "CREATE TABLE a (x TEXT);", "0001_b.sql": "SELECT 1;"})
        db = self.open()
        yield self.assertFailure(db.migrate(d), DatabaseError)
        rows = yield db.run_query("SELECT name FROM sqlite_master WHERE type = 'table'")
        self.assertEqual(rows, [])

    @defer.inlineCallbacks
    def test_restart(self):
        """Rows written survive closing the database and opening the file again (a restart)."""
        url = "sqlite:///" + os.path.abspath(self.mktemp()) + ".sqlite3"
        db = Database(url)
        yield db.migrate()
        yield db.run_operation(
            "INSERT INTO call_records (id, call_id, start_time) VALUES (?, ?, ?)", ("r1", "c1", 1700000000.25)
        )
        db.close()

        db = self.open(url)
        self.assertEqual((yield db.migrate()), [])
        rows = yield db.run_query("SELECT id, call_id, start_time FROM call_records")
        self.assertEqual(rows, [("r1", "c1", 1700000000.25)])

    @defer.inlineCallbacks
    def test_run_many_all_or_nothing(self):
        """
        run_many is one transaction: when its last statement fails, the
        earlier ones (DDL included) are rolled back.
        """
        db = self.open()
        yield db.run_operation("CREATE TABLE t (a TEXT PRIMARY KEY)")
        yield self.assertFailure(
            db.run_many(
                [
                    ("INSERT INTO t VALUES (?)", ("one",)),
                    ("CREATE TABLE side (x TEXT)", ()),
                    ("INSERT INTO t VALUES (?)", ("one",)),  # duplicate key
                ]
            ),
            Exception,
        )
        self.assertEqual((yield db.run_query("SELECT a FROM t")), [])
        rows = yield db.run_query("SELECT name FROM sqlite_master WHERE name = 'side'")
        self.assertEqual(rows, [])
        yield db.run_many([("INSERT INTO t VALUES (?)", ("one",)), ("INSERT INTO t VALUES (?)", ("two",))])
        self.assertEqual((yield db.run_query("SELECT a FROM t ORDER BY a")), [("one",), ("two",)])

    @defer.inlineCallbacks
    def test_question_mark_literal(self):
        """On SQLite, query text goes through unchanged: a '?' in a literal is not a placeholder."""
        db = self.open()
        rows = yield db.run_query("SELECT 'why?', ?", ("x",))
        self.assertEqual(rows, [("why?", "x")])

    @defer.inlineCallbacks
    def test_interaction(self):
        """run_interaction runs a function in one transaction; its failure rolls back what it did."""
        db = self.open()
        yield db.run_operation("CREATE TABLE t (a TEXT)")

        def work(txn):
            txn.execute(db.sql("INSERT INTO t VALUES (?)"), ("x",))
            raise ValueError("stop")

        yield self.assertFailure(db.run_interaction(work), ValueError)
        self.assertEqual((yield db.run_query("SELECT a FROM t")), [])

        def count(txn):
            txn.execute("SELECT count(*) FROM t")
            return txn.fetchall()[0][0]

        self.assertEqual((yield db.run_interaction(count)), 0)


class QueryCacheTests(SynchronousTestCase):
    """The PostgreSQL rewrite is done once per query text."""

    def test_cached(self):
        """The rewritten text of a query is kept, so the registrar's hot statements are not lexed each time."""
        db = Database("postgresql://u@h/db", pool=object())
        first = db.sql("SELECT a FROM t WHERE b = ?")
        self.assertEqual(first, "SELECT a FROM t WHERE b = %s")
        self.assertIs(db.sql("SELECT a FROM t WHERE b = ?"), first)
        self.assertEqual(Database("sqlite::memory:", pool=object()).sql("SELECT ?"), "SELECT ?")
