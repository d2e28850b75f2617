# -*- test-case-name: rustpbx_py.test.test_web_live -*-
"""
The "Call records" pages: search (number, date range, status, direction;
paged), the CSV export of a search, and one record with its SIP flow as a
ladder diagram (L{rustpbx_py.web.ladder}) and its media figures.

Paths under C{records}: none (the search), C{export.csv}, C{<id>} (one
record) and C{<id>/flow.svg} (its ladder as a standalone image).
"""

from __future__ import annotations

from typing import Any, List

from twisted.internet import defer
from twisted.web.template import Tag, tags

from rustpbx_py.web import history, ladder
from rustpbx_py.web.console import ConsolePage, PageError, field, form_error, table
from rustpbx_py.web.history import FilterError, RecordFilter

#: Opens the message an arrow of the ladder links to (no "<" or "&": the
#: template flattener escapes script text).
FLOW_CSS = (
    ".flow-wrap{overflow-x:auto;border:1px solid #ddd;background:#fff;margin:0.5rem 0}"
    ".flow-wrap svg a:hover text{text-decoration:underline}"
    ".flow-messages details{border-bottom:1px solid #eee;padding:0.2rem 0}"
    ".flow-messages details:target{background:#fffbe6}"
    ".flow-messages summary{cursor:pointer;font-family:monospace;font-size:0.85rem}"
    ".flow-messages pre{white-space:pre-wrap;word-break:break-all;font-size:0.8rem;background:#f7f7f7;padding:0.5rem}"
    ".flow-request{color:#1f5fa8}.flow-provisional{color:#6b6b6b}.flow-success{color:#2e7d32}"
    ".flow-failure{color:#c62828}.flow-note{color:#8a6d00}"
    "dl.record{display:grid;grid-template-columns:max-content 1fr;gap:0.2rem 1rem}dl.record dt{font-weight:bold}"
)


def _select(label: str, name: str, options, value: str, errors) -> Tag:
    error = errors.get(name)
    choices = [tags.option("any", value="")]
    for option in options:
        attrs = {"value": option}
        if option == value:
            attrs["selected"] = "selected"
        choices.append(tags.option(option, **attrs))
    parts = [tags.label(label, for_="f-" + name), tags.select(*choices, name=name, id="f-" + name)]
    if error:
        parts.append(tags.span(error, class_="field-error", role="alert"))
    return tags.div(*parts, class_="field" + (" has-error" if error else ""))


class RecordsPage(ConsolePage):
    """Search, export and one record's SIP flow (see the module docstring)."""

    nav = "Call records"
    nav_order = 40
    title = "Call records"

    def get(self, request, admin):
        if getattr(self.context, "store", None) is None:
            raise PageError(404, "This PBX keeps no call records (no database).")
        path = [p.decode("utf-8", "replace") for p in request.postpath if p]
        if not path:
            return self.search(request)
        if path == ["export.csv"]:
            return self.export(request)
        if len(path) == 1:
            return self.record(request, path[0])
        if len(path) == 2 and path[1] == "flow.svg":
            return self.flow_svg(request, path[0])
        raise PageError(404, "There is no such page.")

    def _args(self, request) -> dict:
        return {k.decode("utf-8", "replace"): [v.decode("utf-8", "replace") for v in vs]
                for k, vs in request.args.items()}

    @defer.inlineCallbacks
    def search(self, request):
        args = self._args(request)
        raw = {k: (v[0] if v else "") for k, v in args.items()}
        errors = {}
        try:
            flt = RecordFilter.from_args(args)
        except FilterError as e:
            errors[e.field] = e.message
            flt = RecordFilter()
        form_error(request, errors)
        form = tags.form(
            field("Number", "q", raw.get("q", ""), errors, type="search", placeholder="caller, callee or Call-ID"),
            field("From (UTC)", "from", raw.get("from", ""), errors, type="date"),
            field("To (UTC)", "to", raw.get("to", ""), errors, type="date"),
            _select("Status", "status", history.STATUSES, raw.get("status", ""), errors),
            _select("Direction", "direction", history.DIRECTIONS, raw.get("direction", ""), errors),
            *([field("Per page", "limit", raw.get("limit", ""), errors, type="number")] if "limit" in errors else []),
            *([field("Offset", "offset", raw.get("offset", ""), errors, type="number")] if "offset" in errors else []),
            tags.button("Search", type="submit"),
            method="get", action=self.site.page_url("records"), class_="filter",
        )
        if errors:
            return tags.div(form)
        page = yield history.search(self.context.store, flt)
        base = self.site.page_url("records")
        rows = []
        for r in page["items"]:
            rows.append([
                tags.a(history.format_time(r["start_time"]), href=f"{base}/{r['id']}"),
                r["caller"] or "",
                r["callee"] or "",
                r["direction"] or "",
                tags.span(r["status"], class_="status-" + r["status"]),
                "" if r["status_code"] is None else str(r["status_code"]),
                r["hangup_reason"] or "",
                history.format_duration(r["talk_time"]) if r["answer_time"] is not None else "",
                tags.a("SIP flow", href=f"{base}/{r['id']}#flow"),
            ])
        shown_to = flt.offset + len(page["items"])
        pager = []
        if flt.offset > 0:
            pager.append(tags.a("Newer", href="?" + flt.query_string(offset=max(flt.offset - flt.limit, 0) or "")))
        if shown_to < page["total"]:
            pager.append(tags.a("Older", href="?" + flt.query_string(offset=shown_to)))
        summary = (f"{flt.offset + 1}-{shown_to} of {page['total']}" if page["items"] else f"0 of {page['total']}")
        return tags.div(
            form,
            tags.p(summary, " records. ",
                   tags.a("Export these as CSV", href=f"{base}/export.csv?" + flt.query_string(offset="")),
                   class_="help"),
            table(["Start (UTC)", "Caller", "Callee", "Direction", "Status", "Code", "Hangup", "Talk time", ""],
                  rows, empty="No call matches."),
            tags.nav(*pager, class_="pager") if pager else "",
        )

    @defer.inlineCallbacks
    def export(self, request):
        try:
            flt = RecordFilter.from_args(self._args(request))
        except FilterError as e:
            raise PageError(400, e.message)
        data = yield history.export(self.context.store, flt)
        request.setHeader(b"content-type", b"text/csv; charset=utf-8")
        request.setHeader(b"content-disposition", b'attachment; filename="call-records.csv"')
        request.setHeader(b"cache-control", b"no-store")
        request.write(data)
        return None

    @defer.inlineCallbacks
    def _load(self, record_id: str):
        row = yield history.get_record(self.context.store, record_id)
        if row is None:
            raise PageError(404, f"There is no call record {record_id}.")
        return row

    @defer.inlineCallbacks
    def flow_svg(self, request, record_id: str):
        row = yield self._load(record_id)
        request.setHeader(b"content-type", b"image/svg+xml; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"content-disposition", f'inline; filename="sip-flow-{row["id"]}.svg"'.encode())
        request.write(ladder.svg_document(row["sip_flow"], row["caller"] or "", row["callee"] or ""))
        return None

    @defer.inlineCallbacks
    def record(self, request, record_id: str):
        row = yield self._load(record_id)
        request.title = f"Call {row['caller'] or '?'} \u2192 {row['callee'] or '?'}"
        base = self.site.page_url("records")
        facts = [
            ("Call-ID", tags.code(row["call_id"])),
            ("Status", f"{row['status']} ({row['status_code'] if row['status_code'] is not None else '-'})"),
            ("Hangup reason", row["hangup_reason"] or ""),
            ("Direction", row["direction"] or ""),
            ("Route", row["route"] or ""),
            ("Trunk", row["trunk"] or ""),
            ("Started (UTC)", history.format_time(row["start_time"])),
            ("Ringing", history.format_time(row["ring_time"])),
            ("Answered", history.format_time(row["answer_time"])),
            ("Ended", history.format_time(row["end_time"])),
            ("Talk time", history.format_duration(row["talk_time"])),
        ]
        details: List[Any] = []
        for name, value in facts:
            details += [tags.dt(name), tags.dd(value)]
        return tags.div(
            tags.style(FLOW_CSS),
            tags.p(tags.a("\u2190 Call records", href=base)),
            tags.dl(*details, class_="record"),
            tags.h2("Media"),
            self._media(row["media"]),
            tags.h2("SIP flow", id="flow"),
            tags.p(f"{len(row['sip_flow'])} messages. Click an arrow to see the message. ",
                   tags.a("Download the diagram (SVG)", href=f"{base}/{row['id']}/flow.svg"), class_="help"),
            tags.div(ladder.ladder_svg(row["sip_flow"], row["caller"] or "", row["callee"] or ""), class_="flow-wrap"),
            ladder.flow_details(row["sip_flow"]),
        )

    def _media(self, media) -> Tag:
        if not media:
            return tags.p("No media was negotiated for this call.", class_="help")
        head = tags.p(f"Mode {media.get('mode', '?')}, "
                      f"{'anchored by the PBX' if media.get('anchored') else 'not anchored (RTP flowed between the phones)'}"
                      f" \u2014 {media.get('reason', '')}")
        rows = [
            [str(cell) for cell in (
                r["leg"], r["codec"], r["local"], r["remote"],
                f"{r['in_packets']} / {r['in_bytes']}", r["in_lost"], r["in_jitter_ms"],
                f"{r['out_packets']} / {r['out_bytes']}", r["out_lost"], r["out_jitter_ms"], r["dropped"])]
            for r in history.media_rows(media)
        ]
        if not rows:
            return tags.div(head)
        return tags.div(head, table(
            ["Leg", "Codec", "Local", "Remote (latched)", "In packets / bytes", "In lost", "In jitter ms",
             "Out packets / bytes", "Out lost", "Out jitter ms", "Dropped"], rows))
