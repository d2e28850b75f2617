# -*- test-case-name: rustpbx_py.test.test_web_api -*-
"""C{/api/v1/health} (is the PBX up, how long) and C{/api/v1/openapi.json}."""

from __future__ import annotations

import time

from rustpbx_py import __version__
from rustpbx_py.web.jsonapi import ApiResource
from rustpbx_py.web.openapi import build_document, json_response

_STARTED = time.time()


class HealthApi(ApiResource):
    openapi = {
        "get": {
            "summary": "Health of the PBX",
            "operationId": "health",
            "responses": {
                "200": json_response("the PBX is up", {
                    "type": "object",
                    "properties": {
                        "status": {"type": "string", "enum": ["ok"]},
                        "version": {"type": "string"},
                        "uptime": {"type": "number", "description": "seconds since the process started"},
                    },
                }),
            },
        }
    }

    def get(self, request, who):
        return {"status": "ok", "version": __version__, "uptime": round(time.time() - _STARTED, 3)}


class OpenApiDocument(ApiResource):
    openapi = {
        "get": {
            "summary": "This API's OpenAPI 3 document",
            "operationId": "openapi",
            "responses": {"200": json_response("the document", {"type": "object"})},
        }
    }

    def get(self, request, who):
        return build_document(self.site)
