# -*- test-case-name: rustpbx_py.test.test_web_console -*-
"""
The built-in console pages, registered in one place: each area adds its
line to L{install_pages}.
"""

from __future__ import annotations


def install_pages(site, context) -> None:
    """Mount every built-in console page on C{site} (under C{base_path})."""
    from rustpbx_py.web.audit import AuditPage

    site.add_page("audit", AuditPage(context, site))
    from rustpbx_py.web.account import AccountPage

    site.add_page("account", AccountPage(context, site))
    from rustpbx_py.web.admins import AdministratorsPage

    site.add_page("admins", AdministratorsPage(context, site))

    from rustpbx_py.web.pages.live import CallsPage, DashboardPage, RegistrationsPage
    from rustpbx_py.web.pages.records import RecordsPage

    site.add_page("dashboard", DashboardPage(context, site))
    site.add_page("registrations", RegistrationsPage(context, site))
    site.add_page("calls", CallsPage(context, site))
    site.add_page("records", RecordsPage(context, site))

    from rustpbx_py.web.pages.config import install_config_pages

    install_config_pages(site, context)
