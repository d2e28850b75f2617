# -*- test-case-name: rustpbx_py.test.test_web_login -*-
"""
The login and logout pages: the only console pages served without a
session.

Login CSRF (a foreign page logging the browser into the attacker's
account) is refused with a double-submit token: the form carries a random
value that must match a SameSite=Strict cookie set with the form.
Failed logins are slowed down and then banned per source address
(L{rustpbx_py.web.throttle}); each failure waits longer before its
answer, and an attempt made before the source's delay is over is refused
with 429 and Retry-After.
"""

from __future__ import annotations

import hmac
import math
import secrets

from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.web import resource, server
from twisted.web.template import tags

from rustpbx_py.web.console import (
    ConsolePage,
    audit,
    csrf_input,
    finish,
    form_value,
    no_cache,
    redirect,
    write_page,
)

LOGIN_CSRF_COOKIE = b"rustpbx_login"


def safe_next(site, target: str) -> str:
    """Where to go after logging in: a path inside the console, never
    another site (an open redirect)."""
    base = site.base_path
    if target.startswith(base + "/") and not target.startswith("//") and "\\" not in target:
        return target
    return base + "/"


class LoginPage(resource.Resource):
    isLeaf = True
    log = Logger()
    #: The longest a failed login's answer is held back, seconds.
    hold_max = 5.0

    def __init__(self, site) -> None:
        resource.Resource.__init__(self)
        self.site = site

    def render_GET(self, request):
        self._show(request).addErrback(self._failed, request)
        return server.NOT_DONE_YET

    @defer.inlineCallbacks
    def _show(self, request):
        principal = yield self.site.principal(request)
        if principal is not None:  # already logged in
            no_cache(request)
            redirect(request, safe_next(self.site, form_value(request, "next")))
            finish(request)
            return
        count = yield self.site.accounts.admin_count()
        yield self._form(request, "", "", count=count)

    def _form(self, request, username: str, error: str, code: int = 200, count: int = 1):
        token = secrets.token_urlsafe(16)
        parts = ["%s=%s" % (LOGIN_CSRF_COOKIE.decode(), token), "Path=" + self.site.page_url("login"), "HttpOnly", "SameSite=Strict"]
        if self.site.secure_cookies(request):
            parts.append("Secure")
        request.responseHeaders.addRawHeader(b"set-cookie", "; ".join(parts).encode("ascii"))
        target = form_value(request, "next")
        content = [
            tags.form(
                tags.input(type="hidden", name="login_token", value=token),
                tags.input(type="hidden", name="next", value=safe_next(self.site, target)),
                tags.div(tags.label("User name", for_="f-username"),
                         tags.input(type="text", name="username", id="f-username", value=username,
                                    autocomplete="username", required="required", autofocus="autofocus"),
                         class_="field"),
                tags.div(tags.label("Password", for_="f-password"),
                         tags.input(type="password", name="password", id="f-password",
                                    autocomplete="current-password", required="required"),
                         class_="field"),
                tags.button("Log in", type="submit"),
                method="post",
                action=self.site.page_url("login"),
                class_="login",
            )
        ]
        if error:
            content.insert(0, tags.p(error, class_="error", role="alert"))
        if not count:
            content.append(tags.p(
                "No administrator exists yet. Create one on the server with ",
                tags.code("python -m rustpbx_py create-admin USER --config FILE"), ".", class_="notice"))
        return write_page(request, self.site, None, "Log in", tags.div(*content, class_="login-box"), code=code)

    def render_POST(self, request):
        self._login(request).addErrback(self._failed, request)
        return server.NOT_DONE_YET

    @defer.inlineCallbacks
    def _login(self, request):
        from rustpbx_py.web.site import client_host

        site = self.site
        source = client_host(request)
        username = form_value(request, "username").strip()
        password = form_value(request, "password")
        cookie = (request.getCookie(LOGIN_CSRF_COOKIE) or b"").decode("ascii", "replace")
        sent = form_value(request, "login_token")
        if not cookie or not hmac.compare_digest(cookie.encode(), sent.encode()):
            yield self._form(request, username, "The login form was out of date; please try again.", code=403)
            return
        wait = site.throttle.wait(source, username)
        if wait is not None:
            seconds = int(math.ceil(wait))
            request.setHeader(b"retry-after", str(seconds).encode())
            yield self._form(request, username, f"Too many failed logins from your address; try again in {seconds} s.", code=429)
            return
        site.throttle.begin(source)
        try:
            found = yield site.accounts.authenticate(username, password)
        finally:
            site.throttle.end(source)
        if found is None:
            delay = site.throttle.failed(source, username)
            self.log.info("console: failed login for {user!r} from {source}", user=username, source=source)
            yield audit(site.context, _Anonymous(username, source), "login.failed", "wrong user name or password")
            # Hold the answer back (at most a few seconds: the next attempt
            # is refused until the full delay is over anyway).
            hold = min(delay, self.hold_max)
            if hold > 0:
                yield task.deferLater(site.reactor, hold, lambda: None)
            yield self._form(request, username, "Wrong user name or password.", code=403)
            return
        admin_id, name = found
        site.throttle.succeeded(source, username)
        token, _csrf = yield site.accounts.open_session(admin_id, source)
        site.session_cookie(request, token)
        yield audit(site.context, _Anonymous(name, source), "login", "")
        no_cache(request)
        redirect(request, safe_next(site, form_value(request, "next")))
        finish(request)

    def _failed(self, failure, request):
        self.log.failure("login page failed", failure)
        if not request.finished and not getattr(request, "_disconnected", False):
            request.setResponseCode(500)
            finish(request, b"Internal error; see the server's log.\n")


class _Anonymous:
    """The who and where of a login attempt, for the audit log."""

    def __init__(self, username: str, source: str) -> None:
        # What an attacker typed: bounded, without control characters.
        username = "".join(c if c.isprintable() else "?" for c in username[:64])
        self.username = username or "(empty)"
        self.source = source


class LogoutPage(ConsolePage):
    """POST (with the CSRF token) ends the session."""

    title = "Log out"

    def get(self, request, admin):
        return tags.form(csrf_input(request), tags.button("Log out", type="submit"), method="post",
                         action=self.site.page_url("logout"))

    @defer.inlineCallbacks
    def post(self, request, admin):
        yield self.site.accounts.close_session(admin)
        yield audit(self.site.context, admin, "logout", "")
        self.site.session_cookie(request, "", max_age=0)
        redirect(request, self.site.page_url("login"))
        return None
