"""
Where the JavaScript clients live for the interop tests: JsSIP and its
helpers are npm packages installed by C{make test} into
C{interop/js/node_modules} (from the committed package-lock.json).
"""

from __future__ import annotations

import os
import shutil

JS_DIR = os.path.join(os.path.dirname(__file__), "js")
NODE_MODULES = os.path.join(JS_DIR, "node_modules")


def require_js() -> str:
    """The node binary, or C{SkipTest} when node or the npm packages are
    missing (C{make test} installs the packages when npm is there)."""
    from twisted.trial.unittest import SkipTest

    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        raise SkipTest("node is not installed (.ci/run installs nodejs and npm)")
    if not os.path.exists(os.path.join(NODE_MODULES, "jssip", "package.json")):
        raise SkipTest(f"JsSIP is not installed in {NODE_MODULES} (make test runs npm ci there)")
    return node


def jssip_bundle(directory: str) -> str:
    """
    JsSIP for a browser: the npm package ships CommonJS only, so bundle
    it with esbuild (an npm dependency) into one script defining the
    global C{JsSIP}; the path of the bundle in C{directory}.
    """
    import subprocess

    out = os.path.join(directory, "jssip.js")
    esbuild = os.path.join(NODE_MODULES, ".bin", "esbuild")
    subprocess.run(
        [esbuild, os.path.join(NODE_MODULES, "jssip", "lib", "JsSIP.js"), "--bundle", "--format=iife",
         "--global-name=JsSIP", "--log-level=warning", f"--outfile={out}"],
        check=True,
        timeout=60,
    )
    return out
