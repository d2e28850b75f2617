# -*- test-case-name: rustpbx_py.test.test_web_config -*-
"""
C{/api/v1/extensions}: the accounts of the database user backend
(L{rustpbx_py.extensions}) -- list and search (paginated), add, read,
change, disable, delete, import and export CSV.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from rustpbx_py.extensions import ExtensionError, Extensions, ImportProblems
from rustpbx_py.web.console import audit
from rustpbx_py.web.jsonapi import ApiError, ApiResource, request_json
from rustpbx_py.web.jsonapi import _int_arg  # the pagination arguments' checks
from rustpbx_py.web.openapi import error_response, json_response

EXTENSION = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "username": {"type": "string"},
        "realm": {"type": "string", "description": "empty = every realm"},
        "enabled": {"type": "boolean"},
        "display_name": {"type": "string", "nullable": True},
        "email": {"type": "string", "nullable": True},
        "phone": {"type": "string", "nullable": True},
        "note": {"type": "string", "nullable": True},
    },
}
WRITE = {
    "type": "object",
    "properties": dict(EXTENSION["properties"], password={"type": "string", "description": "stored as the backend reads it"}),
}
_ID = [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}]
_PAGE = [
    {"name": "q", "in": "query", "schema": {"type": "string"}, "description": "search username, name, e-mail, phone, realm"},
    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "default": 0}},
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
]


def extensions_of(context: Any) -> Extensions:
    try:
        ext = Extensions.from_context(context)
    except ExtensionError as e:
        raise ApiError(e.code, e.message)
    if ext is None:
        raise ApiError(409, 'no database user backend is configured ([[proxy.user_backends]] type = "database")')
    return ext


def api_error(e: ExtensionError) -> ApiError:
    return ApiError(e.code, e.message, e.field)


class ExtensionsApi(ApiResource):
    #: Tokens limited to scopes need "extensions".
    scope = "extensions"
    openapi = {
        "": {
            "get": {"summary": "List extensions", "operationId": "listExtensions", "parameters": _PAGE,
                    "responses": {"200": json_response("a page", {"type": "object", "properties": {
                        "items": {"type": "array", "items": EXTENSION}, "total": {"type": "integer"},
                        "offset": {"type": "integer"}, "limit": {"type": "integer"}}})}},
            "post": {"summary": "Add an extension", "operationId": "addExtension",
                     "requestBody": {"required": True, "content": {"application/json": {"schema": WRITE}}},
                     "responses": {"200": json_response("added", EXTENSION), "400": error_response("a value refused"),
                                   "409": error_response("the username exists in that realm")}},
        },
        "/{id}": {
            "get": {"summary": "One extension", "operationId": "getExtension", "parameters": _ID,
                    "responses": {"200": json_response("the extension", EXTENSION), "404": error_response("no such extension")}},
            "patch": {"summary": "Change an extension (enabled=false disables it)", "operationId": "patchExtension",
                      "parameters": _ID,
                      "requestBody": {"required": True, "content": {"application/json": {"schema": WRITE}}},
                      "responses": {"200": json_response("changed", EXTENSION), "400": error_response("a value refused"),
                                    "404": error_response("no such extension")}},
            "delete": {"summary": "Delete an extension", "operationId": "deleteExtension", "parameters": _ID,
                       "responses": {"200": json_response("deleted", EXTENSION), "404": error_response("no such extension")}},
        },
        "/import": {
            "post": {"summary": "Import CSV (all rows or none)", "operationId": "importExtensions",
                     "requestBody": {"required": True, "content": {"application/json": {"schema": {
                         "type": "object", "properties": {"csv": {"type": "string"}}}}}},
                     "responses": {"200": json_response("imported", {"type": "object", "properties": {
                         "added": {"type": "integer"}, "updated": {"type": "integer"}}}),
                         "400": error_response("refused: one message per line and column")}},
        },
        "/export": {
            "get": {"summary": "Export CSV (no passwords)", "operationId": "exportExtensions",
                    "parameters": _PAGE[:1],
                    "responses": {"200": json_response("the CSV text", {"type": "object", "properties": {"csv": {"type": "string"}}})}},
        },
    }

    def _id(self, request) -> Any:
        path = [p for p in request.postpath if p]
        if not path:
            return None
        if len(path) > 1:
            raise ApiError(404, "no such resource")
        name = path[0].decode("utf-8", "replace")
        if name in ("import", "export"):
            return name
        try:
            return int(name)
        except ValueError:
            raise ApiError(404, f"no extension {name!r}")

    @defer.inlineCallbacks
    def get(self, request, who):
        ext = extensions_of(self.context)
        target = self._id(request)
        q = (request.args.get(b"q") or [b""])[0].decode("utf-8", "replace").strip() or None
        try:
            if target is None:
                offset = _int_arg(request, "offset", 0, 0, 2**31)
                limit = _int_arg(request, "limit", 100, 1, 1000)
                total, items = yield ext.list(q, offset, limit)
                return {"items": items, "total": total, "offset": offset, "limit": limit}
            if target == "export":
                return {"csv": (yield ext.export_csv(q))}
            if target == "import":
                raise ApiError(405, "POST a CSV text to import")
            return (yield ext.get(target))
        except ExtensionError as e:
            raise api_error(e)

    @defer.inlineCallbacks
    def post(self, request, who):
        ext = extensions_of(self.context)
        target = self._id(request)
        body = request_json(request)
        try:
            if target == "import":
                text = body.get("csv")
                if not isinstance(text, str):
                    raise ApiError(400, 'expected {"csv": "CSV text"}', "csv")
                try:
                    result = yield ext.import_csv(text)
                except ImportProblems as e:
                    raise ApiError(400, "; ".join(str(r) for r in e.errors), "csv")
                yield audit(self.context, who, "extensions.import", f"{result.added} added, {result.updated} updated")
                return {"added": result.added, "updated": result.updated}
            if target is not None:
                raise ApiError(405, "POST to /extensions to add one")
            item = yield ext.add(body)
        except ExtensionError as e:
            raise api_error(e)
        yield audit(self.context, who, "extension.create", f"{item['username']} (id {item['id']})")
        return item

    @defer.inlineCallbacks
    def patch(self, request, who):
        ext = extensions_of(self.context)
        target = self._id(request)
        if not isinstance(target, int):
            raise ApiError(405, "PATCH /extensions/{id}")
        body = request_json(request)
        try:
            item = yield ext.update(target, body)
        except ExtensionError as e:
            raise api_error(e)
        yield audit(self.context, who, "extension.update", f"{item['username']} (id {item['id']}): {', '.join(sorted(body))}")
        return item


    @defer.inlineCallbacks
    def delete(self, request, who):
        ext = extensions_of(self.context)
        target = self._id(request)
        if not isinstance(target, int):
            raise ApiError(405, "DELETE /extensions/{id}")
        try:
            item = yield ext.delete(target)
        except ExtensionError as e:
            raise api_error(e)
        yield audit(self.context, who, "extension.delete", f"{item['username']} (id {item['id']})")
        return item
