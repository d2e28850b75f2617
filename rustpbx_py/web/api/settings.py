# -*- test-case-name: rustpbx_py.test.test_web_config -*-
"""
C{/api/v1/settings}: the Proxy Settings of L{rustpbx_py.settings} --
C{GET} every key (value, source, running value, applies at once or at
the next start), C{PATCH} (or C{PUT}) some keys as JSON in their TOML form
(C{null} = back to the configuration file's value).
"""

from __future__ import annotations

from rustpbx_py.generated import Problems
from rustpbx_py.settings import ProxySettings
from rustpbx_py.web.console import audit
from rustpbx_py.web.jsonapi import ApiError, ApiResource, request_json
from rustpbx_py.web.openapi import error_response, json_response

_SETTING = {
    "type": "object",
    "properties": {
        "value": {"description": "the value the files give now (TOML form)", "nullable": True},
        "source": {"type": "string", "enum": ["settings", "file", "default"]},
        "running": {"description": "the value in use", "nullable": True},
        "live": {"type": "boolean", "description": "a change applies at once (else at the next start)"},
        "pending": {"type": "boolean", "description": "changed, waiting for a restart"},
        "doc": {"type": "string"},
    },
}
_SETTINGS = {
    "type": "object",
    "properties": {
        "file": {"type": "string", "description": "the settings file in generated_dir"},
        "settings": {"type": "object", "additionalProperties": _SETTING},
    },
}
_SAVED = {
    "type": "object",
    "properties": {
        "applied": {"type": "array", "items": {"type": "string"}, "description": "keys that took effect at once"},
        "restart": {"type": "array", "items": {"type": "string"}, "description": "keys waiting for a restart"},
        "settings": {"type": "object", "additionalProperties": _SETTING},
    },
}
_CHANGE = {
    "summary": "Change Proxy Settings",
    "description": "Keys of [proxy] and their new values in TOML form (null: back to the configuration file's value); "
    "checked by the configuration loader, written to generated_dir/proxy.generated.toml.",
    "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
    "responses": {"200": json_response("saved", _SAVED), "400": error_response("a value refused (field names the key)")},
}


def problems_error(problems: Problems) -> ApiError:
    """One API error for a refused change: every message, the first
    field named."""
    field, _ = problems.first()
    messages = [m for ms in problems.fields.values() for m in ms] + problems.general
    return ApiError(400, "; ".join(messages), field)


class SettingsApi(ApiResource):
    #: Tokens limited to scopes need "config".
    scope = "config"
    openapi = {
        "get": {"summary": "Proxy Settings", "operationId": "getSettings",
                "responses": {"200": json_response("every key", _SETTINGS)}},
        "patch": dict(_CHANGE, operationId="patchSettings"),
        "put": dict(_CHANGE, operationId="putSettings"),
    }

    def get(self, request, who):
        settings = ProxySettings(self.context)
        return {"file": settings.files.file(settings.running, "proxy"), "settings": settings.current()}

    def patch(self, request, who):
        values = request_json(request)
        settings = ProxySettings(self.context)
        try:
            result = settings.save(values)
        except Problems as problems:
            raise problems_error(problems)
        current = settings.current()
        detail = "; ".join(f"{k}={current[k]['value']!r}" for k in values)
        d = audit(self.context, who, "settings.proxy", detail)
        d.addCallback(lambda _: {"applied": result.applied, "restart": result.restart, "settings": current})
        return d

    put = patch
