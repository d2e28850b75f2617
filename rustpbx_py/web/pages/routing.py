# -*- test-case-name: rustpbx_py.test.test_web_config -*-
"""
The Routes, Trunks and ACL pages: the effective ones (every file merged,
as the running PBX uses them), the generated file the console edits
(RustPBX's format, TOML), and a Reload button that puts routes, trunks
and ACL rules in place without a restart (L{rustpbx_py.reload}).

Saving checks the new file with the configuration loader first (errors
shown next to the editor, nothing written), writes it and reloads.
"""

from __future__ import annotations

import json
from typing import Any, List, Optional

from twisted.web.template import Tag, tags

from rustpbx_py.generated import GeneratedFiles, Problems
from rustpbx_py.reload import ReloadError, reload_routing
from rustpbx_py.web.api.reload import effective, save_and_reload, state
from rustpbx_py.web.console import ConsolePage, audit, csrf_input, form_value, table

TITLES = {"routes": "Routes", "trunks": "Trunks", "acl": "ACL"}
EXAMPLES = {
    "routes": '[[routes]]\nname = "outbound"\npriority = 10\ndest = "carrier"\n[routes.match]\n"to.user" = "^9(.*)"\n[routes.rewrite]\n"to.user" = "{1}"\n',
    "trunks": '[trunks.carrier]\ndest = "sip:sip.carrier.example:5060"\nusername = "account"\npassword = "secret"\n',
    "acl": 'acl_rules = ["allow 10.0.0.0/8", "deny all"]\n',
}


def _short(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False) if value else ""
    return str(value)


def effective_table(context: Any, kind: str) -> Tag:
    items = effective(context, kind)
    if kind == "routes":
        rows = [(r.get("name"), str(r.get("priority", 0)), r.get("direction", "any"), _short(r.get("match")),
                 r.get("action", "forward") + (" " + ", ".join(r.get("dest", [])) if r.get("dest") else ""),
                 "disabled" if r.get("disabled") else "", r.get("origin", "")) for r in items]
        return table(["Name", "Priority", "Direction", "Match", "Action", "", "From"], rows, "No routes.")
    if kind == "trunks":
        rows = [(name, t.get("dest"), t.get("transport", ""), t.get("direction", "bidirectional"),
                 _short(t.get("max_calls")), "disabled" if t.get("disabled") else "", t.get("origin", ""))
                for name, t in items.items()]
        return table(["Name", "Dest", "Transport", "Direction", "Max calls", "", "From"], rows, "No trunks.")
    return table(["#", "Rule"], [(str(i + 1), rule) for i, rule in enumerate(items)], "No rules.")


class RoutingPage(ConsolePage):
    """One of the Routes, Trunks, ACL pages (C{kind})."""

    def __init__(self, context, site, kind: str, nav_order: int) -> None:
        ConsolePage.__init__(self, context, site)
        self.kind = kind
        self.nav = TITLES[kind]
        self.title = TITLES[kind]
        self.nav_order = nav_order

    def content(self, request, text: Optional[str] = None, errors: List[str] = (), notices: List[Tag] = ()) -> Tag:
        info = state(self.context, self.kind)
        if text is None:
            text = info["text"]
        error = "; ".join(errors) or None
        attrs = {"name": "toml", "id": "f-toml", "rows": "16", "spellcheck": "false"}
        if error:
            attrs["aria-invalid"] = "true"
            attrs["aria-describedby"] = "f-toml-error"
        editor = [
            tags.label("Generated file ", tags.code(info["file"]), for_="f-toml"),
            tags.textarea(text, placeholder=EXAMPLES[self.kind], **attrs),
            tags.small("RustPBX's format; loaded after the hand-written files; a route or trunk with the same name "
                       "replaces the hand-written one. Saved only when the whole configuration loads with it.",
                       class_="help"),
        ]
        if error:
            editor.append(tags.div(*[tags.p(e) for e in errors], class_="field-error", id="f-toml-error", role="alert"))
        problems = GeneratedFiles(self.context.config.path).problems() if not errors else []
        if problems:
            notices = list(notices) + [tags.div(
                tags.p("The configuration does not load as the files are now: a reload would be refused."),
                tags.ul(*[tags.li(p) for p in problems]), class_="notice error", id="load-problems")]
        return tags.div(
            *notices,
            tags.h2("In use"),
            effective_table(self.context, self.kind),
            tags.form(csrf_input(request), tags.input(type="hidden", name="action", value="reload"),
                      tags.button("Reload routes, trunks and ACL from the files", type="submit", id="reload"),
                      method="post", class_="reload"),
            tags.h2("Edit"),
            tags.form(csrf_input(request), tags.input(type="hidden", name="action", value="save"),
                      tags.div(*editor, class_="field" + (" has-error" if error else "")),
                      tags.button("Save and reload", type="submit", id="save"),
                      method="post", id=f"{self.kind}-form"),
        )

    def get(self, request, admin):
        return self.content(request)

    def post(self, request, admin):
        action = form_value(request, "action", "save")
        if action == "reload":
            try:
                result = reload_routing(self.context)
            except ReloadError as e:
                request.setResponseCode(400)
                notice = tags.div(tags.p("Reload refused; the running routes, trunks and ACL rules are unchanged:"),
                                  tags.ul(*[tags.li(p) for p in e.problems]), class_="notice error", id="reload-error")
                d = audit(self.context, admin, "reload.refused", "; ".join(e.problems))
                d.addCallback(lambda _: self.content(request, notices=[notice]))
                return d
            notice = tags.div(f"Reloaded: {result.summary()}.", class_="notice ok", id="reload-notice")
            d = audit(self.context, admin, "reload", result.summary())
            d.addCallback(lambda _: self.content(request, notices=[notice]))
            return d
        text = form_value(request, "toml").replace("\r\n", "\n")
        try:
            result = save_and_reload(self.context, self.kind, text=text)
        except Problems as problems:
            request.setResponseCode(400)
            messages = [m for ms in problems.fields.values() for m in ms] + problems.general
            return self.content(request, text, messages,
                                [tags.div("Not saved: the configuration would not load.", class_="notice error")])
        except ReloadError as e:
            request.setResponseCode(400)
            return self.content(request, text, e.problems,
                                [tags.div("Saved, but the reload was refused.", class_="notice error")])
        notice = tags.div(f"Saved and reloaded: {result.summary()}.", class_="notice ok", id="reload-notice")
        d = audit(self.context, admin, f"{self.kind}.save", result.summary())
        d.addCallback(lambda _: self.content(request, notices=[notice]))
        return d
