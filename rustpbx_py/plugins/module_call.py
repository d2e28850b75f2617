# -*- test-case-name: rustpbx_py.test.test_b2bua -*-
"""
The built-in C{call} proxy module (the B2BUA), found by
C{getPlugins(IProxyModuleFactory, rustpbx_py.plugins)}.
"""

from twisted.plugin import IPlugin
from zope.interface import implementer

from rustpbx_py.interfaces import IProxyModuleFactory


@implementer(IPlugin, IProxyModuleFactory)
class CallModuleFactory:
    """Builds L{rustpbx_py.modules.call.CallModule}."""

    name = "call"

    def build(self, context):
        from rustpbx_py.modules.call import CallModule

        return CallModule(context)


call = CallModuleFactory()
