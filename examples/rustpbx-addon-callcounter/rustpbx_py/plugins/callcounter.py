"""
Drop-in plugin of the example addon: found by rustpbx_py's
C{getPlugins(IAddonFactory, rustpbx_py.plugins)} because this directory is
on rustpbx_py.plugins' C{__path__} (L{twisted.plugin.pluginPackagePaths}).
Keep it small: every plugin module is imported when plugins are listed.
"""

from twisted.plugin import IPlugin
from zope.interface import implementer

from rustpbx_py.interfaces import IAddonFactory


@implementer(IPlugin, IAddonFactory)
class CallCounterFactory:
    name = "callcounter"

    def build(self, context):
        from rustpbx_addon_callcounter import CallCounter

        return CallCounter(context)


callcounter = CallCounterFactory()
