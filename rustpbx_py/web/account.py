# -*- test-case-name: rustpbx_py.test.test_web_login -*-
"""
The "Account" page: an administrator changes its own password (the
current one asked again, so a browser left open is not enough).  Every
other session of the administrator ends; this one goes on with a new
session token.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.web.template import tags

from rustpbx_py.web.accounts import MIN_PASSWORD_LENGTH, new_password_errors
from rustpbx_py.web.console import ConsolePage, FieldErrors, audit, csrf_input, field, form_error, form_value


class AccountPage(ConsolePage):
    nav = "Account"
    nav_order = 950
    title = "Account"

    def get(self, request, admin):
        return self.form(request, admin, FieldErrors())

    def form(self, request, admin, errors, done: bool = False):
        parts = [tags.p("Logged in as ", tags.strong(admin.username), ".")]
        if done:
            parts.append(tags.p("Password changed; your other sessions were closed.", class_="ok", role="status"))
        parts.append(tags.form(
            csrf_input(request),
            field("Current password", "current", "", errors, type="password", autocomplete="current-password"),
            field("New password", "new", "", errors, type="password", autocomplete="new-password",
                  help=f"at least {MIN_PASSWORD_LENGTH} characters"),
            field("New password again", "again", "", errors, type="password", autocomplete="new-password"),
            tags.button("Change password", type="submit"),
            method="post", id="change-password",
        ))
        return tags.div(*parts)

    @defer.inlineCallbacks
    def post(self, request, admin):
        accounts = self.site.accounts
        current, new, again = form_value(request, "current"), form_value(request, "new"), form_value(request, "again")
        errors = FieldErrors()
        new_password_errors(errors, new, again, field="new")
        found = yield accounts.authenticate(admin.username, current)
        if found is None:
            errors["current"] = "wrong password"
        if errors:
            form_error(request, errors)
            return self.form(request, admin, errors)
        yield accounts.set_admin(admin.username, new)
        token, csrf = yield accounts.open_session(found[0], admin.source)
        self.site.session_cookie(request, token)
        admin.csrf_token = csrf  # the form below carries the new session's token
        yield audit(self.context, admin, "account.password", "changed own password")
        return self.form(request, admin, FieldErrors(), done=True)
