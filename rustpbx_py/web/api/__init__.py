# -*- test-case-name: rustpbx_py.test.test_web_api -*-
"""
The built-in JSON API resources, registered in one place: each area adds
its line to L{install_api}.
"""

from __future__ import annotations


def install_api(site, context) -> None:
    """Mount every built-in API resource on C{site} (under C{/api/v1})."""
    from rustpbx_py.web.api.health import HealthApi, OpenApiDocument

    site.add_api("health", HealthApi(context, site))
    site.add_api("openapi.json", OpenApiDocument(context, site))

    from rustpbx_py.web.api.live import CallsApi, RecordsApi, RecordsCsvApi, RegistrationsApi, TransactionsApi

    site.add_api("registrations", RegistrationsApi(context, site))
    site.add_api("calls", CallsApi(context, site))
    site.add_api("transactions", TransactionsApi(context, site))
    site.add_api("records", RecordsApi(context, site))
    site.add_api("records.csv", RecordsCsvApi(context, site))

    from rustpbx_py.web.api.config import install_config_api

    install_config_api(site, context)
