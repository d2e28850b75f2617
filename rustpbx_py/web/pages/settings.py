# -*- test-case-name: rustpbx_py.test.test_web_config -*-
"""
Settings > Proxy Settings: the C{[proxy]} keys, each with its value, where
it comes from (this page's settings file, the configuration file, the
default) and whether a change applies at once or at the next start
(L{rustpbx_py.settings}).  A wrong value is shown next to its field with
the configuration loader's own message; nothing is written then.
"""

from __future__ import annotations

from typing import Dict, List, Optional

from twisted.web.template import Tag, tags

from rustpbx_py.generated import Problems
from rustpbx_py.settings import ProxySettings, SettingField, form_text, parse_form_value
from rustpbx_py.web.console import ConsolePage, audit, csrf_input, form_error, form_value

SOURCES = {"settings": "set here", "file": "configuration file", "default": "default"}


def _input(f: SettingField, text: str, error: Optional[str]) -> Tag:
    attrs = {"name": f.key, "id": f"f-{f.key}"}
    if error:
        attrs["aria-invalid"] = "true"
        attrs["aria-describedby"] = f"f-{f.key}-error"
    if f.kind == "list":
        return tags.textarea(text, rows=str(max(2, min(6, text.count("\n") + 2))), **attrs)
    if f.kind in ("bool", "choice"):
        choices = ("true", "false") if f.kind == "bool" else f.choices
        options = [tags.option(c, value=c, **({"selected": "selected"} if c == text else {})) for c in choices]
        if text not in choices:
            options.insert(0, tags.option(text, value=text, selected="selected"))
        return tags.select(*options, **attrs)
    return tags.input(type="text", value=text, inputmode="numeric" if f.kind == "int" else "text", **attrs)


def settings_form(request, settings: ProxySettings, texts: Dict[str, str], errors: Dict[str, List[str]]) -> Tag:
    """The form: one row per key with its badges and error."""
    current = settings.current()
    rows = []
    for f in settings.fields:
        info = current[f.key]
        error = "; ".join(errors.get(f.key, [])) or None
        badges = [tags.span("applies at once" if f.live else "needs a restart", class_="badge " + ("live" if f.live else "restart"))]
        if info["pending"]:
            badges.append(tags.span("waiting for a restart", class_="badge pending"))
        help_text = f"{f.doc} ({SOURCES[info['source']]}"
        if f.kind == "list":
            help_text += "; one per line"
        help_text += ")"
        parts = [
            tags.label(f.key, for_=f"f-{f.key}"),
            _input(f, texts.get(f.key, form_text(f, info["value"])), error),
            tags.div(*badges, class_="badges"),
            tags.small(help_text, class_="help"),
        ]
        if error:
            parts.append(tags.span(error, class_="field-error", id=f"f-{f.key}-error", role="alert"))
        rows.append(tags.div(*parts, class_="field" + (" has-error" if error else ""), id=f"row-{f.key}"))
    return tags.form(
        csrf_input(request),
        *rows,
        tags.button("Save", type="submit", id="save-settings"),
        method="post",
        id="proxy-settings",
        class_="settings",
    )


class SettingsPage(ConsolePage):
    """Settings > Proxy Settings (C{base_path/settings})."""

    nav = "Proxy Settings"
    nav_order = 500
    title = "Settings > Proxy Settings"

    def _header(self, settings: ProxySettings) -> List[Tag]:
        waiting = [k for k, v in settings.current().items() if v["pending"]]
        out = [tags.p(
            "Changes are written to ",
            tags.code(settings.files.file(settings.running, "proxy")),
            " (loaded over [proxy] of ", tags.code(settings.running.path), ", which is never written). "
            "Keys marked \u201capplies at once\u201d take effect for the next call or request; the others at the next start.",
            class_="intro",
        )]
        if waiting:
            out.append(tags.div("Waiting for a restart: " + ", ".join(waiting), class_="notice pending", id="pending-notice"))
        problems = settings.files.problems()
        if problems:
            out.append(tags.div(tags.p("The configuration does not load as the files are now (a restart would fail); "
                                       "saving here rewrites only the settings file:"),
                                tags.ul(*[tags.li(p) for p in problems]), class_="notice error", id="load-problems"))
        return out

    def get(self, request, admin):
        settings = ProxySettings(self.context)
        return tags.div(*self._header(settings), settings_form(request, settings, {}, {}))

    def post(self, request, admin):
        settings = ProxySettings(self.context)
        texts: Dict[str, str] = {}
        values = {}
        for f in settings.fields:
            if f.key.encode() in request.args:
                texts[f.key] = form_value(request, f.key)
                values[f.key] = parse_form_value(f, texts[f.key])
        current = settings.current()
        # Only what the admin changed: an untouched field is not re-saved.
        values = {k: v for k, v in values.items() if v != current[k]["value"] or current[k]["source"] == "settings"}
        try:
            result = settings.save(values)
        except Problems as problems:
            form_error(request, {k: v for k, v in problems.fields.items()} or {"": problems.general})
            notice = [tags.div("Not saved: correct the fields marked below.", class_="notice error", id="error-notice")]
            notice += [tags.p(p, class_="error") for p in problems.general]
            return tags.div(*self._header(settings), *notice, settings_form(request, settings, texts, problems.fields))
        notices = []
        if result.restart:
            notices.append(tags.div("Saved. Needs a restart to take effect: " + ", ".join(result.restart),
                                    class_="notice restart", id="restart-notice"))
        if result.applied:
            notices.append(tags.div("Saved and applied at once: " + ", ".join(result.applied),
                                    class_="notice ok", id="applied-notice"))
        if not notices:
            notices.append(tags.div("No change.", class_="notice", id="nochange-notice"))
        now = settings.current()
        detail = "; ".join(f"{k}={now[k]['value']!r}" for k in values)
        d = audit(self.context, admin, "settings.proxy", detail or "no change")
        d.addCallback(lambda _: tags.div(*self._header(settings), *notices, settings_form(request, settings, {}, {})))
        return d
