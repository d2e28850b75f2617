# -*- test-case-name: rustpbx_py.test.test_web_admins -*-
"""
The "Administrators" page: who may log in to the console.  The first
administrator comes from C{python -m rustpbx_py create-admin} on the
server; the others are added here, have their passwords set, are
disabled, enabled again or deleted.

An administrator's own account is changed on the "Account" page (which
asks for the current password), never here, and the last enabled
administrator can be neither disabled nor deleted, so the console cannot
lock everyone out.  Disabling, deleting or setting a password ends the
administrator's sessions.  Every change goes to the audit log.
"""

from __future__ import annotations

from urllib.parse import quote

from twisted.internet import defer
from twisted.web.template import tags

from rustpbx_py.web.accounts import (
    MIN_PASSWORD_LENGTH,
    AccountError,
    check_password,
    check_username,
    new_password_errors,
)
from rustpbx_py.web.audit import when
from rustpbx_py.web.console import (
    ConsolePage,
    FieldErrors,
    PageError,
    audit,
    csrf_input,
    field,
    form_error,
    form_value,
    redirect,
    table,
)


class AdministratorsPage(ConsolePage):
    nav = "Administrators"
    nav_order = 940
    title = "Administrators"

    @defer.inlineCallbacks
    def get(self, request, admin):
        content = yield self.page(request, admin, FieldErrors(), {})
        return content

    @defer.inlineCallbacks
    def page(self, request, admin, errors: FieldErrors, values: dict):
        admins = yield self.site.accounts.list_admins()
        notice = form_value(request, "done") if request.method != b"POST" else ""
        parts = []
        if notice:
            parts.append(tags.p(notice, class_="ok", role="status"))
        parts.append(table(
            ["Administrator", "Enabled", "Created", "Last login", ""],
            [(a["username"], "yes" if a["enabled"] else "no", when(a["created_at"]),
              when(a["last_login_at"]) if a["last_login_at"] else "never", self._actions(request, admin, a))
             for a in admins],
            empty="No administrator yet.",
        ))
        parts.append(tags.h2("Add an administrator"))
        parts.append(tags.form(
            csrf_input(request),
            tags.input(type="hidden", name="action", value="add"),
            field("User name", "username", values.get("username", ""), errors, autocomplete="off"),
            field("Password", "password", "", errors, type="password", autocomplete="new-password",
                  help=f"at least {MIN_PASSWORD_LENGTH} characters"),
            field("Password again", "again", "", errors, type="password", autocomplete="new-password"),
            tags.button("Add administrator", type="submit"),
            method="post", id="add-admin",
        ))
        parts.append(tags.p("Your own password is changed on the Account page. The last enabled administrator "
                            "cannot be disabled or deleted.", class_="help"))
        return tags.div(*parts)

    def _actions(self, request, admin, row: dict):
        if row["username"] == admin.username:
            return tags.a("Account page", href=self.site.page_url("account"))
        name = row["username"]

        def button(action: str, label: str, **extra):
            return tags.form(csrf_input(request), tags.input(type="hidden", name="action", value=action),
                             tags.input(type="hidden", name="username", value=name),
                             tags.button(label, type="submit", **({"class": "danger"} if action == "delete" else {})),
                             method="post", action=self.site.page_url("admins"), class_="inline", **extra)

        password = tags.form(
            csrf_input(request), tags.input(type="hidden", name="action", value="password"),
            tags.input(type="hidden", name="username", value=name),
            tags.input(type="password", name="password", placeholder="new password", autocomplete="new-password",
                       **{"aria-label": f"new password for {name}"}),
            tags.button("Set password", type="submit"),
            method="post", action=self.site.page_url("admins"), class_="inline",
        )
        toggle = button("disable", "Disable") if row["enabled"] else button("enable", "Enable")
        delete = button("delete", "Delete", **{"data-confirm": f"Delete administrator {name}?"})
        return tags.div(password, toggle, delete, class_="actions")

    @defer.inlineCallbacks
    def post(self, request, admin):
        accounts = self.site.accounts
        action = form_value(request, "action")
        username = form_value(request, "username").strip()
        if action == "add":
            errors = FieldErrors()
            password, again = form_value(request, "password"), form_value(request, "again")
            try:
                username = check_username(username)
            except AccountError as e:
                errors["username"] = str(e)
            else:
                if any(a["username"] == username for a in (yield accounts.list_admins())):
                    errors["username"] = f"{username} is already an administrator"
            new_password_errors(errors, password, again)
            if errors:
                form_error(request, errors)
                content = yield self.page(request, admin, errors, {"username": username})
                return content
            yield accounts.set_admin(username, password)
            yield audit(self.context, admin, "admin.create", username)
            return self._done(request, f"Added administrator {username}.")
        if action not in ("password", "disable", "enable", "delete"):
            raise PageError(400, "Unknown action.")
        if username == admin.username:
            raise PageError(400, "Change your own account on the Account page.")
        try:
            if action == "password":
                check_password(form_value(request, "password"))
                if not any(a["username"] == username for a in (yield accounts.list_admins())):
                    raise AccountError(f"no administrator is called {username!r}")
                yield accounts.set_admin(username, form_value(request, "password"), enable=False)
                text = f"Password of {username} set; its sessions were closed."
            elif action == "delete":
                yield accounts.delete_admin(username)
                text = f"Deleted administrator {username}."
            else:
                yield accounts.set_enabled(username, action == "enable")
                text = f"{'Enabled' if action == 'enable' else 'Disabled'} administrator {username}."
        except AccountError as e:
            raise PageError(400, f"{username}: {e}")
        yield audit(self.context, admin, "admin." + action, username)
        return self._done(request, text)

    def _done(self, request, text: str) -> None:
        redirect(request, self.site.page_url("admins") + "?done=" + quote(text))
        return None
