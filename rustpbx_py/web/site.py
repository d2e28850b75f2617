# -*- test-case-name: rustpbx_py.test.test_web_site -*-
"""
The one HTTP site of the PBX, served on C{http_addr} (and C{https_addr}):

 - the console under C{[console] base_path} (default C{/console}): pages
   mounted with L{WebSite.add_page}, a session required for each but the
   login page and the stylesheet;
 - the JSON API under C{[console] api_prefix + "/v1"} (default
   C{/api/v1}): resources mounted with L{WebSite.add_api}, bearer token or
   admin session required;
 - SIP over WebSocket at C{proxy.ws_handler} (RustPBX serves it on its HTTP
   and HTTPS listeners, so a browser phone needs one port);
 - public resources mounted with L{WebSite.add_public} (addons' metrics
   and health checks, the browser phone page), which do their own
   authorisation.

As in RustPBX the console and the API exist only when the configuration
has a C{[console]} section; without it the site serves the WebSocket and
public resources alone.

The site is built and bound before start-up (L{PbxService} binds every
port while it may still use privileged ones) and gets its context in
L{WebSite.start}: until then every request is answered 503.
"""

from __future__ import annotations

import secrets
from typing import Dict, List, Optional, Tuple

from twisted.logger import Logger
from twisted.web import http, resource, server

from rustpbx_py.web.throttle import LoginThrottle

#: Seconds between two prunings of expired sessions and old audit rows.
PRUNE_INTERVAL = 3600.0


def split_path(path: str) -> List[bytes]:
    """C{"a/b"} or C{"/a/b/"} as URL segments (bytes)."""
    return [s.encode("utf-8") for s in path.strip("/").split("/") if s]


def mount(parent: resource.Resource, path: str, child, intermediate=resource.Resource) -> None:
    """Put C{child} at C{path} below C{parent}, making (or reusing)
    C{intermediate()} resources for the leading segments (the console and
    the API use theirs, which check the session or token before a 404)."""
    segments = split_path(path)
    if not segments:
        raise ValueError(f"cannot mount a resource at the empty path below {parent!r}")
    for segment in segments[:-1]:
        existing = parent.children.get(segment)
        if existing is None:
            existing = intermediate()
            parent.putChild(segment, existing)
        parent = existing
    parent.putChild(segments[-1], child)


class _NotStarted(resource.Resource):
    isLeaf = True

    def render(self, request):
        request.setResponseCode(503)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"retry-after", b"5")
        return b"rustpbx_py is starting\n"


class _Root(resource.Resource):
    """The site's root: C{/} goes to the console; everything else is a child."""

    def __init__(self, site: "WebSite") -> None:
        resource.Resource.__init__(self)
        self.site = site

    def getChildWithDefault(self, name, request):
        if self.site.context is None:
            return _NotStarted()
        return resource.Resource.getChildWithDefault(self, name, request)

    def getChild(self, name, request):
        if name == b"" and self.site.console is not None:
            return _Redirect(self.site.base_path + "/")
        return resource.NoResource()

    def render(self, request):
        return self.getChild(b"", request).render(request)


class _Redirect(resource.Resource):
    isLeaf = True

    def __init__(self, url: str) -> None:
        resource.Resource.__init__(self)
        self.url = url

    def render(self, request):
        request.setResponseCode(303)
        request.setHeader(b"location", self.url.encode("utf-8"))
        return b""


class _Channel(http.HTTPChannel):
    """
    HTTP/1.1 only (no HTTP/2 upgrade: see L{rustpbx_py.web.listen}),
    tracked so that a stopping PBX closes its idle keep-alive connections,
    and counted against the stream listeners' limits (L{WebSite.limits}:
    C{tcp_max_connections_per_ip} and C{tcp_max_connections}) so that one
    address holding idle or trickling HTTP connections cannot use up the
    process's file descriptors.  A connection over the limits is closed at
    once (counted, and logged at most once a minute).
    """

    #: The source address counted against the limits ("" when not counted).
    admitted = ""

    def connectionMade(self) -> None:
        site = self.site
        limits = site.limits
        if limits is not None:
            host = getattr(self.transport.getPeer(), "host", "") or "?"
            if not limits.admit(host, "HTTP", site.reactor):
                self.transport.abortConnection()
                return
            self.admitted = host
        http.HTTPChannel.connectionMade(self)
        site.channels.add(self)

    def upgraded(self) -> None:
        """
        A WebSocket took the connection over (Autobahn's resource moved the
        transport to its protocol, which is counted and closed on its own):
        this channel never hears of the connection again, so it lets go of
        it now instead of staying in L{WebSite.channels} and the counts for
        ever.
        """
        self.site.channels.discard(self)
        self._release()

    def _release(self) -> None:
        if self.admitted:
            self.site.limits.release(self.admitted)
            self.admitted = ""

    def connectionLost(self, reason) -> None:
        self.site.channels.discard(self)
        self._release()
        http.HTTPChannel.connectionLost(self, reason)


class WebSite(server.Site):
    """
    The HTTP(S) site and its mount API (names other modules rely on:
    L{add_page}, L{add_api}, L{add_public}).

    @ivar context: the server context once started (None before).
    @ivar console: the C{[console]} config, or None (no console, no API).
    @ivar base_path: the console's path, e.g. C{"/console"}.
    @ivar api_path: the API's path, e.g. C{"/api/v1"}.
    @ivar pages: path -> L{ConsolePage} mounted.
    @ivar apis: path -> L{ApiResource} mounted.
    """

    _log = Logger()
    noisy = False
    protocol = _Channel
    displayTracebacks = False
    #: The session cookie's name.
    cookie_name = b"rustpbx_session"

    def __init__(self, config, reactor=None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.config = config
        self.console = getattr(config, "console", None)
        self.context = None
        self.accounts = None
        self.pruning = None
        #: The stream listeners' L{rustpbx_py.protocols.limits.StreamLimits}
        #: (set when the site is bound by listen_web); None counts nothing.
        self.limits = None
        self.pages: Dict[str, object] = {}
        self.apis: Dict[str, object] = {}
        self.public: Dict[str, object] = {}
        console = self.console
        self.base_path = "/" + (console.base_path if console else "/console").strip("/")
        prefix = (console.api_prefix if console else "/api").strip("/")
        self.api_path = "/" + "/".join(p for p in (prefix, "v1") if p)
        secret = console.session_secret if console is not None and console.session_secret else None
        #: Without a configured secret sessions end with the process, as
        #: RustPBX's random default does.
        self.session_secret = secret or secrets.token_hex(32)
        self.throttle = LoginThrottle(reactor)
        self.channels: set = set()
        self.root = _Root(self)
        server.Site.__init__(self, self.root, reactor=reactor)
        self.console_root = None
        self.api_root = None
        if console is not None:
            from rustpbx_py.web.console import ConsoleRoot
            from rustpbx_py.web.jsonapi import ApiRoot

            self.console_root = ConsoleRoot(self)
            mount(self.root, self.base_path, self.console_root)
            self.api_root = ApiRoot(self)
            mount(self.root, self.api_path, self.api_root)

    # -- start-up ------------------------------------------------------------------------

    def start(self, context) -> None:
        """Serve: the context is complete (store, core, modules, addons)."""
        from rustpbx_py.web.accounts import Accounts

        self.accounts = Accounts(context.store, self.session_secret, self.reactor)
        if self.console is not None and context.store is not None:
            self._start_pruning(self.console.audit_retention_days)
        if self.console is not None:
            from rustpbx_py.web.api import install_api
            from rustpbx_py.web.pages import install_pages

            install_pages(self, context)
            install_api(self, context)
        # The browser phone is public (its users sign in with their SIP
        # password over the WebSocket), console or not, as in RustPBX.
        from rustpbx_py.web.phone import install_phone

        install_phone(self, context)
        for addon in getattr(context, "addons", []):
            if getattr(addon, "port", None) is not None:
                continue  # it serves its resources on its own listener
            resources = getattr(addon, "web_resources", None)
            for path, child in (resources() if resources is not None else {}).items():
                self.add_public(path, child)
        self.context = context
        context.web = self

    def _start_pruning(self, audit_days: int) -> None:
        """Hourly (and now): expired sessions and audit rows older than
        C{[console] audit_retention_days} leave the database."""
        from twisted.internet.task import LoopingCall

        def prune():
            d = self.accounts.prune(audit_days)
            d.addErrback(lambda f: self._log.failure("pruning the console's sessions and audit log failed", f))
            return d

        self.pruning = LoopingCall(prune)
        self.pruning.clock = self.reactor
        self.pruning.start(PRUNE_INTERVAL, now=True)

    def close_connections(self) -> None:
        """Drop the open HTTP connections (the PBX is stopping; WebSockets
        left the site when they upgraded and are the core's to close)."""
        if self.pruning is not None and self.pruning.running:
            self.pruning.stop()
        for channel in list(self.channels):
            if channel.transport is not None:
                channel.transport.abortConnection()
        self.channels.clear()

    # -- the mount API -------------------------------------------------------------------

    def add_page(self, path: str, page) -> None:
        """Serve C{page} (a L{ConsolePage}) at C{base_path/path}; C{""}
        is the console's home page.  Ignored without a console."""
        self.pages[path.strip("/")] = page
        if self.console_root is None:
            return
        if not path.strip("/"):
            self.console_root.index = page
        else:
            mount(self.console_root, path, page, self.console_root.directory)

    def add_api(self, path: str, api) -> None:
        """Serve C{api} (an L{ApiResource}) at C{api_path/path}.  Ignored
        without a console."""
        self.apis[path.strip("/")] = api
        if getattr(api, "site", None) is None:
            api.site = self
        if self.api_root is not None:
            mount(self.api_root, path, api, self.api_root.directory)

    def add_public(self, path: str, child) -> None:
        """Serve C{child} at C{/path} with no authorisation of ours."""
        self.public[path.strip("/")] = child
        mount(self.root, path, child)

    def log(self, request) -> None:
        """The access log, without the public mounts (metrics scrapes, the
        phone's files) and the stylesheet."""
        path = request.path.decode("utf-8", "replace")
        for public in self.public:
            if path == "/" + public or path.startswith("/" + public + "/"):
                return
        if path.startswith(self.base_path + "/static/"):
            return
        server.Site.log(self, request)

    def nav(self) -> List[Tuple[int, str, str]]:
        """(order, label, URL) of the pages that appear in the menu."""
        out = []
        for path, page in self.pages.items():
            label = getattr(page, "nav", None)
            if label:
                out.append((getattr(page, "nav_order", 100), label, self.page_url(path)))
        return sorted(out)

    def page_url(self, path: str = "") -> str:
        return self.base_path + "/" + path.strip("/")

    # -- sessions and tokens --------------------------------------------------------------

    def secure_cookies(self, request) -> bool:
        return bool(request.isSecure() or (self.console is not None and self.console.secure_cookie))

    def session_cookie(self, request, token: str, max_age: Optional[int] = None) -> None:
        """Set (or, with C{token=""}, clear) the session cookie:
        HttpOnly, SameSite=Strict, Secure over HTTPS or with
        C{[console] secure_cookie}."""
        parts = [f"{self.cookie_name.decode()}={token}", "Path=/", "HttpOnly", "SameSite=Strict"]
        if max_age is not None:
            parts.append(f"Max-Age={max_age}")
        if self.secure_cookies(request):
            parts.append("Secure")
        request.responseHeaders.addRawHeader(b"set-cookie", "; ".join(parts).encode("ascii"))

    def principal(self, request):
        """Fire with the L{Principal} of the request's session cookie, or None."""
        from twisted.internet import defer

        token = request.getCookie(self.cookie_name)
        if not token or self.accounts is None:
            return defer.succeed(None)
        return self.accounts.session(token.decode("ascii", "replace"), client_host(request))

    def token_principal(self, token: str):
        """The L{Principal} of a configured API token, or None."""
        import hmac

        from rustpbx_py.web.accounts import Principal

        found = None
        for entry in (self.console.api_tokens if self.console is not None else ()):
            # Compare with every token, in constant time each.
            if hmac.compare_digest(entry.token.encode("utf-8"), token.encode("utf-8")):
                found = entry
        if found is None:
            return None
        return Principal(username=f"token:{found.token[:4]}…", kind="token", scopes=tuple(found.scopes))


def client_host(request) -> str:
    """The address the request came from (no proxy headers: they can be forged)."""
    address = request.getClientAddress()
    return getattr(address, "host", "") or ""
