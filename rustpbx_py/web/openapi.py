# -*- test-case-name: rustpbx_py.test.test_web_api -*-
"""
The OpenAPI 3.0 document of the JSON API, built from the C{openapi}
attribute of every resource mounted with C{add_api}, so that a resource
and its description live side by side.

A resource's C{openapi} is either a path item for its own path
(C{{"get": {...}, "post": {...}}}) or a mapping of sub-path suffixes to
path items (C{{"": {...}, "/{id}": {...}}}).  Every operation gets the
standard error responses unless it names them.
"""

from __future__ import annotations

import copy

from rustpbx_py import __version__

_OPERATIONS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "integer"},
                "message": {"type": "string"},
                "field": {"type": "string", "nullable": True},
            },
        }
    },
}

#: Standard responses operations refer to.
STANDARD_RESPONSES = {
    "401": "missing or wrong bearer token",
    "403": "token scope or CSRF token missing",
    "500": "internal error (logged)",
}


def error_response(description: str) -> dict:
    """An error response for an operation's C{responses}."""
    return {"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def json_response(description: str, schema: dict) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _path_items(openapi: dict) -> dict:
    if any(k.lower() in _OPERATIONS for k in openapi):
        return {"": openapi}
    return openapi


def build_document(site) -> dict:
    """The OpenAPI document of C{site}'s API resources."""
    paths: dict = {}
    for path, api in sorted(site.apis.items()):
        for suffix, item in _path_items(getattr(api, "openapi", {}) or {}).items():
            full = site.api_path + ("/" + path if path else "") + suffix
            item = copy.deepcopy(item)
            for name, operation in item.items():
                if name.lower() not in _OPERATIONS:
                    continue
                responses = operation.setdefault("responses", {})
                for code, text in STANDARD_RESPONSES.items():
                    responses.setdefault(code, error_response(text))
            paths[full] = item
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "rustpbx_py API",
            "version": __version__,
            "description": "Manage the PBX: registrations, calls, call records, extensions, configuration. "
            "Authenticate with a bearer token from [console] api_tokens.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": {"Error": ERROR_SCHEMA},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": site.cookie_name.decode()},
            },
        },
        "security": [{"bearer": []}, {"session": []}],
    }
