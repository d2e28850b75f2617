# -*- test-case-name: rustpbx_py.test.test_auth -*-
"""
Plugin: the C{auth} proxy module (digest authentication against the
configured user backends).  Found by C{getPlugins(IProxyModuleFactory,
rustpbx_py.plugins)}.
"""

from twisted.plugin import IPlugin
from zope.interface import implementer

from rustpbx_py.interfaces import IProxyModuleFactory


@implementer(IPlugin, IProxyModuleFactory)
class AuthModuleFactory:
    """
    Builds L{rustpbx_py.modules.auth.AuthModule} with the context's user
    chain (or one built from C{user_backends} when the context has none).
    """

    name = "auth"

    def build(self, context):
        from rustpbx_py.modules.auth import AuthModule

        proxy = getattr(context.config, "proxy", context.config)
        users = getattr(context, "users", None)
        if users is None:
            from rustpbx_py.users import build_user_backends

            users = build_user_backends(context.config, getattr(context, "store", None), context.reactor)
        core = getattr(context, "core", None)
        to_self = getattr(core, "addressed_to_self", None)
        return AuthModule(proxy, users, context.reactor, to_self=to_self, core=core)


auth = AuthModuleFactory()
