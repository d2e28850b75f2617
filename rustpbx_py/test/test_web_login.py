"""
Console logins: the per-source throttle (exponential delay, then a ban),
and the login page over real HTTP (login CSRF, wrong password, 429 with
Retry-After, where a login leads, the audit rows).
"""

from __future__ import annotations

import re

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from rustpbx_py.test.web_support import ADMIN, PASSWORD, WebTestMixin
from rustpbx_py.web.login import safe_next
from rustpbx_py.web.throttle import LoginThrottle


class ThrottleTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.throttle = LoginThrottle(self.clock, limit=5, window=600, ban_time=900, first_delay=0.5, max_delay=4)

    def test_exponential_delay(self) -> None:
        """Each failure doubles the wait before the source may try again, up
        to max_delay; an attempt during the wait is told how long is left."""
        delays = [self.throttle.failed("192.0.2.1") for _ in range(4)]
        self.assertEqual(delays, [0.5, 1.0, 2.0, 4.0])
        self.assertEqual(self.throttle.wait("192.0.2.1"), 4.0)
        self.clock.advance(3)
        self.assertEqual(self.throttle.wait("192.0.2.1"), 1.0)
        self.clock.advance(1)
        self.assertIsNone(self.throttle.wait("192.0.2.1"))
        self.assertIsNone(self.throttle.wait("192.0.2.2"), "other sources are not slowed down")

    def test_ban(self) -> None:
        """The limit-th failure bans the source for ban_time; the next ban
        of the same source doubles."""
        for _ in range(4):
            self.throttle.failed("192.0.2.1")
        self.assertEqual(self.throttle.failed("192.0.2.1"), 900)
        self.assertEqual(self.throttle.wait("192.0.2.1"), 900)
        self.clock.advance(900)
        self.assertIsNone(self.throttle.wait("192.0.2.1"))
        for _ in range(5):
            last = self.throttle.failed("192.0.2.1")
        self.assertEqual(last, 1800)

    def test_success_clears(self) -> None:
        """A success forgets the source's failures; afterwards its failures
        count per user name, so one mistyped name cannot lock out an
        office's shared address."""
        self.throttle.failed("192.0.2.1", "alice")
        self.throttle.succeeded("192.0.2.1", "alice")
        self.assertIsNone(self.throttle.wait("192.0.2.1", "alice"))
        for _ in range(5):
            self.throttle.failed("192.0.2.1", "mallory")
        self.assertIsNotNone(self.throttle.wait("192.0.2.1", "mallory"))
        self.assertIsNone(self.throttle.wait("192.0.2.1", "alice"))

    def test_parallel_attempts(self) -> None:
        """A source may have only MAX_PARALLEL logins checked at once: guesses
        sent in parallel would otherwise all be checked before the first
        failure slows it down."""
        from rustpbx_py.web.throttle import MAX_PARALLEL

        for _ in range(MAX_PARALLEL):
            self.assertIsNone(self.throttle.wait("192.0.2.1"))
            self.throttle.begin("192.0.2.1")
        self.assertEqual(self.throttle.wait("192.0.2.1"), 1.0)
        self.assertIsNone(self.throttle.wait("192.0.2.2"))
        self.throttle.end("192.0.2.1")
        self.assertIsNone(self.throttle.wait("192.0.2.1"))

    def test_safe_next(self) -> None:
        """After login only paths inside the console are followed (no open
        redirect to another site)."""
        site = type("S", (), {"base_path": "/console"})()
        self.assertEqual(safe_next(site, "/console/audit?page=2"), "/console/audit?page=2")
        for target in ("https://evil.example/", "//evil.example/console/", "/consolex", "/api/v1/health", "/console\\..\\x", ""):
            self.assertEqual(safe_next(site, target), "/console/", target)


class LoginPageTests(WebTestMixin, TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        site = yield self.start_web()
        self.login_page = site.console_root.children[b"login"]
        self.login_page.hold_max = 0
        yield self.create_admin()

    @defer.inlineCallbacks
    def attempt(self, password: str, username: str = ADMIN):
        form = yield self.get("/console/login")
        token = re.search(r'name="login_token" value="([^"]*)"', form.text).group(1)
        response = yield self.post_form(
            "/console/login", {"login_token": token, "username": username, "password": password, "next": "/console/audit"}, csrf=False
        )
        return response

    @defer.inlineCallbacks
    def test_login_leads_to_next(self):
        """The right password opens a session and goes where the login
        page was asked from; the audit log records the login."""
        response = yield self.attempt(PASSWORD)
        self.assertEqual((response.code, response.header("location")), (303, "/console/audit"))
        page = yield self.get("/console/audit")
        self.assertEqual(page.code, 200)
        self.assertIn("<td>login</td>", page.text)

    @defer.inlineCallbacks
    def test_logged_in_skips_form(self):
        """The login page of a browser already logged in goes on to the
        console (or to next)."""
        yield self.attempt(PASSWORD)
        page = yield self.get("/console/login?next=/console/audit")
        self.assertEqual((page.code, page.header("location")), (303, "/console/audit"))

    @defer.inlineCallbacks
    def test_login_csrf(self):
        """A login form posted without the token of its cookie (a foreign
        page logging the browser in) is refused before the password is
        checked."""
        response = yield self.post_form("/console/login", {"login_token": "x", "username": ADMIN, "password": PASSWORD}, csrf=False)
        self.assertEqual(response.code, 403)
        self.assertNotIn("rustpbx_session", response.cookies)

    @defer.inlineCallbacks
    def test_wrong_password_then_throttled(self):
        """A wrong password is refused with a message and recorded; the next
        attempt within the delay is answered 429 with Retry-After, even
        with the right password."""
        self.site.throttle.first_delay = 20
        response = yield self.attempt("wrong password")
        self.assertEqual(response.code, 403)
        self.assertIn("Wrong user name or password.", response.text)
        self.assertNotIn("rustpbx_session", response.cookies)
        response = yield self.attempt(PASSWORD)
        self.assertEqual(response.code, 429)
        self.assertEqual(response.header("retry-after"), "20")
        self.assertIn("Too many failed logins", response.text)
        rows = yield self.context.store.run_query("SELECT who, source, action FROM console_audit")
        self.assertEqual(rows, [(ADMIN, "127.0.0.1", "login.failed")])

    @defer.inlineCallbacks
    def test_banned(self):
        """After the limit of failures the source is banned: the right
        password does not open a session."""
        self.site.throttle.first_delay = 0
        for _ in range(10):
            response = yield self.attempt("nope nope nope")
            self.assertEqual(response.code, 403)
        response = yield self.attempt(PASSWORD)
        self.assertEqual(response.code, 429)
        self.assertEqual(response.header("retry-after"), "900")

    @defer.inlineCallbacks
    def test_unknown_user(self):
        """An unknown user name gets the same answer as a wrong password."""
        self.site.throttle.first_delay = 0
        response = yield self.attempt(PASSWORD, username="nobody")
        self.assertEqual(response.code, 403)
        self.assertIn("Wrong user name or password.", response.text)

    @defer.inlineCallbacks
    def test_no_admin_hint(self):
        """Without any administrator the login page says how to create one."""
        yield self.context.store.run_operation("DELETE FROM console_admins")
        page = yield self.get("/console/login")
        self.assertIn("create-admin", page.text)


class AccountPageTests(WebTestMixin, TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        yield self.start_web()
        yield self.login()

    @defer.inlineCallbacks
    def test_change_password(self):
        """With the current password and twice the new one, the password
        changes: this browser stays logged in (new session), another
        session of the admin ends, the old password no longer works, and
        the audit log says so."""
        other_jar = dict(self.jar)
        yield self.login(create=False)
        response = yield self.post_form("/console/account", {"current": PASSWORD, "new": "a new password", "again": "a new password"})
        self.assertEqual(response.code, 200)
        self.assertIn("Password changed", response.text)
        page = yield self.get("/console/account")
        self.assertEqual(page.code, 200)
        mine = dict(self.jar)
        self.jar = other_jar
        page = yield self.get("/console/account")
        self.assertEqual(page.code, 303)
        self.jar = mine
        found = yield self.site.accounts.authenticate(ADMIN, PASSWORD)
        self.assertIsNone(found)
        rows = yield self.context.store.run_query("SELECT action FROM console_audit WHERE action = 'account.password'")
        self.assertEqual(len(rows), 1)

    @defer.inlineCallbacks
    def test_refused(self):
        """A wrong current password, a short new one and a mismatch are each
        shown next to their field (400), and nothing changes."""
        response = yield self.post_form("/console/account", {"current": "wrong one", "new": "short", "again": "other"})
        self.assertEqual(response.code, 400)
        for name, message in (("current", "wrong password"), ("new", "at least 8 characters"), ("again", "differ")):
            self.assertRegex(response.text, f'id="f-{name}-error" role="alert">[^<]*{message}')
        found = yield self.site.accounts.authenticate(ADMIN, PASSWORD)
        self.assertIsNotNone(found)
