"""
The web site's authorisation over real HTTP on 127.0.0.1: console pages
need a session, the API a bearer token (or a session and its CSRF token),
errors are JSON and never tracebacks, and the mount API serves what
other modules add.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial.unittest import TestCase
from twisted.web import resource
from twisted.web.template import tags

from rustpbx_py.test.web_support import CONSOLE_TOML, TOKEN, WebTestMixin
from rustpbx_py.web.console import (
    ConsolePage,
    FieldErrors,
    PageError,
    audit,
    csrf_input,
    field,
    form_error,
    form_value,
    redirect,
)
from rustpbx_py.web.jsonapi import ApiError, ApiResource, paginate, request_json


class _Echo(ApiResource):
    """post echoes its JSON body; get pages a list; delete fails."""

    openapi = {"get": {"summary": "numbers", "responses": {"200": {"description": "a page"}}}}

    def get(self, request, who):
        return paginate(request, list(range(25)))

    def post(self, request, who):
        body = request_json(request)
        if "bad" in body:
            raise ApiError(422, "bad is not allowed", "bad")
        return {"echo": body, "who": who.username}

    def delete(self, request, who):
        raise RuntimeError("secret internal detail")


class _FormPage(ConsolePage):
    nav = "Form"
    nav_order = 5
    title = "A form"

    def get(self, request, admin):
        return tags.p("hello ", admin.username)

    @defer.inlineCallbacks
    def post(self, request, admin):
        yield audit(self.context, admin, "form.post", "posted")
        redirect(request, self.site.page_url("form"))


class _BrokenPage(ConsolePage):
    title = "Broken"

    def get(self, request, admin):
        raise RuntimeError("secret internal detail")

    def post(self, request, admin):
        raise PageError(409, "That name is taken.")


class _FieldsPage(ConsolePage):
    title = "Fields"

    def get(self, request, admin):
        return self.form(request, FieldErrors())

    def form(self, request, errors):
        return tags.form(csrf_input(request), field("Name", "name", form_value(request, "name"), errors, help="letters only"),
                         method="post")

    def post(self, request, admin):
        errors = FieldErrors()
        if not form_value(request, "name").isalpha():
            errors["name"] = "expected letters only"
        form_error(request, errors)
        return self.form(request, errors)


class _DeepPage(_FormPage):
    nav = None


class _Public(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        return b"public"


class SiteTests(WebTestMixin, TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        site = yield self.start_web()
        site.add_page("form", _FormPage(self.context, site))
        site.add_api("echo", _Echo(self.context))
        site.add_public("api/monitor/snapshot", _Public())
        site.add_page("deep/form", _DeepPage(self.context, site))
        site.add_page("broken", _BrokenPage(self.context, site))
        site.add_page("fields", _FieldsPage(self.context, site))
        site.add_api("deep/echo", _Echo(self.context))

    @defer.inlineCallbacks
    def test_pages_need_a_session(self):
        """Without a session every console page (and unknown paths under the
        console) answers 303 to the login page, remembering where to go."""
        for path in ("/console/form", "/console/audit", "/console/", "/console/nosuch", "/console/deep", "/console/deep/form",
                     "/console/deep/nosuch"):
            response = yield self.get(path)
            self.assertEqual(response.code, 303, path)
            self.assertEqual(response.header("location"), "/console/login?next=" + path)
        response = yield self.get("/")
        self.assertEqual((response.code, response.header("location")), (303, "/console/"))

    @defer.inlineCallbacks
    def test_only_login_and_css_without_session(self):
        """The login page and the stylesheet are served without a session;
        the static directory is not listed."""
        login = yield self.get("/console/login")
        self.assertEqual(login.code, 200)
        self.assertIn('name="password"', login.text)
        css = yield self.get("/console/static/console.css")
        self.assertEqual(css.code, 200)
        self.assertIn("text/css", css.header("content-type"))
        listing = yield self.get("/console/static/")
        self.assertEqual(listing.code, 404)

    @defer.inlineCallbacks
    def test_login_then_page(self):
        """After logging in the page is shown inside the layout with the
        menu, and the session cookie is HttpOnly and SameSite=Strict (not
        Secure over plain HTTP)."""
        response = yield self.login()
        self.assertEqual(response.code, 303)
        cookie = [c for c in response.headers.getRawHeaders("set-cookie") if c.startswith("rustpbx_session=")][0]
        self.assertIn("HttpOnly", cookie)
        self.assertIn("SameSite=Strict", cookie)
        self.assertNotIn("Secure", cookie)
        page = yield self.get("/console/form")
        self.assertEqual(page.code, 200)
        self.assertIn("<p>hello admin</p>", page.text)
        self.assertIn('<a href="/console/form" aria-current="page">Form</a>', page.text)
        self.assertIn("/console/static/console.css", page.text)
        home = yield self.get("/console/")
        self.assertEqual((home.code, home.header("location")), (303, "/console/form"))

    @defer.inlineCallbacks
    def test_csrf(self):
        """A POST without the session's CSRF token, or with another one, is
        refused (403) and does nothing; with it the page's post runs."""
        yield self.login()
        for fields in ({}, {"csrf_token": "forged"}):
            refused = yield self.post_form("/console/form", fields, csrf=False)
            self.assertEqual(refused.code, 403)
        rows = yield self.context.store.run_query("SELECT action FROM console_audit WHERE action = 'form.post'")
        self.assertEqual(rows, [])
        done = yield self.post_form("/console/form", {})
        self.assertEqual((done.code, done.header("location")), (303, "/console/form"))
        rows = yield self.context.store.run_query("SELECT who, source, action FROM console_audit WHERE action = 'form.post'")
        self.assertEqual(rows, [("admin", "127.0.0.1", "form.post")])

    @defer.inlineCallbacks
    def test_logout(self):
        """Logging out (a CSRF-checked POST) ends the session on the server:
        the old cookie no longer opens pages."""
        yield self.login()
        old = dict(self.jar)
        response = yield self.post_form("/console/logout", {})
        self.assertEqual(response.code, 303)
        self.jar = old
        page = yield self.get("/console/form")
        self.assertEqual(page.code, 303)

    @defer.inlineCallbacks
    def test_api_token(self):
        """The API answers with the right bearer token; a wrong or missing
        one gets 401 JSON with WWW-Authenticate: Bearer."""
        ok = yield self.api("GET", "/api/v1/health")
        self.assertEqual(ok.code, 200)
        self.assertEqual(ok.json()["status"], "ok")
        for token in ("wrong-token-0123456789", None):
            refused = yield self.api("GET", "/api/v1/health", token=token)
            self.assertEqual(refused.code, 401)
            self.assertTrue(refused.header("www-authenticate").startswith("Bearer"))
            self.assertEqual(refused.json()["error"]["code"], 401)
        unknown = yield self.api("GET", "/api/v1/nosuch", token=None)
        self.assertEqual(unknown.code, 401)
        unknown = yield self.api("GET", "/api/v1/nosuch")
        self.assertEqual(unknown.code, 404)
        for path in ("/api/v1/deep", "/api/v1/deep/nosuch"):
            unknown = yield self.api("GET", path, token=None)
            self.assertEqual(unknown.code, 401, path)
            unknown = yield self.api("GET", path)
            self.assertEqual((unknown.code, unknown.json()["error"]["code"]), (404, 404), path)
        nested = yield self.api("GET", "/api/v1/deep/echo?limit=1")
        self.assertEqual(nested.json()["items"], [0])

    @defer.inlineCallbacks
    def test_api_errors_are_json(self):
        """405 lists the allowed methods, ApiError keeps its code and field,
        bad JSON is 400, and an exception is 500 without its message."""
        response = yield self.api("PUT", "/api/v1/echo", {})
        self.assertEqual(response.code, 405)
        self.assertEqual(response.header("allow"), "GET, POST, DELETE")
        response = yield self.api("POST", "/api/v1/echo", {"bad": 1})
        self.assertEqual((response.code, response.json()["error"]["field"]), (422, "bad"))
        response = yield self.api("POST", "/api/v1/echo", headers={"Content-Type": "application/json"})
        self.assertEqual(response.code, 400)
        response = yield self.request("POST", "/api/v1/echo", headers={"Authorization": f"Bearer {TOKEN}"}, body=b"{nope")
        self.assertEqual(response.code, 400)
        response = yield self.api("DELETE", "/api/v1/echo")
        self.assertEqual(response.code, 500)
        self.assertNotIn("secret", response.text)
        self.assertNotIn("Traceback", response.text)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    @defer.inlineCallbacks
    def test_paginate(self):
        """?offset=&limit= cut list answers; a bad value names the field."""
        response = yield self.api("GET", "/api/v1/echo?offset=20&limit=3")
        self.assertEqual(response.json(), {"items": [20, 21, 22], "total": 25, "offset": 20, "limit": 3})
        response = yield self.api("GET", "/api/v1/echo?limit=0")
        self.assertEqual((response.code, response.json()["error"]["field"]), (400, "limit"))

    @defer.inlineCallbacks
    def test_api_with_session(self):
        """An admin session works for the API; an unsafe method then needs
        the CSRF token in X-CSRF-Token."""
        yield self.login()
        response = yield self.request("GET", "/api/v1/health")
        self.assertEqual(response.code, 200)
        response = yield self.request("POST", "/api/v1/echo", headers={"Content-Type": "application/json"}, body=b"{}")
        self.assertEqual(response.code, 403)
        csrf = yield self.session_csrf()
        response = yield self.request("POST", "/api/v1/echo", headers={"Content-Type": "application/json", "X-CSRF-Token": csrf}, body=b'{"a": 1}')
        self.assertEqual(response.code, 200)
        self.assertEqual(response.json(), {"echo": {"a": 1}, "who": "admin"})

    @defer.inlineCallbacks
    def test_public(self):
        """add_public mounts at the root, nested paths included, without auth."""
        response = yield self.get("/api/monitor/snapshot")
        self.assertEqual((response.code, response.body), (200, b"public"))

    @defer.inlineCallbacks
    def test_page_errors(self):
        """An exception in a page is a 500 page inside the layout, logged,
        without its message or a traceback; a PageError shows its message
        with its code."""
        yield self.login()
        page = yield self.get("/console/broken")
        self.assertEqual(page.code, 500)
        self.assertIn("Something went wrong", page.text)
        self.assertNotIn("secret", page.text)
        self.assertNotIn("Traceback", page.text)
        self.assertIn('class="menu"', page.text)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        page = yield self.post_form("/console/broken", {})
        self.assertEqual(page.code, 409)
        self.assertIn("That name is taken.", page.text)

    @defer.inlineCallbacks
    def test_field_errors(self):
        """A refused form is 400 and shows the error right after its input,
        tied to it for screen readers, with the value kept."""
        yield self.login()
        page = yield self.post_form("/console/fields", {"name": "a1"})
        self.assertEqual(page.code, 400)
        self.assertIn(
            '<input type="text" name="name" id="f-name" value="a1" aria-invalid="true" aria-describedby="f-name-error" />'
            '<small class="help">letters only</small>'
            '<span class="field-error" id="f-name-error" role="alert">expected letters only</span>',
            page.text,
        )
        page = yield self.post_form("/console/fields", {"name": "abc"})
        self.assertEqual(page.code, 200)
        self.assertNotIn("field-error", page.text)

    @defer.inlineCallbacks
    def test_security_headers(self):
        """Console pages are not cached, not framed, forms post only to
        the site, and scripts come only from its own files."""
        page = yield self.get("/console/login")
        self.assertEqual(page.header("cache-control"), "no-store")
        self.assertEqual(page.header("x-frame-options"), "DENY")
        self.assertIn("frame-ancestors 'none'", page.header("content-security-policy"))
        self.assertIn("form-action 'self'", page.header("content-security-policy"))
        self.assertIn("script-src 'self';", page.header("content-security-policy"))

    @defer.inlineCallbacks
    def test_audit_page(self):
        """The audit log lists the newest change first, filters by
        administrator and pages by 50."""
        yield self.login()
        for i in range(55):
            yield audit(self.context, type("A", (), {"username": "bob", "source": "192.0.2.9"})(), "thing.change", f"change {i}")
        page = yield self.get("/console/audit")
        self.assertEqual(page.code, 200)
        self.assertIn("<td>change 54</td>", page.text)
        self.assertNotIn("<td>change 4</td>", page.text)
        self.assertIn('href="?page=2"', page.text)
        older = yield self.get("/console/audit?page=2")
        self.assertIn("<td>change 4</td>", older.text)
        self.assertIn("<td>login</td>", older.text)
        mine = yield self.get("/console/audit?who=admin")
        self.assertIn("<td>login</td>", mine.text)
        self.assertNotIn("change 54", mine.text)


class SecureCookieTests(WebTestMixin, TestCase):
    @defer.inlineCallbacks
    def test_secure_cookie_setting(self):
        """[console] secure_cookie = true marks the cookie Secure over plain
        HTTP (a TLS-terminating proxy in front)."""
        yield self.start_web(CONSOLE_TOML.replace("[console]\n", "[console]\nsecure_cookie = true\n"))
        response = yield self.login()
        cookie = [c for c in response.headers.getRawHeaders("set-cookie") if c.startswith("rustpbx_session=")][0]
        self.assertIn("; Secure", cookie)

    @defer.inlineCallbacks
    def test_audit_retention(self):
        """[console] audit_retention_days: the site prunes at start and
        then hourly (on the reactor's clock), and stops when it closes."""
        from rustpbx_py.web.site import PRUNE_INTERVAL

        site = yield self.start_web(CONSOLE_TOML.replace("[console]\n", "[console]\naudit_retention_days = 30\n"))
        self.assertEqual(site.console.audit_retention_days, 30)
        self.assertTrue(site.pruning.running)
        self.assertEqual(site.pruning.interval, PRUNE_INTERVAL)
        site.close_connections()
        self.assertFalse(site.pruning.running)

    def test_audit_retention_refused(self):
        """A negative or non-integer retention is refused at start, naming the key."""
        from rustpbx_py.config import ConfigError, parse_config_text

        for value in ("-1", '"30"', "1.5"):
            with self.assertRaises(ConfigError) as caught:
                parse_config_text(f"[console]\naudit_retention_days = {value}\n", "/etc/pbx.toml")
            self.assertIn("console.audit_retention_days", str(caught.exception))
            self.assertIn("a whole number of days", str(caught.exception))

    @defer.inlineCallbacks
    def test_no_console(self):
        """Without [console] neither the console nor the API is served (as
        in RustPBX); public mounts still are."""
        site = yield self.start_web("")
        site.add_public("healthz", _Public())
        for path in ("/console/login", "/api/v1/health", "/"):
            response = yield self.get(path)
            self.assertEqual(response.code, 404, path)
        response = yield self.get("/healthz")
        self.assertEqual(response.code, 200)


class WebSocketMountTests(TestCase):
    def test_over_limits(self):
        """An upgrade from a source over the connection limits is answered
        503 with Retry-After (not Autobahn's bare 500) and counted as
        refused."""
        from twisted.internet.task import Clock
        from twisted.web.test.requesthelper import DummyRequest

        from rustpbx_py.protocols.limits import StreamLimits
        from rustpbx_py.protocols.ws import SipWebSocketFactory
        from rustpbx_py.web.listen import SipWebSocketResource

        limits = StreamLimits(per_ip=0, total=10, first_message_timeout=0, handshake_timeout=0, idle_timeout=0)
        clock = Clock()
        ws = SipWebSocketFactory(None, "/ws", "WS", limits=limits, clock=clock)
        wss = SipWebSocketFactory(None, "/ws", "WSS", limits=limits, clock=clock)
        resource = SipWebSocketResource(ws, wss)
        request = DummyRequest([b"ws"])
        request.isSecure = lambda: True
        body = resource.render(request)
        self.assertEqual((request.responseCode, body), (503, b"Too many connections\n"))
        self.assertEqual(request.responseHeaders.getRawHeaders(b"retry-after"), [b"10"])
        self.assertEqual(limits.refused, 1)
