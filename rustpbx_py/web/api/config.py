# -*- test-case-name: rustpbx_py.test.test_web_config -*-
"""The configuration resources (C{settings}, C{extensions}, C{routes},
C{trunks}, C{acl}, C{reload}), mounted by L{install_config_api} from
L{rustpbx_py.web.api.install_api}."""

from __future__ import annotations


def install_config_api(site, context) -> None:
    from rustpbx_py.web.api.extensions import ExtensionsApi
    from rustpbx_py.web.api.reload import ReloadApi, RoutingApi
    from rustpbx_py.web.api.settings import SettingsApi

    site.add_api("settings", SettingsApi(context, site))
    site.add_api("extensions", ExtensionsApi(context, site))
    site.add_api("reload", ReloadApi(context, site))
    for kind in ("routes", "trunks", "acl"):
        site.add_api(kind, RoutingApi(context, site, kind))
