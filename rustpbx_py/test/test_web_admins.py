"""
The Administrators page over real HTTP on a migrated SQLite database: add
an administrator who can then log in, set its password, disable, enable
and delete it (its sessions end each time), the refusals (own account,
the last enabled administrator, a taken name, a short password), CSRF,
and the audit rows.
"""

from __future__ import annotations

import re

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from rustpbx_py.test.web_support import ADMIN, PASSWORD, WebTestMixin
from rustpbx_py.web.accounts import AccountError, Accounts


class AdministratorsPageTests(WebTestMixin, TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        yield self.start_web()
        response = yield self.login()
        self.assertEqual(response.code, 303)

    @defer.inlineCallbacks
    def as_other(self, username: str, password: str):
        """Log in as C{username} in a second cookie jar; fires with the
        login's response code, the first jar kept."""
        mine = dict(self.jar)
        try:
            response = yield self.login(username, password, create=False)
            other = dict(self.jar)
        finally:
            self.jar = mine
        return response.code, other

    @defer.inlineCallbacks
    def audit_actions(self):
        rows = yield self.context.store.run_query(
            "SELECT who, action, detail FROM console_audit WHERE action LIKE 'admin.%' ORDER BY id")
        return [tuple(r) for r in rows]

    @defer.inlineCallbacks
    def test_add_then_log_in(self):
        """An added administrator is listed and can log in with its password."""
        response = yield self.post_form("/console/admins", {"action": "add", "username": "bob",
                                                            "password": "bob-password", "again": "bob-password"})
        self.assertEqual(response.code, 303)
        self.assertIn("Added%20administrator%20bob", response.header("location"))
        page = yield self.get(response.header("location"))
        self.assertIn("Added administrator bob.", page.text)
        self.assertRegex(page.text, r"<td>bob</td><td>yes</td>")
        code, _ = yield self.as_other("bob", "bob-password")
        self.assertEqual(code, 303)
        code, _ = yield self.as_other("bob", "wrong-password")
        self.assertNotEqual(code, 303)
        self.assertEqual((yield self.audit_actions()), [(ADMIN, "admin.create", "bob")])

    @defer.inlineCallbacks
    def test_add_errors_next_to_fields(self):
        """A taken name, a short password and differing passwords are shown
        next to their fields (400) and nothing is added."""
        response = yield self.post_form("/console/admins", {"action": "add", "username": ADMIN,
                                                            "password": "short", "again": "other"})
        self.assertEqual(response.code, 400)
        self.assertIn('id="f-username-error"', response.text)
        self.assertIn("already an administrator", response.text)
        self.assertIn('id="f-password-error"', response.text)
        self.assertIn('id="f-again-error"', response.text)
        response = yield self.post_form("/console/admins", {"action": "add", "username": "with space",
                                                            "password": "long-enough", "again": "long-enough"})
        self.assertEqual(response.code, 400)
        self.assertIn('id="f-username-error"', response.text)
        admins = yield self.site.accounts.list_admins()
        self.assertEqual([a["username"] for a in admins], [ADMIN])
        self.assertEqual((yield self.audit_actions()), [])

    @defer.inlineCallbacks
    def test_password_disable_enable_delete(self):
        """Setting bob's password, disabling and deleting him each end his
        session; enabling lets him log in again."""
        yield self.site.accounts.set_admin("bob", "bob-password")
        code, bob = yield self.as_other("bob", "bob-password")
        self.assertEqual(code, 303)

        @defer.inlineCallbacks
        def bob_sees_dashboard():
            mine, self.jar = self.jar, dict(bob)
            try:
                page = yield self.get("/console/dashboard")
            finally:
                self.jar = mine
            return page.code == 200

        self.assertTrue((yield bob_sees_dashboard()))
        response = yield self.post_form("/console/admins", {"action": "password", "username": "bob",
                                                            "password": "new-bob-password"})
        self.assertEqual(response.code, 303)
        self.assertFalse((yield bob_sees_dashboard()), "his session ended")
        code, bob = yield self.as_other("bob", "new-bob-password")
        self.assertEqual(code, 303)

        response = yield self.post_form("/console/admins", {"action": "disable", "username": "bob"})
        self.assertEqual(response.code, 303)
        self.assertFalse((yield bob_sees_dashboard()))
        code, _ = yield self.as_other("bob", "new-bob-password")
        self.assertNotEqual(code, 303, "a disabled administrator cannot log in")
        page = yield self.get("/console/admins")
        self.assertRegex(page.text, r"<td>bob</td><td>no</td>")

        response = yield self.post_form("/console/admins", {"action": "enable", "username": "bob"})
        self.assertEqual(response.code, 303)
        code, bob = yield self.as_other("bob", "new-bob-password")
        self.assertEqual(code, 303)

        response = yield self.post_form("/console/admins", {"action": "delete", "username": "bob"})
        self.assertEqual(response.code, 303)
        self.assertFalse((yield bob_sees_dashboard()))
        admins = yield self.site.accounts.list_admins()
        self.assertEqual([a["username"] for a in admins], [ADMIN])
        self.assertEqual([a for _, a, _ in (yield self.audit_actions())],
                         ["admin.password", "admin.disable", "admin.enable", "admin.delete"])

    @defer.inlineCallbacks
    def test_own_account_refused(self):
        """An administrator cannot disable, delete or reset itself here
        (the Account page asks for the current password)."""
        page = yield self.get("/console/admins")
        self.assertIn('href="/console/account"', page.text)
        for action in ("disable", "delete", "password"):
            response = yield self.post_form("/console/admins", {"action": action, "username": ADMIN,
                                                                "password": "another-password"})
            self.assertEqual(response.code, 400, action)
            self.assertIn("Account page", response.text)
        code, _ = yield self.as_other(ADMIN, PASSWORD)
        self.assertEqual(code, 303)

    @defer.inlineCallbacks
    def test_last_enabled_admin_kept(self):
        """Accounts refuses to disable or delete the last enabled
        administrator (whoever asks), and names an unknown one."""
        accounts = Accounts(self.context.store, b"x")
        yield accounts.set_admin("bob", "bob-password")
        yield accounts.set_enabled("bob", False)
        yield self.assertFailure(accounts.set_enabled(ADMIN, False), AccountError)
        yield self.assertFailure(accounts.delete_admin(ADMIN), AccountError)
        yield accounts.delete_admin("bob")
        failure = yield self.assertFailure(accounts.delete_admin("bob"), AccountError)
        self.assertIn("no administrator is called 'bob'", str(failure))
        response = yield self.post_form("/console/admins", {"action": "disable", "username": "nobody"})
        self.assertEqual(response.code, 400)
        self.assertIn("no administrator is called", response.text)

    @defer.inlineCallbacks
    def test_needs_session_and_csrf(self):
        """Without a session the page is a redirect to the login page;
        without the CSRF token a change is refused (403) and not made."""
        response = yield self.post_form("/console/admins", {"action": "add", "username": "eve", "password": "eve-password",
                                                            "again": "eve-password"}, csrf=False)
        self.assertEqual(response.code, 403)
        self.jar.clear()
        response = yield self.get("/console/admins")
        self.assertEqual(response.code, 303)
        self.assertTrue(response.header("location").startswith("/console/login"))
        admins = yield self.site.accounts.list_admins()
        self.assertEqual([a["username"] for a in admins], [ADMIN])

    @defer.inlineCallbacks
    def test_delete_asks_first(self):
        """The delete button asks before it posts (static/console.js reads
        data-confirm); no inline script."""
        yield self.site.accounts.set_admin("bob", "bob-password")
        page = yield self.get("/console/admins")
        self.assertIn('data-confirm="Delete administrator bob?"', page.text)
        self.assertIsNone(re.search(r"<[^>]+\son[a-z]+=", page.text))
