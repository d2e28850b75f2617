# -*- test-case-name: rustpbx_py.test.test_web_live -*-
"""
The console's live pages: the dashboard, the registrations (with
unregister) and the active calls (with hang up).  They read the PBX through
L{rustpbx_py.status}, as the API and the monitor do; the admin's actions
are written to the audit log.
"""

from __future__ import annotations

from typing import Any, List

from twisted.internet import defer
from twisted.web.template import Tag, tags

from rustpbx_py import status
from rustpbx_py.web import history
from rustpbx_py.web.chart import calls_chart
from rustpbx_py.web.console import ConsolePage, PageError, audit, csrf_input, form_value, redirect, table


def _notice(request) -> List[Tag]:
    """The one-line outcome of the last action, passed in the redirect's query."""
    done = form_value(request, "done")
    if not done:
        return []
    return [tags.p(done[:200], class_="notice", role="status")]


def _card(label: str, value: Any, detail: str = "", href: str = "") -> Tag:
    figure = tags.strong(str(value), class_="figure")
    if href:
        figure = tags.a(figure, href=href)
    parts = [tags.span(label, class_="label"), figure]
    if detail:
        parts.append(tags.small(detail))
    return tags.div(*parts, class_="card")


def _calls_table(site, request, calls: List[dict], actions: bool) -> Tag:
    rows = []
    for call in calls:
        codecs = call["codecs"]
        codec = codecs.get("a") or ""
        if codecs.get("b") and codecs.get("b") != codecs.get("a"):
            codec = f"{codecs.get('a') or '?'} / {codecs['b']}"
        row = [
            call["caller"],
            call["callee"],
            call["state"],
            history.format_duration(call["duration"]),
            history.format_duration(call["talk_time"]) if call["answer_time"] is not None else "",
            codec,
            tags.code(call["call_id"], class_="call-id"),
        ]
        if actions:
            row.append(tags.form(
                csrf_input(request),
                tags.input(type="hidden", name="id", value=call["id"]),
                tags.button("Hang up", type="submit", class_="danger", name="hangup",
                            **{"data-call-id": call["call_id"]}),
                method="post", action=site.page_url("calls"), class_="inline",
            ))
        rows.append(row)
    headers = ["Caller", "Callee", "State", "Duration", "Talk time", "Codec", "Call-ID"]
    if actions:
        headers.append("")
    return table(headers, rows, empty="No calls right now.", keys=[str(call["id"]) for call in calls])


def _registration_text(registration) -> str:
    """A trunk's registration state in a few words ("" when it does not register)."""
    if not registration:
        return ""
    state = str(registration.get("state") or ("registered" if registration.get("registered") else "not registered"))
    error = registration.get("error")
    return f"{state} ({error})" if error else state


DASHBOARD_CSS = (
    ".trunk-up{color:#2e7d32}.trunk-down{color:#c62828;font-weight:bold}"
    ".card .label{display:block;color:#555;font-size:0.9rem}"
    ".card .figure{display:block;font-size:2rem;line-height:1.2}"
    ".card small{display:block;color:#666}"
    ".chart svg{max-width:100%;height:auto}"
)


def live_region(element_id: str, seconds: int) -> dict:
    """
    The attributes of an element that static/console.js fetches again
    every C{seconds} (the page keeps working without JavaScript: it is
    then as fresh as its last load).
    """
    return {"id": element_id, "data-refresh": str(seconds)}


class DashboardPage(ConsolePage):
    """Registrations, active calls, transactions in flight, the last day's calls."""

    nav = "Dashboard"
    nav_order = 10
    title = "Dashboard"

    @defer.inlineCallbacks
    def get(self, request, admin):
        context = self.context
        registrations = status.registrations(context)
        calls = status.active_calls(context)
        counts = status.transactions(context)
        now = context.reactor.seconds()
        hours = []
        if getattr(context, "store", None) is not None:
            hours = yield history.hourly_counts(context.store, now)
        day_calls = sum(h.calls for h in hours)
        day_failed = sum(h.failed for h in hours)
        answered = sum(1 for c in calls if c["state"] == "answered")
        aors = len({r["aor"] for r in registrations})
        site = self.site
        cards = tags.div(
            _card("Registrations", len(registrations), f"{aors} extension{'' if aors == 1 else 's'}", site.page_url("registrations")),
            _card("Active calls", len(calls), f"{answered} answered", site.page_url("calls")),
            _card("Transactions in flight", counts["total"],
                  f"{counts['server']['total']} server, {counts['client']['total']} client, "
                  f"{counts['pending']} unanswered"),
            _card("Calls, last 24 h", day_calls, f"{day_failed} failed", site.page_url("records")),
            class_="cards",
        )
        by_method = {}
        for side in ("server", "client"):
            for method, n in counts[side]["by_method"].items():
                by_method.setdefault(method, [0, 0])[0 if side == "server" else 1] += n
        trunk_rows = [
            (t["trunk"], tags.span(t["state"], class_="trunk-" + t["state"]), t["options"],
             "" if t["rtt"] is None else f"{t['rtt'] * 1000:.0f} ms", str(t["failures"]),
             _registration_text(t["registration"]), t["last_error"] or "")
            for t in status.trunks(context)
        ]
        trunk_section = [
            tags.h2("Trunks"),
            table(["Trunk", "State", "OPTIONS", "Round trip", "Failures", "Registration", "Last error"], trunk_rows),
        ] if trunk_rows else []
        return tags.div(
            tags.style(DASHBOARD_CSS),
            cards,
            tags.h2("Calls and failures, last 24 hours"),
            tags.div(calls_chart(hours), class_="chart"),
            tags.h2("Active calls"),
            _calls_table(site, request, calls[:10], actions=False),
            tags.h2("Transactions in flight"),
            table(["Method", "Server", "Client"],
                  [(m, str(s), str(c)) for m, (s, c) in sorted(by_method.items())], empty="None."),
            *trunk_section,
            **live_region("live-dashboard", 10),
        )


class RegistrationsPage(ConsolePage):
    """Every binding; a binding or a whole extension can be unregistered."""

    nav = "Registrations"
    nav_order = 20
    title = "Registrations"

    def get(self, request, admin):
        rows, keys = [], []
        for r in status.registrations(self.context):
            keys.append(r["aor"] + " " + r["contact"])
            rows.append([
                r["aor"],
                tags.code(r["contact"]),
                r["source"],
                r["transport"] + (" (WebRTC)" if r.get("webrtc") else ""),
                r["user_agent"],
                history.format_time(r["registered_at"]),
                f"{r['expires_in']} s of {r['expires']} s",
                tags.form(
                    csrf_input(request),
                    tags.input(type="hidden", name="aor", value=r["aor"]),
                    tags.input(type="hidden", name="contact", value=r["contact"]),
                    tags.button("Unregister", type="submit", class_="danger"),
                    method="post", action=self.site.page_url("registrations"), class_="inline",
                ),
            ])
        return tags.div(
            *_notice(request),
            tags.div(
                table(["Extension", "Contact", "Source", "Transport", "User agent", "Registered (UTC)", "Expires", ""],
                      rows, empty="No phone is registered.", keys=keys),
                **live_region("live-registrations", 5),
            ),
            tags.p("Unregistering removes the binding now; the phone registers again at its next refresh.",
                   class_="help"),
        )

    @defer.inlineCallbacks
    def post(self, request, admin):
        aor = form_value(request, "aor").strip()
        contact = form_value(request, "contact").strip() or None
        if not aor:
            raise PageError(400, "Say which extension to unregister.")
        removed = yield status.unregister(self.context, aor, contact)
        if removed:
            yield audit(self.context, admin, "registration.remove", f"{aor} {contact or '(all contacts)'}")
        from urllib.parse import quote

        text = f"{aor}: {removed} binding(s) removed" if removed else f"{aor}: no such binding (already gone?)"
        redirect(request, self.site.page_url("registrations") + "?done=" + quote(text))
        return None


class CallsPage(ConsolePage):
    """The calls up now, each with a hang-up button."""

    nav = "Active calls"
    nav_order = 30
    title = "Active calls"

    def get(self, request, admin):
        calls = status.active_calls(self.context)
        return tags.div(
            *_notice(request),
            tags.div(_calls_table(self.site, request, calls, actions=True), **live_region("live-calls", 3)),
            tags.p("The table refreshes itself every few seconds. ",
                   tags.a("Refresh now", href=self.site.page_url("calls")), class_="help"),
        )

    @defer.inlineCallbacks
    def post(self, request, admin):
        from urllib.parse import quote

        call_id = form_value(request, "id").strip()
        if not call_id:
            raise PageError(400, "Say which call to hang up.")
        call = status.find_call(self.context, call_id)
        described = f"{call.record.caller} -> {call.record.callee} ({call.record.call_id})" if call is not None else call_id
        if status.hang_up(self.context, call_id):
            yield audit(self.context, admin, "call.hangup", described)
            text = f"Hung up {described}"
        else:
            text = "That call had already ended."
        redirect(request, self.site.page_url("calls") + "?done=" + quote(text))
        return None
