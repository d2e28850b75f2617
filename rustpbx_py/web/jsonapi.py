# -*- test-case-name: rustpbx_py.test.test_web_api -*-
"""
The JSON API under C{/api/v1}: the base class of its resources and the
helpers they share.

Authorisation: C{Authorization: Bearer TOKEN} with a token of
C{[console] api_tokens}, or an administrator's session cookie (then a
state-changing method must carry the session's CSRF token in
C{X-CSRF-Token}).  Neither -> 401 with C{WWW-Authenticate: Bearer}.

Errors are always JSON, C{{"error": {"code", "message", "field"}}}; an
exception in a resource is logged and answered 500 without its details.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server

from rustpbx_py.web.console import UNSAFE_METHODS, csrf_ok, finish, header

METHODS = ("get", "post", "put", "patch", "delete")

#: Largest page L{paginate} returns.
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100


class ApiError(Exception):
    """An error answered as JSON with HTTP status C{code}; C{field} names
    the request field at fault, if any."""

    def __init__(self, code: int, message: str, field: Optional[str] = None) -> None:
        Exception.__init__(self, message)
        self.code = code
        self.message = message
        self.field = field

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message, "field": self.field}}


def write_json(request, code: int, value: Any) -> None:
    if request.finished or getattr(request, "_disconnected", False):
        return
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"x-content-type-options", b"nosniff")
    if code == 204:
        finish(request)
        return
    finish(request, json.dumps(value, separators=(",", ":"), default=str).encode("utf-8") + b"\n")


def request_json(request) -> dict:
    """The request's JSON object body; L{ApiError} 400 when it is not one."""
    ctype = header(request, "content-type").split(";")[0].strip().lower()
    if ctype and ctype != "application/json":
        raise ApiError(415, f"expected Content-Type application/json, found {ctype}")
    raw = request.content.read() if request.content is not None else b""
    try:
        value = json.loads(raw.decode("utf-8") or "null")
    except (UnicodeDecodeError, ValueError) as e:
        raise ApiError(400, f"expected a JSON object in the body: {e}")
    if not isinstance(value, dict):
        raise ApiError(400, "expected a JSON object in the body, found " + type(value).__name__)
    return value


def _int_arg(request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.args.get(name.encode())
    if not raw:
        return default
    try:
        value = int(raw[0])
    except ValueError:
        raise ApiError(400, f"expected an integer {lo}-{hi}, found {raw[0].decode('utf-8', 'replace')!r}", name)
    if not lo <= value <= hi:
        raise ApiError(400, f"expected an integer {lo}-{hi}, found {value}", name)
    return value


def paginate(request, items: list) -> dict:
    """C{items} cut by C{?offset=&limit=}: C{{"items", "total", "offset", "limit"}}."""
    offset = _int_arg(request, "offset", 0, 0, 2**31)
    limit = _int_arg(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    return {"items": items[offset:offset + limit], "total": len(items), "offset": offset, "limit": limit}


#: The OpenAPI parameters of L{paginate}, for resources' C{openapi}.
PAGINATION_PARAMETERS = [
    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "default": 0}},
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}},
]


class ApiResource(resource.Resource):
    """
    Base of the API's resources: define C{get}/C{post}/C{put}/C{patch}/
    C{delete}C{(request, who)} returning a JSON-able value (or a Deferred
    of one; None answers 204).  C{who} is the L{Principal}.  Sub-paths are
    in C{request.postpath}.

    @cvar openapi: this resource's OpenAPI 3.0 path item(s): either
        C{{"get": {...}, ...}} for its own path, or C{{"/SUFFIX": {...}}}
        per sub-path (e.g. C{"/{id}"}); see L{rustpbx_py.web.openapi}.
    @cvar scope: the API token scope needed (tokens listing scopes must
        list this one); None = any token.
    """

    isLeaf = True
    openapi: dict = {}
    scope: Optional[str] = None
    log = Logger()

    def __init__(self, context=None, site=None) -> None:
        resource.Resource.__init__(self)
        self.context = context
        self.site = site

    def allowed_methods(self) -> list:
        return [m.upper() for m in METHODS if callable(getattr(self, m, None))]

    def render(self, request):
        method = request.method.decode("ascii", "replace").lower()
        if method == "head":
            method = "get"
        d = self.site.principal(request) if self._has_session_cookie(request) else defer.succeed(None)
        d.addCallback(self._authorised, request, method)
        d.addErrback(self._failed, request)
        return server.NOT_DONE_YET

    def _has_session_cookie(self, request) -> bool:
        return not request.getHeader(b"authorization") and bool(request.getCookie(self.site.cookie_name))

    def _authorised(self, session, request, method: str):
        from rustpbx_py.web.site import client_host

        who = session
        authorization = header(request, "authorization")
        if who is None:
            scheme, _, token = authorization.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                request.setHeader(b"www-authenticate", b'Bearer realm="rustpbx_py"')
                raise ApiError(401, "authentication required: send Authorization: Bearer TOKEN (a [console] api_tokens token)")
            who = self.site.token_principal(token.strip())
            if who is None:
                request.setHeader(b"www-authenticate", b'Bearer realm="rustpbx_py", error="invalid_token"')
                raise ApiError(401, "the bearer token is not one of [console] api_tokens")
            who.source = client_host(request)
        elif request.method in UNSAFE_METHODS and not csrf_ok(request, who):
            raise ApiError(403, "a request authenticated by the console session must carry its CSRF token in X-CSRF-Token")
        if not who.allows(self.scope):
            raise ApiError(403, f"this token lacks the scope {self.scope!r}")
        handler = getattr(self, method, None) if method in METHODS else None
        if not callable(handler):
            request.setHeader(b"allow", ", ".join(self.allowed_methods()).encode())
            raise ApiError(405, f"method {method.upper()} not allowed here (allowed: {', '.join(self.allowed_methods()) or 'none'})")
        d = defer.maybeDeferred(handler, request, who)
        d.addCallback(lambda value: write_json(request, 204 if value is None else 200, value))
        return d

    def _failed(self, failure: Failure, request) -> None:
        if failure.check(ApiError):
            error = failure.value
        else:
            self.log.failure("API {method} {path} failed", failure, method=request.method.decode("ascii", "replace"),
                             path=request.path.decode("utf-8", "replace"))
            error = ApiError(500, "internal error; the details are in the server's log")
        try:
            write_json(request, error.code, error.body())
        except Exception:
            self.log.failure("API error answer failed")


class _ApiNotFound(ApiResource):
    """Any path under the API that no resource serves (after authorisation:
    without a token nobody learns which paths exist)."""

    def _authorised(self, session, request, method):
        d = defer.maybeDeferred(ApiResource._authorised, self, session, request, "get")
        return d

    def get(self, request, who):
        raise ApiError(404, f"no API resource at {request.path.decode('utf-8', 'replace')}")


class ApiRoot(resource.Resource):
    """C{/api/v1}: the resources mounted with C{add_api}."""

    def __init__(self, site) -> None:
        resource.Resource.__init__(self)
        self.site = site

    def getChild(self, name, request):
        return _ApiNotFound(site=self.site)

    def render(self, request):
        return _ApiNotFound(site=self.site).render(request)

    def directory(self) -> "ApiRoot":
        """An intermediate segment of a nested resource (C{add_api("a/b")}):
        anything but its children is a JSON 404 (after authorisation)."""
        return ApiRoot(self.site)
