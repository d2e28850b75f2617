"""
Console administrators: scrypt hashes, accounts and sessions in the
database, and C{python -m rustpbx_py create-admin}.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from rustpbx_py.store.db import Database
from rustpbx_py.web.accounts import (
    SESSION_IDLE,
    SESSION_MAX,
    AccountError,
    Accounts,
    check_password,
    check_username,
    hash_password,
    verify_password,
)


class HashTests(SynchronousTestCase):
    def test_scrypt_format(self) -> None:
        """The hash is scrypt with its parameters, salt and digest stored:
        recomputing it with hashlib.scrypt from those gives the digest."""
        stored = hash_password("s3cret-password", n=2**10, r=8, p=1)
        scheme, n, r, p, salt, digest = stored.split("$")
        self.assertEqual((scheme, n, r, p), ("scrypt", "1024", "8", "1"))
        self.assertEqual(len(base64.b64decode(salt)), 16)
        again = hashlib.scrypt(b"s3cret-password", salt=base64.b64decode(salt), n=1024, r=8, p=1, dklen=32)
        self.assertEqual(again, base64.b64decode(digest))

    def test_salted(self) -> None:
        """The same password hashes differently each time, and both verify."""
        a, b = hash_password("same password", n=2**10), hash_password("same password", n=2**10)
        self.assertNotEqual(a, b)
        self.assertTrue(verify_password("same password", a))
        self.assertTrue(verify_password("same password", b))
        self.assertFalse(verify_password("same passwore", a))

    def test_default_cost(self) -> None:
        """The default parameters are N=2^14, r=8, p=1 (16 MiB per guess)."""
        self.assertTrue(hash_password("x" * 8).startswith("scrypt$16384$8$1$"))

    def test_malformed(self) -> None:
        """A malformed or foreign stored value never verifies (no exception)."""
        for stored in ("", "plain", "md5$1$2$3$4$5", "scrypt$x$8$1$AA==$AA==", "scrypt$1024$8$1$!!$AA==",
                       "scrypt$4194304$8$1$AA==$AA=="):
            self.assertFalse(verify_password("anything", stored), stored)

    def test_names_and_passwords(self) -> None:
        """User names are 1-64 characters without spaces; passwords 8+."""
        self.assertEqual(check_username("  admin "), "admin")
        for bad in ("", "a b", "x" * 65, "tab\there"):
            self.assertRaises(AccountError, check_username, bad)
        self.assertRaises(AccountError, check_password, "short")
        self.assertEqual(check_password("long enough"), "long enough")


class AccountsTestsMixin:
    """Accounts and sessions on the database of C{database()} (SQLite here,
    PostgreSQL in interop/test_postgresql)."""

    @defer.inlineCallbacks
    def database(self):
        store = Database("sqlite:///" + os.path.abspath(self.mktemp()) + ".sqlite3")
        self.addCleanup(store.close)
        yield store.migrate()
        return store

    @defer.inlineCallbacks
    def setUp(self):
        self.store = yield self.database()
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.accounts = Accounts(self.store, "secret-0123456789abcdef", self.clock)

    @defer.inlineCallbacks
    def test_create_and_authenticate(self):
        """set_admin creates the account once; the password authenticates,
        another does not, nor an unknown name; the table holds a hash."""
        created = yield self.accounts.set_admin("admin", "first password")
        self.assertTrue(created)
        found = yield self.accounts.authenticate("admin", "first password")
        self.assertEqual(found[1], "admin")
        self.assertIsNone((yield self.accounts.authenticate("admin", "wrong password")))
        self.assertIsNone((yield self.accounts.authenticate("nobody", "first password")))
        rows = yield self.store.run_query("SELECT password_hash FROM console_admins")
        self.assertTrue(rows[0][0].startswith("scrypt$"))
        self.assertNotIn("first password", rows[0][0])

    @defer.inlineCallbacks
    def test_reset_password_ends_sessions(self):
        """Setting a new password for an existing admin replaces the hash and
        closes its sessions."""
        yield self.accounts.set_admin("admin", "first password")
        admin_id, _ = yield self.accounts.authenticate("admin", "first password")
        token, csrf = yield self.accounts.open_session(admin_id, "192.0.2.1")
        principal = yield self.accounts.session(token, "192.0.2.1")
        self.assertEqual((principal.username, principal.csrf_token, principal.source), ("admin", csrf, "192.0.2.1"))
        created = yield self.accounts.set_admin("admin", "second password")
        self.assertFalse(created)
        self.assertIsNone((yield self.accounts.session(token)))
        self.assertIsNone((yield self.accounts.authenticate("admin", "first password")))
        self.assertIsNotNone((yield self.accounts.authenticate("admin", "second password")))
        self.assertEqual((yield self.accounts.admin_count()), 1)

    @defer.inlineCallbacks
    def test_session_expiry(self):
        """A session unused for SESSION_IDLE ends; one in use lives on, but
        never past SESSION_MAX."""
        yield self.accounts.set_admin("admin", "first password")
        admin_id, _ = yield self.accounts.authenticate("admin", "first password")
        token, _ = yield self.accounts.open_session(admin_id, "")
        idle, _ = yield self.accounts.open_session(admin_id, "")
        elapsed = 0.0
        while elapsed + SESSION_IDLE / 2 < SESSION_MAX:
            self.clock.advance(SESSION_IDLE / 2)
            elapsed += SESSION_IDLE / 2
            self.assertIsNotNone((yield self.accounts.session(token)), elapsed)
        self.assertIsNone((yield self.accounts.session(idle)))
        self.clock.advance(SESSION_IDLE / 2)
        self.assertIsNone((yield self.accounts.session(token)))

    @defer.inlineCallbacks
    def test_token_stored_as_hmac(self):
        """The database holds an HMAC of the cookie token, not the token; a
        different session_secret does not accept it."""
        yield self.accounts.set_admin("admin", "first password")
        admin_id, _ = yield self.accounts.authenticate("admin", "first password")
        token, _ = yield self.accounts.open_session(admin_id, "")
        rows = yield self.store.run_query("SELECT token_hash FROM console_sessions")
        self.assertNotIn(token, rows[0][0])
        other = Accounts(self.store, "another-secret-0123456789", self.clock)
        self.assertIsNone((yield other.session(token)))
        self.assertIsNone((yield self.accounts.session("x" * 500)))

    @defer.inlineCallbacks
    def test_prune(self):
        """prune drops expired sessions and audit rows older than the
        retention; 0 days keeps every audit row."""
        yield self.accounts.set_admin("admin", "first password")
        admin_id, _ = yield self.accounts.authenticate("admin", "first password")
        old_token, _ = yield self.accounts.open_session(admin_id, "")
        now = self.clock.seconds()
        for age_days, detail in ((400, "old"), (10, "recent")):
            yield self.store.run_operation(
                "INSERT INTO console_audit (at, who, source, action, detail) VALUES (?, ?, ?, ?, ?)",
                (now - age_days * 86400.0, "admin", "", "test", detail))
        self.clock.advance(SESSION_IDLE + 1)
        live_token, _ = yield self.accounts.open_session(admin_id, "")
        yield self.accounts.prune(0)
        rows = yield self.store.run_query("SELECT detail FROM console_audit ORDER BY id")
        self.assertEqual([r[0] for r in rows], ["old", "recent"])
        yield self.accounts.prune(365)
        rows = yield self.store.run_query("SELECT detail FROM console_audit ORDER BY id")
        self.assertEqual([r[0] for r in rows], ["recent"])
        rows = yield self.store.run_query("SELECT COUNT(*) FROM console_sessions")
        self.assertEqual(rows[0][0], 1, "the expired session went, the live one stayed")
        self.assertIsNotNone((yield self.accounts.session(live_token)))


class AccountsTests(AccountsTestsMixin, TestCase):
    pass


class CreateAdminCommandTests(SynchronousTestCase):
    """python -m rustpbx_py create-admin USER --config FILE, as a process."""

    def setUp(self) -> None:
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        self.db = os.path.join(base, "pbx.sqlite3")
        self.config = os.path.join(base, "pbx.toml")
        with open(self.config, "w") as f:
            f.write(f'database_url = "sqlite:///{self.db}"\n[proxy]\nudp_port = 0\n')

    def run_command(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "rustpbx_py", "create-admin", *args],
            input=stdin, capture_output=True, text=True, timeout=60,
        )

    def test_create_then_reset(self) -> None:
        """The password is read from stdin when it is not a terminal; a
        second run for the same name changes the password."""
        result = self.run_command("admin", "--config", self.config, stdin="a good password\n")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("'admin': created", result.stdout)
        result = self.run_command("admin", "--config", self.config, stdin="another password\n")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("password changed", result.stdout)
        import sqlite3

        with sqlite3.connect(self.db) as conn:
            (stored,) = conn.execute("SELECT password_hash FROM console_admins WHERE username = 'admin'").fetchone()
        self.assertTrue(verify_password("another password", stored))

    def test_refusals(self) -> None:
        """A short password, a bad user name and a broken config each exit
        1 with a message and create nothing."""
        result = self.run_command("admin", "--config", self.config, stdin="short\n")
        self.assertEqual(result.returncode, 1)
        self.assertIn("at least 8 characters", result.stderr)
        result = self.run_command("two words", "--config", self.config, stdin="a good password\n")
        self.assertEqual(result.returncode, 1)
        self.assertIn("user name", result.stderr)
        with open(self.config, "a") as f:
            f.write("nonsense_key = 1\n")
        result = self.run_command("admin", "--config", self.config, stdin="a good password\n")
        self.assertEqual(result.returncode, 1)
        self.assertIn("nonsense_key", result.stderr)
        self.assertFalse(os.path.exists(self.db))

    def run_on_terminal(self, answers) -> tuple:
        """Run create-admin with a pseudo-terminal as its controlling
        terminal, answering each prompt with the next of C{answers};
        (exit status, everything it wrote on the terminal)."""
        import pty
        import select

        pid, fd = pty.fork()
        if pid == 0:  # pragma: no cover - the child
            os.execv(sys.executable, [sys.executable, "-m", "rustpbx_py", "create-admin", "admin", "--config", self.config])
        output = b""
        answers = list(answers)
        try:
            while True:
                ready, _, _ = select.select([fd], [], [], 60)
                if not ready:
                    break
                try:
                    data = os.read(fd, 1024)
                except OSError:  # the child closed the terminal
                    break
                if not data:
                    break
                output += data
                if output.rstrip().endswith(b":") and answers:
                    os.write(fd, answers.pop(0).encode() + b"\n")
                    output += b"<answered>"
        finally:
            os.close(fd)
            _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status), output.decode("utf-8", "replace")

    def test_terminal(self) -> None:
        """On a terminal the password is asked twice without echo (getpass);
        two different answers are refused."""
        code, output = self.run_on_terminal(["a good password", "a good password"])
        self.assertEqual(code, 0, output)
        self.assertIn("Password again:", output)
        self.assertNotIn("a good password", output)
        self.assertIn("created", output)
        code, output = self.run_on_terminal(["a good password", "another password"])
        self.assertEqual(code, 1, output)
        self.assertIn("the two passwords differ", output)
