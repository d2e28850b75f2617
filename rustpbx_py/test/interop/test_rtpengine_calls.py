"""
Real phones through the PBX with C{media_engine = "rtpengine"}: two
baresip phones call each other with C{media_proxy = "all"} while a
userspace rtpengine anchors the media.  Each phone's SDP names rtpengine's
ports (never the other phone's), each decodes the other's tone, rtpengine
transcodes Opus to G.711 with C{codec_strategy = "quality"}, and the call
is deleted from rtpengine when it ends.  A browser (Chromium + JsSIP over
WSS) calls baresip with rtpengine terminating ICE and DTLS-SRTP; and SIPp
agents that send no RTP are hung up after C{rtp_timeout}.
"""

from __future__ import annotations

import re

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import SkipTest, TestCase

from rustpbx_py.media.rtpengine import NgClient
from rustpbx_py.test.interop.baresip import BaresipPhone, module_path
from rustpbx_py.test.interop.phones import PhonePbx
from rustpbx_py.test.interop.rtpengine_daemon import start_rtpengine
from rustpbx_py.test.interop.support import SippMixin, call_pbx_toml, free_udp_port, require_tool, start_pbx_toml

_AUDIO = re.compile(r"m=audio (\d+) ")
_MESSAGE = re.compile(r"\n(?:UDP|TCP|TLS) \S+ -> \S+\n")


class DaemonChecks:
    """What the test's rtpengine (C{self.server}) holds."""

    @defer.inlineCallbacks
    def calls_on_daemon(self):
        """The Call-IDs rtpengine holds (ng "list")."""
        client = NgClient(reactor, [self.server])
        try:
            reply = yield client.request(client.daemons[0], {"command": "list"})
        finally:
            yield client.stop()
        return [c.decode() for c in reply.get("calls", [])]

    @defer.inlineCallbacks
    def wait_until_deleted(self, seconds: float = 10.0):
        for _ in range(int(seconds / 0.2)):
            calls = yield self.calls_on_daemon()
            if not calls:
                return
            yield task.deferLater(reactor, 0.2, lambda: None)
        self.fail(f"rtpengine still holds {calls}")


def rtpengine_pbx(testcase, server: str, extra: str = ""):
    """A L{PhonePbx} that anchors every call (media_proxy = "all") on the
    rtpengine daemon at C{server}, with C{extra} TOML lines."""
    return PhonePbx.start(
        testcase,
        'media_proxy = "all"\nmedia_engine = "rtpengine"\n'
        f'rtpengine_servers = ["{server}"]\n{extra}',
    )


class RtpengineCallTests(DaemonChecks, TestCase):
    """baresip ↔ PBX ↔ baresip with rtpengine as the media engine."""

    timeout = 90

    @defer.inlineCallbacks
    def setUp(self):
        require_tool("baresip")
        module_path()
        self.server = yield start_rtpengine(self)

    @defer.inlineCallbacks
    def pbx(self, extra: str = ""):
        self.pbx = yield rtpengine_pbx(self, self.server, extra)
        return self.pbx

    @defer.inlineCallbacks
    def test_g711_call(self):
        """alice calls bob: the INVITE bob gets and the 200 alice gets name
        rtpengine's ports, each hears the other's tone, rtpengine holds the
        call while it lasts and deletes it at the BYE."""
        yield self.pbx()
        alice = yield BaresipPhone(self, self.pbx, "alice", "udp").start()
        bob = yield BaresipPhone(self, self.pbx, "bob", "udp").start()
        out_a, out_b = len(alice.process.output), len(bob.process.output)
        yield alice.dial_up(bob)
        yield alice.hears(bob)
        yield bob.hears(alice)
        calls = yield self.calls_on_daemon()
        self.assertEqual(len(calls), 1, calls)
        self.check_sdp(alice, out_a, bob, out_b)
        yield alice.hang_up(bob)
        yield self.wait_until_deleted()
        media = yield self.media_record()
        self.assertEqual((media["mode"], media["anchored"]), ("all", True))
        low, high = self.rtpengine_ports
        for leg in ("a", "b"):
            figures = media["legs"][leg]
            self.assertGreater(figures["in"]["packets"], 20, media)   # >= 1 s of tone each way
            self.assertGreater(figures["out"]["packets"], 20, media)
            self.assertTrue(low <= figures["local"][1] <= high, media)
            self.assertEqual(figures["codec"], "pcmu")

    @defer.inlineCallbacks
    def test_hold_resume_both_ways(self):
        """Re-INVITEs through rtpengine from either leg (the callee's one
        swaps rtpengine's from-tag and to-tag): alice holds and resumes bob,
        then bob holds and resumes alice; each hold's a=sendonly reaches the
        held phone and the a=recvonly answer the holder, still on
        rtpengine's ports; the call stays one call on rtpengine, deleted at
        the BYE."""
        yield self.pbx()
        alice = yield BaresipPhone(self, self.pbx, "alice", "udp").start()
        bob = yield BaresipPhone(self, self.pbx, "bob", "udp").start()
        yield alice.dial_up(bob)
        low, high = self.rtpengine_ports
        steps = (("hold", "sendonly", "recvonly"), ("resume", "sendrecv", "sendrecv"))
        for holder, held in ((alice, bob), (bob, alice)):
            for command, offered, answered in steps:
                mark_h, mark_d = holder.mark(), held.mark()
                out_h, out_d = len(holder.process.output), len(held.process.output)
                yield holder.command(command)
                yield held.wait_event("CALL_REMOTE_SDP", since=mark_d, param="offer")
                yield holder.wait_event("CALL_REMOTE_SDP", since=mark_h, param="answer")
                offer = yield held.process.wait_output(
                    rf"(?s)\nINVITE sip:[^\n]*\n.*?m=audio (\d+) .*?\na=({offered})\r?\n", since=out_d)
                answer = yield holder.process.wait_output(
                    rf"(?s)\nSIP/2.0 200 [^\n]*\n.*?m=audio (\d+) .*?\na=({answered})\r?\n", since=out_h)
                for match in (offer, answer):
                    self.assertTrue(low <= int(match.group(1)) <= high, (command, match.group(0)[-400:]))
        self.assertNotIn("CALL_CLOSED", alice.types() + bob.types())
        calls = yield self.calls_on_daemon()
        self.assertEqual(len(calls), 1, calls)
        yield alice.hang_up(bob)
        yield self.wait_until_deleted()

    @defer.inlineCallbacks
    def media_record(self):
        """The media part of the (one) call record, once written."""
        import json

        service = self.pbx.service
        calls = next(m for m in service.modules if m.name == "call")
        rows = []
        for _ in range(100):
            yield calls.records.drained()
            rows = yield service.context.store.run_query("SELECT end_time, media FROM call_records")
            if rows and all(r[0] is not None and r[1] for r in rows):
                return json.loads(rows[-1][1])
            yield task.deferLater(reactor, 0.1, lambda: None)
        self.fail(f"no finished call record with media: {rows}")

    def check_sdp(self, alice, out_a, bob, out_b):
        """The m=audio ports of the INVITE bob received and of the 200 alice
        received are rtpengine's."""
        low, high = self.rtpengine_ports
        got_b = self.ports_in(bob, out_b, r"INVITE sip:bob-")
        got_a = self.ports_in(alice, out_a, r"SIP/2\.0 200 [^\n]*\n(?:[^\n]+\n)*CSeq: \d+ INVITE")
        self.assertTrue(got_b and all(low <= p <= high for p in got_b), (got_b, low, high))
        self.assertTrue(got_a and all(low <= p <= high for p in got_a), (got_a, low, high))

    def ports_in(self, phone, since: int, start: str) -> list:
        """m=audio ports of the messages in the phone's SIP trace (baresip
        -s: a "UDP src -> dst" line before each message) that match
        C{start}: bob's received INVITEs name his Contact (sip:bob-...),
        alice receives the only 200s for INVITE in her trace."""
        ports = []
        for block in _MESSAGE.split(phone.process.output[since:]):
            if re.match(start, block):
                ports += [int(p) for p in _AUDIO.findall(block)]
        return ports

    @defer.inlineCallbacks
    def test_opus_to_g711_quality(self):
        """An Opus-only phone calls a G.711-only phone with codec_strategy =
        "quality": rtpengine transcodes and each still hears the other."""
        yield self.pbx('codecs = ["opus", "pcmu", "pcma"]\ncodec_strategy = "quality"\n')
        alice = yield BaresipPhone(self, self.pbx, "alice", "udp", codec="opus").start()
        bob = yield BaresipPhone(self, self.pbx, "bob", "udp", codec="g711").start()
        out_a, out_b = len(alice.process.output), len(bob.process.output)
        yield alice.dial_up(bob)
        yield alice.hears(bob)
        yield bob.hears(alice)
        self.check_sdp(alice, out_a, bob, out_b)
        invite = next(b for b in _MESSAGE.split(bob.process.output[out_b:]) if b.startswith("INVITE sip:bob-"))
        self.assertIn("PCMU/8000", invite)   # added by rtpengine: alice offered Opus only
        yield alice.hang_up(bob)
        yield self.wait_until_deleted()


class WebRtcCallTests(TestCase):
    """A browser calls a SIP phone with rtpengine bridging WebRTC to RTP."""

    timeout = 120

    @defer.inlineCallbacks
    def setUp(self):
        import inspect

        from rustpbx_py.media import policy

        if "webrtc" not in inspect.signature(policy.decide).parameters:
            raise SkipTest("the call side does not anchor WebRTC legs yet (media.policy.decide(..., webrtc=))")
        from rustpbx_py.test.interop.jssip import require_js
        from rustpbx_py.test.interop.test_jssip_chromium import require_chromium

        self.chromium = require_chromium()
        require_js()
        require_tool("baresip")
        module_path()
        self.server = yield start_rtpengine(self)

    @defer.inlineCallbacks
    def test_browser_to_phone(self):
        """Chromium (JsSIP over WSS, DTLS-SRTP + ICE offer) calls baresip
        (plain RTP/AVP) with media_proxy = "all": rtpengine answers the
        browser with its own fingerprint and ICE-lite candidate, DTLS comes
        up, the browser receives the phone's RTP (as SRTP) and the phone the
        browser's; baresip's INVITE is plain RTP/AVP; the record counts
        packets both ways on both legs."""
        from twisted.internet.threads import deferToThread

        from rustpbx_py.test.interop.jssip import serve_webrtc_page
        from rustpbx_py.test.interop.test_jssip_chromium import run_page

        self.pbx = yield rtpengine_pbx(self, self.server, "wss_port = 0\n")
        bob = yield BaresipPhone(self, self.pbx, "bob", "udp").start()
        out_b = len(bob.process.output)
        page, _ = yield serve_webrtc_page(self, self.pbx, "jssip_webrtc_call.html",
                                          "&target=sip:bob@127.0.0.1&seconds=3")
        result = yield deferToThread(run_page, *self.chromium, page, 60.0)
        self.assertNotIn("error", result, result)
        self.assertEqual(result["steps"], ["registered", "confirmed", "ended by local"], result)
        answer = result["answer"]
        self.assertIn("UDP/TLS/RTP/SAVPF", answer)
        self.assertIn("a=fingerprint:", answer)
        self.assertIn("typ host", answer)
        stats = result["stats"]
        self.assertEqual(stats["dtlsState"], "connected", result)
        self.assertGreater(stats["packetsReceived"], 50, result)   # bob's RTP, SRTP-protected by rtpengine
        invite = next(b for b in _MESSAGE.split(bob.process.output[out_b:]) if b.startswith("INVITE sip:bob-"))
        self.assertIn("RTP/AVP", invite)
        self.assertNotIn("a=fingerprint", invite)
        media = yield RtpengineCallTests.media_record(self)
        self.assertGreater(media["legs"]["a"]["in"]["packets"], 50, media)   # from the browser, decrypted
        self.assertGreater(media["legs"]["b"]["in"]["packets"], 50, media)


class RtpTimeoutTests(DaemonChecks, SippMixin, TestCase):
    """rtp_timeout with rtpengine: SIPp agents that never send RTP."""

    timeout = 90

    @defer.inlineCallbacks
    def setUp(self):
        self.sipp = require_tool("sipp")
        self.server = yield start_rtpengine(self)

    @defer.inlineCallbacks
    def test_no_rtp_hangs_up(self):
        """A call anchored on rtpengine where neither side sends RTP: about
        rtp_timeout (2 s) after the answer the PBX sends BYE to both SIPp
        agents (their scenarios end on it, exit 0), rtpengine no longer
        holds the call, and the record says rtpTimeout."""
        import time

        toml = call_pbx_toml('media_proxy = "all"\nmedia_engine = "rtpengine"\n'
                             f'rtpengine_servers = ["{self.server}"]\nrtp_timeout = 2\n')
        self.pbx = yield start_pbx_toml(self, toml)
        self.port = self.pbx.ports["UDP"]
        callee_port = free_udp_port()
        yield self.register_callee(callee_port)
        callee = self.sipp_run("call_uas.xml", callee_port, ["-m", "1"], remote=False, timeout=60)
        start = time.monotonic()
        caller = self.sipp_run("call_uac_wait_bye.xml", free_udp_port(),
                               ["-s", "1002", "-au", "caller", "-ap", "caller-secret", "-m", "1"], timeout=60)
        for run in (caller, callee):
            out, err, code = yield run
            self.assertEqual(code, 0, (out + err).decode("utf-8", "replace")[-3000:])
        self.assertLess(time.monotonic() - start, 15)
        yield self.wait_until_deleted()
        calls = next(m for m in self.pbx.modules if m.name == "call")
        for _ in range(100):
            yield calls.records.drained()
            rows = yield self.pbx.context.store.run_query("SELECT status_code, hangup_reason, end_time FROM call_records")
            if rows and rows[0][2] is not None:
                break
            yield task.deferLater(reactor, 0.1, lambda: None)
        self.assertEqual([(r[0], r[1]) for r in rows], [(200, "rtpTimeout")])
