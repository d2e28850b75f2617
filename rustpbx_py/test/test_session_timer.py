"""
Tests for L{rustpbx_py.call.session_timer} and the session timers of
B2BUA calls (RFC 4028): negotiation on both legs, refreshes by the side
that is refresher, and both legs torn down when a session expires.
"""

from __future__ import annotations

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from rustpbx_py.call import record as R
from rustpbx_py.call import session_timer as ST
from rustpbx_py.sip.message import Response
from rustpbx_py.test.call_fakes import SDP_ANSWER, SDP_OFFER, CallHarness
from rustpbx_py.test.fakes import make_request


def request(*headers):
    return make_request("INVITE", headers=list(headers))


class ParseTests(SynchronousTestCase):
    def test_session_expires(self):
        """Interval and refresher; an unknown refresher is ignored."""
        self.assertEqual(ST.parse_session_expires("1800"), (1800, None))
        self.assertEqual(ST.parse_session_expires("90;refresher=UAC"), (90, "uac"))
        self.assertEqual(ST.parse_session_expires(" 120 ; refresher=uas"), (120, "uas"))
        self.assertEqual(ST.parse_session_expires("120;refresher=both"), (120, None))
        self.assertRaises(ValueError, ST.parse_session_expires, "soon")

    def test_min_se(self):
        """Min-SE is at least 90 whatever the message says."""
        self.assertEqual(ST.parse_min_se(request(("Min-SE", "120"))), 120)
        self.assertEqual(ST.parse_min_se(request(("Min-SE", "30"))), 90)
        self.assertEqual(ST.parse_min_se(request()), 90)

    def test_expiry_delay(self):
        """Section 10: interval - min(32, interval / 3)."""
        self.assertEqual(ST.expiry_delay(90), 60)
        self.assertEqual(ST.expiry_delay(1800), 1768)


class UasPlanTests(SynchronousTestCase):
    """Our side of the negotiation where we answer (section 9)."""

    def plan(self, *headers, enabled=True, ours=1800):
        return ST.uas_plan(request(*headers), enabled, ours)

    def test_too_small(self):
        """A Session-Expires below 90 is refused with 422 and Min-SE: 90."""
        refusal = self.plan(("Session-Expires", "60"), ("Supported", "timer"))
        self.assertEqual(refusal, ST.Refusal(422, "Session Interval Too Small", (("Min-SE", "90"),)))

    def test_bad_value(self):
        """An unreadable Session-Expires is a 400."""
        self.assertEqual(self.plan(("Session-Expires", "x")).status, 400)

    def test_caller_refreshes_by_default(self):
        """No refresher named, timer supported: the UAC refreshes."""
        self.assertEqual(self.plan(("Session-Expires", "90"), ("Supported", "timer")), ST.Plan(90, True, True))

    def test_refresher_named(self):
        """A refresher the request names is kept."""
        self.assertEqual(self.plan(("Session-Expires", "90;refresher=uas"), ("Supported", "timer")), ST.Plan(90, False, True))
        self.assertEqual(self.plan(("Session-Expires", "90;refresher=uac"), ("Supported", "timer")), ST.Plan(90, True, True))

    def test_uac_without_support(self):
        """A Session-Expires a proxy added for a UAC without timer support:
        we refresh (refresher=uas), and no Require goes back."""
        plan = self.plan(("Session-Expires", "600"))
        self.assertEqual(plan, ST.Plan(600, False, False))
        self.assertEqual(ST.uas_headers(plan), [("Session-Expires", "600;refresher=uas")])

    def test_reduced_to_ours_not_below_min_se(self):
        """A longer interval is reduced to ours, but never below the
        request's Min-SE; a shorter one is kept (never increased)."""
        self.assertEqual(self.plan(("Session-Expires", "7200"), ("Supported", "timer")).interval, 1800)
        self.assertEqual(self.plan(("Session-Expires", "7200"), ("Min-SE", "3600"), ("Supported", "timer")).interval, 3600)
        self.assertEqual(self.plan(("Session-Expires", "120"), ("Supported", "timer")).interval, 120)

    def test_supported_without_session_expires(self):
        """A UA that supports timers but asks for none gets ours (or, in a
        refresh, the dialog's current interval), and refreshes."""
        self.assertEqual(self.plan(("Supported", "timer")), ST.Plan(1800, True, True))
        self.assertEqual(ST.uas_plan(request(("Supported", "timer")), True, 1800, 120), ST.Plan(120, True, True))

    def test_none(self):
        """No Session-Expires and no support, or timers off: no timer."""
        self.assertIsNone(self.plan())
        self.assertIsNone(self.plan(("Session-Expires", "90"), ("Supported", "timer"), enabled=False))

    def test_headers(self):
        """Our 2xx says who refreshes and requires timer from a supporting UA."""
        self.assertEqual(
            ST.uas_headers(ST.Plan(90, True, True)), [("Session-Expires", "90;refresher=uac"), ("Require", "timer")]
        )


class UacResultTests(SynchronousTestCase):
    """What a 2xx to our INVITE settles (section 7.2)."""

    def result(self, value):
        response = Response(200, "OK")
        if value:
            response.add("Session-Expires", value)
        return ST.uac_result(response)

    def test_cases(self):
        """No header: no timer; refresher=uas: the callee refreshes;
        uac or none: we do."""
        self.assertIsNone(self.result(None))
        self.assertEqual(self.result("1800;refresher=uas"), ST.Plan(1800, True, True))
        self.assertEqual(self.result("1800;refresher=uac"), ST.Plan(1800, False, True))
        self.assertEqual(self.result("1800"), ST.Plan(1800, False, True))


class SessionTimerTests(SynchronousTestCase):
    """The running timer of one leg on a clock."""

    def setUp(self):
        self.clock = task.Clock()
        self.events = []

    def timer(self, interval, we_refresh):
        t = ST.SessionTimer(
            self.clock, "a", interval, we_refresh, lambda t: self.events.append("refresh"), lambda t: self.events.append("expire")
        )
        t.start()
        return t

    def test_peer_refreshes(self):
        """We watch: the session expires at interval - min(32, interval/3)."""
        self.timer(90, False)
        self.clock.advance(59.9)
        self.assertEqual(self.events, [])
        self.clock.advance(0.1)
        self.assertEqual(self.events, ["expire"])

    def test_refresh_pushes_expiry(self):
        """A refresh restarts the wait."""
        t = self.timer(90, False)
        self.clock.advance(50)
        t.refreshed()
        self.clock.advance(59)
        self.assertEqual(self.events, [])
        self.clock.advance(1)
        self.assertEqual(self.events, ["expire"])

    def test_we_refresh(self):
        """As refresher we refresh at half the interval; unanswered, the
        session ends when the interval runs out."""
        self.timer(1800, True)
        self.clock.advance(899)
        self.assertEqual(self.events, [])
        self.clock.advance(1)
        self.assertEqual(self.events, ["refresh"])
        self.clock.advance(900)
        self.assertEqual(self.events, ["refresh", "expire"])

    def test_renegotiated(self):
        """A refresh may change the interval and the refresher."""
        t = self.timer(1800, True)
        t.refreshed(ST.Plan(120, True, True))
        self.assertFalse(t.we_refresh)
        self.clock.advance(87.9)
        self.assertEqual(self.events, [])
        self.clock.advance(0.1)
        self.assertEqual(self.events, ["expire"])

    def test_stop(self):
        """A stopped timer fires nothing."""
        t = self.timer(90, True)
        t.stop()
        self.clock.advance(1000)
        self.assertEqual(self.events, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])


TIMER = ("Supported", "timer")
ALLOW_UPDATE = ("Allow", "INVITE, ACK, BYE, CANCEL, UPDATE")


class CallTimerTests(CallHarness, SynchronousTestCase):
    """Session timers of B2BUA calls, both legs."""

    def setUp(self):
        self.setup_module()

    def test_422(self):
        """An INVITE asking for 60 s gets 422 with Min-SE: 90 and is not forked."""
        tx, call = self.invite(headers=[("Session-Expires", "60"), TIMER])
        self.assertEqual(tx.last.status, 422)
        self.assertEqual(tx.last.get("min-se"), "90")
        self.assertEqual(self.core.requests("INVITE"), [])
        self.assertEqual(self.records.saved[0].status_code, 422)

    def test_both_legs_negotiated(self):
        """The caller's 90 s is kept on its leg (it refreshes, Require:
        timer); the callee is offered our session_expires with Min-SE 90."""
        tx, call, fork = self.answered_call(caller_headers=[("Session-Expires", "90"), TIMER])
        invite = fork.request
        self.assertEqual(invite.get("session-expires"), "1800")
        self.assertEqual(invite.get("min-se"), "90")
        self.assertIn("timer", invite.get_all("supported"))
        ok = tx.responses[-1]
        self.assertEqual(ok.get("session-expires"), "90;refresher=uac")
        self.assertEqual(ok.get("require"), "timer")
        self.assertEqual(call.timers["a"].we_refresh, False)
        self.assertNotIn("b", call.timers)  # the callee's 200 had no Session-Expires

    def test_expiry_ends_both_legs(self):
        """A caller that never refreshes its 90 s session: after 60 s both
        legs get BYE and the record says sessionExpired."""
        tx, call, fork = self.answered_call(caller_headers=[("Session-Expires", "90"), TIMER])
        self.clock.advance(59.9)
        self.assertEqual(self.core.requests("BYE"), [])
        self.clock.advance(0.1)
        byes = self.core.requests("BYE")
        self.assertEqual(sorted(b.request.call_id for b in byes), sorted([tx.request.call_id, call.b_call_id]))
        self.assertEqual(call.record.hangup_reason, R.SESSION_EXPIRED)
        self.assertEqual({d.getTime() - self.clock.seconds() for d in self.module_timers()}, {32})  # only the forget timers

    def test_caller_update_refresh(self):
        """An UPDATE without SDP from the caller refreshes its leg: answered
        by us (not relayed) with the session headers, and the expiry moves."""
        tx, call, fork = self.answered_call(caller_headers=[("Session-Expires", "90"), TIMER])
        self.clock.advance(40)
        update = self.caller_request(call, "UPDATE", 2, headers=[("Session-Expires", "90;refresher=uac"), TIMER])
        self.assertEqual(update.statuses(), [200])
        self.assertEqual(update.last.get("session-expires"), "90;refresher=uac")
        self.assertEqual(update.last.get("require"), "timer")
        self.assertEqual(self.core.requests("UPDATE"), [])
        self.clock.advance(59)
        self.assertEqual(call.state, "answered")
        self.clock.advance(1)
        self.assertEqual(call.record.hangup_reason, R.SESSION_EXPIRED)

    def test_caller_reinvite_refresh(self):
        """A refreshing re-INVITE from the caller is relayed (the callee is
        told our B-leg timer) and refreshes both legs."""
        tx, call, fork = self.answered_call(
            caller_headers=[("Session-Expires", "90"), TIMER], answer_headers=[("Session-Expires", "1800;refresher=uas")]
        )
        self.clock.advance(45)
        reinvite = self.caller_request(call, "INVITE", 2, headers=[("Session-Expires", "90;refresher=uac"), TIMER], body=SDP_OFFER)
        out = self.core.last("INVITE")
        self.assertEqual(out.request.get("session-expires"), "1800;refresher=uas")
        out.answer(200, headers=[("Session-Expires", "1800;refresher=uas")], body=SDP_ANSWER)
        self.assertEqual(reinvite.last.get("session-expires"), "90;refresher=uac")
        self.caller_ack(call, 2)
        self.clock.advance(59)
        self.assertEqual(call.state, "answered")

    def test_refresh_may_lengthen(self):
        """A refresh asking for more than the current interval gets it, up
        to our session_expires."""
        tx, call, fork = self.answered_call(caller_headers=[("Session-Expires", "90"), TIMER])
        update = self.caller_request(call, "UPDATE", 2, headers=[("Session-Expires", "7200;refresher=uac"), TIMER])
        self.assertEqual(update.last.get("session-expires"), "1800;refresher=uac")
        self.assertEqual(call.timers["a"].interval, 1800)

    def test_in_dialog_422(self):
        """A re-INVITE asking for 30 s is refused with 422 and not relayed."""
        tx, call, fork = self.answered_call()
        reinvite = self.caller_request(call, "INVITE", 2, headers=[("Session-Expires", "30"), TIMER], body=SDP_OFFER)
        self.assertEqual(reinvite.statuses(), [422])
        self.assertEqual(len(self.core.requests("INVITE")), 1)

    def test_we_refresh_callee_with_update(self):
        """A callee that makes us refresher (refresher=uac) and allows
        UPDATE gets an UPDATE at half the interval; its 200 keeps the call."""
        tx, call, fork = self.answered_call(answer_headers=[("Session-Expires", "1800;refresher=uac"), ALLOW_UPDATE])
        self.clock.advance(899)
        self.assertEqual(self.core.requests("UPDATE"), [])
        self.clock.advance(1)
        update = self.core.last("UPDATE")
        self.assertEqual(update.request.call_id, call.b_call_id)
        self.assertEqual(update.request.get("session-expires"), "1800;refresher=uac")
        self.assertEqual(update.request.body, b"")
        update.answer(200, headers=[("Session-Expires", "1800;refresher=uac")])
        self.clock.advance(899)
        self.assertEqual(len(self.core.requests("UPDATE")), 1)
        self.clock.advance(1)
        self.assertEqual(len(self.core.requests("UPDATE")), 2)
        self.assertEqual(call.state, "answered")

    def test_we_refresh_callee_with_reinvite(self):
        """Without UPDATE in the callee's Allow the refresh is a re-INVITE
        offering the same SDP again; its 2xx is ACKed."""
        tx, call, fork = self.answered_call(answer_headers=[("Session-Expires", "1800;refresher=uac")])
        self.clock.advance(900)
        reinvite = self.core.last("INVITE")
        self.assertIsNot(reinvite, fork)
        self.assertEqual(reinvite.request.get("cseq"), "2 INVITE")
        self.assertEqual(reinvite.request.body, SDP_OFFER)
        reinvite.answer(200, headers=[("Session-Expires", "1800;refresher=uac")], body=SDP_ANSWER)
        self.assertEqual(self.core.acks()[-1].get("cseq"), "2 ACK")
        self.assertEqual(self.core.requests("UPDATE"), [])

    def test_update_refused_falls_back(self):
        """A callee that lists UPDATE but answers 405 gets a re-INVITE."""
        tx, call, fork = self.answered_call(answer_headers=[("Session-Expires", "1800;refresher=uac"), ALLOW_UPDATE])
        self.clock.advance(900)
        self.core.last("UPDATE").answer(405)
        self.assertEqual(self.core.last("INVITE").request.get("cseq"), "3 INVITE")

    def test_we_refresh_caller(self):
        """A caller that names us refresher (refresher=uas) gets our refresh
        on its leg at half the interval: an UPDATE, since it allows it."""
        tx, call, fork = self.answered_call(caller_headers=[("Session-Expires", "120;refresher=uas"), TIMER])
        self.assertEqual(tx.responses[-1].get("session-expires"), "120;refresher=uas")
        self.clock.advance(60)
        update = self.core.last("UPDATE")
        self.assertEqual(update.request.call_id, tx.request.call_id)
        self.assertEqual(update.request.get("session-expires"), "120;refresher=uac")

    def test_refresh_timeout_hangs_up(self):
        """A refresh answered 408 or 481 ends the call (sessionExpired)."""
        tx, call, fork = self.answered_call(answer_headers=[("Session-Expires", "1800;refresher=uac"), ALLOW_UPDATE])
        self.clock.advance(900)
        self.core.last("UPDATE").answer(481)
        self.assertEqual(call.state, "ended")
        self.assertEqual(call.record.hangup_reason, R.SESSION_EXPIRED)

    def test_refresh_422(self):
        """A refresh answered 422 is sent again with the callee's Min-SE."""
        tx, call, fork = self.answered_call(answer_headers=[("Session-Expires", "1800;refresher=uac"), ALLOW_UPDATE])
        self.clock.advance(900)
        self.core.last("UPDATE").answer(422, headers=[("Min-SE", "3600")])
        self.assertEqual(self.core.last("UPDATE").request.get("session-expires"), "3600;refresher=uac")

    def test_unanswered_refresh_expires(self):
        """Refreshes that keep failing (500) are retried, and the session
        ends when its interval runs out."""
        tx, call, fork = self.answered_call(answer_headers=[("Session-Expires", "1800;refresher=uac"), ALLOW_UPDATE])
        self.clock.advance(900)
        self.core.last("UPDATE").answer(500)
        self.clock.advance(30)
        self.assertEqual(len(self.core.requests("UPDATE")), 2)
        self.clock.advance(870)
        self.assertEqual(call.record.hangup_reason, R.SESSION_EXPIRED)

    def test_callee_refreshes(self):
        """A callee that refreshes (refresher=uas) and does not is hung up
        at 1800 - 32 s; its refresh in time keeps the call."""
        tx, call, fork = self.answered_call(answer_headers=[("Session-Expires", "1800;refresher=uas")])
        self.clock.advance(1000)
        update = self.callee_request(call, "UPDATE", 2, headers=[("Session-Expires", "1800;refresher=uac"), TIMER])
        self.assertEqual(update.statuses(), [200])
        self.assertEqual(update.last.get("session-expires"), "1800;refresher=uac")
        self.clock.advance(1767)
        self.assertEqual(call.state, "answered")
        self.clock.advance(1)
        self.assertEqual(call.record.hangup_reason, R.SESSION_EXPIRED)

    def test_callee_422_retried(self):
        """A 422 to our INVITE is answered with a new INVITE asking for the
        callee's Min-SE."""
        tx, call = self.invite()
        first = self.core.last("INVITE")
        first.answer(422, headers=[("Min-SE", "3600")])
        second = self.core.last("INVITE")
        self.assertIsNot(second, first)
        self.assertEqual((second.request.get("session-expires"), second.request.get("min-se")), ("3600", "3600"))
        self.assertEqual(second.request.get("cseq"), "2 INVITE")
        self.assertEqual(tx.statuses(), [100])

    def test_disabled(self):
        """session_timer = false: no Session-Expires anywhere, no timers."""
        self.setup_module(toml="session_timer = false\n")
        tx, call, fork = self.answered_call(caller_headers=[("Session-Expires", "90"), TIMER])
        self.assertIsNone(fork.request.get("session-expires"))
        self.assertIsNone(tx.responses[-1].get("session-expires"))
        self.assertEqual(call.timers, {})
