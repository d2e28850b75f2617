# -*- test-case-name: rustpbx_py.test.test_web_site -*-
"""
Helpers for tests of the web console and the JSON API: a L{WebSite} (or a
whole PBX) listening on 127.0.0.1, an HTTP client with a cookie jar, and a
logged-in administrator.

    class MyPageTests(WebTestMixin, TestCase):
        @defer.inlineCallbacks
        def test_page(self):
            yield self.start_web()             # [console] + API token TOKEN
            yield self.login()                 # admin ADMIN / PASSWORD
            response = yield self.get("/console/mypage")
            self.assertEqual(response.code, 200)
            response = yield self.post_form("/console/mypage", {"name": "x"})   # CSRF added
            response = yield self.api("GET", "/api/v1/health")                  # bearer TOKEN

A PBX started with C{start_pbx_toml(self, toml)} (its text with a
C{[console]} section) serves the site too: call C{self.use_port(service.ports["HTTP"])}.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Dict, Optional
from urllib.parse import urlencode

from twisted.internet import defer, reactor
from twisted.web.client import Agent, PartialDownloadError, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

#: The API token, administrator and password the helpers configure.
TOKEN = "test-token-0123456789"
ADMIN = "admin"
PASSWORD = "correct horse battery"


def validate_openapi(document: dict) -> None:
    """
    Raise when C{document} is not a valid OpenAPI 3 document, with
    openapi-spec-validator (the maintained validator); skip the calling
    test when it is not installed (Debian has no package of it, so the
    installed package's suite skips these tests and says why).
    """
    try:
        import openapi_spec_validator as validator
    except ImportError:
        from twisted.trial.unittest import SkipTest

        raise SkipTest("openapi-spec-validator is not installed (make test installs the test extra)")
    validate = getattr(validator, "validate", None) or validator.validate_spec
    validate(document)

CONSOLE_TOML = f"""
[console]
session_secret = "test-session-secret-0123456789"
[[console.api_tokens]]
token = "{TOKEN}"
"""


@implementer(IBodyProducer)
class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.length = len(data)

    def startProducing(self, consumer):
        consumer.write(self.data)
        return defer.succeed(None)

    def pauseProducing(self):
        pass

    def stopProducing(self):
        pass


@dataclass
class Response:
    code: int
    headers: Headers
    body: bytes
    cookies: Dict[str, str] = field(default_factory=dict)

    def header(self, name: str) -> Optional[str]:
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.body)


class WebTestMixin:
    """See the module docstring.  Needs a trial C{TestCase}."""

    web_port: int = 0
    web_scheme = "http"
    web_host = "127.0.0.1"

    def use_port(self, port: int, scheme: str = "http") -> None:
        self.web_port = port
        self.web_scheme = scheme
        self.jar: Dict[str, str] = {}

    @defer.inlineCallbacks
    def start_web(self, toml: str = CONSOLE_TOML, context=None):
        """
        A L{WebSite} for a config made of C{toml} (a C{[console]} section by
        default) over a fresh migrated SQLite database, listening on
        127.0.0.1; fires with the site.  C{context} replaces the minimal
        server context (store, config, no SIP core).
        """
        from rustpbx_py.config import parse_config_text
        from rustpbx_py.server import ServerContext
        from rustpbx_py.store.db import Database
        from rustpbx_py.web.site import WebSite

        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        text = f'database_url = "sqlite:///{base}/web.sqlite3"\n' + toml
        config = parse_config_text(text, os.path.join(base, "pbx.toml"))
        if context is None:
            store = Database(config.database_url)
            self.addCleanup(store.close)
            yield store.migrate()
            context = ServerContext(config, reactor, store, None)
        site = WebSite(context.config, reactor)
        site.start(context)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(site.close_connections)
        self.addCleanup(port.stopListening)
        self.site = site
        self.context = context
        self.use_port(port.getHost().port)
        return site

    # -- requests ----------------------------------------------------------------------------

    def url(self, path: str) -> bytes:
        return f"{self.web_scheme}://{self.web_host}:{self.web_port}{path}".encode()

    def agent(self):
        return Agent(reactor)

    @defer.inlineCallbacks
    def request(self, method: str, path: str, headers: Optional[Dict[str, str]] = None, body: Optional[bytes] = None,
                cookies: bool = True):
        """One request; the cookie jar sends and keeps cookies unless
        C{cookies=False}.  Fires with a L{Response}."""
        hdrs = Headers()
        for name, value in (headers or {}).items():
            hdrs.addRawHeader(name, value)
        jar = getattr(self, "jar", {})
        if cookies and jar:
            hdrs.addRawHeader("Cookie", "; ".join(f"{k}={v}" for k, v in jar.items()))
        response = yield self.agent().request(method.encode(), self.url(path), hdrs, _Body(body) if body is not None else None)
        try:
            data = yield readBody(response)
        except PartialDownloadError as e:  # a body ended by closing the connection
            data = e.response
        set_cookies = {}
        for line in response.headers.getRawHeaders("set-cookie", []):
            name, _, rest = line.partition("=")
            value = rest.split(";", 1)[0]
            set_cookies[name] = value
            if cookies:
                if value and "Max-Age=0" not in line:
                    jar[name] = value
                else:
                    jar.pop(name, None)
        self.jar = jar
        return Response(response.code, response.headers, data, set_cookies)

    def get(self, path: str, **kw):
        return self.request("GET", path, **kw)

    def csrf_token(self, html: str) -> str:
        """The CSRF token of a console page's forms."""
        found = re.search(r'name="csrf_token" value="([^"]*)"', html)
        if not found:
            raise AssertionError("no CSRF token in the page")
        return found.group(1)

    @defer.inlineCallbacks
    def post_form(self, path: str, fields: Dict[str, str], csrf: bool = True, **kw):
        """POST C{fields} as a form; with C{csrf} the session's token is
        fetched (from the page at C{path}, else the audit page) and added."""
        fields = dict(fields)
        if csrf and "csrf_token" not in fields:
            fields["csrf_token"] = yield self.session_csrf()
        body = urlencode(fields).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded", **kw.pop("headers", {})}
        response = yield self.request("POST", path, headers=headers, body=body, **kw)
        return response

    @defer.inlineCallbacks
    def session_csrf(self):
        page = yield self.get(self.site_base() + "/audit")
        return self.csrf_token(page.text)

    def site_base(self) -> str:
        site = getattr(self, "site", None)
        return site.base_path if site is not None else "/console"

    @defer.inlineCallbacks
    def api(self, method: str, path: str, value=None, token: Optional[str] = TOKEN, headers=None):
        """An API call with the bearer C{token} (None: none) and C{value}
        as the JSON body; fires with a L{Response}."""
        hdrs = dict(headers or {})
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        body = None
        if value is not None:
            body = json.dumps(value).encode()
            hdrs.setdefault("Content-Type", "application/json")
        response = yield self.request(method, path, headers=hdrs, body=body, cookies=token is None)
        return response

    # -- accounts ------------------------------------------------------------------------

    @defer.inlineCallbacks
    def create_admin(self, username: str = ADMIN, password: str = PASSWORD):
        from rustpbx_py.web.accounts import Accounts

        yield Accounts(self.context.store, b"x", reactor).set_admin(username, password)

    @defer.inlineCallbacks
    def login(self, username: str = ADMIN, password: str = PASSWORD, create: bool = True):
        """Create the administrator (unless C{create=False}) and log in;
        fires with the login's L{Response} (303 when it worked)."""
        if create:
            yield self.create_admin(username, password)
        base = self.site_base()
        getattr(self, "jar", {}).pop("rustpbx_session", None)  # a new browser session
        form = yield self.get(base + "/login")
        token = re.search(r'name="login_token" value="([^"]*)"', form.text).group(1)
        response = yield self.post_form(
            base + "/login", {"login_token": token, "username": username, "password": password, "next": base + "/"},
            csrf=False,
        )
        return response
