# -*- test-case-name: rustpbx_py.test.test_web_config -*-
"""The configuration pages (Proxy Settings, Extensions, Routes, Trunks,
ACL), mounted by L{install_config_pages} from
L{rustpbx_py.web.pages.install_pages}."""

from __future__ import annotations


def install_config_pages(site, context) -> None:
    from rustpbx_py.web.pages.extensions import ExtensionsPage
    from rustpbx_py.web.pages.routing import RoutingPage
    from rustpbx_py.web.pages.settings import SettingsPage

    site.add_page("settings", SettingsPage(context, site))
    site.add_page("extensions", ExtensionsPage(context, site))
    for order, kind in enumerate(("routes", "trunks", "acl")):
        site.add_page(kind, RoutingPage(context, site, kind, 400 + order))
