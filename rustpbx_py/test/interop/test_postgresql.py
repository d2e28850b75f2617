"""
The store on a real PostgreSQL server: each test starts a throwaway server
(initdb into a temporary directory, a unix socket there and a free TCP port
on 127.0.0.1, a password on TCP) and stops it when it ends.  As root the
server runs as the C{postgres} user (PostgreSQL refuses to run as root).

Skipped, with the reason, when the server binaries (Debian's
C{postgresql}) or psycopg2 (C{pip install -e .[postgresql]}) are missing;
.ci/run installs both.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import tempfile
from typing import Optional

from twisted.internet import defer, reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from rustpbx_py.call import record as R
from rustpbx_py.call.record import CallRecord, CallRecordStore
from rustpbx_py.registrar import Registry
from rustpbx_py.store.db import Database, DatabaseError, migrations
from rustpbx_py.test.fakes import make_request, proxy_config
from rustpbx_py.test.test_registrar import ALICE, RegistrarTestsMixin, RestartSurvivalMixin, register_request
from rustpbx_py.test.test_web_accounts import AccountsTestsMixin
from rustpbx_py.test.test_web_history import HistoryTestsMixin
from rustpbx_py.users import DatabaseUserBackend, build_user_backends

PASSWORD = "pbx s3cret/?"  # URL-quoted in the URL: checks userinfo decoding too
_QUOTED_PASSWORD = "pbx%20s3cret%2F%3F"


def _bin_dir() -> Optional[str]:
    preferred = "/usr/lib/postgresql/15/bin"
    found = [preferred] + sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for d in found:
        if all(os.access(os.path.join(d, tool), os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            return d
    return None


def _skip_reason() -> Optional[str]:
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "psycopg2 is not installed (pip install -e .[postgresql]; make does it)"
    if _bin_dir() is None:
        return "PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin (apt-get install postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres user to run the server as"
        if shutil.which("runuser") is None:
            return "running as root and runuser is missing"
    return None


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class PostgreSQLServer:
    """A PostgreSQL cluster in a temporary directory, for one test."""

    def __init__(self) -> None:
        self.bin = _bin_dir()
        self.dir = tempfile.mkdtemp(prefix="rustpbx-pg-")
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "server.log")
        self.port = _free_port()
        self.user: Optional[pwd.struct_passwd] = None
        if os.geteuid() == 0:
            self.user = pwd.getpwnam("postgres")
            os.chown(self.dir, self.user.pw_uid, self.user.pw_gid)
        self.running = False

    def url(self, database: str = "postgres", scheme: str = "postgresql") -> str:
        return f"{scheme}://pbx:{_QUOTED_PASSWORD}@127.0.0.1:{self.port}/{database}"

    @defer.inlineCallbacks
    def _run(self, tool: str, *args: str):
        executable = os.path.join(self.bin, tool)
        argv = [executable, *args]
        if self.user is not None:
            argv = [shutil.which("runuser"), "-u", self.user.pw_name, "--", *argv]
        env = dict(os.environ, LC_ALL="C", LANG="C")
        out, err, code = yield getProcessOutputAndValue(argv[0], argv[1:], env=env, path=self.dir)
        if code != 0:
            log = ""
            if os.path.exists(self.log):
                with open(self.log, errors="replace") as f:
                    log = f.read()[-2000:]
            raise RuntimeError(f"{tool} {' '.join(args)} exited {code}: {out!r} {err!r}\n{log}")
        return out

    @defer.inlineCallbacks
    def start(self):
        pwfile = os.path.join(self.dir, "pwfile")
        with open(pwfile, "w") as f:
            f.write(PASSWORD + "\n")
        if self.user is not None:
            os.chown(pwfile, self.user.pw_uid, self.user.pw_gid)
        yield self._run(
            "initdb", "-D", self.data, "-U", "pbx", f"--pwfile={pwfile}", "--auth-local=trust",
            "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync",
        )
        yield self._run("pg_ctl", "-D", self.data, "-l", self.log, "-w", "-o", self._options(), "start")
        self.running = True

    def _options(self) -> str:
        return (
            f"-k {self.dir} -h 127.0.0.1 -p {self.port} -F "
            "-c max_connections=30 -c shared_buffers=16MB -c full_page_writes=off"
        )

    @defer.inlineCallbacks
    def restart(self):
        """Stop (dropping every connection) and start again, data kept."""
        yield self._run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")
        yield self._run("pg_ctl", "-D", self.data, "-l", self.log, "-w", "-o", self._options(), "start")

    def create_database(self, name: str) -> str:
        """Create database C{name} (over the unix socket); its URL."""
        import psycopg2

        conn = psycopg2.connect(host=self.dir, port=self.port, user="pbx", dbname="postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return self.url(name)

    @defer.inlineCallbacks
    def stop(self):
        try:
            if self.running:
                yield self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
                self.running = False
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


class PostgreSQLTestCase(TestCase):
    """Starts a server for each test; C{self.url} is an empty database."""

    skip = _skip_reason()

    @defer.inlineCallbacks
    def setUp(self):
        self.server = PostgreSQLServer()
        self.addCleanup(self.server.stop)
        yield self.server.start()
        self.url = self.server.create_database("rustpbx")

    def open(self, url: Optional[str] = None) -> Database:
        db = Database(url or self.url)
        self.addCleanup(db.close)
        return db


class StoreTests(PostgreSQLTestCase):
    """The store's own guarantees, on PostgreSQL."""

    @defer.inlineCallbacks
    def test_migrations(self):
        """
        The shipped migrations apply on PostgreSQL (both URL schemes), are
        recorded, and a second run applies nothing; times are double
        precision (REAL would round them) and users.id numbers itself.
        """
        db = self.open(self.server.url("rustpbx", scheme="postgres"))
        self.assertEqual(db.dialect, "postgresql")
        applied = yield db.migrate()
        self.assertEqual(applied, [v for v, _, _ in migrations()])
        self.assertEqual((yield db.migrate()), [])
        rows = yield db.run_query(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public' AND column_name IN (?, ?, ?, ?)",
            ("expires_at", "start_time", "applied_at", "created_at"),
        )
        self.assertEqual({r[2] for r in rows}, {"double precision"}, rows)
        self.assertEqual({r[0] for r in rows}, {"registrations", "call_records", "schema_migrations", "users", "console_admins", "console_sessions"})
        yield db.run_operation("INSERT INTO users (username, created_at) VALUES (?, ?)", ("alice", 1700000000.125))
        yield db.run_operation("INSERT INTO users (username) VALUES (?)", ("bob",))
        rows = yield db.run_query("SELECT id, username, created_at FROM users ORDER BY id")
        self.assertEqual(rows, [(1, "alice", 1700000000.125), (2, "bob", None)])

    @defer.inlineCallbacks
    def test_nodes_migrate_at_once(self):
        """
        Two nodes starting at the same moment on one database: the advisory
        lock makes one apply each migration and the other find it done.
        """
        a, b = self.open(), self.open()
        applied = yield defer.gatherResults([a.migrate(), b.migrate()])
        self.assertEqual(sorted(applied[0] + applied[1]), [v for v, _, _ in migrations()])
        rows = yield a.run_query("SELECT count(*) FROM schema_migrations")
        self.assertEqual(rows, [(len(migrations()),)])

    @defer.inlineCallbacks
    def test_failing_migration(self):
        """
        A failing migration rolls back whole on PostgreSQL too (DDL is
        transactional there), is not recorded, and the error names it.
        """
        d = self.mktemp()
        os.makedirs(d)
        for name, text in {
            "0001_good.sql": "CREATE TABLE good (a TEXT);",
            "0002_bad.sql": "CREATE TABLE half (a TEXT);\nINSERT INTO nosuchtable VALUES (1);",
        }.items():
            with open(os.path.join(d, name), "w") as f:
                f.write(text)
        db = self.open()
        e = yield self.assertFailure(db.migrate(d), DatabaseError)
        self.assertIn("0002_bad.sql", str(e))
        self.assertNotIn(PASSWORD, str(e))
        self.assertNotIn(_QUOTED_PASSWORD, str(e))
        rows = yield db.run_query("SELECT version FROM schema_migrations")
        self.assertEqual(rows, [(1,)])
        rows = yield db.run_query(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name"
        )
        self.assertEqual([r[0] for r in rows], ["good", "schema_migrations"])

    @defer.inlineCallbacks
    def test_literals(self):
        """
        Placeholder rewriting leaves '?' and '%' in literals alone and
        keeps '%' working in LIKE patterns and arithmetic.
        """
        db = self.open()
        rows = yield db.run_query("SELECT 'why?', ?, '100%', 7 % 4, E'it\\'s?' -- what?\n", ("x",))
        self.assertEqual(rows, [("why?", "x", "100%", 3, "it's?")])
        yield db.run_many([("CREATE TABLE t (a TEXT)", ()), ("INSERT INTO t VALUES (?), ('50%?')", ("a?",))])
        rows = yield db.run_query("SELECT a FROM t WHERE a LIKE '%?' ORDER BY a")
        self.assertEqual(rows, [("50%?",), ("a?",)])
        rows = yield db.run_query("SELECT count(*) FROM t")  # no parameters: '%' rules are the same
        self.assertEqual(rows, [(2,)])

    @defer.inlineCallbacks
    def test_run_many_all_or_nothing(self):
        """run_many is one transaction on PostgreSQL: a failing statement undoes the others."""
        db = self.open()
        yield db.run_operation("CREATE TABLE t (a TEXT PRIMARY KEY)")
        yield self.assertFailure(
            db.run_many([("INSERT INTO t VALUES (?)", ("one",)), ("INSERT INTO t VALUES (?)", ("one",))]),
            Exception,
        )
        self.assertEqual((yield db.run_query("SELECT a FROM t")), [])
        yield db.run_many([("INSERT INTO t VALUES (?)", ("one",))])  # the connection is usable again
        self.assertEqual((yield db.run_query("SELECT a FROM t")), [("one",)])

    @defer.inlineCallbacks
    def test_reconnect(self):
        """
        After the server restarts (every connection dropped), queries and
        transactions go on: the pool replaces its dead connections and
        reruns the work that had not reached COMMIT.  Rows committed before
        the restart are still there.
        """
        db = self.open()
        yield db.migrate()
        yield db.run_operation("INSERT INTO call_records (id, call_id, start_time) VALUES (?, ?, ?)", ("r1", "c1", 1.5))
        # Open every pooled connection, so each one is dead after the restart.
        yield defer.gatherResults([db.run_query("SELECT pg_sleep(0.05)") for _ in range(db.pg_pool_size)])
        yield self.server.restart()
        results = yield defer.gatherResults([db.run_query("SELECT count(*) FROM call_records") for _ in range(6)])
        self.assertEqual(results, [[(1,)]] * 6)
        yield db.run_many([("UPDATE call_records SET end_time = ? WHERE id = ?", (2.5, "r1"))])
        rows = yield db.run_query("SELECT end_time FROM call_records")
        self.assertEqual(rows, [(2.5,)])

    @defer.inlineCallbacks
    def test_server_down(self):
        """With the server gone, a query fails (after its retries) instead of hanging."""
        db = self.open()
        yield db.run_query("SELECT 1")
        yield self.server._run("pg_ctl", "-D", self.server.data, "-m", "fast", "-w", "stop")
        self.server.running = False
        import psycopg2

        yield self.assertFailure(db.run_query("SELECT 1"), psycopg2.OperationalError)


class RegistrarTests(RestartSurvivalMixin, RegistrarTestsMixin, PostgreSQLTestCase):
    """The registrar's bindings in PostgreSQL."""

    @defer.inlineCallbacks
    def setUp(self):
        yield PostgreSQLTestCase.setUp(self)
        self.db = self.open()
        yield self.db.migrate()

    def open_db(self) -> Database:
        """A new connection pool on the test server (a PBX restart)."""
        return self.open()

    @defer.inlineCallbacks
    def test_updates_and_batches(self):
        """
        Refreshes, removal, Contact: * and a burst of concurrent REGISTERs
        (group commit: several in one transaction) leave the table matching
        memory on PostgreSQL.
        """
        module = self.make_module(store=self.db)
        yield self.send(module, register_request("<sip:b@192.0.2.10>", "<sip:c@192.0.2.10>", cseq=1))
        yield self.send(module, register_request("<sip:b@192.0.2.10>;expires=0", cseq=2))
        rows = yield self.db.run_query("SELECT contact FROM registrations")
        self.assertEqual(rows, [("sip:c@192.0.2.10",)])
        yield self.send(module, register_request("*", expires=0, cseq=3))
        self.assertEqual((yield self.db.run_query("SELECT contact FROM registrations")), [])
        ds = [
            self.send(module, register_request(f"<sip:u{i}@192.0.2.10:{5000 + i}>", to=f"sip:u{i}@example.com"))
            for i in range(50)
        ]
        txs = yield defer.gatherResults(ds)
        self.assertEqual({tx.last.status for tx in txs}, {200})
        self.assertEqual((yield self.db.run_query("SELECT COUNT(*) FROM registrations")), [(50,)])
        self.assertLess(module.registry.commits, 50 + 3)

    @defer.inlineCallbacks
    def test_two_nodes(self):
        """
        Two nodes (two registries, each with its own pool) share one
        database: a node finds, when it starts, the bindings the other
        wrote.  What sharing means today: each node reads the table at
        start only; a binding written later by the other node is not seen
        until the next start (no live cross-node updates yet).
        """
        node_a = self.make_module(store=self.db)
        yield node_a.start()
        self.addCleanup(node_a.stop)
        tx = yield self.send(node_a, register_request("<sip:alice@192.0.2.10>", expires=600))
        self.assertEqual(tx.last.status, 200)

        db_b = self.open()
        node_b = Registry(db_b, self.clock)
        self.assertEqual((yield node_b.start()), 1)
        self.addCleanup(node_b.stop)
        [found] = node_b.lookup(ALICE)
        self.assertEqual(found.row(), node_a.registry.lookup(ALICE)[0].row())

        # Written by A after B started: in the table, not in B's memory.
        yield self.send(node_a, register_request("<sip:bob@192.0.2.11>", to="sip:bob@example.com"))
        self.assertEqual(node_b.lookup("bob@example.com"), [])
        node_b_again = Registry(db_b, self.clock)
        self.assertEqual((yield node_b_again.start()), 2)
        self.addCleanup(node_b_again.stop)
        self.assertEqual(len(node_b_again.lookup("bob@example.com")), 1)


class CallRecordTests(PostgreSQLTestCase):
    """L{CallRecordStore} on PostgreSQL."""

    @defer.inlineCallbacks
    def test_insert_update(self):
        """
        A call's row is inserted when it starts and replaced with its final
        state when it ends; orphans are closed as bySystem; recent() reads
        them back, times exact to the microsecond.
        """
        db = self.open()
        yield db.migrate()
        store = CallRecordStore(db)
        start = 1_700_000_000.123456
        record = CallRecord("c1", "alice@example.com", "bob@example.com", start, 10)
        record.sip_flow.add(start, "a", "in", ("192.0.2.10", 5060), make_request(call_id="c1"))
        yield store.opened(record)
        rows = yield db.run_query("SELECT call_id, start_time, end_time FROM call_records")
        self.assertEqual(rows, [("c1", start, None)])
        record.answer_time, record.end_time = start + 1, start + 30
        record.status_code, record.hangup_reason = 200, R.BY_CALLEE
        yield store.save(record)
        orphan = CallRecord("c2", "carol@example.com", "bob@example.com", start + 5, 10)
        yield store.opened(orphan)
        yield store.close_orphans(start + 100)
        found = yield store.recent(10)
        self.assertEqual(
            [(r["call_id"], r["end_time"], r["status_code"], r["hangup_reason"]) for r in found],
            [("c2", start + 100, None, R.BY_SYSTEM), ("c1", start + 30, 200, R.BY_CALLEE)],
        )
        self.assertIn("INVITE", found[1]["sip_flow"])


class CallHistoryTests(HistoryTestsMixin, PostgreSQLTestCase):
    """The console's call record searches, chart counts and CSV export
    (L{rustpbx_py.web.history}) on PostgreSQL: same results as SQLite."""

    @defer.inlineCallbacks
    def setUp(self):
        yield PostgreSQLTestCase.setUp(self)
        yield HistoryTestsMixin.setUp(self)

    @defer.inlineCallbacks
    def database(self):
        db = self.open()
        yield db.migrate()
        return db


class UserBackendTests(PostgreSQLTestCase):
    """The database user backend reading a PostgreSQL table."""

    @defer.inlineCallbacks
    def test_project_table(self):
        """
        The project's users table (migration 0020) on PostgreSQL: the row of
        the asked realm wins over a realm-less one, disabled users are read
        as disabled.
        """
        db = self.open()
        yield db.migrate()
        yield db.run_many(
            [
                ("INSERT INTO users (username, realm, password, enabled) VALUES (?, ?, ?, ?)", ("alice", "", "any", 1)),
                ("INSERT INTO users (username, realm, password, enabled) VALUES (?, ?, ?, ?)", ("alice", "ex.com", "pw", 1)),
                ("INSERT INTO users (username, realm, ha1, enabled) VALUES (?, ?, ?, ?)", ("bob", "ex.com", "a" * 32, 0)),
            ]
        )
        proxy = proxy_config(user_backends=[{"type": "database"}])
        proxy.user_backends[0].url = db.url
        chain = build_user_backends(proxy, db, reactor)
        alice = yield chain.get_user("alice", "ex.com")
        self.assertEqual((alice.password, alice.enabled, alice.id), ("pw", True, 2))
        other = yield chain.get_user("alice", "other.org")
        self.assertEqual(other.password, "any")
        bob = yield chain.get_user("bob", "ex.com")
        self.assertEqual((bob.ha1, bob.enabled), ("a" * 32, False))
        self.assertIsNone((yield chain.get_user("carol", "ex.com")))

    @defer.inlineCallbacks
    def test_customer_table(self):
        """
        A customer's own PostgreSQL table, named by a url of its own (the
        backend opens and closes that pool), with its own column names and
        a real BOOLEAN enabled column.
        """
        setup = self.open()
        yield setup.run_many(
            [
                ("CREATE TABLE accounts (uid SERIAL PRIMARY KEY, login TEXT, secret TEXT, domain TEXT, "
                 "active BOOLEAN NOT NULL DEFAULT true, gone TIMESTAMP)", ()),
                ("INSERT INTO accounts (login, secret, domain) VALUES ('alice', 'pw1', 'a.com')", ()),
                ("INSERT INTO accounts (login, secret, domain, active) VALUES ('bob', 'pw2', NULL, false)", ()),
                ("INSERT INTO accounts (login, secret, domain, gone) VALUES ('ghost', 'x', 'a.com', now())", ()),
            ]
        )
        sqlite = "sqlite:///" + os.path.abspath(self.mktemp()) + ".sqlite3"
        project = self.open(sqlite)
        proxy = proxy_config(
            user_backends=[
                {
                    "type": "database",
                    "url": self.url,
                    "table_name": "accounts",
                    "id_column": "uid",
                    "username_column": "login",
                    "password_column": "secret",
                    "realm_column": "domain",
                    "enabled_column": "active",
                    "deleted_at_column": "gone",
                }
            ]
        )
        chain = build_user_backends(proxy, project, reactor)
        self.addCleanup(chain.close)
        [backend] = chain.backends
        self.assertIsInstance(backend, DatabaseUserBackend)
        self.assertTrue(backend.owns_db)
        self.assertEqual(backend.db.dialect, "postgresql")
        alice = yield chain.get_user("alice", "a.com")
        self.assertEqual((alice.id, alice.password, alice.enabled), (1, "pw1", True))
        bob = yield chain.get_user("bob", "a.com")
        self.assertEqual((bob.password, bob.enabled), ("pw2", False))
        self.assertIsNone((yield chain.get_user("ghost", "a.com")))


class ConsoleAccountsTests(AccountsTestsMixin, PostgreSQLTestCase):
    """Console administrators and sessions (L{rustpbx_py.web.accounts},
    migration 0050) on PostgreSQL."""

    @defer.inlineCallbacks
    def setUp(self):
        yield PostgreSQLTestCase.setUp(self)
        yield AccountsTestsMixin.setUp(self)

    @defer.inlineCallbacks
    def database(self):
        db = self.open()
        yield db.migrate()
        return db
