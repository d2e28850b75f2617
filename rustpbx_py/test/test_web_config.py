"""
Tests of the configuration pages and their API resources over HTTP:
Settings > Proxy Settings (C{/settings}, C{/api/v1/settings}), Extensions
(C{/extensions}, C{/api/v1/extensions}), Routes, Trunks and ACL
(C{/routes}, C{/trunks}, C{/acl}, C{/api/v1/routes|trunks|acl}) and the
reload (C{/api/v1/reload}): authorisation (no session -> login page, wrong
token -> 401), CSRF, validation errors next to the field, the files
written to generated_dir and read back by load_config, a reload applied
to the running modules and a bad one refused.
"""

from __future__ import annotations

import json
import os
import re

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from rustpbx_py.config import load_config
from rustpbx_py.sip.message import parse_message
from rustpbx_py.test.sip_phones import Network, Phone
from rustpbx_py.test.web_support import CONSOLE_TOML, WebTestMixin, validate_openapi

PROXY = """
database_url = "sqlite://data/pbx.sqlite3"

[proxy]
udp_port = 0
realms = ["example.com"]
media_proxy = "none"

[proxy.trunks.carrier]
dest = "sip:192.0.2.50:5060"

[[proxy.user_backends]]
type = "memory"
users = [{ username = "alice", password = "pw-alice" }]

[[proxy.user_backends]]
type = "database"
"""


#: A token limited to another area's scope.
SCOPED = "scoped-token-0123456789"
SCOPED_TOKEN = f"""
[[console.api_tokens]]
token = "{SCOPED}"
scopes = ["call.control"]
"""

AREAS = ("settings", "extension", "extensions", "routes", "trunks", "acl", "reload")


class ConfigConsoleMixin(WebTestMixin):
    """A console over a context whose configuration is a real file (the
    settings and generated files need one), with a database user backend
    and a call module's router and trunks to reload into."""

    @defer.inlineCallbacks
    def start_console(self, text: str = PROXY):
        """
        The configuration C{text} (+ [console]) written to a file and
        loaded; a whole PBX over it (real core, transaction layer, UDP
        protocol and modules on a L{task.Clock}, L{Network}) with its
        database; the console and API over that PBX's context on the real
        reactor.
        """
        from rustpbx_py.store.db import Database
        from rustpbx_py.users import build_user_backends

        base = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(base, "data"))
        self.path = os.path.join(base, "pbx.toml")
        with open(self.path, "w") as f:
            f.write(text + CONSOLE_TOML + SCOPED_TOKEN)
        config = load_config(self.path)
        store = Database(config.database_url)
        self.addCleanup(store.close)
        yield store.migrate()
        self.clock = task.Clock()
        self.net = Network(self.clock, config=config)
        self.addCleanup(self.net.stop)
        context = self.net.context
        # As the service does: the database backend uses the project's
        # database (sip_phones builds the PBX without one).
        yield context.users.close()
        context.users.backends[:] = build_user_backends(config, store, self.clock).backends
        context.store = store
        self.call = self.net.module("call")
        yield self.start_web(context=context)
        self.gen = config.proxy.generated_dir

    @defer.inlineCallbacks
    def audit_actions(self):
        """The audit rows of this area's changes (not logins)."""
        rows = yield self.context.store.run_query("SELECT action, detail, who FROM console_audit ORDER BY id", ())
        return [(r[0], r[1], r[2]) for r in rows if r[0].split(".")[0] in AREAS]


class AuthorisationTests(ConfigConsoleMixin, TestCase):
    """Every page needs a session, every resource a token or a session
    with its CSRF token."""

    PAGES = ("settings", "extensions", "routes", "trunks", "acl")
    APIS = ("settings", "extensions", "routes", "trunks", "acl", "reload")

    @defer.inlineCallbacks
    def test_pages_need_a_session(self):
        yield self.start_console()
        for page in self.PAGES:
            response = yield self.get(f"/console/{page}")
            self.assertEqual(response.code, 303, page)
            self.assertTrue(response.header("location").startswith("/console/login?next="), page)

    @defer.inlineCallbacks
    def test_wrong_token(self):
        yield self.start_console()
        for api in self.APIS:
            method = "POST" if api == "reload" else "GET"
            response = yield self.api(method, f"/api/v1/{api}", token="wrong")
            self.assertEqual(response.code, 401, api)
            self.assertEqual(response.json()["error"]["code"], 401)
            response = yield self.api(method, f"/api/v1/{api}", token=None)
            self.assertEqual(response.code, 401, api)

    @defer.inlineCallbacks
    def test_scopes(self):
        """A token limited to other scopes is refused (403); "config" and
        "extensions" are the scopes of this area."""
        yield self.start_console()
        for api in self.APIS:
            method = "POST" if api == "reload" else "GET"
            response = yield self.api(method, f"/api/v1/{api}", token=SCOPED)
            self.assertEqual(response.code, 403, api)
            self.assertIn("config" if api != "extensions" else "extensions", response.json()["error"]["message"])

    @defer.inlineCallbacks
    def test_csrf(self):
        """A form without the session's CSRF token is refused and changes
        nothing; so is an API call by session cookie without X-CSRF-Token."""
        yield self.start_console()
        yield self.login()
        for page, fields in (("settings", {"realms": "x.example"}), ("routes", {"action": "reload"}),
                             ("extensions", {"action": "add", "username": "1001", "password": "x"})):
            response = yield self.post_form(f"/console/{page}", fields, csrf=False)
            self.assertEqual(response.code, 403, page)
        response = yield self.request("PATCH", "/api/v1/settings", headers={"Content-Type": "application/json"},
                                      body=json.dumps({"realms": ["x.example"]}).encode())
        self.assertEqual(response.code, 403)
        self.assertFalse(os.path.exists(os.path.join(self.gen, "proxy.generated.toml")))
        self.assertEqual((yield self.audit_actions()), [])


class SettingsPageTests(ConfigConsoleMixin, TestCase):

    @defer.inlineCallbacks
    def test_change_realms(self):
        """The realms field: saved to generated_dir, read back by
        load_config, not applied to the running PBX, a restart notice."""
        yield self.start_console()
        yield self.login()
        page = yield self.get("/console/settings")
        self.assertEqual(page.code, 200)
        self.assertIn('id="proxy-settings"', page.text)
        self.assertRegex(page.text, r'<textarea[^>]*name="realms"[^>]*id="f-realms"[^>]*>example.com</textarea>')
        response = yield self.post_form("/console/settings", {"realms": "example.com\nvoice.example"})
        self.assertEqual(response.code, 200)
        self.assertIn('id="restart-notice"', response.text)
        self.assertIn("Needs a restart to take effect: realms", response.text)
        self.assertIn("waiting for a restart", response.text)
        self.assertEqual(load_config(self.path).proxy.realms, ["example.com", "voice.example"])
        self.assertEqual(self.context.config.proxy.realms, ["example.com"])
        with open(self.path) as f:
            self.assertNotIn("voice.example", f.read())
        (audit,) = yield self.audit_actions()
        self.assertEqual(audit[0], "settings.proxy")
        self.assertIn("voice.example", audit[1])

    @defer.inlineCallbacks
    def test_error_next_to_field(self):
        yield self.start_console()
        yield self.login()
        response = yield self.post_form("/console/settings", {"udp_port": "abc", "max_contacts": "3"})
        self.assertEqual(response.code, 400)
        found = re.search(r'<span[^>]*id="f-udp_port-error"[^>]*>([^<]*)</span>', response.text)
        self.assertIsNotNone(found)
        self.assertEqual(found.group(1), 'proxy.udp_port: expected an integer port 0-65535, found "abc"')
        self.assertIn('value="abc"', response.text)
        self.assertFalse(os.path.exists(os.path.join(self.gen, "proxy.generated.toml")))

    @defer.inlineCallbacks
    def test_live_key_applies(self):
        yield self.start_console()
        yield self.login()
        response = yield self.post_form("/console/settings", {"passthrough_failure": "false"})
        self.assertIn("Saved and applied at once: passthrough_failure", response.text)
        self.assertFalse(self.context.config.proxy.passthrough_failure)

    @defer.inlineCallbacks
    def test_api(self):
        yield self.start_console()
        response = yield self.api("GET", "/api/v1/settings")
        self.assertEqual(response.code, 200)
        body = response.json()
        self.assertEqual(body["settings"]["realms"]["value"], ["example.com"])
        self.assertFalse(body["settings"]["realms"]["live"])
        response = yield self.api("PATCH", "/api/v1/settings", {"realms": ["a.example"], "max_contacts": 2})
        self.assertEqual(response.code, 200)
        body = response.json()
        self.assertEqual((body["applied"], body["restart"]), (["max_contacts"], ["realms"]))
        self.assertEqual(load_config(self.path).proxy.realms, ["a.example"])
        response = yield self.api("PATCH", "/api/v1/settings", {"udp_port": "abc"})
        self.assertEqual(response.code, 400)
        error = response.json()["error"]
        self.assertEqual(error["field"], "udp_port")
        self.assertIn("expected an integer port", error["message"])
        response = yield self.api("PATCH", "/api/v1/settings", {"routes": []})
        self.assertEqual((response.code, response.json()["error"]["field"]), (400, "routes"))


class ExtensionsPageTests(ConfigConsoleMixin, TestCase):

    @defer.inlineCallbacks
    def test_add_search_disable_delete(self):
        yield self.start_console()
        yield self.login()
        response = yield self.post_form("/console/extensions", {"action": "add", "username": "1001", "password": "pw",
                                                                "display_name": "Alice", "enabled": "true"})
        self.assertEqual(response.code, 303)
        user = yield self.context.users.get_user("1001", "example.com")
        self.assertEqual((user.password, user.display_name, user.enabled), ("pw", "Alice", True))
        page = yield self.get("/console/extensions?q=alic")
        self.assertIn("1001", page.text)
        self.assertNotIn(">pw<", page.text)
        # The delete button asks first (static/console.js reads data-confirm).
        self.assertIn('data-confirm="Delete this extension?"', page.text)
        self.assertNotIn("onsubmit", page.text)
        ext_id = re.search(r'href="/console/extensions/(\d+)"', page.text).group(1)
        response = yield self.post_form(f"/console/extensions/{ext_id}", {"action": "disable"})
        self.assertEqual(response.code, 303)
        self.assertFalse((yield self.context.users.get_user("1001", "example.com")).enabled)
        response = yield self.post_form(f"/console/extensions/{ext_id}", {"action": "save", "username": "1001",
                                                                           "email": "bad", "enabled": "true"})
        self.assertEqual(response.code, 400)
        self.assertIn('id="f-email-error"', response.text)
        response = yield self.post_form(f"/console/extensions/{ext_id}", {"action": "delete"})
        self.assertEqual(response.code, 303)
        self.assertIsNone((yield self.context.users.get_user("1001", "example.com")))
        actions = [a for a, _, _ in (yield self.audit_actions())]
        self.assertEqual(actions, ["extension.create", "extension.disable", "extension.delete"])

    @defer.inlineCallbacks
    def test_add_error_next_to_field(self):
        yield self.start_console()
        yield self.login()
        response = yield self.post_form("/console/extensions", {"action": "add", "username": "10 01", "password": "pw"})
        self.assertEqual(response.code, 400)
        self.assertRegex(response.text, r'id="f-username-error"[^>]*>expected a SIP user name')

    @defer.inlineCallbacks
    def test_csv_import_export(self):
        yield self.start_console()
        yield self.login()
        token = yield self.session_csrf()
        boundary = "xyzBOUNDARY"
        csv_text = "username,password,display_name\r\n1001,pw1,Alice\r\n1002,pw2,Bob\r\n"
        body = (
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\n{token}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"action\"\r\n\r\nimport\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"csv\"; filename=\"x.csv\"\r\n"
            f"Content-Type: text/csv\r\n\r\n{csv_text}\r\n--{boundary}--\r\n"
        ).encode()
        response = yield self.request("POST", "/console/extensions", headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}"}, body=body)
        self.assertEqual(response.code, 200, response.text)
        self.assertIn("Imported: 2 added, 0 updated.", response.text)
        export = yield self.get("/console/extensions/export.csv")
        self.assertEqual(export.header("content-type"), "text/csv; charset=utf-8")
        self.assertEqual(export.text.splitlines()[0], "id,username,realm,enabled,display_name,email,phone,note")
        self.assertEqual(len(export.text.splitlines()), 3)
        bad = body.replace(b"1002,pw2,Bob", b"10 02,pw2,Bob")
        response = yield self.request("POST", "/console/extensions", headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}"}, body=bad)
        self.assertEqual(response.code, 400)
        self.assertIn("line 3, username: expected a SIP user name", response.text)

    @defer.inlineCallbacks
    def test_api(self):
        yield self.start_console()
        response = yield self.api("POST", "/api/v1/extensions", {"username": "1001", "password": "pw"})
        self.assertEqual(response.code, 200)
        item = response.json()
        response = yield self.api("POST", "/api/v1/extensions", {"username": "1001", "password": "pw"})
        self.assertEqual((response.code, response.json()["error"]["field"]), (409, "username"))
        response = yield self.api("POST", "/api/v1/extensions", {"username": "1002"})
        self.assertEqual((response.code, response.json()["error"]["field"]), (400, "password"))
        response = yield self.api("PATCH", f"/api/v1/extensions/{item['id']}", {"enabled": False})
        self.assertFalse(response.json()["enabled"])
        response = yield self.api("GET", "/api/v1/extensions?q=100&limit=1")
        self.assertEqual((response.json()["total"], len(response.json()["items"])), (1, 1))
        response = yield self.api("POST", "/api/v1/extensions/import", {"csv": "username,password\n1003,x\n1004,\n"})
        self.assertEqual(response.code, 400)
        self.assertIn("line 3, password", response.json()["error"]["message"])
        response = yield self.api("GET", "/api/v1/extensions/export")
        self.assertIn("1001", response.json()["csv"])
        response = yield self.api("DELETE", f"/api/v1/extensions/{item['id']}")
        self.assertEqual(response.code, 200)
        response = yield self.api("GET", f"/api/v1/extensions/{item['id']}")
        self.assertEqual(response.code, 404)

    @defer.inlineCallbacks
    def test_no_database_backend(self):
        yield self.start_console(PROXY.replace('\n[[proxy.user_backends]]\ntype = "database"\n', ""))
        response = yield self.api("GET", "/api/v1/extensions")
        self.assertEqual(response.code, 409)
        self.assertIn("no database user backend", response.json()["error"]["message"])


ROUTE = '[[routes]]\nname = "out"\ndest = "carrier"\n[routes.match]\n"to.user" = "^9"\n'


class RoutingPageTests(ConfigConsoleMixin, TestCase):

    @defer.inlineCallbacks
    def test_save_route_and_reload(self):
        """A route saved on the page is written to routes.generated.toml,
        read back by load_config, and in the running router at once."""
        yield self.start_console()
        yield self.login()
        response = yield self.post_form("/console/routes", {"action": "save", "toml": ROUTE})
        self.assertEqual(response.code, 200, response.text)
        self.assertIn("Saved and reloaded: 1 routes, 1 trunks", response.text)
        self.assertEqual([r.name for r in load_config(self.path).proxy.routes], ["out"])
        self.assertEqual([r.name for r in self.call.router._routes], ["out"])
        self.assertIn("<td>out</td>", response.text)
        # The next call takes the new route to the carrier trunk.
        alice = Phone(self.net, "alice", "pw-alice", ("203.0.113.10", 5060))
        alice.call("9001", 5)
        invites = []
        for _ in range(100):  # user look-ups in the database answer from its thread
            invites = [parse_message(d) for d, addr in self.net.lost if addr == ("192.0.2.50", 5060) and d.startswith(b"INVITE ")]
            if invites:
                break
            yield task.deferLater(reactor, 0.02, lambda: None)
            self.net.pump()
        self.assertEqual([i.uri for i in invites], ["sip:9001@192.0.2.50:5060"])
        self.assertEqual([a for a, _, _ in (yield self.audit_actions())], ["routes.save"])

    @defer.inlineCallbacks
    def test_bad_route_refused(self):
        yield self.start_console()
        yield self.login()
        response = yield self.post_form("/console/routes", {"action": "save", "toml": ROUTE.replace('"carrier"', '"nowhere"')})
        self.assertEqual(response.code, 400)
        self.assertRegex(response.text, r'id="f-toml-error"[^>]*><p>routes\[0\]\.dest: route "out": expected the name of a defined trunk')
        self.assertFalse(os.path.exists(os.path.join(self.gen, "routes")))
        self.assertEqual(self.call.router._routes, [])

    @defer.inlineCallbacks
    def test_reload_button_refuses_a_bad_file(self):
        """A hand-edited file that does not load: the reload is refused,
        the running set kept, the problem shown."""
        yield self.start_console()
        yield self.login()
        os.makedirs(os.path.join(self.gen, "routes"))
        with open(os.path.join(self.gen, "routes", "routes.generated.toml"), "w") as f:
            f.write("[[routes]]\npriority = 1\n")
        response = yield self.post_form("/console/routes", {"action": "reload"})
        self.assertEqual(response.code, 400)
        self.assertIn('id="reload-error"', response.text)
        self.assertIn("routes[0].name: missing required key", response.text)
        self.assertEqual([a for a, _, _ in (yield self.audit_actions())], ["reload.refused"])

    @defer.inlineCallbacks
    def test_api(self):
        yield self.start_console()
        response = yield self.api("PUT", "/api/v1/trunks", {"trunks": {"second": {"dest": "sip:192.0.2.60"}}})
        self.assertEqual(response.code, 200, response.text)
        self.assertEqual(response.json()["trunks"], 2)
        self.assertIn("second", self.context.trunks.names())
        response = yield self.api("PUT", "/api/v1/routes", {"routes": [{"name": "r", "dest": "second", "match": {"to.user": "^8"}}]})
        self.assertEqual(response.code, 200, response.text)
        response = yield self.api("GET", "/api/v1/routes")
        body = response.json()
        self.assertEqual(body["routes"], [{"name": "r", "dest": "second", "match": {"to.user": "^8"}}])
        self.assertEqual([r["name"] for r in body["effective"]], ["r"])
        response = yield self.api("PUT", "/api/v1/acl", {"acl_rules": ["allow 10.0.0.0/8", "deny everything"]})
        self.assertEqual((response.code, response.json()["error"]["field"]), (400, "acl_rules"))
        response = yield self.api("PUT", "/api/v1/acl", {"acl_rules": ["allow 10.0.0.0/8", "deny all"]})
        self.assertEqual(response.code, 200)
        self.assertEqual([r.text for r in self.context.config.proxy.acl_rules], ["allow 10.0.0.0/8", "deny all"])
        response = yield self.api("POST", "/api/v1/reload")
        self.assertEqual(response.json()["routes"], 1)
        with open(os.path.join(self.gen, "routes", "routes.generated.toml"), "w") as f:
            f.write("[[routes]\n")
        response = yield self.api("POST", "/api/v1/reload")
        self.assertEqual(response.code, 400)
        self.assertIn("TOML syntax error", response.json()["error"]["message"])
        self.assertEqual([r.name for r in self.call.router._routes], ["r"])


class OpenApiTests(ConfigConsoleMixin, TestCase):

    @defer.inlineCallbacks
    def test_document_valid(self):
        """The API document, with this area's resources, passes a
        maintained OpenAPI 3 validator and names each of them."""
        yield self.start_console()
        response = yield self.api("GET", "/api/v1/openapi.json")
        document = response.json()
        validate_openapi(document)
        for path in ("/api/v1/settings", "/api/v1/extensions", "/api/v1/extensions/{id}", "/api/v1/extensions/import",
                     "/api/v1/extensions/export", "/api/v1/routes", "/api/v1/trunks", "/api/v1/acl", "/api/v1/reload"):
            self.assertIn(path, document["paths"])


class BrokenFileTests(ConfigConsoleMixin, TestCase):
    """A generated file broken by hand: the pages say so instead of failing."""

    @defer.inlineCallbacks
    def test_settings_file_not_toml(self):
        yield self.start_console()
        yield self.login()
        os.makedirs(self.gen, exist_ok=True)
        with open(os.path.join(self.gen, "proxy.generated.toml"), "w") as f:
            f.write("[proxy\nrealms = \n")
        page = yield self.get("/console/settings")
        self.assertEqual(page.code, 200)
        self.assertIn('id="load-problems"', page.text)
        self.assertIn("proxy.generated.toml: TOML syntax error", page.text)
        response = yield self.post_form("/console/settings", {"max_contacts": "4"})
        self.assertIn("Saved and applied at once: max_contacts", response.text)
        self.assertNotIn('id="load-problems"', response.text)
        self.assertEqual(load_config(self.path).proxy.max_contacts, 4)

    @defer.inlineCallbacks
    def test_main_file_broken_or_gone(self):
        """The admin's own file broken by hand, or removed, while the PBX
        runs: the settings page says so above the form (200), not 500."""
        yield self.start_console()
        yield self.login()
        with open(self.path) as f:
            text = f.read()
        with open(self.path, "w") as f:
            f.write("[proxy\n")
        page = yield self.get("/console/settings")
        self.assertEqual(page.code, 200)
        self.assertIn('id="load-problems"', page.text)
        self.assertIn("TOML syntax error", page.text)
        os.remove(self.path)
        page = yield self.get("/console/settings")
        self.assertEqual(page.code, 200)
        self.assertIn('id="load-problems"', page.text)
        with open(self.path, "w") as f:
            f.write(text)
        page = yield self.get("/console/settings")
        self.assertNotIn('id="load-problems"', page.text)

    @defer.inlineCallbacks
    def test_routes_file_broken(self):
        yield self.start_console()
        yield self.login()
        os.makedirs(os.path.join(self.gen, "routes"))
        with open(os.path.join(self.gen, "routes", "routes.generated.toml"), "w") as f:
            f.write("[[routes]]\npriority = 1\n")
        page = yield self.get("/console/routes")
        self.assertEqual(page.code, 200)
        self.assertIn('id="load-problems"', page.text)
        self.assertIn("routes[0].name: missing required key", page.text)
