# -*- test-case-name: rustpbx_py.test.test_web_console -*-
"""
Console pages: the base class every page derives from, the layout around
their content and the small helpers forms need.

A page returns C{twisted.web.template} content from C{get} (and C{post});
L{ConsolePage} does the rest: no session -> 303 to the login page, a
POST without the session's CSRF token -> 403, the content wrapped in
the layout (menu, title, stylesheet), an exception -> an error page (the
traceback goes to the log, never to the browser).
"""

from __future__ import annotations

import time
from typing import Dict, Iterable, Optional, Sequence
from urllib.parse import quote

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server, static
from twisted.web.template import Tag, flattenString, tags

STATIC_DIR = __import__("os").path.join(__import__("os").path.dirname(__file__), "static")

#: Methods that change state: CSRF-checked.
UNSAFE_METHODS = frozenset({b"POST", b"PUT", b"PATCH", b"DELETE"})

#: The hidden form field (or X-CSRF-Token header) with the session's CSRF token.
CSRF_FIELD = "csrf_token"


class PageError(Exception):
    """Raised by a page: shown to the admin as C{message} with HTTP C{code}."""

    def __init__(self, code: int, message: str) -> None:
        Exception.__init__(self, message)
        self.code = code
        self.message = message


class FieldErrors(dict):
    """
    Validation errors of a form, field name -> message; L{field} shows each
    next to its input.  C{raise_if_any()} is not needed: a page checks
    C{if errors:} and re-renders the form with status 400 (L{form_error}).
    """


def header(request, name: str) -> str:
    """A request header as text ("" when absent)."""
    value = request.getHeader(name.encode("ascii"))
    return value.decode("latin-1") if value else ""


def form_value(request, name: str, default: str = "") -> str:
    """The form field C{name} of a POST (or query argument), as text."""
    values = request.args.get(name.encode("utf-8"))
    if not values:
        return default
    return values[0].decode("utf-8", "replace")


def form_values(request, name: str) -> list:
    return [v.decode("utf-8", "replace") for v in request.args.get(name.encode("utf-8"), [])]


def csrf_input(request) -> Tag:
    """The hidden input every state-changing form must carry."""
    principal = getattr(request, "rustpbx_principal", None)
    token = principal.csrf_token if principal is not None else ""
    return tags.input(type="hidden", name=CSRF_FIELD, value=token)


def redirect(request, url: str) -> None:
    """Answer 303 See Other to C{url} (after a POST: the browser GETs it)."""
    request.setResponseCode(303)
    request.setHeader(b"location", url.encode("utf-8"))


def form_error(request, errors: FieldErrors) -> None:
    """Mark the response as a refused form (400) when C{errors} has any."""
    if errors:
        request.setResponseCode(400)


def field(label: str, name: str, value: str = "", errors: Optional[Dict[str, str]] = None, type: str = "text",
          help: str = "", **attributes) -> Tag:
    """A labelled input with its validation error (if any) right after it."""
    error = (errors or {}).get(name)
    input_id = "f-" + name
    attrs = {"type": type, "name": name, "id": input_id, "value": value, **attributes}
    if error:
        attrs["aria-invalid"] = "true"
        attrs["aria-describedby"] = input_id + "-error"
    parts = [tags.label(label, for_=input_id), tags.input(**attrs)]
    if help:
        parts.append(tags.small(help, class_="help"))
    if error:
        parts.append(tags.span(error, class_="field-error", id=input_id + "-error", role="alert"))
    return tags.div(*parts, class_="field" + (" has-error" if error else ""))


def table(headers: Sequence[str], rows: Iterable[Sequence], empty: str = "Nothing to show.",
          keys: Optional[Sequence[str]] = None) -> Tag:
    """
    A plain data table (scrolls sideways on a phone).  C{keys}, one per
    row, name what each row shows (a call, a binding): static/console.js
    refreshes a live table row by row by them, so a row that stays keeps
    its elements (a button being clicked is not swapped under the mouse).
    """
    rows = list(rows)
    key_list = list(keys) if keys is not None else [None] * len(rows)
    body = [tags.tr(*[tags.td(cell) for cell in row], **({"data-key": key} if key is not None else {}))
            for row, key in zip(rows, key_list)]
    if not body:
        body = [tags.tr(tags.td(empty, colspan=str(max(len(headers), 1)), class_="empty"))]
    return tags.div(tags.table(tags.thead(tags.tr(*[tags.th(h) for h in headers])), tags.tbody(*body)), class_="table-wrap")


def audit(context, admin, action: str, detail: str = "") -> defer.Deferred:
    """Record that C{admin} (a L{Principal}, or a user name) did C{action}
    (e.g. C{"extension.create"}) with C{detail}, now, from its address."""
    who = getattr(admin, "username", None) or str(admin)
    source = getattr(admin, "source", "") or ""
    return context.store.run_operation(
        "INSERT INTO console_audit (at, who, source, action, detail) VALUES (?, ?, ?, ?, ?)",
        (time.time(), who, source, action, detail),
    )


def layout(site, request, principal, title: str, content) -> Tag:
    """The page around C{content}: header, menu, title, main."""
    current = request.path.decode("utf-8", "replace").rstrip("/")
    links = []
    for _order, label, url in site.nav():
        here = current == url.rstrip("/") or current.startswith(url.rstrip("/") + "/")
        attrs = {"href": url}
        if here:
            attrs["aria-current"] = "page"
        links.append(tags.li(tags.a(label, **attrs)))
    header = [tags.a("rustpbx_py", href=site.page_url(""), class_="brand")]
    if principal is not None:
        header.append(
            tags.form(
                tags.span(principal.username, class_="who"),
                csrf_input(request),
                tags.button("Log out", type="submit"),
                method="post",
                action=site.page_url("logout"),
                class_="logout",
            )
        )
    body = [tags.header(*header, class_="top")]
    if principal is not None and links:
        body.append(tags.nav(tags.ul(*links), class_="menu", **{"aria-label": "Console"}))
    body.append(Tag("main")(tags.h1(title), content))
    return tags.html(
        tags.head(
            tags.meta(charset="utf-8"),
            tags.meta(name="viewport", content="width=device-width, initial-scale=1"),
            tags.title(f"{title} - rustpbx_py" if title else "rustpbx_py"),
            tags.link(rel="stylesheet", href=site.page_url("static/console.css")),
            # No icon: an empty one spares every page view a /favicon.ico 404.
            tags.link(rel="icon", href="data:,"),
            tags.script(src=site.page_url("static/console.js"), defer="defer"),
        ),
        tags.body(*body),
        lang="en",
    )


def write_page(request, site, principal, title: str, content, code: Optional[int] = None) -> defer.Deferred:
    """Flatten the layout around C{content} and finish C{request}."""
    if code is not None:
        request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/html; charset=utf-8")
    no_cache(request)
    d = flattenString(request, layout(site, request, principal, title, content))

    def written(html: bytes) -> None:
        finish(request, b"<!DOCTYPE html>\n" + html)

    return d.addCallback(written)


#: Pages may not be framed (clickjacking), forms post only to us, no
#: <base> may redirect relative links, and scripts come only from our own
#: files (static/console.js: no inline code, so injected markup cannot
#: run); styles are not restricted (pages keep small inline ones).
CONTENT_SECURITY_POLICY = (b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                           b"img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
                           b"form-action 'self'; base-uri 'self'; object-src 'none'")


def no_cache(request) -> None:
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"content-security-policy", CONTENT_SECURITY_POLICY)
    request.setHeader(b"x-frame-options", b"DENY")
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"referrer-policy", b"same-origin")


def finish(request, body: bytes = b"") -> None:
    """Write C{body} and finish, unless the client went away."""
    if getattr(request, "_disconnected", False) or request.finished:
        return
    if body:
        request.write(body)
    request.finish()


def login_url(site, request) -> str:
    target = request.uri.decode("utf-8", "replace")
    return site.page_url("login") + "?next=" + quote(target, safe="/")


class ConsolePage(resource.Resource):
    """
    Base of every console page (see the module docstring).  Sub-paths are
    in C{request.postpath}.

    @cvar nav: the menu label, or None for a page not in the menu.
    @cvar nav_order: position in the menu (lowest first).
    @cvar title: the page heading (C{get} may set C{request.title}).
    """

    isLeaf = True
    nav: Optional[str] = None
    nav_order: int = 100
    title: str = ""
    log = Logger()

    def __init__(self, context, site) -> None:
        resource.Resource.__init__(self)
        self.context = context
        self.site = site

    def get(self, request, admin):
        raise PageError(405, "This page cannot be shown.")

    def post(self, request, admin):
        raise PageError(405, "This page takes no form.")

    def render(self, request):
        method = request.method
        if method == b"HEAD":
            method = b"GET"
        if method not in (b"GET", b"POST"):
            request.setResponseCode(405)
            request.setHeader(b"allow", b"GET, POST")
            return b"Method Not Allowed\n"
        d = self.site.principal(request)
        d.addCallback(self._authorised, request, method)
        d.addErrback(self._failed, request, getattr(request, "rustpbx_principal", None))
        return server.NOT_DONE_YET

    def _authorised(self, principal, request, method: bytes):
        if principal is None:
            redirect(request, login_url(self.site, request))
            no_cache(request)
            finish(request)
            return None
        request.rustpbx_principal = principal
        if method == b"POST" and not csrf_ok(request, principal):
            return write_page(
                request, self.site, principal, "Refused",
                tags.p("The form was refused: its security token is missing or out of date. "
                       "Go back, reload the page and try again.", class_="error"),
                code=403,
            )
        handler = self.get if method == b"GET" else self.post
        d = defer.maybeDeferred(handler, request, principal)
        d.addCallback(self._render, request, principal)
        return d

    def _render(self, content, request, principal):
        if request.finished or getattr(request, "_disconnected", False):
            return None
        if content is None:
            finish(request)
            return None
        return write_page(request, self.site, principal, getattr(request, "title", None) or self.title, content)

    def _failed(self, failure: Failure, request, principal):
        if request.finished or getattr(request, "_disconnected", False):
            return None
        principal = getattr(request, "rustpbx_principal", principal)
        if failure.check(PageError):
            code, message = failure.value.code, failure.value.message
        else:
            self.log.failure("console page {path} failed", failure, path=request.path.decode("utf-8", "replace"))
            code, message = 500, "Something went wrong on the server; the details are in its log."
        d = write_page(request, self.site, principal, "Error", tags.p(message, class_="error"), code=code)
        d.addErrback(lambda f: (self.log.failure("error page failed", f), finish(request)))
        return d


def csrf_ok(request, principal) -> bool:
    """Whether the request carries the session's CSRF token (form field or
    X-CSRF-Token header)."""
    import hmac

    sent = form_value(request, CSRF_FIELD) or header(request, "x-csrf-token")
    return bool(principal.csrf_token) and hmac.compare_digest(sent.encode(), principal.csrf_token.encode())


class NotFoundPage(ConsolePage):
    title = "Not found"

    def get(self, request, admin):
        raise PageError(404, "There is no such page.")

    post = get


class HomePage(ConsolePage):
    """The console's home when no page claimed it: the menu's first page."""

    title = "Console"

    def get(self, request, admin):
        entries = self.site.nav()
        if entries:
            redirect(request, entries[0][2])
            return None
        return tags.p("No console pages are installed.")


class ConsoleRoot(resource.Resource):
    """C{base_path}: pages by path; the login page and the stylesheet are
    the only children reachable without a session."""

    def __init__(self, site) -> None:
        resource.Resource.__init__(self)
        self.site = site
        self.index = None
        from rustpbx_py.web.login import LoginPage, LogoutPage

        self.putChild(b"login", LoginPage(site))
        self.putChild(b"logout", LogoutPage(None, site))
        self.putChild(b"static", StaticFiles(STATIC_DIR))

    def getChild(self, name, request):
        if name == b"":
            return self.index or HomePage(self.site.context, self.site)
        return NotFoundPage(self.site.context, self.site)

    def render(self, request):
        # "/console" without the slash.
        redirect(request, self.site.base_path + "/")
        return b""

    def directory(self) -> resource.Resource:
        """An intermediate path segment of a nested page (C{add_page("a/b")}):
        anything but its children is a console 404 (after the session check)."""
        return _Directory(self.site)


class _Directory(resource.Resource):
    def __init__(self, site) -> None:
        resource.Resource.__init__(self)
        self.site = site

    def getChild(self, name, request):
        return NotFoundPage(self.site.context, self.site)

    def render(self, request):
        return NotFoundPage(self.site.context, self.site).render(request)


class StaticFiles(static.File):
    """The stylesheet (and small scripts): no directory listings."""

    def directoryListing(self):
        return resource.NoResource()

    def createSimilarFile(self, path):
        f = StaticFiles(path, self.defaultType, self.ignoredExts, self.registry)
        f.processors = self.processors
        f.indexNames = self.indexNames[:]
        f.childNotFound = self.childNotFound
        return f
