# -*- test-case-name: rustpbx_py.test.test_web_live -*-
"""
C{/api/v1/registrations}, C{/api/v1/calls}, C{/api/v1/transactions} and
C{/api/v1/records}: the live state of L{rustpbx_py.status} and the call
history of L{rustpbx_py.web.history}, with the console's two actions
(unregister, hang up) and the CSV export.
"""

from __future__ import annotations

from urllib.parse import unquote

from twisted.internet import defer

from rustpbx_py import status
from rustpbx_py.web import history
from rustpbx_py.web.console import audit
from rustpbx_py.web.history import FilterError, RecordFilter
from rustpbx_py.web.jsonapi import PAGINATION_PARAMETERS, ApiError, ApiResource, paginate
from rustpbx_py.web.openapi import error_response, json_response

_NUMBER = {"type": "number"}
_STRING = {"type": "string"}
_NSTRING = {"type": "string", "nullable": True}
_NNUMBER = {"type": "number", "nullable": True}

BINDING_SCHEMA = {
    "type": "object",
    "properties": {
        "aor": _STRING, "contact": _STRING, "params": _STRING,
        "source": {"type": "string", "description": "host:port the REGISTER came from"},
        "transport": _STRING, "user_agent": _STRING,
        "expires": {"type": "integer", "description": "lifetime granted, seconds"},
        "expires_at": _NUMBER, "expires_in": {"type": "integer"}, "registered_at": _NUMBER,
        "instance": _NSTRING, "reg_id": _NSTRING, "nat": {"type": "boolean"},
        "webrtc": {"type": "boolean", "description": "RustPBX's supports_webrtc: calls get a WebRTC offer"},
        "path": {"type": "array", "items": _STRING}, "local": _STRING,
    },
}

CALL_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "description": "the call record's id"},
        "call_id": _STRING, "b_call_id": _STRING, "caller": _STRING, "callee": _STRING,
        "direction": _STRING, "route": _NSTRING, "trunk": _NSTRING,
        "state": {"type": "string", "enum": ["routing", "calling", "ringing", "answered", "ended"]},
        "start_time": _NUMBER, "ring_time": _NNUMBER, "answer_time": _NNUMBER,
        "duration": _NUMBER, "talk_time": _NUMBER,
        "media": {"type": "object", "nullable": True},
        "codecs": {"type": "object", "properties": {"a": _NSTRING, "b": _NSTRING}},
        "legs": {"type": "array", "items": {"type": "object"}},
    },
}

RECORD_SCHEMA = {
    "type": "object",
    "properties": {
        **{name: _NSTRING for name in ("id", "call_id", "caller", "callee", "direction", "route", "trunk",
                                       "hangup_reason")},
        **{name: _NNUMBER for name in ("start_time", "ring_time", "answer_time", "end_time")},
        "status_code": {"type": "integer", "nullable": True},
        "status": {"type": "string", "enum": list(history.STATUSES)},
        "talk_time": _NUMBER,
    },
}


def _page_schema(item: dict) -> dict:
    return {"type": "object", "properties": {
        "items": {"type": "array", "items": item}, "total": {"type": "integer"},
        "offset": {"type": "integer"}, "limit": {"type": "integer"}}}


def _id_parameter(name: str, description: str) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}, "description": description}


def _subpath(request) -> list:
    return [unquote(p.decode("utf-8", "replace")) for p in request.postpath if p]


class RegistrationsApi(ApiResource):
    """Every binding; DELETE one extension's bindings (or one contact)."""

    scope = "registrations"

    openapi = {
        "": {"get": {
            "summary": "Every registered contact",
            "operationId": "listRegistrations",
            "parameters": PAGINATION_PARAMETERS,
            "responses": {"200": json_response("a page of bindings", _page_schema(BINDING_SCHEMA))},
        }},
        "/{aor}": {"delete": {
            "summary": "Unregister an extension (every contact, or the one given)",
            "operationId": "unregister",
            "parameters": [
                _id_parameter("aor", "the address-of-record, user@realm"),
                {"name": "contact", "in": "query", "schema": {"type": "string"},
                 "description": "only the binding of this Contact URI"},
            ],
            "responses": {
                "200": json_response("removed", {"type": "object", "properties": {
                    "aor": _STRING, "removed": {"type": "integer"}}}),
                "404": error_response("no such binding"),
            },
        }},
    }

    def get(self, request, who):
        if _subpath(request):
            raise ApiError(404, "GET lists every binding: /registrations")
        return paginate(request, status.registrations(self.context))

    @defer.inlineCallbacks
    def delete(self, request, who):
        path = _subpath(request)
        if len(path) != 1:
            raise ApiError(404, "DELETE /registrations/{aor}")
        aor = path[0]
        contact = request.args.get(b"contact", [b""])[0].decode("utf-8", "replace") or None
        removed = yield status.unregister(self.context, aor, contact)
        if not removed:
            raise ApiError(404, f"{aor} has no such registration")
        yield audit(self.context, who, "registration.remove", f"{aor} {contact or '(all contacts)'}")
        return {"aor": aor, "removed": removed}


class CallsApi(ApiResource):
    """The calls up now; one of them; hang one up."""

    #: RustPBX's name for the scope of call control.
    scope = "call.control"

    openapi = {
        "": {"get": {
            "summary": "The calls up now",
            "operationId": "listCalls",
            "parameters": PAGINATION_PARAMETERS,
            "responses": {"200": json_response("a page of calls", _page_schema(CALL_SCHEMA))},
        }},
        "/{id}": {
            "get": {
                "summary": "One live call",
                "operationId": "getCall",
                "parameters": [_id_parameter("id", "the record id or either side's Call-ID")],
                "responses": {"200": json_response("the call", CALL_SCHEMA), "404": error_response("no such call")},
            },
            "delete": {
                "summary": "Hang up a call (BYE both legs, or CANCEL when unanswered; reason bySystem)",
                "operationId": "hangUpCall",
                "parameters": [_id_parameter("id", "the record id or either side's Call-ID")],
                "responses": {
                    "200": json_response("hung up", {"type": "object", "properties": {
                        "id": _STRING, "hung_up": {"type": "boolean"}}}),
                    "404": error_response("no such call"),
                },
            },
        },
        "/{id}/hangup": {"post": {
            "summary": "Hang up a call (same as DELETE /calls/{id})",
            "operationId": "postHangUp",
            "parameters": [_id_parameter("id", "the record id or either side's Call-ID")],
            "responses": {
                "200": json_response("hung up", {"type": "object", "properties": {
                    "id": _STRING, "hung_up": {"type": "boolean"}}}),
                "404": error_response("no such call"),
            },
        }},
    }

    def get(self, request, who):
        path = _subpath(request)
        if not path:
            return paginate(request, status.active_calls(self.context))
        if len(path) == 1:
            call = status.find_call(self.context, path[0])
            if call is None:
                raise ApiError(404, f"no live call {path[0]}")
            return status.call_summary(self.context, call)
        raise ApiError(404, "no such resource under /calls")

    @defer.inlineCallbacks
    def _hang_up(self, call_id: str, who):
        call = status.find_call(self.context, call_id)
        if call is None or not status.hang_up(self.context, call_id):
            raise ApiError(404, f"no live call {call_id}")
        yield audit(self.context, who, "call.hangup",
                    f"{call.record.caller} -> {call.record.callee} ({call.record.call_id})")
        return {"id": call.record.id, "hung_up": True}

    def delete(self, request, who):
        path = _subpath(request)
        if len(path) != 1:
            raise ApiError(404, "DELETE /calls/{id}")
        return self._hang_up(path[0], who)

    def post(self, request, who):
        path = _subpath(request)
        if len(path) != 2 or path[1] != "hangup":
            raise ApiError(404, "POST /calls/{id}/hangup")
        return self._hang_up(path[0], who)


class TransactionsApi(ApiResource):
    """The SIP transactions in flight, by method and state."""

    scope = "registrations"

    openapi = {"get": {
        "summary": "SIP transactions in flight",
        "operationId": "transactions",
        "responses": {"200": json_response("counts", {"type": "object", "properties": {
            "total": {"type": "integer"}, "pending": {"type": "integer"},
            "server": {"type": "object"}, "client": {"type": "object"}}})},
    }}

    def get(self, request, who):
        return status.transactions(self.context)


_RECORD_FILTERS = [
    {"name": "q", "in": "query", "schema": {"type": "string"},
     "description": "part of the caller or callee, or a whole Call-ID"},
    {"name": "from", "in": "query", "schema": {"type": "string"},
     "description": "start date (YYYY-MM-DD, UTC) or date and time (YYYY-MM-DDTHH:MM)"},
    {"name": "to", "in": "query", "schema": {"type": "string"}, "description": "end date (inclusive) or date and time"},
    {"name": "status", "in": "query", "schema": {"type": "string", "enum": list(history.STATUSES)}},
    {"name": "direction", "in": "query", "schema": {"type": "string", "enum": list(history.DIRECTIONS)}},
]


class RecordsApi(ApiResource):
    """Call records: search (paged), one with its SIP flow and media."""

    scope = "records"

    openapi = {
        "": {"get": {
            "summary": "Search the call records (newest first)",
            "operationId": "listRecords",
            "parameters": _RECORD_FILTERS + [
                {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "default": 0}},
                {"name": "limit", "in": "query",
                 "schema": {"type": "integer", "minimum": 1, "maximum": history.MAX_LIMIT,
                            "default": history.DEFAULT_LIMIT}},
            ],
            "responses": {"200": json_response("a page of records", _page_schema(RECORD_SCHEMA)),
                          "400": error_response("a filter is not valid (field names it)")},
        }},
        "/{id}": {"get": {
            "summary": "One call record with its SIP flow and media figures",
            "operationId": "getRecord",
            "parameters": [_id_parameter("id", "the record id, or a Call-ID (its newest record)")],
            "responses": {
                "200": json_response("the record", {"allOf": [RECORD_SCHEMA, {"type": "object", "properties": {
                    "sip_flow": {"type": "array", "items": {"type": "object", "properties": {
                        "time": _NUMBER, "leg": _STRING, "direction": _STRING, "peer": _STRING,
                        "message": _STRING}}},
                    "media": {"type": "object", "nullable": True}}}]}),
                "404": error_response("no such record"),
            },
        }},
    }

    def _store(self):
        store = getattr(self.context, "store", None)
        if store is None:
            raise ApiError(404, "this PBX keeps no call records (no database)")
        return store

    @defer.inlineCallbacks
    def get(self, request, who):
        path = _subpath(request)
        store = self._store()
        if not path:
            try:
                flt = RecordFilter.from_args(request.args)
            except FilterError as e:
                raise ApiError(400, e.message, e.field)
            page = yield history.search(store, flt)
            return page
        if len(path) == 1:
            row = yield history.get_record(store, path[0])
            if row is None:
                raise ApiError(404, f"no call record {path[0]}")
            return row
        raise ApiError(404, "no such resource under /records")


class RecordsCsvApi(ApiResource):
    """The records a search selects, as CSV."""

    scope = "records"

    openapi = {"get": {
        "summary": "Export the call records a search selects as CSV",
        "operationId": "exportRecords",
        "parameters": _RECORD_FILTERS,
        "responses": {
            "200": {"description": "CSV, one line per record", "content": {"text/csv": {"schema": {"type": "string"}}}},
            "400": error_response("a filter is not valid (field names it)"),
        },
    }}

    @defer.inlineCallbacks
    def get(self, request, who):
        store = getattr(self.context, "store", None)
        if store is None:
            raise ApiError(404, "this PBX keeps no call records (no database)")
        try:
            flt = RecordFilter.from_args(request.args)
        except FilterError as e:
            raise ApiError(400, e.message, e.field)
        data = yield history.export(store, flt)
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"text/csv; charset=utf-8")
        request.setHeader(b"content-disposition", b'attachment; filename="call-records.csv"')
        request.setHeader(b"cache-control", b"no-store")
        request.write(data)
        request.finish()
        return None
