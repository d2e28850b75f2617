"""
The PBX's own browser phone (rustpbx_py/web/phone) driven like a person
would: headless Chromium through Selenium, signing in with the form,
typing a number, pressing Call, Answer and Hang up, reading what the page
shows (its C{window.phone} state mirrors the screen) and taking
screenshots.

Every method blocks (Selenium): call them from a thread
(C{deferToThread}), one at a time.
"""

from __future__ import annotations

import time
from typing import Callable, Optional, Sequence

from rustpbx_py.test.interop.test_jssip_chromium import CHROMIUM_FLAGS

#: A phone-sized window (CSS pixels) and a sharp screenshot.
WINDOW = (412, 915)

#: Media stays on the machine: the page uses no STUN/TURN server (the PBX
#: is ICE-lite with a host candidate) and Chromium's host candidates are
#: plain addresses, not mDNS names it would announce on the network.
LOOPBACK_FLAGS = ["--disable-features=WebRtcHideLocalIpsWithMdns"]


class BrowserPhone:
    """One Chromium window on the phone page."""

    def __init__(self, chromium: str, driver: str, extra_flags: Sequence[str] = ()) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for flag in [*CHROMIUM_FLAGS, *LOOPBACK_FLAGS, "--force-device-scale-factor=2", *extra_flags]:
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.browser = webdriver.Chrome(service=Service(driver), options=options)
        self.browser.set_window_size(*WINDOW)

    def open(self, url: str) -> None:
        self.browser.get(url)
        self.wait(lambda s: s is not None, 20.0, "the page's script running")

    def state(self) -> Optional[dict]:
        """The page's window.phone (registration, call, peer, history, stats, offer, answer)."""
        return self.browser.execute_script("return window.phone ? JSON.parse(JSON.stringify(window.phone)) : null")

    def wait(self, predicate: Callable[[Optional[dict]], bool], timeout: float, what: str) -> dict:
        """Poll L{state} until C{predicate} holds; AssertionError naming C{what},
        the last state and the browser console otherwise."""
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            state = self.state()
            if predicate(state):
                return state
            time.sleep(0.2)
        console = [entry["message"] for entry in self.browser.get_log("browser")][-15:]
        raise AssertionError(f"waited {timeout:.0f} s for {what}; page state {state}; console {console}")

    def _by_id(self, element_id: str):
        from selenium.webdriver.common.by import By

        return self.browser.find_element(By.ID, element_id)

    def type(self, element_id: str, text: str) -> None:
        field = self._by_id(element_id)
        field.clear()
        field.send_keys(text)

    def press(self, element_id: str) -> None:
        self._by_id(element_id).click()

    def script(self, js: str):
        """Run C{js} in the page (a function body: C{return x} gives x)."""
        return self.browser.execute_script(js)

    def key(self, digit: str) -> None:
        """Press a key of the keypad (a digit into the number, or RFC 4733 in a call)."""
        from selenium.webdriver.common.by import By

        self.browser.find_element(By.CSS_SELECTOR, f"#keypad [data-key='{digit}']").click()

    def text(self, element_id: str) -> str:
        return self._by_id(element_id).text

    def sign_in(self, user: str, password: str, server: Optional[str] = None) -> dict:
        """Fill the form (the WebSocket server under Advanced only when
        given) and wait for the registration badge to say registered."""
        self.type("user", user)
        self.type("password", password)
        if server is not None:
            self.browser.execute_script("document.querySelector('details').open = true")
            self.type("server", server)
        self.press("signin")
        return self.wait(lambda s: s and s["registration"] == "registered", 30.0, f"{user} registered")

    def dial(self, target: str) -> None:
        self.type("target", target)
        self.press("call")

    def console_errors(self) -> list:
        """The page's console errors since the last call (CSP violations,
        script errors, failed loads)."""
        return [e["message"] for e in self.browser.get_log("browser") if e.get("level") == "SEVERE"]

    def screenshot(self, path: str) -> str:
        self.browser.save_screenshot(path)
        return path

    def quit(self) -> None:
        self.browser.quit()
