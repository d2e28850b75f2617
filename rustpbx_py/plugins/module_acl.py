# -*- test-case-name: rustpbx_py.test.test_acl -*-
"""
Plugin: the C{acl} proxy module (source address, User-Agent and rate
checks).  Found by C{getPlugins(IProxyModuleFactory, rustpbx_py.plugins)}.
"""

from twisted.plugin import IPlugin
from zope.interface import implementer

from rustpbx_py.interfaces import IProxyModuleFactory


@implementer(IPlugin, IProxyModuleFactory)
class AclModuleFactory:
    """Builds L{rustpbx_py.modules.acl.AclModule} from the C{[proxy]} section."""

    name = "acl"

    def build(self, context):
        # Imported here so that plugin discovery stays cheap.
        from rustpbx_py.modules.acl import AclModule

        proxy = getattr(context.config, "proxy", context.config)
        return AclModule(proxy, context.reactor, getattr(context, "trunks", None), getattr(context, "core", None))


acl = AclModuleFactory()
