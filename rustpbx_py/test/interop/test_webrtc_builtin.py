"""
Interop: a browser calls a desk phone, and a desk phone calls a browser,
through the BUILT-IN media engine.
Headless Chromium (JsSIP over WSS, its fake microphone playing a 440 Hz
WAV) calls baresip (plain RTP/AVP, G.711) with media_proxy = "all": the
relay answers the browser as ICE-lite with its own DTLS fingerprint,
terminates DTLS-SRTP and relays plain RTP to baresip, which must hear the
browser's tone; the browser's getStats() must show DTLS connected and
audio packets received from the PBX.  The other way round, baresip dials
the browser (registered over WSS): the browser gets a WebRTC offer from the
PBX (actpass, ice-lite), answers, and each side receives the other's audio.
"""

from __future__ import annotations

import re

from twisted.internet import defer
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from rustpbx_py.test.interop.baresip import BaresipPhone, module_path
from rustpbx_py.registrar import make_aor
from rustpbx_py.test.interop.phones import PhonePbx, until
from rustpbx_py.test.interop.support import require_tool

_MESSAGE = re.compile(r"\n(?:UDP|TCP|TLS) \S+ -> \S+\n")


class _Browser:
    """What BaresipPhone.hears needs to know of the browser: its name and tone."""

    user = "browser"
    tone = 440


class BuiltinWebRtcTests(TestCase):
    timeout = 150

    def setUp(self):
        from rustpbx_py.test.interop.jssip import require_js
        from rustpbx_py.test.interop.test_jssip_chromium import require_chromium

        self.chromium = require_chromium()
        require_js()
        require_tool("baresip")
        module_path()

    @defer.inlineCallbacks
    def test_browser_to_phone(self):
        """Chromium -> PBX (built-in relay: ICE-lite + DTLS-SRTP) -> baresip: the
        browser gets a WebRTC answer naming the PBX (ice-lite, host candidate,
        fingerprint, setup:passive, BUNDLE), DTLS connects, the browser receives
        baresip's audio, baresip's INVITE is plain RTP/AVP and baresip hears
        the browser's 440 Hz tone."""
        from rustpbx_py.test.interop.jssip import serve_webrtc_page
        from rustpbx_py.test.interop.test_jssip_chromium import run_page

        self.pbx = yield PhonePbx.start(self, 'wss_port = 0\nmedia_proxy = "all"\n')
        bob = yield BaresipPhone(self, self.pbx, "bob", "udp").start()
        out_b = len(bob.process.output)
        page, args = yield serve_webrtc_page(self, self.pbx, "jssip_webrtc_call.html",
                                             "&target=sip:bob@127.0.0.1&seconds=4", _Browser.tone)
        result = yield deferToThread(run_page, *self.chromium, page, 60.0, args)
        self.assertNotIn("error", result, result)
        self.assertEqual(result["steps"], ["registered", "confirmed", "ended by local"], result)
        answer = result["answer"]
        for line in ("UDP/TLS/RTP/SAVPF", "a=ice-lite", "a=fingerprint:sha-256 ", "a=setup:passive",
                     "a=group:BUNDLE", "a=rtcp-mux", " typ host", "a=ssrc:"):
            self.assertIn(line, answer)
        stats = result["stats"]
        self.assertEqual(stats["dtlsState"], "connected", result)
        self.assertGreater(stats["packetsReceived"], 50, result)   # bob's RTP, SRTP-protected by the relay
        invite = next(b for b in _MESSAGE.split(bob.process.output[out_b:]) if b.startswith("INVITE sip:bob-"))
        self.assertIn("RTP/AVP", invite)
        self.assertNotIn("a=fingerprint", invite)
        self.assertNotIn("a=candidate", invite)
        yield bob.hears(_Browser(), seconds=1.0, timeout=8.0)

    @defer.inlineCallbacks
    def test_phone_to_browser(self):
        """baresip -> PBX -> Chromium registered over WSS: the browser is
        offered WebRTC by the built-in relay (UDP/TLS/RTP/SAVPF, ice-lite,
        setup:actpass, BUNDLE) while baresip's leg stays RTP/AVP; the browser
        answers, DTLS connects, it receives baresip's audio, and baresip hears
        the browser's tone."""
        from rustpbx_py.test.interop.jssip import serve_webrtc_page
        from rustpbx_py.test.interop.test_jssip_chromium import run_page

        self.pbx = yield PhonePbx.start(self, 'wss_port = 0\nmedia_proxy = "all"\n')
        bob = yield BaresipPhone(self, self.pbx, "bob", "udp").start()
        page, args = yield serve_webrtc_page(self, self.pbx, "jssip_webrtc_answer.html", "&seconds=4",
                                             _Browser.tone)
        browser = deferToThread(run_page, *self.chromium, page, 60.0, args)
        registry = next(m for m in self.pbx.service.modules if m.name == "registrar").registry
        yield until(lambda: bool(registry.lookup(make_aor("alice", "127.0.0.1"))), 30.0,
                    "the browser registering over WSS")
        out_b = len(bob.process.output)
        yield bob.command("dial", "sip:alice@127.0.0.1")
        result = yield browser
        self.assertNotIn("error", result, result)
        self.assertEqual(result["steps"], ["registered", "incoming", "confirmed", "ended by local"], result)
        offer = result["offer"]
        for line in ("UDP/TLS/RTP/SAVPF", "a=ice-lite", "a=fingerprint:sha-256 ", "a=setup:actpass",
                     "a=group:BUNDLE", "a=rtcp-mux", " typ host", "a=ssrc:"):
            self.assertIn(line, offer)
        stats = result["stats"]
        self.assertEqual(stats["dtlsState"], "connected", result)
        self.assertGreater(stats["packetsReceived"], 50, result)
        self.assertGreater(stats["packetsSent"], 50, result)
        trace = bob.process.output[out_b:]
        self.assertNotIn("a=fingerprint", trace)
        yield bob.hears(_Browser(), seconds=1.0, timeout=8.0)
