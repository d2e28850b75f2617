"""
Tests for L{rustpbx_py.call.media} and the B2BUA's media hooks, on the
call layer's bench (real SipCore, transaction layer, UDP protocol; memory
socket; task.Clock).

Two kinds: C{media_proxy = "none"} / C{"bypass"} / unanchored decisions,
where the SDP must cross byte for byte (or with only the codec list
filtered); and anchored calls, where a recording engine double checks the
call side's ordering: which leg's offer or answer goes to the session at
each SDP point, what each side gets back, and that every way a call ends
closes the session.  The same calls through the real built-in relay are in
L{rustpbx_py.test.test_call_media_relay}.
"""

from __future__ import annotations

from typing import List, Optional

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from rustpbx_py.call import record as R
from rustpbx_py.call.media import keep_allowed_codecs
from rustpbx_py.interfaces import IMediaEngine, IMediaSession
from rustpbx_py.media import MediaError
from rustpbx_py.sip.sdp import Connection, SessionDescription
from rustpbx_py.test.call_fakes import CALLER_ADDRESS, SDP_ANSWER, SDP_OFFER, CallHarness

TWO = ("<sip:bob@192.0.2.20:5060>", "<sip:bob@192.0.2.21:5060>")
#: The address the engine double puts in the SDP it returns.
PBX_MEDIA = "198.51.100.1"
#: Ports the double advertises to each leg.
PORT_TO = {"a": 30000, "b": 31000}
STATS = {
    "a": {"codec": "pcmu", "local": (PBX_MEDIA, 30000), "remote": ("192.0.2.10", 4000),
          "in": {"packets": 500, "bytes": 86000, "lost": 2, "jitter_ms": 1.5},
          "out": {"packets": 498, "bytes": 85656, "lost": 0, "jitter_ms": 0.8}},
    "b": {"codec": "pcmu", "local": (PBX_MEDIA, 31000), "remote": ("192.0.2.20", 5000),
          "in": {"packets": 498, "bytes": 85656, "lost": 0, "jitter_ms": 0.7},
          "out": {"packets": 500, "bytes": 86000, "lost": 0, "jitter_ms": 1.1}},
}

#: An offer with what phones really send: odd spacing, unknown attributes,
#: a second stream, no final CRLF trouble.
ODD_OFFER = (
    b"v=0\r\no=- 3803 3803 IN IP4 192.0.2.10\r\ns=Talk\r\nc=IN IP4 192.0.2.10\r\nb=AS:380\r\nt=0 0\r\n"
    b"a=X-vendor:thing  with  spaces\r\nm=audio 7078 RTP/AVP 96 0 8 101\r\na=rtpmap:96 opus/48000/2\r\n"
    b"a=fmtp:96 useinbandfec=1\r\na=rtpmap:101 telephone-event/8000\r\na=rtcp-fb:* trr-int 1000\r\n"
    b"m=video 9078 RTP/AVP 97\r\na=rtpmap:97 H264/90000\r\na=fmtp:97 profile-level-id=42801F\r\n"
)


def sdp_of(body: bytes) -> SessionDescription:
    return SessionDescription.parse(body)


def answer_from(address: str, port: int = 5000, attrs: str = "") -> bytes:
    return (
        f"v=0\r\no=callee 1 1 IN IP4 {address}\r\ns=-\r\nc=IN IP4 {address}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\n{attrs}"
    ).encode()


@implementer(IMediaSession)
class RecordingSession:
    """Rewrites SDP as an engine would (our address, one port per leg)
    and writes down every call; C{pending} holds the unfired results when
    the engine is told to answer later."""

    on_timeout = None

    def __init__(self, engine: "RecordingEngine", call_id: str, policy) -> None:
        self.engine = engine
        self.call_id = call_id
        self.policy = policy
        self.closed = 0
        self.pending: List[defer.Deferred] = []

    def offer(self, leg, sdp, source):
        return self._step("offer", leg, sdp, source)

    def answer(self, leg, sdp, source):
        return self._step("answer", leg, sdp, source)

    def _step(self, kind, leg, sdp, source):
        self.engine.log.append((kind, leg, sdp.address(sdp.media[0]), source))
        if self.engine.fail_next is not None:
            error, self.engine.fail_next = self.engine.fail_next, None
            return defer.fail(error)
        out = sdp.copy()
        facing = "b" if leg == "a" else "a"
        out.connection = Connection("IN", "IP4", PBX_MEDIA)
        for m in out.media:
            m.connection = None
            m.port = PORT_TO[facing]
        if self.engine.later:
            d = defer.Deferred()
            d.addCallback(lambda _: out)
            self.pending.append(d)
            return d
        return defer.succeed(out)

    def stats(self):
        return STATS

    def close(self):
        self.closed += 1
        return defer.succeed(STATS)


@implementer(IMediaEngine)
class RecordingEngine:
    def __init__(self) -> None:
        self.sessions: List[RecordingSession] = []
        self.log: list = []
        self.fail_next: Optional[Exception] = None
        self.later = False
        self.stopped = False

    def session(self, call_id, policy):
        session = RecordingSession(self, call_id, policy)
        self.sessions.append(session)
        return session

    def stop(self):
        self.stopped = True


class _Bench(CallHarness):
    MODE = "all"

    def setUp(self):
        self.start()

    def start(self, toml: str = "", contacts=("<sip:bob@192.0.2.20:5060>",)):
        self.setup_module(toml=f'media_proxy = "{self.MODE}"\n' + toml, contacts=contacts)
        self.engine = RecordingEngine()
        self.context.media_engine = self.engine

    def notes(self, call) -> List[str]:
        return [i["message"] for i in call.record.sip_flow.items if i["leg"] == "media"]


class NoneModeTests(_Bench, SynchronousTestCase):
    """media_proxy = "none": every body crosses byte for byte, no session."""

    MODE = "none"

    def test_bytes_untouched_everywhere(self):
        tx, call = self.invite(body=ODD_OFFER)
        fork = self.core.last("INVITE")
        self.assertEqual(fork.request.body, ODD_OFFER)
        odd_answer = ODD_OFFER.replace(b"192.0.2.10", b"192.0.2.20")
        fork.answer(183, body=odd_answer)
        self.assertEqual(tx.last.body, odd_answer)
        fork.answer(200, body=odd_answer)
        self.assertEqual(tx.last.body, odd_answer)
        self.caller_ack(call)
        # A re-INVITE both ways.
        reinvite = self.callee_request(call, "INVITE", 2, body=odd_answer)
        out = self.core.last("INVITE")
        self.assertEqual(out.request.body, odd_answer)
        out.answer(200, body=ODD_OFFER, to_tag=call.tx.local_tag() and "fromtag1")
        self.assertEqual(reinvite.last.body, ODD_OFFER)
        self.assertEqual(self.engine.log, [])
        self.assertEqual(self.engine.sessions, [])
        self.caller_request(call, "BYE", 2)
        self.assertEqual(call.record.media, {"mode": "none", "anchored": False, "reason": "media_proxy none: SDP relayed untouched"})

    def test_offerless_untouched(self):
        tx, call = self.invite(body=b"")
        fork = self.core.last("INVITE")
        self.assertEqual(fork.request.body, b"")
        fork.answer(200, body=ODD_OFFER)
        self.assertEqual(tx.last.body, ODD_OFFER)
        self.caller_ack(call, 1, body=SDP_ANSWER)
        self.assertEqual(self.core.acks()[-1].body, SDP_ANSWER)
        self.assertEqual(self.engine.log, [])

    def test_not_sdp_untouched(self):
        """A body that does not even parse as SDP is relayed as is."""
        tx, call = self.invite(body=b"v=0\r\nthis is not sdp\r\n")
        self.assertEqual(self.core.last("INVITE").request.body, b"v=0\r\nthis is not sdp\r\n")


class UnanchoredDecisionTests(_Bench, SynchronousTestCase):
    """auto/nat calls without a reason to anchor relay SDP untouched."""

    MODE = "auto"

    def test_public_phones_not_anchored(self):
        tx, call = self.invite(body=SDP_OFFER)
        fork = self.core.last("INVITE")
        self.assertEqual(fork.request.body, SDP_OFFER)
        fork.answer(200, body=SDP_ANSWER)
        self.assertEqual(tx.last.body, SDP_ANSWER)
        self.assertEqual(self.engine.sessions, [])
        self.assertIn("not anchored", self.notes(call)[0])

    def test_private_caller_anchored(self):
        """A caller whose SDP names a private address is behind NAT."""
        tx, call = self.invite(body=SDP_OFFER.replace(b"192.0.2.10", b"10.0.0.7"))
        self.assertEqual(len(self.engine.sessions), 1)
        self.assertIn(PBX_MEDIA.encode(), self.core.last("INVITE").request.body)
        self.assertIn("10.0.0.7", self.notes(call)[0])


    def test_srtp_caller_to_plain_callee_anchored(self):
        """SDES keys never cross plain signalling: a callee reached over
        UDP gets plain RTP (srtp_b False), so an SRTP caller is anchored."""
        offer = SDP_OFFER.replace(b"RTP/AVP 0\r\n", b"RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n")
        tx, call = self.invite(body=offer)
        (session,) = self.engine.sessions
        self.assertIs(session.policy.srtp_b, False)
        self.assertIn("SRTP on one side only", self.notes(call)[0])

    def test_tls_callee_gets_what_was_offered(self):
        self.start(contacts=("<sip:bob@192.0.2.20:5061;transport=tls>",))
        self.locator.bindings["bob@example.com"][0].live_flow = lambda transports: self.core.flow(("192.0.2.20", 5061), "TLS")
        tx, call = self.invite()
        self.assertEqual(self.engine.sessions, [])
        self.assertEqual(call.media.policy.srtp_b, None)


class BypassTests(_Bench, SynchronousTestCase):
    """bypass: the offer keeps only allowed codecs, addresses untouched."""

    MODE = "bypass"

    def setUp(self):
        self.start('codecs = ["pcmu", "pcma"]\n')

    def test_codecs_filtered(self):
        offer = (
            b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
            b"m=audio 4000 RTP/AVP 9 0 8 101\r\na=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\n"
            b"a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"
        )
        tx, call = self.invite(body=offer)
        sent = self.core.last("INVITE").request.body
        self.assertEqual(
            sent,
            b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
            b"m=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\n"
            b"a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n",
        )
        self.core.last("INVITE").answer(200, body=SDP_ANSWER)
        self.assertEqual(tx.last.body, SDP_ANSWER)
        self.assertEqual(self.engine.sessions, [])

    def test_nothing_allowed_left_as_is(self):
        """An offer with no allowed codec is not emptied (the callee judges it)."""
        offer = SDP_OFFER.replace(b"RTP/AVP 0", b"RTP/AVP 9")
        self.assertEqual(keep_allowed_codecs(offer, ["pcmu"]), offer)
        self.assertEqual(keep_allowed_codecs(SDP_OFFER, ["pcmu"]), SDP_OFFER)


class AnchoredCallTests(_Bench, SynchronousTestCase):
    """media_proxy = "all": each SDP point goes through the session, in order."""

    def test_offer_and_answer(self):
        tx, call = self.invite()
        (session,) = self.engine.sessions
        self.assertEqual(session.call_id, tx.request.call_id)
        self.assertEqual(session.policy.mode, "all")
        self.assertEqual(self.engine.log, [("offer", "a", "192.0.2.10", CALLER_ADDRESS)])
        fork = self.core.last("INVITE")
        sent = sdp_of(fork.request.body)
        self.assertEqual((sent.connection.address, sent.media[0].port), (PBX_MEDIA, 31000))
        fork.answer(180)
        fork.answer(200, body=SDP_ANSWER)
        self.assertEqual(self.engine.log[1], ("answer", "b", "192.0.2.20", fork.flow.remote))
        got = sdp_of(tx.last.body)
        self.assertEqual((tx.last.status, got.connection.address, got.media[0].port), (200, PBX_MEDIA, 30000))
        self.assertEqual(call.b.local_sdp, fork.request.body)
        self.assertEqual(call.a.local_sdp, tx.last.body)
        notes = self.notes(call)
        self.assertIn("media: all, anchored (media_proxy all)", notes[0])
        self.assertTrue(any("offer from a" in n and "PCMU" in n for n in notes))

    def test_early_media_first_dialog_wins(self):
        """Two forks send 183 with SDP: the first answers the caller; the
        second's SDP is replaced by that answer (no engine call); the 2xx
        of the second re-points leg b to it."""
        self.start(contacts=TWO)
        tx, call = self.invite()
        f1, f2 = self.core.requests("INVITE")
        f1.answer(183, body=answer_from("192.0.2.20"), to_tag="e1")
        first = tx.last.body
        self.assertIn(PBX_MEDIA.encode(), first)
        f2.answer(183, body=answer_from("192.0.2.21"), to_tag="e2")
        self.assertEqual(tx.last.body, first)
        self.assertEqual([e[:3] for e in self.engine.log], [("offer", "a", "192.0.2.10"), ("answer", "b", "192.0.2.20")])
        f2.answer(200, body=answer_from("192.0.2.21"), to_tag="e2")
        self.assertEqual(self.engine.log[-1][:3], ("answer", "b", "192.0.2.21"))
        self.assertEqual(tx.last.status, 200)
        self.assertIn(PBX_MEDIA.encode(), tx.last.body)
        self.assertEqual(self.core.last("CANCEL").request.uri, f1.request.uri)

    def test_same_sdp_not_answered_twice(self):
        """The 2xx repeating its 183's SDP (same dialog) costs no engine call."""
        tx, call = self.invite()
        fork = self.core.last("INVITE")
        fork.answer(183, body=SDP_ANSWER)
        fork.answer(200, body=SDP_ANSWER)
        self.assertEqual([e[0] for e in self.engine.log], ["offer", "answer"])
        self.assertEqual(tx.last.status, 200)
        self.assertIn(PBX_MEDIA.encode(), tx.last.body)

    def test_offerless_invite(self):
        """No SDP in the INVITE: the 2xx's offer is leg b's, the caller's
        ACK brings leg a's answer, which the callee's ACK carries."""
        tx, call = self.invite(body=b"")
        fork = self.core.last("INVITE")
        self.assertEqual(fork.request.body, b"")
        self.assertEqual(self.engine.log, [])
        fork.answer(200, body=SDP_ANSWER)
        self.assertEqual(self.engine.log[-1][:3], ("offer", "b", "192.0.2.20"))
        self.assertEqual(sdp_of(tx.last.body).media[0].port, 30000)
        self.assertEqual(self.core.acks(), [])
        self.caller_ack(call, 1, body=SDP_OFFER)
        self.assertEqual(self.engine.log[-1][:3], ("answer", "a", "192.0.2.10"))
        (ack,) = self.core.acks()
        self.assertEqual(sdp_of(ack.body).media[0].port, 31000)
        self.assertEqual(ack.get("content-type"), "application/sdp")

    def test_reinvite_hold_from_callee(self):
        """A re-INVITE from b (hold: sendonly) is b's offer; a's 2xx is the answer."""
        tx, call, fork = self.answered_call()
        hold = self.callee_request(call, "INVITE", 2, body=answer_from("192.0.2.20", attrs="a=sendonly\r\n"))
        out = self.core.last("INVITE")
        self.assertEqual(self.engine.log[-1][:2], ("offer", "b"))
        relayed = sdp_of(out.request.body)
        self.assertEqual((relayed.media[0].port, relayed.media[0].direction), (30000, "sendonly"))
        out.answer(200, body=SDP_OFFER.replace(b"RTP/AVP 0\r\n", b"RTP/AVP 0\r\na=recvonly\r\n"), to_tag="fromtag1")
        self.assertEqual(self.engine.log[-1][:2], ("answer", "a"))
        answered = sdp_of(hold.last.body)
        self.assertEqual((hold.last.status, answered.media[0].port, answered.media[0].direction), (200, 31000, "recvonly"))

    def test_update_offer_from_caller(self):
        tx, call, fork = self.answered_call(answer_headers=[("Allow", "INVITE, ACK, BYE, CANCEL, UPDATE")])
        update = self.caller_request(call, "UPDATE", 2, body=SDP_OFFER)
        out = self.core.last("UPDATE")
        self.assertEqual(self.engine.log[-1][:2], ("offer", "a"))
        self.assertEqual(sdp_of(out.request.body).media[0].port, 31000)
        out.answer(200, body=SDP_ANSWER)
        self.assertEqual(self.engine.log[-1][:2], ("answer", "b"))
        self.assertEqual(sdp_of(update.last.body).media[0].port, 30000)

    def test_offerless_reinvite(self):
        tx, call, fork = self.answered_call()
        reinvite = self.caller_request(call, "INVITE", 2)
        out = self.core.last("INVITE")
        self.assertEqual(out.request.body, b"")
        out.answer(200, body=SDP_ANSWER)
        self.assertEqual(self.engine.log[-1][:2], ("offer", "b"))
        self.assertEqual(sdp_of(reinvite.last.body).media[0].port, 30000)
        self.caller_ack(call, 2, body=SDP_OFFER)
        self.assertEqual(self.engine.log[-1][:2], ("answer", "a"))
        self.assertEqual(sdp_of(self.core.acks()[-1].body).media[0].port, 31000)

    def test_prack_carries_the_answer(self):
        """Offerless INVITE, reliable 183 with b's offer: the caller's PRACK
        brings a's answer, which the callee's PRACK carries rewritten."""
        tx, call = self.invite(body=b"", headers=[("Supported", "100rel")])
        fork = self.core.last("INVITE")
        fork.answer(183, headers=[("Require", "100rel"), ("RSeq", "7")], body=SDP_ANSWER)
        self.assertEqual(self.engine.log[-1][:2], ("offer", "b"))
        relayed = tx.last
        self.assertEqual(sdp_of(relayed.body).media[0].port, 30000)
        prack = self.caller_request(call, "PRACK", 2, headers=[("RAck", f"{relayed.get('rseq')} 1 INVITE")], body=SDP_OFFER)
        self.assertEqual(self.engine.log[-1][:2], ("answer", "a"))
        out = self.core.last("PRACK")
        self.assertEqual(sdp_of(out.request.body).media[0].port, 31000)
        out.answer(200)
        self.assertEqual(prack.statuses(), [200])

    def test_offer_refused_488_no_fork(self):
        self.engine.fail_next = MediaError(488, "Not Acceptable Here")
        tx, call = self.invite()
        self.assertEqual(tx.statuses(), [100, 488])
        self.assertEqual(self.core.requests("INVITE"), [])
        self.assertIsNone(call)  # over already
        self.assertEqual(self.engine.sessions[0].closed, 1)
        (record,) = self.records.saved
        self.assertEqual((record.status_code, record.hangup_reason), (488, R.FAILED))
        notes = [i["message"] for i in record.sip_flow.items if i["leg"] == "media"]
        self.assertTrue(any("refused: 488" in n for n in notes))

    def test_ports_exhausted_503(self):
        self.engine.fail_next = MediaError(503, "RTP port range exhausted")
        tx, call = self.invite()
        self.assertEqual(tx.last.status, 503)
        self.assertEqual(self.core.requests("INVITE"), [])

    def test_bad_sdp_488(self):
        tx, call = self.invite(body=b"v=0\r\nnonsense\r\n")
        self.assertEqual(tx.last.status, 488)
        self.assertEqual(self.core.requests("INVITE"), [])

    def test_answer_refused(self):
        """The callee's 2xx answer is refused: the caller gets 488, the
        callee an ACK then a BYE, the session is closed."""
        tx, call = self.invite()
        fork = self.core.last("INVITE")
        self.engine.fail_next = MediaError(488, "no common codec")
        fork.answer(200, body=SDP_ANSWER)
        self.assertEqual(tx.last.status, 488)
        self.assertEqual(len(self.core.acks()), 1)
        self.assertEqual(len(self.core.requests("BYE")), 1)
        self.assertEqual(call.state, "ended")
        self.assertEqual(self.engine.sessions[0].closed, 1)

    def test_early_answer_refused_cancels_forks(self):
        self.start(contacts=TWO)
        tx, call = self.invite()
        f1, f2 = self.core.requests("INVITE")
        f2.answer(180, to_tag="r2")
        self.engine.fail_next = MediaError(488, "no common codec")
        f1.answer(183, body=SDP_ANSWER, to_tag="e1")
        self.assertEqual(tx.last.status, 488)
        self.assertEqual({c.request.uri for c in self.core.requests("CANCEL")}, {f1.request.uri, f2.request.uri})

    def test_reoffer_refused(self):
        """A re-offer the engine refuses gets 488; nothing is relayed; the call goes on."""
        tx, call, fork = self.answered_call()
        self.engine.fail_next = MediaError(488, "no codec")
        reinvite = self.caller_request(call, "INVITE", 2, body=SDP_OFFER)
        self.assertEqual(reinvite.statuses(), [488])
        self.assertEqual(len(self.core.requests("INVITE")), 1)
        self.assertEqual(call.state, "answered")
        again = self.caller_request(call, "INVITE", 3, body=SDP_OFFER)
        self.assertEqual(len(self.core.requests("INVITE")), 2)

    def test_closed_on_every_end(self):
        # BYE.
        tx, call, fork = self.answered_call()
        self.caller_request(call, "BYE", 2)
        self.assertEqual(self.engine.sessions[-1].closed, 1)
        # CANCEL.
        tx, call = self.invite(call_id="c2")
        self.core.last("INVITE").answer(180)
        tx.cancel()
        self.assertEqual((call.state, self.engine.sessions[-1].closed), ("ended", 1))
        # Failure.
        tx, call = self.invite(call_id="c3")
        self.core.last("INVITE").answer(486)
        self.assertEqual((call.state, self.engine.sessions[-1].closed), ("ended", 1))
        # Ring timeout.
        tx, call = self.invite(call_id="c4")
        self.core.last("INVITE").answer(180)
        self.clock.advance(61)
        self.assertEqual((tx.last.status, self.engine.sessions[-1].closed), (480, 1))
        # Service stop.
        tx, call, fork = self.answered_call()
        self.module.stop()
        self.assertEqual((call.record.hangup_reason, self.engine.sessions[-1].closed), (R.BY_SYSTEM, 1))
        self.assertEqual(len(self.engine.sessions), 5)

    def test_rtp_timeout(self):
        tx, call, fork = self.answered_call()
        session = self.engine.sessions[0]
        session.on_timeout()
        self.assertEqual(len(self.core.requests("BYE")), 2)
        self.assertEqual(call.record.hangup_reason, R.RTP_TIMEOUT)
        self.assertEqual(call.record.hangup_reason, "rtpTimeout")
        self.assertEqual(session.closed, 1)
        self.assertTrue(any("no RTP for 30 s" in n for n in self.notes(call)))

    def test_record_gets_figures(self):
        tx, call, fork = self.answered_call()
        self.callee_request(call, "BYE", 2)
        (record,) = self.records.saved
        self.assertEqual(record.media["mode"], "all")
        self.assertTrue(record.media["anchored"])
        self.assertEqual(record.media["legs"], STATS)
        self.assertEqual(record.media["legs"]["a"]["in"]["lost"], 2)
        notes = self.notes(call)
        self.assertIn("media: leg a latched to 192.0.2.10:4000", notes)
        self.assertIn("media: leg b latched to 192.0.2.20:5000", notes)
        import json

        row = record.as_row()
        self.assertEqual(json.loads(row[-1])["legs"]["b"]["out"]["packets"], 500)

    def test_engine_stopped_with_module(self):
        own = RecordingEngine()
        self.context.media_engine = None
        self.module._media_engine = own
        self.module.stop()
        self.assertTrue(own.stopped)


class SlowEngineTests(_Bench, SynchronousTestCase):
    """An engine that answers later (rtpengine): messages keep their order."""

    def setUp(self):
        self.start()
        self.engine.later = True

    def fire(self, n: int = 0) -> None:
        self.engine.sessions[0].pending.pop(n).callback(None)

    def test_fork_waits_for_the_offer(self):
        tx, call = self.invite()
        self.assertEqual(self.core.requests("INVITE"), [])
        self.fire()
        self.assertIn(PBX_MEDIA.encode(), self.core.last("INVITE").request.body)

    def test_200_never_overtakes_183(self):
        tx, call = self.invite()
        self.fire()
        fork = self.core.last("INVITE")
        fork.answer(183, body=SDP_ANSWER)
        fork.answer(200, body=answer_from("192.0.2.20", 5002))
        self.assertEqual([e[0] for e in self.engine.log], ["offer", "answer"])
        self.assertEqual(tx.statuses(), [100])
        self.fire()
        self.assertEqual(tx.statuses(), [100, 183])
        self.assertEqual([e[0] for e in self.engine.log], ["offer", "answer", "answer"])
        self.fire()
        self.assertEqual(tx.statuses(), [100, 183, 200])

    def test_cancel_while_the_offer_is_out(self):
        tx, call = self.invite()
        tx.cancel()
        self.assertEqual(tx.last.status, 487)
        self.assertEqual(self.engine.sessions[0].closed, 1)
        self.fire()
        self.assertEqual(self.core.requests("INVITE"), [])


class OverrideTests(_Bench, SynchronousTestCase):
    """The route's media_proxy and the trunk's media_mode reach the decision."""

    MODE = "none"
    TOML = """
[proxy.trunks.carrier]
dest = "sip:198.51.100.5:5060"
media_mode = "{trunk}"

[[proxy.routes]]
name = "out"
dest = "carrier"
{route}
[proxy.routes.match]
"to.user" = "^9"
"""

    def setUp(self):
        pass

    def test_trunk_force_transcode(self):
        self.start(self.TOML.format(trunk="force_transcode", route=""), contacts=())
        tx, call = self.invite(uri="sip:9555@example.com")
        self.assertEqual(len(self.engine.sessions), 1)
        self.assertEqual(self.engine.sessions[0].policy.mode, "all")
        self.assertIn(PBX_MEDIA.encode(), self.core.last("INVITE").request.body)

    def test_route_beats_trunk(self):
        self.start(self.TOML.format(trunk="force_transcode", route='media_proxy = "none"'), contacts=())
        tx, call = self.invite(uri="sip:9555@example.com")
        self.assertEqual(self.engine.sessions, [])
        self.assertEqual(self.core.last("INVITE").request.body, SDP_OFFER)
