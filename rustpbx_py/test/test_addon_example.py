"""
The example third-party addon in C{examples/} installs on its own, into a
path of its own, and the PBX finds and starts it by name without any change
to rustpbx_py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

from twisted.trial.unittest import SkipTest, SynchronousTestCase

import rustpbx_py

REPO = os.path.dirname(os.path.dirname(os.path.abspath(rustpbx_py.__file__)))
EXAMPLE = os.path.join(REPO, "examples", "rustpbx-addon-callcounter")

PROBE = textwrap.dedent(
    """
    import sys
    from twisted.internet import defer, task
    from rustpbx_py.config import default_config
    from rustpbx_py.server import PbxService, check_plugins

    @defer.inlineCallbacks
    def main(reactor, db):
        config = default_config(addr="127.0.0.1", udp_port=0, modules=[], addons=["callcounter"])
        config.database_url = "sqlite:///" + db
        print("problems:", check_plugins(config))
        service = PbxService(config, reactor)
        service.startService()
        yield service.ready
        addon = service.addons[0]
        print("addon:", type(addon).__module__, addon.id, "running" if addon.running else "idle")
        yield service.stopService()
        print("after stop:", "running" if addon.running else "idle")

    task.react(main, sys.argv[1:])
    """
)


class ExampleAddonTests(SynchronousTestCase):
    def test_found_and_started(self):
        """pip installs the example into a temporary target; with that target
        on PYTHONPATH, addons = ["callcounter"] passes the plugin check, and
        the service builds, starts and stops the addon."""
        if not os.path.isdir(EXAMPLE):
            raise SkipTest("examples/ is not part of an installed package")
        target = os.path.abspath(self.mktemp())
        workdir = os.path.abspath(self.mktemp())
        # Build from a copy: setuptools writes build/ and egg-info next to
        # the sources.
        source = os.path.join(workdir, "src")
        shutil.copytree(EXAMPLE, source)
        build = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", target, source],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=workdir,
        )
        self.assertEqual(build.returncode, 0, build.stderr[-2000:])
        self.assertTrue(os.path.exists(os.path.join(target, "rustpbx_py", "plugins", "callcounter.py")))
        self.assertFalse(os.path.exists(os.path.join(target, "rustpbx_py", "__init__.py")))
        self.assertFalse(os.path.exists(os.path.join(REPO, "rustpbx_py", "plugins", "callcounter.py")))
        env = dict(os.environ, PYTHONPATH=target + os.pathsep + REPO)
        db = os.path.abspath(self.mktemp()) + ".sqlite3"
        probe = subprocess.run(
            [sys.executable, "-c", PROBE, db], capture_output=True, text=True, timeout=120, env=env
        )
        self.assertEqual(probe.returncode, 0, probe.stdout + probe.stderr)
        self.assertIn("problems: []", probe.stdout)
        self.assertIn("addon: rustpbx_addon_callcounter callcounter running", probe.stdout)
        self.assertIn("after stop: idle", probe.stdout)

    def test_missing_without_it(self):
        """Without the example installed, the same name stops start-up."""
        from rustpbx_py.config import default_config
        from rustpbx_py.server import check_plugins

        (problem,) = check_plugins(default_config(addons=["callcounter"]))
        self.assertIn("'callcounter'", problem)
