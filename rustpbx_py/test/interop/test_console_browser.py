"""
The web console in a real browser: headless Chromium driven by Selenium
against a PBX serving its console on an ephemeral HTTP port, with SIPp as
the phones.

An administrator made with the C{create-admin} command logs in, changes
the realms in Settings > Proxy Settings and sees that they need a restart;
a SIPp user registers and shows on Registrations; a SIPp call shows under
Active calls and is hung up from the page (both SIPp agents get their BYE
and exit 0); the call's record shows its SIP flow as a ladder diagram whose
arrows open the messages.  Screenshots of each step are saved as test
artefacts (C{$RUSTPBX_ARTEFACTS}, default C{_trial_temp/artefacts}); the
README shows the dashboard and the SIP flow ones (docs/images).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Callable, Optional

from twisted.internet import defer
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from rustpbx_py import status
from rustpbx_py.test.interop.support import (
    SippMixin,
    call_pbx_toml,
    free_udp_port,
    require_tool,
    run_tool,
    start_pbx_toml,
)
from rustpbx_py.test.interop.test_jssip_chromium import CHROMIUM_FLAGS, require_chromium

ADMIN = "admin"
PASSWORD = "correct horse battery staple"

TOML = call_pbx_toml(
    'realms = ["127.0.0.1"]\n',
    '[console]\nsession_secret = "a test session secret of some length"\n',
)
TOML = 'http_addr = "127.0.0.1:0"\n' + TOML


def artefacts_dir() -> str:
    """Where screenshots go: C{$RUSTPBX_ARTEFACTS}, else C{_trial_temp/artefacts} (trial's cwd)."""
    path = os.environ.get("RUSTPBX_ARTEFACTS") or os.path.abspath("artefacts")
    os.makedirs(path, exist_ok=True)
    return path


class Browser:
    """
    A headless Chromium session (blocking calls: the test runs each one in
    a thread so the PBX, on the reactor, keeps serving).
    """

    def __init__(self, chromium: str, driver: str, base: str) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument("--window-size=1280,900")
        self.driver = webdriver.Chrome(service=Service(driver), options=options)
        self.driver.implicitly_wait(0)
        self.base = base
        self.shots: list = []

    def quit(self) -> None:
        self.driver.quit()

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)

    def find(self, css: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def wait(self, what: Callable[[], object], timeout: float = 20.0, message: str = "", reload: Optional[str] = None):
        """Poll C{what} until it returns something true (reloading C{reload}, a path or URL, between tries)."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = what()
            except Exception as e:  # not there yet
                last = e
            else:
                if last:
                    return last
            time.sleep(0.3)
            if reload is not None:
                self.driver.get(reload if "://" in reload else self.base + reload)
        raise AssertionError(f"timed out waiting for {message or what}: last {last!r}; page:\n"
                             + self.driver.find_element("tag name", "body").text[:2000])

    def text(self) -> str:
        return self.driver.find_element("tag name", "body").text

    def screenshot(self, name: str, element_css: Optional[str] = None) -> str:
        path = os.path.join(artefacts_dir(), f"console-{name}.png")
        if element_css:
            self.find(element_css).screenshot(path)
        else:
            # The whole page, however long.
            height = self.driver.execute_script("return document.documentElement.scrollHeight")
            self.driver.set_window_size(1280, max(900, min(int(height) + 40, 4000)))
            self.driver.save_screenshot(path)
            self.driver.set_window_size(1280, 900)
        self.shots.append(path)
        return path

    # -- steps ---------------------------------------------------------------

    def log_in(self, username: str, password: str) -> None:
        self.open("/console/")
        self.wait(lambda: self.find("input[name=username]"), message="the login form")
        self.find("input[name=username]").send_keys(username)
        self.find("input[name=password]").send_keys(password)
        self.find("form button[type=submit], form input[type=submit]").click()
        self.wait(lambda: "Dashboard" in self.driver.title, message="the dashboard after logging in")


class ConsoleBrowserTests(SippMixin, TestCase):
    timeout = 300

    def thread(self, fn, *args, **kwargs) -> defer.Deferred:
        return deferToThread(fn, *args, **kwargs)

    @defer.inlineCallbacks
    def create_admin(self, config_path: str):
        """The documented way: C{python -m rustpbx_py create-admin USER --config FILE}, password on stdin."""
        out, err, code = yield run_tool(
            [sys.executable, "-m", "rustpbx_py", "create-admin", ADMIN, "--config", config_path],
            stdin=(PASSWORD + "\n").encode(),
            timeout=60,
        )
        self.assertEqual(code, 0, (out + err).decode("utf-8", "replace"))

    @defer.inlineCallbacks
    def test_console(self):
        chromium, driver = require_chromium()
        self.sipp = require_tool("sipp")
        pbx = yield start_pbx_toml(self, TOML)
        self.port = pbx.ports["UDP"]
        yield self.create_admin(pbx.config.path)
        base = f"http://127.0.0.1:{pbx.ports['HTTP']}"
        browser = yield self.thread(Browser, chromium, driver, base)
        self.addCleanup(browser.quit)

        # Log in; the dashboard shows no registration and no call.
        yield self.thread(browser.log_in, ADMIN, PASSWORD)

        # Settings > Proxy Settings (the webconfig area): new realms need a restart.
        yield self.change_realms(browser)

        # A SIPp user registers: it shows on Registrations.
        callee_port = free_udp_port()
        yield self.register_callee(callee_port)

        def registered():
            browser.open("/console/registrations")
            return "1002@" in browser.text() and f"127.0.0.1:{callee_port}" in browser.text()

        yield self.thread(browser.wait, registered, message="1002's binding on Registrations")
        yield self.thread(browser.screenshot, "registrations")

        # A SIPp call: it shows under Active calls, answered, on the page
        # opened before the call (static/console.js refreshes the table, so
        # the script runs under the console's script-src 'self' policy);
        # hang it up there.
        yield self.thread(browser.open, "/console/calls")
        self.assertIn("No calls right now.", (yield self.thread(browser.text)))
        callee = self.sipp_run("call_uas.xml", callee_port, ["-m", "1"], remote=False, timeout=90)
        caller = self.sipp_run("call_uac_wait_bye.xml", free_udp_port(),
                               ["-s", "1002", "-au", "caller", "-ap", "caller-secret", "-m", "1"], timeout=90)

        def answered():
            rows = [r.text for r in browser.find_all("tbody tr")]
            return [r for r in rows if "1002" in r and "answered" in r]

        rows = yield self.thread(browser.wait, answered, message="the answered call on Active calls")
        self.assertEqual(len(rows), 1, rows)
        self.assertIn("PCMU", rows[0])
        yield self.thread(browser.screenshot, "active-calls")

        # The dashboard meanwhile: the registration, the call up, the day's chart.
        def dashboard():
            browser.open("/console/dashboard")
            return browser.find_all("svg.calls-chart rect.chart-calls") and "1 answered" in browser.text()

        yield self.thread(browser.wait, dashboard, message="the call on the dashboard")
        yield self.thread(browser.screenshot, "dashboard")
        yield self.thread(browser.open, "/console/calls")

        def hang_up():
            # The button found before the table refreshes itself (its
            # duration cell changes) is still the one in the page after it:
            # rows are merged by key, not replaced.
            button = browser.find("button[name=hangup]")
            duration = browser.find("tbody tr[data-key] td:nth-child(4)")
            before = duration.text
            browser.wait(lambda: duration.text != before, timeout=15, message="the table refreshing itself")
            button.click()
            browser.wait(lambda: "Hung up" in browser.text(), message="the hang-up notice")

        yield self.thread(hang_up)
        for run in (caller, callee):
            out, err, code = yield run
            self.assertEqual(code, 0, (out + err).decode("utf-8", "replace")[-3000:])
        self.assertEqual(status.active_calls(pbx.context), [])

        # Its record: bySystem, and the SIP flow ladder with both BYEs.
        def record_link():
            browser.open("/console/records")
            links = browser.find_all("tbody a[href$='#flow']")
            rows = [r.text for r in browser.find_all("tbody tr")]
            return links and "bySystem" in rows[0] and links

        links = yield self.thread(browser.wait, record_link, message="the call's record")
        yield self.thread(browser.screenshot, "call-records")
        yield self.thread(links[0].click)

        record_page = yield self.thread(lambda: browser.driver.current_url.split("#", 1)[0])

        def ladder():
            arrows = browser.find_all("svg.sip-flow a")
            labels = [t.text for t in browser.find_all("svg.sip-flow a text")]
            # Both BYEs, and both phones' 200 OK to them (the record is
            # written again when those arrive).
            return arrows if arrows and labels.count("BYE") == 2 and labels.count("200 OK") == 2 else None

        arrows = yield self.thread(browser.wait, ladder, message="the ladder with both BYEs and their answers",
                                   reload=record_page)
        yield self.thread(browser.screenshot, "sip-flow-ladder", "svg.sip-flow")
        yield self.thread(browser.screenshot, "call-record")

        def open_message():
            arrows[0].click()
            return browser.wait(lambda: browser.find("details#msg-0").get_attribute("open") is not None
                                and "INVITE sip:1002" in browser.find("details#msg-0 pre").text,
                                message="the first message opened")

        yield self.thread(open_message)

        # The audit log names who hung the call up.
        yield self.thread(browser.open, "/console/audit")
        text = yield self.thread(browser.text)
        self.assertIn("call.hangup", text)

    @defer.inlineCallbacks
    def change_realms(self, browser: Browser):
        """
        Settings > Proxy Settings: the realms changed and saved; the page
        says the change needs a restart (realms do).  The page is the
        webconfig area's; on a tree without it the step is reported on
        standard error and left out.
        """
        present = yield self.thread(lambda: (browser.open("/console/settings"),
                                             bool(browser.find_all("form#proxy-settings [name=realms]")))[1])
        if not present:
            sys.stderr.write("test_console_browser: no Proxy Settings page with a realms field; step left out\n")
            return

        def change():
            field = browser.find("form#proxy-settings [name=realms]")
            field.clear()
            field.send_keys("127.0.0.1\npbx.example.com")
            browser.find("form#proxy-settings button[type=submit]").click()
            notice = browser.wait(lambda: browser.find("#restart-notice"), message="the restart notice")
            text = notice.text.lower()
            assert "restart" in text and "realms" in text, notice.text

        yield self.thread(change)
        yield self.thread(browser.screenshot, "proxy-settings")
