"""
setuptools glue for the drop-in plugin module: it is installed as
C{rustpbx_py/plugins/callcounter.py} under the installation root, next to
rustpbx_py's own plugins, without shipping any C{__init__.py} there.
"""

import os

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithDropIn(build_py):
    def run(self):
        super().run()
        target = self.get_module_outfile(self.build_lib, ["rustpbx_py", "plugins"], "callcounter")
        self.mkpath(os.path.dirname(target))
        self.copy_file("rustpbx_py/plugins/callcounter.py", target)


setup(cmdclass={"build_py": BuildWithDropIn})
