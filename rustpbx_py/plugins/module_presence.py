# -*- test-case-name: rustpbx_py.test.test_presence -*-
"""
The built-in C{presence} proxy module (SUBSCRIBE/PUBLISH for presence and
message-summary), found by C{getPlugins(IProxyModuleFactory,
rustpbx_py.plugins)}; the module itself is imported only when built.
"""

from twisted.plugin import IPlugin
from zope.interface import implementer

from rustpbx_py.interfaces import IProxyModuleFactory


@implementer(IPlugin, IProxyModuleFactory)
class PresenceModuleFactory:
    """Builds L{rustpbx_py.modules.presence.PresenceModule}."""

    name = "presence"

    def build(self, context):
        from rustpbx_py.modules.presence import PresenceModule

        return PresenceModule(context)


presence = PresenceModuleFactory()
