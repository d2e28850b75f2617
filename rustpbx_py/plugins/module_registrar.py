# -*- test-case-name: rustpbx_py.test.test_registrar -*-
"""
The built-in C{registrar} proxy module, found by
C{getPlugins(IProxyModuleFactory, rustpbx_py.plugins)}.

Importing this file must stay cheap (every plugin module is imported to
list plugins), so the module itself is imported only when built.
"""

from twisted.plugin import IPlugin
from zope.interface import implementer

from rustpbx_py.interfaces import IProxyModuleFactory


@implementer(IPlugin, IProxyModuleFactory)
class RegistrarModuleFactory:
    """Builds L{rustpbx_py.modules.registrar.RegistrarModule}; its
    C{registry} is the service's locator."""

    name = "registrar"

    def build(self, context):
        from rustpbx_py.modules.registrar import RegistrarModule

        return RegistrarModule.from_context(context)


registrar = RegistrarModuleFactory()
