"""
Chromium (headless, driven by Selenium) running JsSIP on a page served
over http://127.0.0.1 by a twisted.web static server: two password users
register over wss:// (wss_port, default ws_allowed_origins: a page from the
local machine may connect) and one calls the other with Chromium's fake
audio device; the callee answers and the caller hangs up.
"""

from __future__ import annotations

import os
import shutil
import time

from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase

from rustpbx_py.test.interop.jssip import JS_DIR, jssip_bundle, require_js
from rustpbx_py.test.interop.support import start_pbx_toml
from rustpbx_py.test.interop.test_jssip_node import PBX
from rustpbx_py.test.tls import write_self_signed

CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    # The test certificate is self-signed for 127.0.0.1.
    "--ignore-certificate-errors",
    # getUserMedia without a microphone or a permission prompt.
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
]


def require_chromium():
    """Selenium, Chromium and its driver, or C{SkipTest}."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        raise SkipTest("selenium is not installed (make test installs the test extras)")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        raise SkipTest("chromium and chromium-driver are not installed (.ci/run installs them)")
    return chromium, driver


def run_page(chromium: str, driver: str, url: str, timeout: float = 45.0, extra_flags=()) -> dict:
    """Open C{url} in headless Chromium and wait for the page's
    C{window.result} (blocking: run it in a thread); C{extra_flags} are
    added to L{CHROMIUM_FLAGS} (e.g. a WAV file as the fake microphone)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in [*CHROMIUM_FLAGS, *extra_flags]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(driver), options=options)
    try:
        browser.get(url)
        deadline = time.monotonic() + timeout
        result = None
        while time.monotonic() < deadline:
            result = browser.execute_script("return window.result || null")
            if result:
                break
            time.sleep(0.1)
        if not result:
            console = [entry["message"] for entry in browser.get_log("browser")]
            result = {"done": False, "error": "no result", "console": console[-20:]}
        return result
    finally:
        browser.quit()


class ChromiumJsSipTests(TestCase):
    timeout = 180

    @defer.inlineCallbacks
    def open_page(self, page_host="127.0.0.1", call=True, origins=None):
        """Serve the JsSIP page from C{page_host}, start a PBX (with
        C{ws_allowed_origins = origins} when given), open the page in
        Chromium; its result."""
        from twisted.web.server import Site
        from twisted.web.static import File

        chromium, driver = require_chromium()
        require_js()
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        cert, key = write_self_signed(base, "127.0.0.1")
        www = os.path.join(base, "www")
        os.makedirs(www)
        shutil.copy(os.path.join(JS_DIR, "jssip_page.html"), www)
        yield deferToThread(jssip_bundle, www)
        web = reactor.listenTCP(0, Site(File(www)), interface=page_host)
        self.addCleanup(web.stopListening)
        origin = f"http://{page_host}:{web.getHost().port}"
        toml = PBX.format(cert=cert, key=key)
        if origins is not None:
            listed = ", ".join(f'"{o}"' for o in origins(origin))
            toml = toml.replace("wss_port = 0\n", f"wss_port = 0\nws_allowed_origins = [{listed}]\n")
        pbx = yield start_pbx_toml(self, toml)
        page = f"{origin}/jssip_page.html?url=wss://127.0.0.1:{pbx.ports['WSS']}/ws&call={int(call)}"
        result = yield deferToThread(run_page, chromium, driver, page)
        return result

    @defer.inlineCallbacks
    def test_other_site_refused_unless_listed(self):
        """A page from another host (http://127.0.0.2:PORT, not the host
        the browser connects to nor localhost/127.0.0.1) is refused with
        the default settings, and registers once ws_allowed_origins lists
        its origin."""
        result = yield self.open_page("127.0.0.2", call=False)
        self.assertIn("WebSocket refused", result.get("error", ""), result)
        self.assertEqual(result["registered"], [])
        result = yield self.open_page("127.0.0.2", call=False, origins=lambda origin: [origin])
        self.assertNotIn("error", result, result)
        self.assertEqual([(r["user"], r["status"]) for r in result["registered"]], [("alice", 200), ("bob", 200)])

    @defer.inlineCallbacks
    def test_wss_register_and_call(self):
        """Both users register over wss:// (200 each) from the
        http://127.0.0.1 page; alice calls bob, whose answer confirms the
        call (DTLS-SRTP offer relayed); she hangs up and both see the end."""
        result = yield self.open_page()
        self.assertTrue(result.get("done"), result)
        self.assertNotIn("error", result, result)
        self.assertEqual([(r["user"], r["status"]) for r in result["registered"]], [("alice", 200), ("bob", 200)])
        self.assertEqual(
            result["steps"],
            ["callee: INVITE from alice", "caller: confirmed", "caller: ended by local", "callee: ended by remote"],
        )
        self.assertTrue(result["callee_offer_has_dtls"])
