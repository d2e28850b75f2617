"""
Interop: the PBX's own browser phone (rustpbx_py/web/phone) in headless
Chromium, its fake microphone playing a 440 Hz tone, against a baresip
desk phone (plain RTP/AVP) through the built-in relay.

The page is loaded from the PBX's own HTTPS site (https_addr) and signs
in with its form over WSS to the same origin (proxy.ws_handler on that
port, the page's default); it dials bob, bob hears the browser's tone and the page's
getStats() figures show audio from the PBX; then bob calls the browser,
the page rings, Answer is pressed, and the same holds the other way.
Screenshots of the phone during each call go to the test artefacts
(C{_trial_temp/artefacts/browser-phone} or C{$RUSTPBX_ARTEFACTS}); the
README shows one (docs/images/browser-phone-call.png).
"""

from __future__ import annotations

import os

from twisted.internet import defer
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from rustpbx_py.registrar import make_aor
from rustpbx_py.sip.sdp import SessionDescription
from rustpbx_py.test.interop.baresip import BaresipPhone, module_path
from rustpbx_py.test.interop.phones import RATE, USERS, PhonePbx, until, write_tone
from rustpbx_py.test.interop.support import artefacts_dir, require_tool


class _Browser:
    """What BaresipPhone.hears needs to know of the browser: its name and tone."""

    user = "alice (browser phone)"
    tone = 440


class BrowserPhoneTests(TestCase):
    timeout = 200

    def setUp(self):
        from rustpbx_py.test.interop.test_jssip_chromium import require_chromium

        self.chromium = require_chromium()
        require_tool("baresip")
        module_path()

    @defer.inlineCallbacks
    def open_phone(self):
        """A PBX (media_proxy all), bob on baresip, and the browser phone
        signed in as alice; the BrowserPhone."""
        from rustpbx_py.test.interop.browser_phone import BrowserPhone

        self.pbx = yield PhonePbx.start(self, 'media_proxy = "all"\n', top='https_addr = "127.0.0.1:0"\n')
        self.bob = yield BaresipPhone(self, self.pbx, "bob", "udp").start()
        # The PBX's own site: the page, and SIP over WebSocket at ws_handler
        # on the same port (the page's default server).
        url = f"https://127.0.0.1:{self.pbx.ports['HTTPS']}/phone/"
        microphone = write_tone(os.path.join(os.path.abspath(self.mktemp()) + ".wav"), _Browser.tone,
                                seconds=60.0, rate=RATE)
        phone = yield deferToThread(BrowserPhone, *self.chromium,
                                    [f"--use-file-for-fake-audio-capture={microphone}"])
        self.addCleanup(deferToThread, phone.quit)
        yield deferToThread(phone.open, url)
        state = yield deferToThread(phone.sign_in, "alice", USERS["alice"])
        self.assertEqual(state["call"], "idle")
        registry = next(m for m in self.pbx.service.modules if m.name == "registrar").registry
        (binding,) = registry.lookup(make_aor("alice", "127.0.0.1"))
        self.assertEqual(binding.transport, "WSS")
        self.assertTrue(binding.webrtc)
        self.assertEqual(binding.local[1], self.pbx.ports["HTTPS"])     # the page's own origin
        self.shots = artefacts_dir("browser-phone")
        return phone

    @defer.inlineCallbacks
    def in_call(self, phone, name: str):
        """Wait until the page shows the call up with audio both ways
        (getStats: more than 50 packets in from the PBX and out, DTLS
        connected; the figures on screen), screenshot it."""
        state = yield deferToThread(
            phone.wait, lambda s: s["call"] == "in call" and min((s["stats"] or {}).get("packetsReceived", 0),
                                                                 (s["stats"] or {}).get("packetsSent", 0)) > 50,
            30.0, "the call up with audio received and sent")
        self.assertEqual(state["stats"]["dtlsState"], "connected", state)
        shown = yield deferToThread(phone.text, "packets-in")
        self.assertGreater(int(shown), 0)
        yield deferToThread(phone.screenshot, os.path.join(self.shots, name))
        errors = yield deferToThread(phone.console_errors)
        self.assertEqual(errors, [])        # no CSP violation, no script error
        return state

    @defer.inlineCallbacks
    def test_browser_calls_phone(self):
        """The page dials bob: it shows calling/ringing then 'in call'; the
        answer it got is the PBX's WebRTC answer (ice-lite, fingerprint,
        BUNDLE); getStats shows audio from the PBX; bob's INVITE is plain
        RTP/AVP and bob hears the browser's 440 Hz tone; a key of the keypad
        reaches bob as an RFC 4733 digit; Hang up ends the call on both
        sides."""
        phone = yield self.open_phone()
        out_b = len(self.bob.process.output)
        yield deferToThread(phone.dial, "bob")
        state = yield self.in_call(phone, "browser-phone-call.png")
        self.assertIn("calling", state["history"])
        self.assertEqual(state["peer"], "bob")
        for line in ("UDP/TLS/RTP/SAVPF", "a=ice-lite", "a=fingerprint:sha-256 ", "a=group:BUNDLE", "a=ssrc:"):
            self.assertIn(line, state["answer"])
        self.assertIn("INVITE sip:bob", self.bob.process.output[out_b:])
        self.assertNotIn("a=fingerprint", self.bob.process.output[out_b:])
        yield self.bob.hears(_Browser(), seconds=1.0, timeout=10.0)
        # the keypad during the call: RFC 4733 digits, translated by the
        # relay to bob's telephone-event, which baresip reports
        mark = self.bob.mark()
        yield deferToThread(phone.key, "5")
        event = yield self.bob.wait_event("CALL_DTMF_START", since=mark)
        self.assertEqual(event.get("param"), "5", event)
        mark = self.bob.mark()
        yield deferToThread(phone.press, "hangup")
        state = yield deferToThread(phone.wait, lambda s: s["call"].startswith("ended"), 15.0, "the call ended")
        self.assertEqual(state["call"], "ended (you: Terminated)")
        yield self.bob.wait_event("CALL_CLOSED", since=mark)

    @defer.inlineCallbacks
    def test_phone_calls_browser(self):
        """bob dials alice, registered from the page over WSS: the page rings
        ('incoming', bob's name, Answer shown, the ring playing) with the PBX's WebRTC offer
        (actpass, ice-lite); Answer is pressed, getStats shows audio from the
        PBX and bob hears the browser's tone; bob hangs up and the page
        shows the call ended by the other side."""
        phone = yield self.open_phone()
        yield self.bob.command("dial", "sip:alice@127.0.0.1")
        state = yield deferToThread(phone.wait, lambda s: s["call"] == "incoming", 20.0, "the page ringing")
        self.assertIn("bob", state["peer"])
        self.assertTrue(state["ringing"])
        yield deferToThread(phone.screenshot, os.path.join(self.shots, "browser-phone-incoming.png"))
        yield deferToThread(phone.press, "answer")
        state = yield self.in_call(phone, "browser-phone-answered.png")
        self.assertFalse(state["ringing"])
        for line in ("UDP/TLS/RTP/SAVPF", "a=ice-lite", "a=setup:actpass", "a=group:BUNDLE", "a=ssrc:"):
            self.assertIn(line, state["offer"])
        yield self.bob.hears(_Browser(), seconds=1.0, timeout=10.0)
        yield self.bob.command("hangup")
        state = yield deferToThread(phone.wait, lambda s: s["call"].startswith("ended"), 15.0, "the call ended")
        self.assertEqual(state["call"], "ended (remote: Terminated)")

    @defer.inlineCallbacks
    def test_ice_restart(self):
        """During a call to bob the page restarts ICE (what it does by itself
        when the network changes under it): the re-INVITE's answer from the
        PBX has new ICE credentials and the same fingerprint, the call stays
        up, audio keeps arriving in the page and bob still hears the tone."""
        phone = yield self.open_phone()
        yield deferToThread(phone.dial, "bob")
        state = yield self.in_call(phone, "browser-phone-before-ice-restart.png")
        before = SessionDescription.parse(state["answer"].encode()).media[0]
        received = state["stats"]["packetsReceived"]
        call = next(m for m in self.pbx.service.modules if m.name == "call")
        (session,) = call.media_engine.sessions
        ice = session.streams[0].webrtc["a"].ice
        started = yield deferToThread(phone.script, "return window.phone.restartIce()")
        self.assertTrue(started)
        state = yield deferToThread(
            phone.wait, lambda s: s["answer"] and "a=ice-ufrag:" + before.attribute("ice-ufrag") not in s["answer"],
            20.0, "the answer to the ICE restart")
        after = SessionDescription.parse(state["answer"].encode()).media[0]
        answered = ice.answered         # from here on only the new credentials are answered
        self.assertNotEqual(after.attribute("ice-pwd"), before.attribute("ice-pwd"))
        self.assertEqual(after.attribute("fingerprint"), before.attribute("fingerprint"))
        self.assertEqual(state["iceRestarts"], 1)
        state = yield deferToThread(
            phone.wait, lambda s: s["call"] == "in call" and s["ice"] in ("connected", "completed")
            and s["stats"]["packetsReceived"] > received + 100, 20.0, "audio after the restart")
        # the PBX answers the browser's checks with the new credentials
        # (those with the old ones are refused from the restart on)
        self.assertEqual(ice.ufrag, after.attribute("ice-ufrag"))
        yield until(lambda: ice.answered > answered, 15.0, "a check with the new credentials answered")
        yield self.bob.hears(_Browser(), seconds=1.0, timeout=10.0)

    @defer.inlineCallbacks
    def test_wrong_password(self):
        """A wrong password: the badge says the registration failed (the
        PBX's 403 after the digest check),
        the form comes back for another try, and the right password then
        signs in."""
        from rustpbx_py.test.interop.browser_phone import BrowserPhone

        self.pbx = yield PhonePbx.start(self, "", top='https_addr = "127.0.0.1:0"\n')
        phone = yield deferToThread(BrowserPhone, *self.chromium)
        self.addCleanup(deferToThread, phone.quit)
        yield deferToThread(phone.open, f"https://127.0.0.1:{self.pbx.ports['HTTPS']}/phone/")
        yield deferToThread(phone.type, "user", "alice")
        yield deferToThread(phone.type, "password", "not-her-password")
        yield deferToThread(phone.press, "signin")
        state = yield deferToThread(phone.wait, lambda s: s["registration"].startswith("failed"), 20.0,
                                    "the registration refused")
        self.assertIn(state["registration"], ("failed: 401 Authentication Error", "failed: 403 Rejected"))
        shown = yield deferToThread(phone.script, "return [document.getElementById('login').hidden,"
                                                  " document.getElementById('dialer').hidden]")
        self.assertEqual(shown, [False, True])
        yield deferToThread(phone.screenshot, os.path.join(artefacts_dir("browser-phone"), "browser-phone-refused.png"))
        yield deferToThread(phone.sign_in, "alice", USERS["alice"])
