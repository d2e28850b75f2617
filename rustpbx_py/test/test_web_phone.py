"""
Tests for L{rustpbx_py.web.phone}: the browser phone page and its files as
the PBX serves them, the vendored JsSIP and its licence, and what makes
them ship (setup.cfg package_data).  The page in a real browser against
the PBX: interop/test_webrtc_phone.
"""

from __future__ import annotations

import configparser
import fnmatch
import json
import os
import shutil
import subprocess
from types import SimpleNamespace

from twisted.internet import defer
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from twisted.web.test.requesthelper import DummyRequest

from rustpbx_py.web import phone
from rustpbx_py.web.phone import PHONE_DIR, PhonePage, install_phone, jssip_version

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOCK = os.path.join(ROOT, "rustpbx_py", "test", "interop", "js", "package-lock.json")


def config(ws_handler="/ws", jssip_js=None):
    return SimpleNamespace(proxy=SimpleNamespace(ws_handler=ws_handler),
                           console=SimpleNamespace(jssip_js=jssip_js))


def get(resource, *postpath: str, path: bytes = b"/phone/"):
    request = DummyRequest([p.encode() for p in postpath])
    request.path = path
    body = resource.render_GET(request)
    return request, body


def header(request, name: str) -> str:
    value = request.responseHeaders.getRawHeaders(name.encode())
    return value[0].decode() if value else None


class PageTests(SynchronousTestCase):
    def test_page(self):
        """/phone/ is the HTML page: its WebSocket path is proxy.ws_handler,
        it loads the vendored JsSIP then phone.js, and it is sent with a
        content security policy, no-cache and nosniff."""
        request, body = get(PhonePage(config("/sip-ws")), "")
        text = body.decode()
        self.assertEqual(header(request, "content-type"), "text/html; charset=utf-8")
        self.assertIn('data-ws-path="/sip-ws"', text)
        self.assertIn('<script src="jssip.min.js"></script>\n<script src="phone.js"></script>', text)
        self.assertNotIn("{{", text)
        self.assertIn('name="viewport"', text)   # mobile
        csp = header(request, "content-security-policy")
        self.assertIn("script-src 'self';", csp)
        self.assertIn("frame-ancestors 'none'", csp)
        self.assertEqual(header(request, "cache-control"), "no-cache")
        self.assertEqual(header(request, "x-content-type-options"), "nosniff")
        _, again = get(PhonePage(config()), "index.html")
        self.assertIn('data-ws-path="/ws"', again.decode())

    def test_jssip_js_override(self):
        """[console] jssip_js (RustPBX's key) replaces the vendored script,
        HTML-escaped, and the CSP allows that script's origin (a
        scheme-relative URL as RustPBX's docs show counts as https)."""
        page = PhonePage(config(jssip_js='//jssip.example.net/download/jssip-3.10.0.js?"x'))
        request, body = get(page, "")
        self.assertIn('<script src="//jssip.example.net/download/jssip-3.10.0.js?&quot;x"></script>', body.decode())
        self.assertIn("script-src 'self' https://jssip.example.net;", header(request, "content-security-policy"))
        request, body = get(PhonePage(config(jssip_js="/static/js/jssip.min.js")), "")
        self.assertIn('<script src="/static/js/jssip.min.js">', body.decode())
        self.assertIn("script-src 'self';", header(request, "content-security-policy"))

    def test_without_console_section(self):
        """A config without [console] (or with no jssip_js in it) gets the vendored copy."""
        page = PhonePage(SimpleNamespace(proxy=SimpleNamespace(ws_handler="/ws")))
        self.assertEqual(page.jssip_js, "jssip.min.js")

    def test_redirect(self):
        """/phone redirects to phone/ (relative: a reverse proxy's prefix stays)
        so that the page's relative URLs resolve under /phone/."""
        request, _ = get(PhonePage(config()), path=b"/phone")
        self.assertEqual(request.responseCode, 301)
        self.assertEqual(header(request, "location"), "phone/")
        request, _ = get(PhonePage(config()), path=b"/pbx/phone")
        self.assertEqual(header(request, "location"), "phone/")

    def test_files(self):
        """The script, the style sheet, JsSIP and its licence are served
        with their content types, byte for byte."""
        page = PhonePage(config())
        for name, kind in (("phone.js", "text/javascript"), ("phone.css", "text/css"),
                           ("jssip.min.js", "text/javascript"), ("JSSIP-LICENSE.txt", "text/plain")):
            request, body = get(page, name)
            self.assertIn(request.responseCode, (None, 200))   # None: not set, 200
            self.assertTrue(header(request, "content-type").startswith(kind), name)
            with open(os.path.join(PHONE_DIR, name), "rb") as f:
                self.assertEqual(body, f.read())

    def test_nothing_else(self):
        """Anything else under /phone/ is 404: no directory listing, no
        path out of the folder, not the Python files beside the page."""
        page = PhonePage(config())
        for postpath in (["__init__.py"], ["..", "__init__.py"], ["x", "phone.js"], ["index.htm"], ["phone.js", ""]):
            request, body = get(page, *postpath)
            self.assertEqual(request.responseCode, 404, postpath)
            self.assertEqual(body, b"not found\n")

    def test_install(self):
        """install_phone mounts the page with the site's add_public("phone", ...)."""
        mounted = []
        site = SimpleNamespace(add_public=lambda path, resource: mounted.append((path, resource)))
        page = install_phone(site, SimpleNamespace(config=config()))
        self.assertEqual(mounted, [("phone", page)])


class VendoredTests(SynchronousTestCase):
    def test_version_matches_npm(self):
        """The vendored JsSIP is the version the interop tests install from
        the lock file (make vendor-jssip rebuilds it from there)."""
        if not os.path.exists(LOCK):
            raise SkipTest("not a source tree")
        with open(LOCK) as f:
            lock = json.load(f)
        self.assertEqual(jssip_version(), lock["packages"]["node_modules/jssip"]["version"])

    def test_bundle_defines_jssip(self):
        """The file is a browser build: one global JsSIP (no require())."""
        with open(os.path.join(PHONE_DIR, "jssip.min.js"), encoding="utf-8") as f:
            text = f.read()
        self.assertIn("var JsSIP=", text)
        self.assertNotIn("require(", text)

    def test_licence(self):
        """JsSIP's licence and those of the packages bundled with it ship
        beside it (MIT each)."""
        with open(os.path.join(PHONE_DIR, "JSSIP-LICENSE.txt"), encoding="utf-8") as f:
            text = f.read()
        for name in ("jssip", "debug", "ms", "events", "sdp-transform"):
            self.assertIn(f"==== {name} ", text)
        self.assertIn("José Luis Millán", text)
        self.assertGreaterEqual(text.count("MIT"), 2)
        self.assertEqual(text.count("Permission is hereby granted"), 5)

    def test_package_data(self):
        """setup.cfg ships every file the page serves (wheel and .deb)."""
        path = os.path.join(ROOT, "setup.cfg")
        if not os.path.exists(path):
            raise SkipTest("not a source tree")
        parser = configparser.ConfigParser()
        parser.read(path)
        patterns = [p.strip() for p in parser["options.package_data"]["rustpbx_py.web.phone"].split(",")]
        for name in ["index.html", *phone._FILES]:
            self.assertTrue(any(fnmatch.fnmatch(name, p) for p in patterns), name)

    def test_script_parses(self):
        """phone.js is valid JavaScript (node --check), when node is there."""
        node = shutil.which("node") or shutil.which("nodejs")
        if node is None:
            raise SkipTest("node is not installed")
        result = subprocess.run([node, "--check", os.path.join(PHONE_DIR, "phone.js")],
                                capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)


class SiteTests(TestCase):
    """The PBX's web site serves the phone, with or without the console."""

    @defer.inlineCallbacks
    def test_mounted(self):
        """/phone/ is the page (jssip_js from [console] when set), /phone
        redirects to it, and it needs no session: its users sign in with
        their SIP password over the WebSocket."""
        from rustpbx_py.test.web_support import CONSOLE_TOML, WebTestMixin

        class Client(WebTestMixin):
            mktemp = self.mktemp
            addCleanup = self.addCleanup

        for toml, script in (("", "jssip.min.js"),
                             (CONSOLE_TOML.replace("[console]\n", '[console]\njssip_js = "/static/js/jssip.min.js"\n'),
                              "/static/js/jssip.min.js")):
            client = Client()
            yield client.start_web(toml)
            response = yield client.get("/phone/")
            self.assertEqual(response.code, 200)
            self.assertIn(f'<script src="{script}"></script>', response.text)
            self.assertIn('data-ws-path="/ws"', response.text)
            response = yield client.get("/phone/phone.js")
            self.assertEqual(response.code, 200)
            response = yield client.get("/phone")
            self.assertEqual((response.code, response.header("location")), (301, "phone/"))
