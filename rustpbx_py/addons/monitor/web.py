# -*- test-case-name: rustpbx_py.test.test_monitor -*-
"""
The monitor's HTTP resources: C{/metrics}, C{/healthz}, the snapshot and
the feed, mounted on the console's site or on the addon's own listener.

C{/metrics} renders on the reactor thread.  prometheus_client's own
Twisted resource (C{prometheus_client.twisted.MetricsResource}) is a WSGI
app on the reactor's thread pool in current releases: the collector would
then read the PBX's counters while the reactor thread changes them.
"""

from __future__ import annotations

import hmac
import json

from prometheus_client.exposition import choose_encoder
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET


def _json(request, code: int, body) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(body, default=str).encode("utf-8")


class MetricsPage(Resource):
    """Prometheus exposition; with a token, only for C{Bearer TOKEN}."""

    isLeaf = True
    log = Logger()

    def __init__(self, registry, token=None) -> None:
        Resource.__init__(self)
        self.registry = registry
        self.token = token

    def render_GET(self, request) -> bytes:
        if self.token is not None:
            given = request.getHeader(b"authorization") or b""
            expected = b"Bearer " + self.token.encode("utf-8")
            if not hmac.compare_digest(given, expected):
                request.setResponseCode(401)
                request.setHeader(b"www-authenticate", b'Bearer realm="metrics"')
                request.setHeader(b"content-type", b"text/plain; charset=utf-8")
                return b"Unauthorized\n"
        accept = request.getHeader(b"accept")
        encoder, content_type = choose_encoder(accept.decode("latin-1") if accept else None)
        request.setHeader(b"content-type", content_type.encode("ascii"))
        return encoder(self.registry)


class HealthPage(Resource):
    """C{/healthz}: readiness (200 or 503); C{/healthz/live}: liveness."""

    isLeaf = True
    log = Logger()

    def __init__(self, health) -> None:
        Resource.__init__(self)
        self.health = health

    def render_GET(self, request):
        if request.postpath and request.postpath[0] == b"live":
            return _json(request, 200, self.health.live())
        d = defer.maybeDeferred(self.health.check)

        def answer(result):
            ready, body = result
            request.write(_json(request, 200 if ready else 503, body))
            request.finish()

        def failed(f):
            self.log.failure("monitor: health check failed", f)
            request.write(_json(request, 503, {"status": "unavailable", "ready": False, "error": f.getErrorMessage()}))
            request.finish()

        d.addCallbacks(answer, failed)
        return NOT_DONE_YET


def allowed(request, token) -> bool:
    """
    Whether a request may see the live state (who calls whom, who is
    registered from where): with a token, C{Authorization: Bearer TOKEN}
    or C{?token=TOKEN} (a browser's WebSocket cannot set headers); without
    one, loopback clients only.
    """
    if token is None:
        host = getattr(request.getClientAddress(), "host", "")
        return host in ("127.0.0.1", "::1", "::ffff:127.0.0.1")
    expected = token.encode("utf-8")
    given = request.getHeader(b"authorization") or b""
    if hmac.compare_digest(given, b"Bearer " + expected):
        return True
    values = request.args.get(b"token") or [b""]
    return hmac.compare_digest(values[0], expected)


def refuse(request) -> bytes:
    request.setHeader(b"www-authenticate", b'Bearer realm="monitor"')
    return _json(request, 401, {"error": {"code": 401, "message": "a bearer token ([monitor] token) is required", "field": None}})


class SnapshotPage(Resource):
    """C{/api/monitor/snapshot}: the live state as JSON."""

    isLeaf = True

    def __init__(self, snapshot, token=None) -> None:
        Resource.__init__(self)
        self.snapshot = snapshot
        self.token = token

    def render_GET(self, request) -> bytes:
        if not allowed(request, self.token):
            return refuse(request)
        return _json(request, 200, self.snapshot())


class GuardedResource(Resource):
    """Another resource (the feed's WebSocket) behind L{allowed}."""

    isLeaf = True

    def __init__(self, inner, token=None) -> None:
        Resource.__init__(self)
        self.inner = inner
        self.token = token

    def render(self, request):
        if not allowed(request, self.token):
            return refuse(request)
        return self.inner.render(request)


def mount(root: Resource, path: str, resource) -> None:
    """Put C{resource} at C{path} ("a/b/c") under C{root}, making the
    intermediate resources."""
    parts = [p for p in path.strip("/").split("/") if p]
    node = root
    for part in parts[:-1]:
        key = part.encode("utf-8")
        child = node.children.get(key)
        if child is None:
            child = Resource()
            node.putChild(key, child)
        node = child
    node.putChild(parts[-1].encode("utf-8"), resource)
