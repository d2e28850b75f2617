# -*- test-case-name: rustpbx_py.test.test_web_console -*-
"""
The "Audit log" page: who changed what, when, from where (the rows
L{rustpbx_py.web.console.audit} writes), newest first, paged.
"""

from __future__ import annotations

import time

from twisted.internet import defer
from twisted.web.template import tags

from rustpbx_py.web.console import ConsolePage, form_value, table

PAGE_SIZE = 50


def when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


class AuditPage(ConsolePage):
    nav = "Audit log"
    nav_order = 900
    title = "Audit log"

    @defer.inlineCallbacks
    def get(self, request, admin):
        try:
            page = max(int(form_value(request, "page", "1")), 1)
        except ValueError:
            page = 1
        who = form_value(request, "who").strip()
        where, params = "", []
        if who:
            where, params = " WHERE who = ?", [who]
        rows = yield self.context.store.run_query(
            "SELECT at, who, source, action, detail FROM console_audit" + where + " ORDER BY id DESC LIMIT ? OFFSET ?",
            (*params, PAGE_SIZE + 1, (page - 1) * PAGE_SIZE),
        )
        more = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        content = [
            tags.form(
                tags.label("Administrator ", tags.input(type="text", name="who", value=who)),
                tags.button("Filter", type="submit"),
                method="get", class_="filter",
            ),
            table(["When", "Who", "From", "What", "Detail"],
                  [(when(r[0]), r[1], r[2] or "", r[3], r[4] or "") for r in rows],
                  empty="No changes recorded yet."),
        ]
        pager = []
        query = ("&who=" + who) if who else ""
        if page > 1:
            pager.append(tags.a("Newer", href=f"?page={page - 1}{query}"))
        if more:
            pager.append(tags.a("Older", href=f"?page={page + 1}{query}"))
        if pager:
            content.append(tags.nav(*pager, class_="pager"))
        return tags.div(*content)
