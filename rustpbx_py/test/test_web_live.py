"""
The console's live pages (dashboard, registrations, active calls, call
records) and their C{/api/v1} resources, over HTTP, against a whole PBX:
the sip_phones bench (real core, transaction layer, acl/auth/registrar/call
modules, scripted phones on a L{task.Clock}) with a migrated SQLite
database for the call records and the console's accounts.

What it proves: nothing is reachable without a session or a token; forms
need the CSRF token; what the pages and the API show is the registrar's and
the B2BUA's state; unregister and hang up act on the PBX (the phones get
their BYEs) and are audited; record searches validate their fields and
show errors next to them; each record shows its SIP flow ladder.
"""

from __future__ import annotations

import csv
import io
import os
import re

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from rustpbx_py import status
from rustpbx_py.call.record import CallRecordStore
from rustpbx_py.test.sip_phones import Network
from rustpbx_py.test.test_status import USERS, ListeningPhone
from rustpbx_py.test.web_support import CONSOLE_TOML, TOKEN, WebTestMixin, validate_openapi


#: A token limited to the "records" scope.
RECORDS_ONLY = "records-only-token-0123456789"
RECORDS_TOKEN = f"""
[[console.api_tokens]]
token = "{RECORDS_ONLY}"
scopes = ["records"]
"""


class LiveWebTests(WebTestMixin, TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        from rustpbx_py.config import parse_config_text
        from rustpbx_py.store.db import Database

        self.clock = task.Clock()
        self.clock.advance(reactor.seconds())
        self.net = Network(self.clock, realms=["example.com"], user_backends=USERS,
                           trunks={"carrier": {"dest": "sip:192.0.2.50:5060"}})
        self.addCleanup(self.net.stop)
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        text = f'database_url = "sqlite:///{base}/web.sqlite3"\n' + CONSOLE_TOML + RECORDS_TOKEN
        with open(os.path.join(base, "pbx.toml"), "w") as f:
            f.write(text)  # the settings page reads the admin's file
        web_config = parse_config_text(text, os.path.join(base, "pbx.toml"))
        self.db = Database(web_config.database_url)
        self.addCleanup(self.db.close)
        yield self.db.migrate()
        context = self.net.context
        context.store = self.db
        # The modules keep the SIP config they were built with; the site
        # reads the console's from the context.
        context.config = web_config
        self.records = self.net.module("call").records = CallRecordStore(self.db)
        self.alice = ListeningPhone(self.net, "alice", "wonderland", ("198.51.100.10", 5062), ("10.0.0.10", 5060),
                                    user_agent="Alice/1.0")
        self.bob = ListeningPhone(self.net, "bob", "builder", ("198.51.100.20", 5064), ("10.0.0.20", 5060),
                                  user_agent="Bob/2.0")
        self.alice.register(120)
        self.bob.register(300)
        yield self.start_web(context=context)

    @defer.inlineCallbacks
    def audit_rows(self):
        rows = yield self.db.run_query(
            "SELECT who, action, detail FROM console_audit WHERE action <> 'login' ORDER BY id")
        return [tuple(r) for r in rows]

    @defer.inlineCallbacks
    def csrf_of(self, path):
        page = yield self.get(path)
        return self.csrf_token(page.text)

    def call_up(self):
        self.alice.call("bob", 600)
        (call,) = status.active_calls(self.context)
        return call

    @defer.inlineCallbacks
    def finished_call(self):
        """alice calls bob for 5 s; fires with the saved record's id."""
        self.alice.call("bob", 5)
        (call,) = status.active_calls(self.context)
        self.net.advance(6)
        yield self.records.drained()
        return call["id"]

    # -- authorisation -------------------------------------------------------

    @defer.inlineCallbacks
    def test_pages_need_a_session(self):
        """Every page (and the CSV export) without a session is a 303 to the login page."""
        for path in ("dashboard", "registrations", "calls", "records", "records/export.csv", "records/x/flow.svg"):
            response = yield self.get(f"/console/{path}")
            self.assertEqual(response.code, 303, path)
            self.assertTrue(response.header("location").startswith("/console/login?next="), path)
        response = yield self.post_form("/console/calls", {"id": "x"}, csrf=False)
        self.assertEqual(response.code, 303)

    @defer.inlineCallbacks
    def test_api_needs_a_token(self):
        """No token or a wrong one: 401 JSON, and nothing is done."""
        self.call_up()
        for method, path in (("GET", "/api/v1/registrations"), ("GET", "/api/v1/calls"),
                             ("GET", "/api/v1/records"), ("GET", "/api/v1/records.csv"),
                             ("GET", "/api/v1/transactions"),
                             ("DELETE", "/api/v1/registrations/bob@example.com"),
                             ("DELETE", "/api/v1/calls/" + status.active_calls(self.context)[0]["id"])):
            for token in (None, "wrong-token-0123456789"):
                response = yield self.api(method, path, token=token)
                self.assertEqual(response.code, 401, (method, path, token))
                self.assertEqual(response.json()["error"]["code"], 401)
        self.assertEqual(len(status.active_calls(self.context)), 1)
        self.assertEqual(len(status.registrations(self.context)), 2)

    @defer.inlineCallbacks
    def test_scopes(self):
        """
        A token limited to scopes reaches only those resources: "records"
        reads the call records, but hanging up needs "call.control"
        (RustPBX's name) and unregistering "registrations" (403 JSON).
        """
        call = self.call_up()
        response = yield self.api("GET", "/api/v1/records", token=RECORDS_ONLY)
        self.assertEqual(response.code, 200)
        for method, path in (("DELETE", "/api/v1/calls/" + call["id"]), ("GET", "/api/v1/calls"),
                             ("DELETE", "/api/v1/registrations/bob@example.com"),
                             ("GET", "/api/v1/transactions")):
            response = yield self.api(method, path, token=RECORDS_ONLY)
            self.assertEqual(response.code, 403, (method, path))
            self.assertIn("scope", response.json()["error"]["message"])
        self.assertEqual(len(status.active_calls(self.context)), 1)
        self.assertEqual(len(status.registrations(self.context)), 2)

    @defer.inlineCallbacks
    def test_forms_need_csrf(self):
        """A logged-in POST without the CSRF token is refused (403) and changes nothing."""
        yield self.login()
        call = self.call_up()
        response = yield self.post_form("/console/calls", {"id": call["id"]}, csrf=False)
        self.assertEqual(response.code, 403)
        response = yield self.post_form("/console/registrations", {"aor": "bob@example.com"}, csrf=False)
        self.assertEqual(response.code, 403)
        self.assertEqual(len(status.active_calls(self.context)), 1)
        self.assertEqual(len(status.registrations(self.context)), 2)

    # -- pages ----------------------------------------------------------------

    @defer.inlineCallbacks
    def test_dashboard(self):
        """Counts of registrations, calls and transactions, and the chart with today's call."""
        yield self.login()
        yield self.finished_call()
        self.call_up()
        response = yield self.get("/console/dashboard")
        self.assertEqual(response.code, 200)
        text = response.text
        self.assertIn("Registrations", text)
        self.assertRegex(text, r'class="figure">2<')  # two registrations
        self.assertIn("1 answered", text)
        self.assertIn('class="calls-chart"', text)
        self.assertIn("Calls, last 24 h", text)
        self.assertRegex(text, r"2 calls, 0 failed")
        self.assertIn("alice@example.com", text)
        self.assertRegex(text, r"<td>carrier</td><td><span class=\"trunk-unknown\">unknown</span></td>")
        home = yield self.get("/console/")
        self.assertEqual(home.header("location"), "/console/dashboard")

    @defer.inlineCallbacks
    def test_registrations_page(self):
        """Each binding with contact, source, transport, user agent and expiry; unregister works and is audited."""
        yield self.login()
        response = yield self.get("/console/registrations")
        text = response.text
        for expected in ("bob@example.com", "sip:bob@10.0.0.20:5060", "198.51.100.20:5064", "UDP", "Bob/2.0",
                         "300 s of 300 s"):
            self.assertIn(expected, text)
        token = self.csrf_token(text)
        response = yield self.post_form("/console/registrations",
                                        {"aor": "bob@example.com", "contact": "sip:bob@10.0.0.20:5060",
                                         "csrf_token": token})
        self.assertEqual(response.code, 303)
        self.assertTrue(response.header("location").startswith("/console/registrations?done="))
        self.assertEqual([r["aor"] for r in status.registrations(self.context)], ["alice@example.com"])
        page = yield self.get(response.header("location"))
        self.assertIn("bob@example.com: 1 binding(s) removed", page.text)
        audit = yield self.audit_rows()
        self.assertEqual(audit, [("admin", "registration.remove", "bob@example.com sip:bob@10.0.0.20:5060")])
        again = yield self.post_form("/console/registrations", {"aor": "bob@example.com", "csrf_token": token})
        page = yield self.get(again.header("location"))
        self.assertIn("no such binding", page.text)

    @defer.inlineCallbacks
    def test_calls_page_hang_up(self):
        """The call shows (caller, callee, state, codec); Hang up sends BYE to both phones and is audited."""
        yield self.login()
        call = self.call_up()
        self.clock.advance(65)
        response = yield self.get("/console/calls")
        text = response.text
        for expected in ("alice@example.com", "bob@example.com", "answered", "PCMU", "1:05", call["call_id"]):
            self.assertIn(expected, text)
        response = yield self.post_form("/console/calls", {"id": call["id"], "csrf_token": self.csrf_token(text)})
        self.assertEqual(response.code, 303)
        self.net.pump()
        self.assertIn("BYE", self.alice.methods())
        self.assertIn("BYE", self.bob.methods())
        self.assertEqual(status.active_calls(self.context), [])
        # The record (written when the call ended) is written again with
        # both phones' answers to the BYEs: the ladder ends with them.
        yield self.records.drained()
        from rustpbx_py.web import history

        row = yield history.get_record(self.db, call["id"])
        self.assertEqual(row["hangup_reason"], "bySystem")
        answers = [(i["leg"], i["direction"]) for i in row["sip_flow"]
                   if i["message"].startswith("SIP/2.0 200") and "BYE" in i["message"].split("CSeq:", 1)[1].split("\r\n", 1)[0]]
        self.assertEqual(sorted(answers), [("a", "in"), ("b", "in")])
        page = yield self.get(response.header("location"))
        self.assertIn("Hung up alice@example.com -&gt; bob@example.com", page.text)
        audit = yield self.audit_rows()
        self.assertEqual([a[:2] for a in audit], [("admin", "call.hangup")])
        again = yield self.post_form("/console/calls", {"id": call["id"], "csrf_token": self.csrf_token(text)})
        page = yield self.get(again.header("location"))
        self.assertIn("already ended", page.text)

    @defer.inlineCallbacks
    def test_records_pages(self):
        """
        The search lists the record; its page shows the facts, the ladder
        SVG and each message; flow.svg and export.csv serve the diagram and
        the CSV.
        """
        yield self.login()
        record_id = yield self.finished_call()
        response = yield self.get("/console/records?q=bob")
        self.assertEqual(response.code, 200)
        self.assertIn(f'href="/console/records/{record_id}"', response.text)
        self.assertIn("completed", response.text)
        self.assertIn("byCaller", response.text)
        response = yield self.get("/console/records?q=nobody")
        self.assertIn("No call matches.", response.text)
        response = yield self.get(f"/console/records/{record_id}")
        self.assertEqual(response.code, 200)
        text = response.text
        self.assertIn('<svg xmlns="http://www.w3.org/2000/svg"', text)
        self.assertIn('class="sip-flow"', text)
        self.assertIn('href="#msg-0"', text)
        self.assertIn('<details id="msg-0"', text)
        self.assertIn("INVITE (SDP)", text)
        self.assertIn("Call alice@example.com \u2192 bob@example.com", text)
        svg = yield self.get(f"/console/records/{record_id}/flow.svg")
        self.assertEqual(svg.header("content-type"), "image/svg+xml; charset=utf-8")
        self.assertTrue(svg.body.startswith(b"<?xml"))
        exported = yield self.get("/console/records/export.csv?q=alice")
        self.assertEqual(exported.header("content-type"), "text/csv; charset=utf-8")
        rows = list(csv.DictReader(io.StringIO(exported.text)))
        self.assertEqual([(r["id"], r["status"]) for r in rows], [(record_id, "completed")])
        missing = yield self.get("/console/records/nonexistent")
        self.assertEqual(missing.code, 404)

    @defer.inlineCallbacks
    def test_no_inline_script(self):
        """
        Every console page loads its JavaScript from static/console.js and
        carries no inline code (no <script> body, no on* attribute), so the
        Content-Security-Policy's script-src 'self' holds; the live pages
        mark the regions console.js refreshes.
        """
        yield self.login()
        record_id = yield self.finished_call()
        self.call_up()
        paths = sorted(self.site.pages) + [f"records/{record_id}"]
        self.assertIn("extensions", paths)
        for path in paths:
            page = yield self.get(f"/console/{path}")
            # (409: the extensions page says no database backend is configured)
            self.assertIn(page.code, (200, 409), path)
            policy = page.header("content-security-policy")
            self.assertIn("script-src 'self';", policy)
            self.assertNotIn("unsafe-inline';", policy.split("script-src", 1)[1].split(";", 1)[0])
            self.assertIn('<script src="/console/static/console.js" defer="defer"></script>', page.text, path)
            self.assertIsNone(re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page.text), path)
            self.assertIsNone(re.search(r"<[^>]+\son[a-z]+=", page.text), path)
        for path, region in (("dashboard", "live-dashboard"), ("registrations", "live-registrations"),
                             ("calls", "live-calls")):
            page = yield self.get(f"/console/{path}")
            self.assertRegex(page.text, f'id="{region}"[^>]* data-refresh="[0-9]+"|data-refresh="[0-9]+"[^>]* id="{region}"')
        calls = yield self.get("/console/calls")
        (call,) = status.active_calls(self.context)
        self.assertIn(f'<tr data-key="{call["id"]}">', calls.text)
        registrations = yield self.get("/console/registrations")
        self.assertRegex(registrations.text, r'<tr data-key="alice@example.com sip:[^"]+">')
        script = yield self.get("/console/static/console.js")
        self.assertEqual(script.code, 200)
        self.assertIn("javascript", script.header("content-type"))
        self.assertIn("data-refresh", script.text)

    @defer.inlineCallbacks
    def test_records_search_errors(self):
        """A bad filter answers 400 with the message next to its field, the value kept."""
        yield self.login()
        response = yield self.get("/console/records?from=03%2F12%2F2026&q=bob")
        self.assertEqual(response.code, 400)
        found = re.search(r'<div class="field has-error">(.*?)</div>', response.text, re.S)
        self.assertIsNotNone(found, response.text)
        self.assertIn('name="from"', found.group(1))
        self.assertIn('value="03/12/2026"', found.group(1))
        self.assertIn("expected a date YYYY-MM-DD", found.group(1))
        response = yield self.get("/console/records?status=weird")
        self.assertEqual(response.code, 400)
        self.assertIn("status: expected one of", response.text)

    # -- API ------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_api_registrations(self):
        """List (paginated); DELETE one AOR's bindings (404 when none), audited with the token's name."""
        response = yield self.api("GET", "/api/v1/registrations?limit=1")
        page = response.json()
        self.assertEqual((page["total"], page["limit"], len(page["items"])), (2, 1, 1))
        self.assertEqual(page["items"][0]["aor"], "alice@example.com")
        self.assertEqual(page["items"][0]["source"], "198.51.100.10:5062")
        response = yield self.api("DELETE", "/api/v1/registrations/alice%40example.com")
        self.assertEqual((response.code, response.json()), (200, {"aor": "alice@example.com", "removed": 1}))
        response = yield self.api("DELETE", "/api/v1/registrations/alice@example.com")
        self.assertEqual(response.code, 404)
        self.assertEqual(response.json()["error"]["code"], 404)
        audit = yield self.audit_rows()
        self.assertEqual([a[1:] for a in audit], [("registration.remove", "alice@example.com (all contacts)")])
        self.assertTrue(audit[0][0].startswith("token:"))

    @defer.inlineCallbacks
    def test_api_calls(self):
        """List, one call, hang up by DELETE and by POST .../hangup; 404 for unknown calls."""
        call = self.call_up()
        response = yield self.api("GET", "/api/v1/calls")
        self.assertEqual([c["id"] for c in response.json()["items"]], [call["id"]])
        response = yield self.api("GET", "/api/v1/calls/" + call["call_id"])
        self.assertEqual((response.json()["state"], response.json()["codecs"]), ("answered", {"a": "PCMU", "b": "PCMU"}))
        response = yield self.api("DELETE", "/api/v1/calls/" + call["id"])
        self.assertEqual((response.code, response.json()), (200, {"id": call["id"], "hung_up": True}))
        self.net.pump()
        self.assertIn("BYE", self.bob.methods())
        response = yield self.api("DELETE", "/api/v1/calls/" + call["id"])
        self.assertEqual(response.code, 404)
        second = self.call_up()
        response = yield self.api("POST", f"/api/v1/calls/{second['b_call_id']}/hangup")
        self.assertEqual(response.json(), {"id": second["id"], "hung_up": True})
        self.assertEqual(status.active_calls(self.context), [])
        response = yield self.api("GET", "/api/v1/calls/nope")
        self.assertEqual(response.code, 404)
        response = yield self.api("GET", "/api/v1/transactions")
        self.assertIn("INVITE", response.json()["client"]["by_method"])

    @defer.inlineCallbacks
    def test_api_records(self):
        """Search (paged, validated: 400 names the field), one record with flow and media, CSV."""
        record_id = yield self.finished_call()
        response = yield self.api("GET", "/api/v1/records?q=alice&status=completed")
        page = response.json()
        self.assertEqual([r["id"] for r in page["items"]], [record_id])
        self.assertEqual(page["items"][0]["talk_time"], 5.0)
        response = yield self.api("GET", "/api/v1/records?status=weird")
        self.assertEqual(response.code, 400)
        self.assertEqual(response.json()["error"]["field"], "status")
        response = yield self.api("GET", "/api/v1/records/" + record_id)
        record = response.json()
        self.assertEqual(record["sip_flow"][0]["message"].split(" ", 1)[0], "INVITE")
        self.assertEqual(record["media"]["mode"], "none")
        response = yield self.api("GET", "/api/v1/records/unknown")
        self.assertEqual(response.code, 404)
        response = yield self.api("GET", "/api/v1/records.csv")
        self.assertEqual(response.header("content-type"), "text/csv; charset=utf-8")
        self.assertEqual(len(response.text.strip().split("\r\n")), 2)

    @defer.inlineCallbacks
    def test_openapi(self):
        """The document lists these resources' operations and passes a maintained validator."""
        response = yield self.api("GET", "/api/v1/openapi.json")
        document = response.json()
        for path in ("/api/v1/registrations", "/api/v1/registrations/{aor}", "/api/v1/calls", "/api/v1/calls/{id}",
                     "/api/v1/calls/{id}/hangup", "/api/v1/transactions", "/api/v1/records",
                     "/api/v1/records/{id}", "/api/v1/records.csv"):
            self.assertIn(path, document["paths"])
        validate_openapi(document)


__all__ = ["LiveWebTests", "TOKEN"]
