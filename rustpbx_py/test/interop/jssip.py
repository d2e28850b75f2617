"""
Where the JavaScript clients live for the interop tests: JsSIP and its
helpers are npm packages installed by C{make test} into
C{interop/js/node_modules} (from the committed package-lock.json).
"""

from __future__ import annotations

import os
import shutil
from typing import Optional

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


def serve_webrtc_page(testcase, pbx, page: str, query: str = "", tone: Optional[int] = None):
    """
    Serve C{JS_DIR}'s C{page}, the script the WebRTC pages share and the
    JsSIP bundle over HTTP on loopback
    for Chromium (stopped at the test's end).  Fires with the page's URL,
    which makes it alice over C{pbx}'s WSS (C{query} appended), and the
    extra Chromium arguments: with C{tone} (Hz), a fake microphone
    playing it.
    """
    from twisted.internet import reactor
    from twisted.internet.defer import ensureDeferred
    from twisted.internet.threads import deferToThread
    from twisted.web.server import Site
    from twisted.web.static import File

    from rustpbx_py.test.interop.phones import RATE, USERS, write_tone

    async def serve():
        www = os.path.abspath(testcase.mktemp())
        os.makedirs(www)
        for name in (page, "webrtc_phone.js"):
            shutil.copy(os.path.join(JS_DIR, name), www)
        await deferToThread(jssip_bundle, www)
        args = []
        if tone is not None:
            microphone = write_tone(os.path.join(www, "tone.wav"), tone, seconds=30.0, rate=RATE)
            args.append(f"--use-file-for-fake-audio-capture={microphone}")
        web = reactor.listenTCP(0, Site(File(www)), interface="127.0.0.1")
        testcase.addCleanup(web.stopListening)
        url = (f"http://127.0.0.1:{web.getHost().port}/{page}"
               f"?url=wss://127.0.0.1:{pbx.ports['WSS']}/ws&user=alice&password={USERS['alice']}{query}")
        return url, args

    return ensureDeferred(serve())
