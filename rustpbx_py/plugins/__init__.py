"""
Plugin package for proxy modules and addons.

Built-in modules live here as plugin modules; a third-party package adds its
own by installing a module (without an C{__init__.py}) into a
C{rustpbx_py/plugins} directory anywhere on C{sys.path}.
"""

from twisted.plugin import pluginPackagePaths

__path__.extend(pluginPackagePaths(__name__))
__all__: list = []
