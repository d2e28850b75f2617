# -*- test-case-name: rustpbx_py.test.test_monitor -*-
"""
The shipped C{monitor} addon (Prometheus metrics, health, live snapshot and
event feed), found by C{getPlugins(IAddonFactory, rustpbx_py.plugins)}
exactly like a third-party addon.  Nothing heavy is imported here: every
plugin module is imported whenever plugins are listed.
"""

from twisted.plugin import IPlugin
from zope.interface import implementer

from rustpbx_py.interfaces import IAddonFactory


@implementer(IPlugin, IAddonFactory)
class MonitorAddonFactory:
    """Builds L{rustpbx_py.addons.monitor.addon.MonitorAddon}."""

    name = "monitor"

    @property
    def config_tables(self) -> dict:
        """RustPBX's C{[metrics]} table and our C{[monitor]} table."""
        from rustpbx_py.addons.monitor.config import MetricsConfig, MonitorConfig

        return {"metrics": MetricsConfig, "monitor": MonitorConfig}

    def build(self, context):
        from rustpbx_py.addons.monitor.addon import MonitorAddon

        return MonitorAddon(context)


monitor = MonitorAddonFactory()
