"""
Tests for L{rustpbx_py.users}: the user model and every backend, the HTTP
one against a twisted.web server on loopback and the database one against
temporary SQLite files.
"""

import json
import os
from urllib.parse import parse_qs

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web import resource, server

from rustpbx_py.sip import digest
from rustpbx_py.store.db import Database
from rustpbx_py.users import (
    DatabaseUserBackend,
    HttpUserBackend,
    MemoryUserBackend,
    PlainUserBackend,
    SipUser,
    SpamDetected,
    UserBackendError,
    UserChain,
    UserConfigError,
    build_user_backends,
    normalize_realm,
)
from rustpbx_py.test.fakes import memory_backend, proxy_config


class SipUserTests(SynchronousTestCase):
    """The user model."""

    def test_from_mapping(self):
        """Config tables become users; booleans and numbers are coerced; aliases are accepted."""
        user = SipUser.from_mapping(
            {"username": "alice", "password": "pw", "enabled": "false", "id": "7", "ha1_md5": "ABC", "name": "Alice"}
        )
        self.assertEqual((user.username, user.enabled, user.id, user.ha1, user.display_name), ("alice", False, 7, "abc", "Alice"))

    def test_strict_unknown_key(self):
        """In config files an unknown key is a typo and is reported with where it was."""
        e = self.assertRaises(
            UserConfigError, SipUser.from_mapping, {"username": "a", "pasword": "x"}, "proxy.user_backends[0].users[0]", True
        )
        self.assertIn("proxy.user_backends[0].users[0]", str(e))
        self.assertIn("pasword", str(e))

    def test_username_required(self):
        """A user without a username is refused."""
        self.assertRaises(UserConfigError, SipUser.from_mapping, {"password": "x"})

    def test_ha1_from_password(self):
        """With a password, HA1 is computed for any algorithm, realm and the username the client sent."""
        user = SipUser("alice", password="pw")
        self.assertEqual(user.ha1_for("MD5", "alice", "ex.com"), digest.compute_ha1("MD5", "alice", "ex.com", "pw"))
        self.assertEqual(
            user.ha1_for("SHA-256-sess", "alice", "ex.com"), digest.compute_ha1("SHA-256", "alice", "ex.com", "pw")
        )
        self.assertEqual(user.algorithms(), ["SHA-256", "MD5"])

    def test_stored_ha1(self):
        """Without a password only the stored HA1s can be used, each for its algorithm."""
        user = SipUser("bob", ha1="aa" * 16)
        self.assertEqual(user.ha1_for("MD5", "bob", "x"), "aa" * 16)
        self.assertIsNone(user.ha1_for("SHA-256", "bob", "x"))
        self.assertEqual(user.algorithms(), ["MD5"])

    def test_public(self):
        """The public view carries no credentials."""
        data = SipUser("alice", password="pw", ha1="x").public()
        self.assertNotIn("password", data)
        self.assertNotIn("ha1", data)
        self.assertEqual(data["username"], "alice")

    def test_normalize_realm(self):
        """Realms compare without case, port or brackets."""
        self.assertEqual(normalize_realm("Example.COM:5060"), "example.com")
        self.assertEqual(normalize_realm("[2001:db8::1]:5060"), "2001:db8::1")
        self.assertEqual(normalize_realm("2001:db8::1"), "2001:db8::1")


class MemoryBackendTests(SynchronousTestCase):
    """C{type = "memory"}."""

    def test_realms(self):
        """A user with a realm answers only there; one without answers everywhere, in the asked realm."""
        backend = MemoryUserBackend([SipUser("alice", realm="a.com", password="1"), SipUser("bob", password="2")])
        self.assertEqual(backend.get_user("alice", "A.com:5060").password, "1")
        self.assertIsNone(backend.get_user("alice", "b.com"))
        bob = backend.get_user("bob", "b.com")
        self.assertEqual((bob.password, bob.realm), ("2", "b.com"))
        self.assertIsNone(backend.get_user("carol", "a.com"))

    def test_from_config(self):
        """build_user_backends reads the config's memory users (password or HA1)."""
        proxy = proxy_config(
            user_backends=[memory_backend({"username": "alice", "password": "pw"}, {"username": "bob", "ha1": "b" * 32})]
        )
        chain = build_user_backends(proxy, None, task.Clock())
        self.assertEqual(len(chain.backends), 1)
        alice = self.successResultOf(chain.get_user("alice", "ex.com"))
        self.assertEqual(alice.password, "pw")
        bob = self.successResultOf(chain.get_user("bob", "ex.com"))
        self.assertEqual(bob.ha1, "b" * 32)
        self.assertIsNone(self.successResultOf(chain.get_user("carol", "ex.com")))


class PlainBackendTests(SynchronousTestCase):
    """C{type = "plain"}: a C{username:password} file, reloaded when it changes."""

    def write(self, path, text, mtime):
        with open(path, "w") as f:
            f.write(text)
        os.utime(path, (mtime, mtime))

    def test_read_and_reload(self):
        """Comments and malformed lines are skipped; a changed file is read again after the check interval."""
        path = self.mktemp()
        self.write(path, "# users\nalice: secret\n\nbroken line\nbob:pa:ss\n", 1000)
        clock = task.Clock()
        backend = PlainUserBackend(path, clock)
        self.assertEqual(len(backend), 2)
        self.assertEqual(backend.get_user("alice", "ex.com").password, "secret")
        self.assertEqual(backend.get_user("bob", None).password, "pa:ss")
        self.write(path, "carol:c\n", 2000)
        self.assertIsNone(backend.get_user("carol", "ex.com"), "not checked again within the interval")
        clock.advance(1.5)
        self.assertEqual(backend.get_user("carol", "ex.com").password, "c")
        self.assertIsNone(backend.get_user("alice", "ex.com"))

    def test_file_removed(self):
        """A file that disappears keeps the users read before (an editor replacing it)."""
        path = self.mktemp()
        self.write(path, "alice:secret\n", 1000)
        clock = task.Clock()
        backend = PlainUserBackend(path, clock)
        os.remove(path)
        clock.advance(5)
        self.assertEqual(backend.get_user("alice", "x").password, "secret")

    def test_missing_file(self):
        """A missing file at start-up is a config error naming the file."""
        e = self.assertRaises(UserConfigError, PlainUserBackend, "/nonexistent/users.txt", task.Clock())
        self.assertIn("/nonexistent/users.txt", str(e))

    def test_from_config(self):
        """build_user_backends builds a plain backend from its path."""
        path = os.path.abspath(self.mktemp())
        self.write(path, "alice:secret\n", 1000)
        chain = build_user_backends(proxy_config(user_backends=[{"type": "plain", "path": path}]), None, task.Clock())
        self.assertEqual(self.successResultOf(chain.get_user("alice", "x")).password, "secret")


class DatabaseBackendTests(TestCase):
    """C{type = "database"} against SQLite files."""

    def open(self, url=None):
        url = url or "sqlite:///" + os.path.abspath(self.mktemp()) + ".sqlite3"
        db = Database(url)
        self.addCleanup(db.close)
        return db

    @defer.inlineCallbacks
    def test_custom_columns(self):
        """A customer table with its own column names is read through the configured names."""
        db = self.open()
        yield db.run_many(
            [
                ("CREATE TABLE accounts (uid INTEGER, login TEXT, secret TEXT, domain TEXT, active INTEGER, gone TEXT)", ()),
                ("INSERT INTO accounts VALUES (1, 'alice', 'pw1', 'a.com', 1, NULL)", ()),
                ("INSERT INTO accounts VALUES (2, 'alice', 'pw2', 'b.com', 1, NULL)", ()),
                ("INSERT INTO accounts VALUES (3, 'bob', 'pw3', NULL, 0, NULL)", ()),
                ("INSERT INTO accounts VALUES (4, 'ghost', 'pw4', 'a.com', 1, '2024-01-01')", ()),
            ]
        )
        backend = DatabaseUserBackend(
            db,
            "accounts",
            {
                "id_column": "uid",
                "username_column": "login",
                "password_column": "secret",
                "realm_column": "domain",
                "enabled_column": "active",
            },
            deleted_at_column="gone",
        )
        alice = yield backend.get_user("alice", "b.com:5060")
        self.assertEqual((alice.id, alice.password, alice.realm, alice.enabled), (2, "pw2", "b.com:5060", True))
        bob = yield backend.get_user("bob", "a.com")
        self.assertEqual((bob.password, bob.enabled), ("pw3", False), "a NULL realm answers for any realm")
        self.assertIsNone((yield backend.get_user("alice", "c.com")))
        self.assertIsNone((yield backend.get_user("ghost", "a.com")), "deleted rows are ignored")

    def test_identifiers_checked(self):
        """Column names are written into SQL, so anything but an identifier is refused."""
        e = self.assertRaises(UserConfigError, DatabaseUserBackend, None, "users; DROP TABLE x", {})
        self.assertIn("table_name", str(e))
        self.assertRaises(UserConfigError, DatabaseUserBackend, None, "users", {"password_column": "a b"})

    @defer.inlineCallbacks
    def test_query_failure(self):
        """A missing table is a backend failure, not an unknown user."""
        db = self.open()
        backend = DatabaseUserBackend(db, "nosuchtable")
        yield self.assertFailure(backend.get_user("alice", "x"), UserBackendError)

    @defer.inlineCallbacks
    def test_project_table(self):
        """
        Without a url of its own, the backend uses the project database and
        the users table of migration 0020, HA1 columns included.
        """
        db = self.open()
        yield db.migrate()
        yield db.run_operation(
            "INSERT INTO users (username, realm, ha1, ha1_sha256, enabled, display_name) VALUES (?, ?, ?, ?, ?, ?)",
            ("alice", "ex.com", "a" * 32, "b" * 64, 1, "Alice"),
        )
        proxy = proxy_config(user_backends=[{"type": "database"}])
        proxy.user_backends[0].url = db.url  # what the loader does: default to database_url
        chain = build_user_backends(proxy, db, reactor)
        self.assertIs(chain.backends[0].db, db)
        alice = yield chain.get_user("alice", "ex.com")
        self.assertEqual((alice.ha1, alice.ha1_sha256, alice.display_name), ("a" * 32, "b" * 64, "Alice"))
        self.assertIsNone((yield chain.get_user("alice", "other.com")))

    @defer.inlineCallbacks
    def test_own_database(self):
        """A backend with another url opens (and closes) its own pool."""
        path = os.path.abspath(self.mktemp()) + ".sqlite3"
        other = self.open("sqlite:///" + path)
        yield other.run_many([("CREATE TABLE users (username TEXT, password TEXT)", ()), ("INSERT INTO users VALUES ('zed', 'z')", ())])
        proxy = proxy_config(user_backends=[{"type": "database", "url": "sqlite:///" + path}])
        chain = build_user_backends(proxy, self.open(), reactor)
        self.addCleanup(chain.close)
        self.assertTrue(chain.backends[0].owns_db)
        zed = yield chain.get_user("zed", "ex.com")
        self.assertEqual(zed.password, "z")


class FakeUserService(resource.Resource):
    """
    The web service of the http backend tests: answers by username,
    recording each request.
    """

    isLeaf = True

    def __init__(self):
        resource.Resource.__init__(self)
        self.requests = []
        self.arrived = defer.Deferred()
        self.flaky_failures = 1

    def render(self, request):
        if request.method == b"POST":
            fields = parse_qs(request.content.read().decode())
        else:
            fields = parse_qs(request.uri.decode().split("?", 1)[1])
        fields = {k: v[0] for k, v in fields.items()}
        self.requests.append((request.method, fields, request.getHeader("x-api-key")))
        arrived, self.arrived = self.arrived, defer.Deferred()
        arrived.callback(request)
        user = fields.get("user") or fields.get("username")
        request.setHeader("content-type", "application/json")
        if user == "alice":
            return json.dumps(
                {"username": "alice", "password": "pw", "display_name": "Alice", "extra_field": 1, "realm": fields.get("realm")}
            ).encode()
        if user == "flaky" and self.flaky_failures > 0:
            self.flaky_failures -= 1
            request.setResponseCode(503)
            return b"{}"
        if user == "flaky":
            return json.dumps({"username": "flaky", "password": "f"}).encode()
        if user == "spammer":
            request.setResponseCode(403)
            return json.dumps({"reason": "spam"}).encode()
        if user == "off":
            request.setResponseCode(403)
            return json.dumps({"reason": "disabled"}).encode()
        if user == "slow":
            return server.NOT_DONE_YET
        if user == "broken":
            request.setResponseCode(400)
            return json.dumps({"reason": "bad_request", "message": "nope"}).encode()
        request.setResponseCode(404)
        return json.dumps({"reason": "not_found"}).encode()


class HttpBackendTests(TestCase):
    """C{type = "http"} against a twisted.web server on 127.0.0.1."""

    def setUp(self):
        self.service = FakeUserService()
        site = server.Site(self.service)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.url = f"http://127.0.0.1:{port.getHost().port}/users"
        self.clock = task.Clock()

    def backend(self, **kw):
        backend = HttpUserBackend(self.url, reactor, clock=self.clock, **kw)
        self.addCleanup(backend.close)
        return backend

    @defer.inlineCallbacks
    def test_get(self):
        """GET with username and realm in the query; the JSON answer is the user (extra fields ignored)."""
        backend = self.backend(headers={"X-Api-Key": "k1"})
        alice = yield backend.get_user("alice", "ex.com")
        self.assertEqual((alice.username, alice.password, alice.display_name, alice.realm), ("alice", "pw", "Alice", "ex.com"))
        method, fields, key = self.service.requests[0]
        self.assertEqual((method, fields, key), (b"GET", {"username": "alice", "realm": "ex.com"}, "k1"))

    @defer.inlineCallbacks
    def test_post_and_field_names(self):
        """POST sends a form with the configured field names."""
        backend = self.backend(method="POST", username_field="user", realm_field="domain")
        alice = yield backend.get_user("alice", "ex.com")
        self.assertEqual(alice.password, "pw")
        self.assertEqual(self.service.requests[0][:2], (b"POST", {"user": "alice", "domain": "ex.com"}))

    @defer.inlineCallbacks
    def test_reasons(self):
        """not_found -> unknown; disabled -> a disabled user; spam -> SpamDetected; other 4xx -> failure."""
        backend = self.backend(cache_ttl=0)
        self.assertIsNone((yield backend.get_user("nobody", "ex.com")))
        off = yield backend.get_user("off", "ex.com")
        self.assertFalse(off.enabled)
        yield self.assertFailure(backend.get_user("spammer", "ex.com"), SpamDetected)
        f = yield self.assertFailure(backend.get_user("broken", "ex.com"), UserBackendError)
        self.assertIn("nope", str(f))

    @defer.inlineCallbacks
    def test_cache(self):
        """Answers, "unknown" included, are cached for the TTL; concurrent look-ups share one request."""
        backend = self.backend(cache_ttl=30)
        first, second = backend.get_user("alice", "ex.com"), backend.get_user("alice", "ex.com")
        a1, a2 = yield defer.gatherResults([first, second])
        self.assertIs(a1, a2)
        yield backend.get_user("alice", "ex.com")
        yield backend.get_user("nobody", "ex.com")
        yield backend.get_user("nobody", "ex.com")
        self.assertEqual(len(self.service.requests), 2)
        self.clock.advance(31)
        yield backend.get_user("alice", "ex.com")
        self.assertEqual(len(self.service.requests), 3)

    @defer.inlineCallbacks
    def test_retry_on_5xx(self):
        """A 503 is retried after the retry delay, and the retry's answer is used."""
        backend = self.backend(retry_count=1, retry_delay=0.5)
        d = backend.get_user("flaky", "ex.com")
        yield self.service.arrived
        # Let the 503 reach the client, then elapse the retry delay.
        while len(self.service.requests) < 2:
            yield task.deferLater(reactor, 0, lambda: None)
            self.clock.advance(0.5)
        flaky = yield d
        self.assertEqual(flaky.password, "f")

    @defer.inlineCallbacks
    def test_timeout_then_give_up(self):
        """A service that does not answer times out, is retried, and then the look-up fails."""
        backend = self.backend(timeout=2.0, retry_count=1, retry_delay=0.5)
        d = backend.get_user("slow", "ex.com")
        yield self.service.arrived
        arrived = self.service.arrived
        self.clock.advance(2.0)
        self.clock.advance(0.5)
        yield arrived
        self.clock.advance(2.0)
        f = yield self.assertFailure(d, UserBackendError)
        self.assertIn("2 times", str(f))
        self.assertEqual(len(self.service.requests), 2)

    @defer.inlineCallbacks
    def test_unreachable(self):
        """A refused connection is a backend failure after the retries."""
        backend = HttpUserBackend("http://127.0.0.1:1/users", reactor, retry_count=0)
        self.addCleanup(backend.close)
        yield self.assertFailure(backend.get_user("alice", "x"), UserBackendError)

    def test_bad_settings(self):
        """A URL that is not http(s) or a method other than GET/POST is a config error."""
        self.assertRaises(UserConfigError, HttpUserBackend, "ftp://x", reactor)
        self.assertRaises(UserConfigError, HttpUserBackend, "http://x", reactor, method="PUT")


class RaisingBackend:
    """A backend that cannot answer."""

    kind = "raising"

    def __init__(self, error=UserBackendError("down")):
        self.error = error
        self.asked = 0

    def get_user(self, username, realm):
        self.asked += 1
        return defer.fail(self.error)


class ChainTests(SynchronousTestCase):
    """The chain asks backends in order."""

    def test_order(self):
        """The first backend that knows the user answers; later ones are not asked."""
        first = MemoryUserBackend([SipUser("alice", password="1")])
        second = MemoryUserBackend([SipUser("alice", password="2"), SipUser("bob", password="3")])
        chain = UserChain([first, second])
        self.assertEqual(self.successResultOf(chain.get_user("alice", "x")).password, "1")
        self.assertEqual(self.successResultOf(chain.get_user("bob", "x")).password, "3")
        self.assertIsNone(self.successResultOf(chain.get_user("carol", "x")))

    def test_failure_then_known(self):
        """A failing backend does not hide a user a later backend knows."""
        chain = UserChain([RaisingBackend(), MemoryUserBackend([SipUser("alice", password="1")])])
        self.assertEqual(self.successResultOf(chain.get_user("alice", "x")).password, "1")

    def test_failure_and_unknown(self):
        """When a backend failed and nobody knows the user, the chain fails (it cannot tell)."""
        chain = UserChain([RaisingBackend(), MemoryUserBackend()])
        self.failureResultOf(chain.get_user("alice", "x"), UserBackendError)

    def test_spam_stops(self):
        """SpamDetected stops the chain at once."""
        later = RaisingBackend()
        chain = UserChain([RaisingBackend(SpamDetected("spam")), later])
        self.failureResultOf(chain.get_user("alice", "x"), SpamDetected)
        self.assertEqual(later.asked, 0)

    def test_asynchronous(self):
        """Backends answering later (Deferreds) are walked in order too."""
        pending = defer.Deferred()

        class Later:
            def get_user(self, username, realm):
                return pending

        chain = UserChain([Later(), MemoryUserBackend([SipUser("alice", password="1")])])
        d = chain.get_user("alice", "x")
        self.assertNoResult(d)
        pending.callback(None)
        self.assertEqual(self.successResultOf(d).password, "1")

    def test_unknown_type(self):
        """An unknown backend type names the entry."""
        e = self.assertRaises(UserConfigError, build_user_backends, {"user_backends": [{"type": "ldap"}]}, None, task.Clock())
        self.assertIn("proxy.user_backends[0]", str(e))
