# -*- test-case-name: rustpbx_py.test.test_web_config -*-
"""
The Extensions page: the database user backend's accounts
(L{rustpbx_py.extensions}) -- search, add, edit, disable, delete, CSV
import (all rows or none, problems by line) and export.

C{base_path/extensions} lists (C{?q=} searches, C{?page=}); C{.../ID}
edits one; C{.../export.csv} downloads the CSV.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from twisted.internet import defer
from twisted.web.template import Tag, tags

from rustpbx_py.extensions import FIELDS, ExtensionError, Extensions, ImportProblems
from rustpbx_py.web.console import (
    ConsolePage,
    PageError,
    audit,
    csrf_input,
    field,
    form_value,
    redirect,
    table,
)

PAGE_SIZE = 50
LABELS = {
    "username": "Username (extension)", "realm": "Realm (empty = every realm)", "password": "Password",
    "enabled": "Enabled", "display_name": "Display name", "email": "E-mail", "phone": "Phone", "note": "Note",
}


def _form_fields(values: Dict[str, Any], errors: Dict[str, str], new: bool) -> list:
    out = []
    for name in FIELDS:
        if name == "enabled":
            attrs = {"checked": "checked"} if values.get("enabled", True) not in (False, "false", "") else {}
            out.append(tags.div(tags.label(tags.input(type="checkbox", name="enabled", value="true", id="f-enabled", **attrs),
                                           " Enabled", for_="f-enabled"), class_="field check"))
            continue
        if name == "password":
            out.append(field(LABELS[name], name, "", errors, type="password", autocomplete="new-password",
                             help="" if new else "leave empty to keep the current password"))
            continue
        value = values.get(name)
        out.append(field(LABELS[name], name, "" if value is None else str(value), errors))
    return out


class ExtensionsPage(ConsolePage):
    """C{base_path/extensions}."""

    nav = "Extensions"
    nav_order = 300
    title = "Extensions"

    def extensions(self) -> Extensions:
        try:
            ext = Extensions.from_context(self.context)
        except ExtensionError as e:
            raise PageError(409, e.message)
        if ext is None:
            raise PageError(409, 'No database user backend is configured: add [[proxy.user_backends]] with type = "database" '
                                 "to the configuration to manage extensions here.")
        return ext

    def _url(self, path: str = "") -> str:
        return self.site.page_url("extensions" + ("/" + path if path else ""))

    def _target(self, request) -> Optional[str]:
        path = [p.decode("utf-8", "replace") for p in request.postpath if p]
        return path[0] if path else None

    # -- GET ------------------------------------------------------------------------------

    def get(self, request, admin):
        ext = self.extensions()
        target = self._target(request)
        if target == "export.csv":
            return self.export(request, ext)
        if target is not None:
            return self.edit_page(request, ext, target)
        return self.list_page(request, ext)

    @defer.inlineCallbacks
    def export(self, request, ext: Extensions):
        text = yield ext.export_csv(form_value(request, "q").strip() or None)
        request.setHeader(b"content-type", b"text/csv; charset=utf-8")
        request.setHeader(b"content-disposition", b'attachment; filename="extensions.csv"')
        request.setHeader(b"cache-control", b"no-store")
        request.write(text.encode("utf-8"))
        return None

    @defer.inlineCallbacks
    def list_page(self, request, ext: Extensions, notices=(), add_values=None, add_errors=None, import_errors=None):
        q = form_value(request, "q").strip()
        try:
            page = max(1, int(form_value(request, "page", "1")))
        except ValueError:
            page = 1
        total, items = yield ext.list(q or None, (page - 1) * PAGE_SIZE, PAGE_SIZE)
        rows = []
        for item in items:
            toggle = "disable" if item["enabled"] else "enable"
            actions = tags.div(
                tags.a("Edit", href=self._url(str(item["id"]))),
                tags.form(csrf_input(request), tags.input(type="hidden", name="action", value=toggle),
                          tags.button(toggle.capitalize(), type="submit"), method="post", action=self._url(str(item["id"])),
                          class_="inline"),
                tags.form(csrf_input(request), tags.input(type="hidden", name="action", value="delete"),
                          tags.button("Delete", type="submit", class_="danger"), method="post",
                          action=self._url(str(item["id"])), class_="inline",
                          **{"data-confirm": "Delete this extension?"}),
                class_="actions",
            )
            rows.append((item["username"], item["realm"] or "(any)", "yes" if item["enabled"] else "no",
                         item["display_name"] or "", item["email"] or "", item["phone"] or "", actions))
        query = f"&q={q}" if q else ""
        pager = []
        if page > 1:
            pager.append(tags.a("Previous", href=f"?page={page - 1}{query}"))
        if page * PAGE_SIZE < total:
            pager.append(tags.a("Next", href=f"?page={page + 1}{query}"))
        import_block = [
            tags.label("CSV file (header row: username, password, realm, enabled, display_name, email, phone, note)",
                       for_="f-csv"),
            tags.input(type="file", name="csv", id="f-csv", accept=".csv,text/csv"),
        ]
        if import_errors:
            import_block.append(tags.div(tags.p("Nothing imported:"), tags.ul(*[tags.li(str(e)) for e in import_errors]),
                                         class_="field-error", id="f-csv-error", role="alert"))
        return tags.div(
            *notices,
            tags.form(tags.label("Search ", tags.input(type="search", name="q", value=q, id="f-q")),
                      tags.button("Search", type="submit"), method="get", class_="filter"),
            tags.p(f"{total} extension{'s' if total != 1 else ''}", class_="count"),
            table(["Username", "Realm", "Enabled", "Name", "E-mail", "Phone", ""], rows, "No extensions."),
            tags.nav(*pager, class_="pager") if pager else "",
            tags.p(tags.a("Export CSV", href=self._url("export.csv") + (f"?q={q}" if q else ""), id="export")),
            tags.h2("Add an extension"),
            tags.form(csrf_input(request), tags.input(type="hidden", name="action", value="add"),
                      *_form_fields(add_values or {}, add_errors or {}, True),
                      tags.button("Add", type="submit", id="add"), method="post", action=self._url(), id="add-form"),
            tags.h2("Import CSV"),
            tags.form(csrf_input(request), tags.input(type="hidden", name="action", value="import"),
                      tags.div(*import_block, class_="field" + (" has-error" if import_errors else "")),
                      tags.button("Import", type="submit", id="import"), method="post", action=self._url(),
                      enctype="multipart/form-data", id="import-form"),
        )

    @defer.inlineCallbacks
    def edit_page(self, request, ext: Extensions, target: str, values=None, errors=None):
        try:
            item = yield ext.get(int(target))
        except (ValueError, ExtensionError):
            raise PageError(404, "There is no such extension.")
        request.title = f"Extension {item['username']}"
        return tags.div(
            tags.form(csrf_input(request), tags.input(type="hidden", name="action", value="save"),
                      *_form_fields(values or item, errors or {}, False),
                      tags.button("Save", type="submit", id="save"), method="post", action=self._url(str(item["id"])),
                      id="edit-form"),
            tags.p(tags.a("Back to the list", href=self._url())),
        )

    # -- POST -----------------------------------------------------------------------------

    def _values(self, request, new: bool) -> Dict[str, Any]:
        values: Dict[str, Any] = {}
        for name in FIELDS:
            if name == "enabled":
                values["enabled"] = form_value(request, "enabled") == "true"
            elif name == "password":
                password = form_value(request, "password")
                if password or new:
                    values["password"] = password
            elif name.encode() in request.args:
                values[name] = form_value(request, name)
        return values

    @defer.inlineCallbacks
    def post(self, request, admin):
        ext = self.extensions()
        action = form_value(request, "action")
        target = self._target(request)
        if target is None and action == "add":
            values = self._values(request, True)
            try:
                item = yield ext.add(values)
            except ExtensionError as e:
                request.setResponseCode(400 if e.code == 404 else e.code)
                shown = {k: v for k, v in values.items() if k != "password"}
                return (yield self.list_page(request, ext, add_values=shown, add_errors={e.field or "username": e.message}))
            yield audit(self.context, admin, "extension.create", f"{item['username']} (id {item['id']})")
            redirect(request, self._url() + "?added=" + str(item["id"]))
            return None
        if target is None and action == "import":
            raw = (request.args.get(b"csv") or [b""])[0]
            try:
                text = raw.decode("utf-8-sig")
            except UnicodeDecodeError:
                request.setResponseCode(400)
                return (yield self.list_page(request, ext, import_errors=["the file is not UTF-8 text"]))
            try:
                result = yield ext.import_csv(text)
            except ImportProblems as e:
                request.setResponseCode(400)
                return (yield self.list_page(request, ext, import_errors=e.errors))
            yield audit(self.context, admin, "extensions.import", f"{result.added} added, {result.updated} updated")
            notice = tags.div(f"Imported: {result.added} added, {result.updated} updated.", class_="notice ok", id="import-notice")
            return (yield self.list_page(request, ext, notices=[notice]))
        if target is None:
            raise PageError(400, "Unknown action.")
        try:
            ext_id = int(target)
        except ValueError:
            raise PageError(404, "There is no such extension.")
        try:
            if action in ("disable", "enable"):
                item = yield ext.set_enabled(ext_id, action == "enable")
                yield audit(self.context, admin, f"extension.{action}", f"{item['username']} (id {ext_id})")
            elif action == "delete":
                item = yield ext.delete(ext_id)
                yield audit(self.context, admin, "extension.delete", f"{item['username']} (id {ext_id})")
            elif action == "save":
                values = self._values(request, False)
                try:
                    item = yield ext.update(ext_id, values)
                except ExtensionError as e:
                    if e.code == 404:
                        raise
                    request.setResponseCode(400)
                    shown = {k: v for k, v in values.items() if k != "password"}
                    return (yield self.edit_page(request, ext, target, shown, {e.field or "username": e.message}))
                changed = ", ".join(sorted(values))
                yield audit(self.context, admin, "extension.update", f"{item['username']} (id {ext_id}): {changed}")
            else:
                raise PageError(400, "Unknown action.")
        except ExtensionError as e:
            raise PageError(e.code, e.message)
        redirect(request, self._url())
        return None
