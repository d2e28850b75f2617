# -*- test-case-name: rustpbx_py.test.test_web_phone -*-
"""
The browser phone the PBX serves at C{/phone/} (issue 15): one static
page, no build step.  JsSIP (vendored beside it as C{jssip.min.js}, with
its licence in C{JSSIP-LICENSE.txt}) registers an extension over the SIP
WebSocket of the same site (C{proxy.ws_handler} on the HTTPS port), and
the PBX terminates the browser's WebRTC media itself
(L{rustpbx_py.media.webrtc}).

The page is public (the web site mounts it with C{add_public("phone",
...)}): it holds no secret, and the extension signs in with its own SIP
password, checked by the PBX's auth module like any phone's.  Two values
are filled in when the page is served: the WebSocket path, and the JsSIP
URL, which C{[console] jssip_js} may point elsewhere (a CDN or another
JsSIP build), as in RustPBX.
"""

from __future__ import annotations

import html
import os
from typing import Dict, Optional, Tuple
from urllib.parse import urlsplit

from twisted.web.resource import Resource

__all__ = ["PhonePage", "install_phone", "PHONE_DIR", "VENDORED_JSSIP", "jssip_version"]

PHONE_DIR = os.path.dirname(os.path.abspath(__file__))
VENDORED_JSSIP = "jssip.min.js"

#: The files served next to the page, with their content types.
_FILES: Dict[str, bytes] = {
    "phone.js": b"text/javascript; charset=utf-8",
    "phone.css": b"text/css; charset=utf-8",
    VENDORED_JSSIP: b"text/javascript; charset=utf-8",
    "JSSIP-LICENSE.txt": b"text/plain; charset=utf-8",
}


def jssip_version(path: str = os.path.join(PHONE_DIR, VENDORED_JSSIP)) -> Optional[str]:
    """The JsSIP version the vendored file's banner names (C{/* JsSIP vX.Y.Z ...})."""
    with open(path, "rb") as f:
        head = f.read(200).decode("utf-8", "replace")
    if head.startswith("/* JsSIP v"):
        return head[len("/* JsSIP v"):].split()[0]
    return None


def _read(name: str) -> bytes:
    with open(os.path.join(PHONE_DIR, name), "rb") as f:
        return f.read()


def _origin(url: str) -> Optional[str]:
    """The origin a CSP must allow for a script at C{url}, None when it is ours."""
    parts = urlsplit(url)
    if not parts.netloc:
        return None
    scheme = parts.scheme or "https"   # a scheme-relative //host/... URL
    return f"{scheme}://{parts.netloc}"


class PhonePage(Resource):
    """
    C{/phone/} and its few files.  C{/phone} redirects to C{/phone/} so that
    the page's relative URLs resolve under it (also behind a path prefix).

    @ivar ws_path: the SIP WebSocket path the page connects to on its own host.
    @ivar jssip_js: the JsSIP URL the page loads.
    """

    isLeaf = True

    def __init__(self, config) -> None:
        super().__init__()
        proxy = getattr(config, "proxy", None)
        self.ws_path: str = getattr(proxy, "ws_handler", None) or "/ws"
        console = getattr(config, "console", None)
        self.jssip_js: str = getattr(console, "jssip_js", None) or VENDORED_JSSIP
        page = _read("index.html").decode("utf-8")
        page = page.replace("{{ws_path}}", html.escape(self.ws_path, quote=True))
        page = page.replace("{{jssip_js}}", html.escape(self.jssip_js, quote=True))
        self.page = page.encode("utf-8")
        self.files: Dict[str, Tuple[bytes, bytes]] = {
            name: (kind, _read(name)) for name, kind in _FILES.items()
        }
        scripts = " ".join(filter(None, ["'self'", _origin(self.jssip_js)]))
        # The page needs its own scripts, the SIP WebSocket (its own host,
        # or the one the user types under Advanced) and the microphone.
        self.policy = (f"default-src 'self'; script-src {scripts}; connect-src 'self' wss: ws:; "
                       "img-src 'self' data:; style-src 'self'; media-src 'self' blob: mediastream:; "
                       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'").encode("ascii")

    def render_GET(self, request) -> bytes:
        path = [p.decode("utf-8", "replace") for p in request.postpath]
        if not path:
            # /phone -> /phone/ (relative, so a reverse proxy's prefix stays)
            segment = request.path.rstrip(b"/").rsplit(b"/", 1)[-1] or b"phone"
            request.setResponseCode(301)
            request.setHeader(b"location", segment + b"/")
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"moved to " + segment + b"/\n"
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"referrer-policy", b"no-referrer")
        if path in ([""], ["index.html"]):
            request.setHeader(b"content-type", b"text/html; charset=utf-8")
            request.setHeader(b"cache-control", b"no-cache")
            request.setHeader(b"content-security-policy", self.policy)
            # The microphone is what the page is for; nothing else.
            request.setHeader(b"permissions-policy", b"microphone=(self), camera=(), geolocation=()")
            return self.page
        if len(path) == 1 and path[0] in self.files:
            kind, body = self.files[path[0]]
            request.setHeader(b"content-type", kind)
            request.setHeader(b"cache-control", b"public, max-age=3600")
            return body
        request.setResponseCode(404)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"not found\n"


def install_phone(site, context) -> PhonePage:
    """Mount the phone on C{site} (the PBX's L{rustpbx_py.web.site.WebSite}) at C{/phone/}."""
    page = PhonePage(context.config)
    site.add_public("phone", page)
    return page
