# -*- test-case-name: rustpbx_py.test.test_web_config -*-
"""
C{/api/v1/reload} (routes, trunks and ACL rules read again and put in
place without a restart, L{rustpbx_py.reload}) and C{/api/v1/routes},
C{/api/v1/trunks}, C{/api/v1/acl}: the effective ones, and their
generated files in RustPBX's formats, replaced by C{PUT} (checked by the
configuration loader, written, then reloaded).
"""

from __future__ import annotations

from typing import Any, Dict

from rustpbx_py.generated import FILE_KEYS, GeneratedFiles, Problems, to_json
from rustpbx_py.reload import ReloadError, reload_routing
from rustpbx_py.web.console import audit
from rustpbx_py.web.jsonapi import ApiError, ApiResource, request_json
from rustpbx_py.web.openapi import error_response, json_response

KINDS = ("routes", "trunks", "acl")

_RELOADED = {
    "type": "object",
    "properties": {
        "routes": {"type": "integer"},
        "trunks": {"type": "integer"},
        "acl_rules": {"type": "integer"},
        "warnings": {"type": "array", "items": {"type": "string"}},
    },
}


def effective(context: Any, kind: str) -> Any:
    """The running routes (list), trunks (table by name) or ACL rules
    (list of texts), in their TOML form, each with the file it came from."""
    proxy = context.config.proxy
    if kind == "routes":
        return [to_json(r) for r in proxy.routes]
    if kind == "trunks":
        out = {}
        for name, trunk in proxy.trunks.items():
            item = to_json(trunk)
            item.pop("name", None)
            if item.get("password"):
                item["password"] = "***"
            out[name] = item
        return out
    return [to_json(r) for r in proxy.acl_rules]


def state(context: Any, kind: str) -> Dict[str, Any]:
    files = GeneratedFiles(context.config.path)
    generated = files.document(context.config, kind)
    return {
        "effective": effective(context, kind),
        "file": files.file(context.config, kind),
        FILE_KEYS[kind]: generated,
        "text": files.read(context.config, kind) or "",
    }


def reloaded(result) -> Dict[str, Any]:
    return {"routes": result.routes, "trunks": result.trunks, "acl_rules": result.acl_rules, "warnings": result.warnings}


def save_and_reload(context: Any, kind: str, value: Any = None, text: str = None):
    """Check, write the C{kind} generated file (a TOML-shaped C{value} or
    a TOML C{text}), then reload; the reload result.

    @raise Problems: refused, nothing written.
    @raise ReloadError: written but the reload failed (another file
        changed meanwhile); the running set is unchanged."""
    files = GeneratedFiles(context.config.path)
    if text is not None:
        config = files.write_text(context.config, kind, text)
    else:
        config = files.write(context.config, kind, value)
    return reload_routing(context, config)


class ReloadApi(ApiResource):
    #: Tokens limited to scopes need "config".
    scope = "config"
    openapi = {
        "post": {
            "summary": "Reload routes, trunks and ACL rules without a restart",
            "description": "Reads the configuration again (main, included and generated files); a configuration that "
            "does not load is refused and the running set kept.",
            "operationId": "reload",
            "responses": {"200": json_response("in place", _RELOADED),
                          "400": error_response("the configuration does not load; nothing changed")},
        }
    }

    def post(self, request, who):
        try:
            result = reload_routing(self.context)
        except ReloadError as e:
            error = ApiError(400, "reload refused: " + "; ".join(e.problems))
            d = audit(self.context, who, "reload.refused", "; ".join(e.problems))
            d.addCallback(lambda _: _raise(error))
            return d
        d = audit(self.context, who, "reload", result.summary())
        d.addCallback(lambda _: reloaded(result))
        return d


def _raise(error: Exception):
    raise error


class RoutingApi(ApiResource):
    """C{/api/v1/routes}, C{/api/v1/trunks} or C{/api/v1/acl} (C{kind})."""

    scope = "config"

    def __init__(self, context, site, kind: str) -> None:
        ApiResource.__init__(self, context, site)
        self.kind = kind
        key = FILE_KEYS[kind]
        shape = {"type": "array", "items": {"type": "object" if kind == "routes" else "string"}} if kind != "trunks" else {"type": "object"}
        self.openapi = {
            "get": {
                "summary": f"The effective {kind} and the generated file",
                "operationId": f"get_{kind}",
                "responses": {"200": json_response("effective and generated", {
                    "type": "object",
                    "properties": {"effective": shape, "file": {"type": "string"}, key: shape, "text": {"type": "string"}},
                })},
            },
            "put": {
                "summary": f"Replace the generated {kind} file and reload",
                "description": f'Body {{"{key}": ...}} in RustPBX\'s format, or {{"text": "TOML"}}; checked by the '
                "configuration loader before it is written.",
                "operationId": f"put_{kind}",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
                "responses": {"200": json_response("written and reloaded", _RELOADED),
                              "400": error_response("refused; nothing written")},
            },
        }

    def get(self, request, who):
        return state(self.context, self.kind)

    def put(self, request, who):
        body = request_json(request)
        key = FILE_KEYS[self.kind]
        if "text" in body and isinstance(body["text"], str):
            args = {"text": body["text"]}
        elif key in body:
            args = {"value": body[key]}
        else:
            raise ApiError(400, f'expected {{"{key}": ...}} or {{"text": "TOML"}}', key)
        try:
            result = save_and_reload(self.context, self.kind, **args)
        except Problems as problems:
            field, _ = problems.first()
            messages = [m for ms in problems.fields.values() for m in ms] + problems.general
            raise ApiError(400, "; ".join(messages), field)
        except ReloadError as e:
            raise ApiError(400, "written, but the reload was refused: " + "; ".join(e.problems))
        d = audit(self.context, who, f"{self.kind}.save", result.summary())
        d.addCallback(lambda _: reloaded(result))
        return d
