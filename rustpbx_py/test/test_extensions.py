"""
Tests for L{rustpbx_py.extensions}: the database backend's accounts managed
from the console, against a real SQLite database (migration 0020), read
back through L{rustpbx_py.users.DatabaseUserBackend} as authentication
reads them.
"""

from __future__ import annotations

import os

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from rustpbx_py.extensions import ExtensionError, Extensions, ImportProblems, check_values
from rustpbx_py.store.db import Database
from rustpbx_py.users import PROJECT_USERS_COLUMNS, DatabaseUserBackend


class ExtensionsTests(TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        self.db = Database("sqlite:///" + os.path.abspath(self.mktemp()) + ".sqlite3")
        self.addCleanup(self.db.close)
        yield self.db.migrate()
        self.backend = DatabaseUserBackend(self.db, "users", PROJECT_USERS_COLUMNS)
        self.ext = Extensions(self.backend)

    @defer.inlineCallbacks
    def test_add_edit_disable_delete(self):
        """An added extension authenticates with its password; edits,
        disabling and deleting are what the backend then reads."""
        alice = yield self.ext.add({"username": "1001", "password": "s3cret", "display_name": "Alice", "email": "a@example.com"})
        self.assertEqual((alice["username"], alice["realm"], alice["enabled"]), ("1001", "", True))
        self.assertNotIn("password", alice)
        user = yield self.backend.get_user("1001", "example.com")
        self.assertEqual((user.password, user.display_name), ("s3cret", "Alice"))
        yield self.ext.update(alice["id"], {"password": "", "phone": "+1 555 0100"})
        user = yield self.backend.get_user("1001", "example.com")
        self.assertEqual((user.password, user.phone), ("s3cret", "+1 555 0100"), "an empty password keeps the old one")
        yield self.ext.set_enabled(alice["id"], False)
        user = yield self.backend.get_user("1001", "example.com")
        self.assertFalse(user.enabled)
        yield self.ext.delete(alice["id"])
        self.assertIsNone((yield self.backend.get_user("1001", "example.com")))
        yield self.assertFailure(self.ext.get(alice["id"]), ExtensionError)

    @defer.inlineCallbacks
    def test_duplicate_and_bad_values(self):
        yield self.ext.add({"username": "1001", "password": "x"})
        e = yield self.assertFailure(self.ext.add({"username": "1001", "password": "y"}), ExtensionError)
        self.assertEqual((e.field, e.code), ("username", 409))
        yield self.ext.add({"username": "1001", "realm": "other.example", "password": "y"})
        e = yield self.assertFailure(self.ext.add({"username": "10 01", "password": "y"}), ExtensionError)
        self.assertEqual(e.field, "username")
        e = yield self.assertFailure(self.ext.add({"username": "1002"}), ExtensionError)
        self.assertEqual(e.field, "password")
        self.assertRaises(ExtensionError, check_values, {"email": "nope"}, False)
        self.assertRaises(ExtensionError, check_values, {"enabled": "maybe"}, False)
        self.assertRaises(ExtensionError, check_values, {"sip_secret": "x"}, False)

    @defer.inlineCallbacks
    def test_list_search_page(self):
        for n in range(5):
            yield self.ext.add({"username": f"10{n:02d}", "password": "x", "display_name": f"Person {n}"})
        yield self.ext.add({"username": "2000", "password": "x", "email": "boss_1@example.com"})
        total, items = yield self.ext.list()
        self.assertEqual(total, 6)
        total, items = yield self.ext.list(offset=2, limit=2)
        self.assertEqual((total, [i["username"] for i in items]), (6, ["1002", "1003"]))
        total, items = yield self.ext.list("person 3")
        self.assertEqual([i["username"] for i in items], ["1003"])
        total, items = yield self.ext.list("_1")
        self.assertEqual([i["username"] for i in items], ["2000"], "_ is not a wildcard")

    @defer.inlineCallbacks
    def test_csv_round_trip(self):
        """Import adds and updates; export gives them back without
        passwords; the exported file imports again unchanged."""
        yield self.ext.add({"username": "1001", "password": "old"})
        text = "username,password,display_name,enabled,email\r\n1001,new,Alice,true,a@example.com\r\n1002,pw2,\"Bob, B.\",false,\r\n"
        result = yield self.ext.import_csv(text)
        self.assertEqual((result.added, result.updated), (1, 1))
        self.assertEqual((yield self.backend.get_user("1001", None)).password, "new")
        bob = yield self.backend.get_user("1002", None)
        self.assertEqual((bob.display_name, bob.enabled), ("Bob, B.", False))
        exported = yield self.ext.export_csv()
        lines = exported.splitlines()
        self.assertEqual(lines[0], "id,username,realm,enabled,display_name,email,phone,note")
        self.assertTrue(lines[1].endswith(",1001,,true,Alice,a@example.com,,"))
        self.assertNotIn("new", exported)
        again = yield self.ext.import_csv(exported)
        self.assertEqual((again.added, again.updated), (0, 2))
        self.assertEqual((yield self.ext.export_csv()), exported)

    @defer.inlineCallbacks
    def test_csv_errors_per_row(self):
        """A file with bad rows is refused whole, each problem naming its
        line and column."""
        text = "username,password,email\n1001,pw,ok@example.com\n10 02,pw,\n1003,,\n1004,pw,bad\n1001,pw,\n1005,pw\n"
        e = yield self.assertFailure(self.ext.import_csv(text), ImportProblems)
        self.assertEqual([(r.line, r.column) for r in e.errors], [(7, None), (3, "username"), (4, "password"), (5, "email"), (6, "username")])
        total, _ = yield self.ext.list()
        self.assertEqual(total, 0)
        e = yield self.assertFailure(self.ext.import_csv("name,pass\nx,y\n"), ImportProblems)
        self.assertEqual([(r.line, r.column) for r in e.errors], [(1, "name"), (1, "pass"), (1, None)])

    @defer.inlineCallbacks
    def test_formula_cells_defused(self):
        yield self.ext.add({"username": "1001", "password": "x", "note": "=HYPERLINK(\"http://x\")", "phone": "+15550100"})
        exported = yield self.ext.export_csv()
        self.assertIn("'=HYPERLINK", exported)
        self.assertIn(",+15550100,", exported)
