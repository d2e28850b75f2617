"""
Tests for L{rustpbx_py.call.b2bua} and L{rustpbx_py.modules.call}: the
B2BUA's state machine driven through the call module on the real SIP core,
transaction layer and UDP protocol, with a memory socket and a
L{task.Clock} (see L{rustpbx_py.test.call_fakes}): forking, CANCEL, failure
choice, failover, trunk credentials, in-dialog relay, route sets, late
2xx, 2xx retransmission, PRACK, call records.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from rustpbx_py.call import record as R
from rustpbx_py.call.b2bua import best_response, hangup_reason_for
from rustpbx_py.call.dialog import tag_of
from rustpbx_py.sip.digest import compute_ha1, compute_response
from rustpbx_py.sip.headers import NameAddr, parse_auth_params
from rustpbx_py.sip.message import Response
from rustpbx_py.test.call_fakes import SDP_ANSWER, SDP_OFFER, CallHarness

TWO = ("<sip:bob@192.0.2.20:5060>", "<sip:bob@192.0.2.21:5060>")


def _response(status: int) -> Response:
    return Response(status, "")


class BestResponseTests(SynchronousTestCase):
    """RFC 3261 16.7 step 6 as a B2BUA applies it to its forks."""

    def choose(self, *statuses):
        best = best_response([_response(s) for s in statuses])
        return None if best is None else best.status

    def test_six_wins(self):
        """A 6xx beats everything, even a lower class."""
        self.assertEqual(self.choose(486, 603, 404), 603)

    def test_lowest_class(self):
        """Without 6xx, the lowest class wins: a 4xx beats 5xx."""
        self.assertEqual(self.choose(503, 486), 486)
        self.assertEqual(self.choose(302, 486), 302)

    def test_specific_beats_generic(self):
        """Within 4xx a specific answer beats 408 and 480."""
        self.assertEqual(self.choose(408, 480, 404), 404)
        self.assertEqual(self.choose(480, 408), 408)

    def test_none(self):
        """No responses, no choice."""
        self.assertIsNone(self.choose())

    def test_hangup_reasons(self):
        """Each failure class maps to RustPBX's hangup reason names."""
        self.assertEqual(hangup_reason_for(487), R.CANCELED)
        self.assertEqual(hangup_reason_for(408), R.NO_ANSWER)
        self.assertEqual(hangup_reason_for(480), R.NO_ANSWER)
        self.assertEqual(hangup_reason_for(486), R.REJECTED)
        self.assertEqual(hangup_reason_for(603), R.REJECTED)
        self.assertEqual(hangup_reason_for(503), R.SERVER_UNAVAILABLE)
        self.assertEqual(hangup_reason_for(488), R.FAILED)
        self.assertEqual(hangup_reason_for(403), R.FAILED)


class ForkTests(CallHarness, SynchronousTestCase):
    """Parallel forking to a user's registered contacts."""

    def setUp(self):
        self.setup_module(contacts=TWO)

    def test_parallel(self):
        """Every contact gets an INVITE at once, in one B dialog (same
        Call-ID and From tag), with a decremented Max-Forwards, our Contact
        and Allow, and the caller's SDP; the caller gets 100 Trying."""
        tx, call = self.invite()
        self.assertEqual(tx.statuses(), [100])
        f1, f2 = self.core.requests("INVITE")
        self.assertEqual([f1.request.uri, f2.request.uri], ["sip:bob@192.0.2.20:5060", "sip:bob@192.0.2.21:5060"])
        self.assertEqual(f1.request.call_id, f2.request.call_id)
        self.assertNotEqual(f1.request.call_id, tx.request.call_id)
        self.assertEqual(tag_of(f1.request.get("from")), tag_of(f2.request.get("from")))
        self.assertNotEqual(tag_of(f1.request.get("from")), "fromtag1")
        self.assertEqual(f1.request.get("max-forwards"), "69")
        self.assertEqual(f1.request.get("contact"), "<sip:pbx@192.0.2.1:5060>")
        self.assertIn("UPDATE", f1.request.get("allow"))
        self.assertEqual(f1.request.body, SDP_OFFER)
        self.assertEqual(call.state, "calling")

    def test_first_2xx_wins_cancel_waits_for_provisional(self):
        """The first 2xx is passed to the caller; a fork that has sent no
        provisional is not cancelled until it does (RFC 3261 9.1)."""
        tx, call = self.invite()
        f1, f2 = self.core.requests("INVITE")
        f1.answer(200, body=SDP_ANSWER)
        self.assertEqual(tx.last.status, 200)
        self.assertEqual(tx.last.body, SDP_ANSWER)
        self.assertEqual(self.core.requests("CANCEL"), [])
        f2.answer(180, to_tag="other")
        (cancel,) = self.core.requests("CANCEL")
        self.assertEqual(cancel.request.top_via, f2.request.top_via)
        self.assertEqual(cancel.request.get("cseq"), "1 CANCEL")
        self.assertEqual(cancel.request.uri, f2.request.uri)
        # The 180 of a losing fork is not relayed after the answer.
        self.assertEqual(tx.statuses(), [100, 200])

    def test_ringing_fork_cancelled_at_once(self):
        """A fork that rang is cancelled as soon as another answers."""
        tx, call = self.invite()
        f1, f2 = self.core.requests("INVITE")
        f2.answer(180, to_tag="other")
        f1.answer(200, body=SDP_ANSWER)
        (cancel,) = self.core.requests("CANCEL")
        self.assertEqual(cancel.request.uri, f2.request.uri)

    def test_late_second_2xx(self):
        """A 2xx from a second fork after the winner is ACKed and hung up
        with BYE (once, even if retransmitted); the winner's call goes on."""
        tx, call = self.invite()
        f1, f2 = self.core.requests("INVITE")
        f1.answer(200, body=SDP_ANSWER)
        late = f2.answer(200, body=SDP_ANSWER, to_tag="late", contact="<sip:bob@192.0.2.21:5060>")
        acks = self.core.acks()
        self.assertEqual(len(acks), 2)
        self.assertEqual(tag_of(acks[1].get("to")), "late")
        self.assertEqual(acks[1].uri, "sip:bob@192.0.2.21:5060")
        (bye,) = self.core.requests("BYE")
        self.assertEqual(bye.request.uri, "sip:bob@192.0.2.21:5060")
        self.assertEqual(tag_of(bye.request.get("to")), "late")
        f2.on_response(f2, late)
        self.assertEqual(len(self.core.requests("BYE")), 1)
        self.assertEqual(call.state, "answered")
        self.assertEqual(tag_of(call.b.remote), "callee1")

    def test_winner_2xx_retransmission_acked_again(self):
        """A retransmitted 2xx from the winner gets the same ACK again."""
        tx, call = self.invite()
        f1, _ = self.core.requests("INVITE")
        ok = f1.answer(200, body=SDP_ANSWER)
        f1.on_response(f1, ok)
        first, second = self.core.acks()
        self.assertEqual(first.to_bytes(), second.to_bytes())
        self.assertEqual(first.get("cseq"), "1 ACK")
        self.assertEqual(tx.statuses(), [100, 200])

    def test_ringing_relayed(self):
        """A 180 reaches the caller with our To tag and Contact, and marks
        the record's ring time; 100 Trying is not relayed."""
        tx, call = self.invite()
        f1, _ = self.core.requests("INVITE")
        f1.answer(100, to_tag=None)
        self.assertEqual(tx.statuses(), [100])
        self.clock.advance(2)
        f1.answer(180, "Ringing")
        self.assertEqual(tx.statuses(), [100, 180])
        self.assertEqual(tag_of(tx.last.get("to")), tx.local_tag())
        self.assertEqual(tx.last.get("contact"), "<sip:pbx@192.0.2.1:5060>")
        self.assertEqual(call.record.ring_time, 2)
        self.assertEqual(call.state, "ringing")

    def test_183_with_sdp(self):
        """A 183 with early media SDP is relayed with its body."""
        tx, call = self.invite()
        f1, _ = self.core.requests("INVITE")
        f1.answer(183, "Session Progress", body=SDP_ANSWER)
        self.assertEqual(tx.last.status, 183)
        self.assertEqual(tx.last.body, SDP_ANSWER)
        self.assertEqual(tx.last.get("content-type"), "application/sdp")


class CancelTests(CallHarness, SynchronousTestCase):
    """The caller gives up before an answer."""

    def setUp(self):
        self.setup_module(contacts=TWO)

    def test_cancel(self):
        """A CANCEL from the caller: 487 to its INVITE, CANCEL to every
        fork that rang, the record says canceled with 487."""
        tx, call = self.invite()
        f1, f2 = self.core.requests("INVITE")
        f1.answer(180)
        f2.answer(180, to_tag="t2")
        tx.cancel()
        self.assertEqual(tx.last.status, 487)
        self.assertEqual(sorted(c.request.uri for c in self.core.requests("CANCEL")), sorted([f1.request.uri, f2.request.uri]))
        self.assertEqual((call.record.status_code, call.record.hangup_reason), (487, R.CANCELED))
        self.assertEqual(self.records.saved, [call.record])
        # The forks' 487s change nothing.
        f1.answer(487)
        f2.answer(487, to_tag="t2")
        self.assertEqual(tx.statuses(), [100, 180, 180, 487])

    def test_cancel_before_provisional(self):
        """A fork that had not answered yet is cancelled when its first
        provisional arrives, not before."""
        tx, call = self.invite()
        f1, f2 = self.core.requests("INVITE")
        f1.answer(180)
        tx.cancel()
        self.assertEqual([c.request.uri for c in self.core.requests("CANCEL")], [f1.request.uri])
        f2.answer(180, to_tag="t2")
        self.assertEqual(len(self.core.requests("CANCEL")), 2)
        self.assertEqual(tx.statuses(), [100, 180, 487])

    def test_cancel_after_100_trying(self):
        """A fork that only said 100 Trying is cancelled like one that rang
        (any provisional, RFC 3261 9.1), at once or when its 100 comes;
        its INVITE does not wait for ever in Proceeding."""
        tx, call = self.invite()
        f1, f2 = self.core.requests("INVITE")
        f1.answer(100, to_tag=None)
        tx.cancel()
        self.assertEqual([c.request.uri for c in self.core.requests("CANCEL")], [f1.request.uri])
        f2.answer(100, to_tag=None)
        self.assertEqual(len(self.core.requests("CANCEL")), 2)
        self.clock.advance(64)
        self.assertEqual(self.sip.transactions.client, {})

    def test_answer_after_cancel(self):
        """A 2xx that crosses our CANCEL is ACKed and ended with BYE."""
        tx, call = self.invite()
        f1, _ = self.core.requests("INVITE")
        f1.answer(180)
        tx.cancel()
        f1.answer(200, body=SDP_ANSWER)
        self.assertEqual(len(self.core.acks()), 1)
        self.assertEqual(len(self.core.requests("BYE")), 1)
        self.assertEqual(tx.statuses(), [100, 180, 487])


    def test_cancel_after_answer(self):
        """A CANCEL that arrives after our 200 gets 200 itself and changes
        nothing (RFC 3261 9.2): no 487, no CANCEL to the callee, the call
        stays up."""
        tx, call, fork = self.answered_call()
        answer = tx.cancel()
        self.assertEqual((answer.status, answer.cseq[1]), (200, "CANCEL"))
        self.assertEqual(tx.statuses(), [100, 180, 200])
        self.assertEqual(self.core.requests("CANCEL"), [])
        self.assertEqual(call.state, "answered")


class LateAnswerTests(CallHarness, SynchronousTestCase):
    """A 2xx after its client transaction ended is never left unanswered
    (RFC 3261 13.2.2.4): the call takes it, or it is ACKed and hung up."""

    def test_answer_after_timer_b(self):
        """A callee that never sent a provisional: Timer B gives the fork a
        408 at 32 s and the caller its failure; when the callee picks up at
        40 s, its 200 is ACKed and then BYEd (CSeq 1 ACK, 2 BYE), to its
        Contact."""
        self.setup_module()
        tx, call = self.invite()
        fork = self.core.last("INVITE")
        self.clock.advance(32)
        self.assertEqual(call.state, "ended")
        self.assertEqual(tx.last.status, 408)
        self.clock.advance(8)
        fork.answer(200, body=SDP_ANSWER, to_tag="late")
        (ack,) = self.core.acks()
        (bye,) = self.core.requests("BYE")
        self.assertEqual((ack.uri, ack.get("cseq"), tag_of(ack.get("to"))), ("sip:bob@192.0.2.20:5060", "1 ACK", "late"))
        self.assertEqual((bye.request.get("cseq"), tag_of(bye.request.get("to")), bye.request.call_id), ("2 BYE", "late", call.b_call_id))
        self.assertEqual(bye.flow.remote, ("192.0.2.20", 5060))

    def test_answer_after_timer_b_while_another_fork_rings(self):
        """Two forks, one ringing, one silent until Timer B dropped it: the
        silent one's late 200 still connects the call, and the ringing one
        is cancelled."""
        self.setup_module(toml="max_ring_time = 0\n", contacts=TWO)
        tx, call = self.invite()
        f1, f2 = self.core.requests("INVITE")
        f2.answer(180, to_tag="t2")
        self.clock.advance(40)
        self.assertEqual(call.state, "ringing")
        f1.answer(200, body=SDP_ANSWER)
        self.assertEqual((call.state, tx.last.status), ("answered", 200))
        self.assertEqual([c.request.uri for c in self.core.requests("CANCEL")], [f2.request.uri])
        self.assertEqual(len(self.core.acks()), 1)

    def test_winner_2xx_after_timer_m(self):
        """The callee still repeating its 200 after our transaction ended
        (Timer M, 64*T1) gets our ACK again, not a BYE."""
        self.setup_module()
        tx, call, fork = self.answered_call()
        self.clock.advance(33)
        fork.on_response(fork, fork.answers[-1])
        first, again = self.core.acks()
        self.assertEqual(first.to_bytes(), again.to_bytes())
        self.assertEqual(self.core.requests("BYE"), [])
        self.assertEqual(call.state, "answered")

    def test_unknown_stray_2xx_ignored(self):
        """A 2xx for a Call-ID that was never ours gets nothing."""
        self.setup_module()
        tx, call, fork = self.answered_call()
        self.clock.advance(33)
        stray = fork.answers[-1]
        stray.set("Call-ID", "someone-else@192.0.2.66")
        self.core.deliver(stray, fork.flow)
        self.assertEqual((len(self.core.acks()), self.core.requests("BYE")), (1, []))


class ByeTests(CallHarness, SynchronousTestCase):
    """Hanging up an answered call from either side."""

    def setUp(self):
        self.setup_module()

    def test_caller_hangs_up(self):
        """The caller's BYE gets 200 and a BYE goes to the callee in the
        B dialog; the record is closed byCaller with all its times."""
        self.clock.advance(10)
        tx, call, fork = self.answered_call()
        self.clock.advance(5)
        bye = self.caller_request(call, "BYE", 2)
        self.assertEqual(bye.statuses(), [200])
        out = self.core.last("BYE").request
        self.assertEqual(out.uri, "sip:bob@192.0.2.20:5060")
        self.assertEqual(out.call_id, call.b_call_id)
        self.assertEqual(tag_of(out.get("to")), "callee1")
        self.assertEqual(tag_of(out.get("from")), call.b_tag)
        self.assertEqual(out.get("cseq"), "2 BYE")
        record = call.record
        self.assertEqual((record.status_code, record.hangup_reason), (200, R.BY_CALLER))
        self.assertEqual((record.start_time, record.ring_time, record.answer_time, record.end_time), (10, 10, 10, 15))
        self.assertEqual((record.caller, record.callee), ("alice@example.com", "bob@example.com"))
        self.assertEqual(self.records.opened_records, [record])
        self.assertEqual(self.records.saved, [record])
        self.assertNotIn(call, self.module.calls)

    def test_callee_hangs_up(self):
        """The callee's BYE gets 200; the caller gets a BYE addressed to
        its Contact, From our tag, To its own; reason byCallee."""
        tx, call, fork = self.answered_call()
        bye = self.callee_request(call, "BYE", 2)
        self.assertEqual(bye.statuses(), [200])
        out = self.core.last("BYE").request
        self.assertEqual(out.uri, "sip:alice@192.0.2.10:5060")
        self.assertEqual(out.call_id, tx.request.call_id)
        self.assertEqual(tag_of(out.get("from")), tx.local_tag())
        self.assertEqual(tag_of(out.get("to")), "fromtag1")
        self.assertEqual(call.record.hangup_reason, R.BY_CALLEE)

    def test_bye_retransmission_after_end(self):
        """A retransmitted BYE is still answered 200 for 64*T1, then the
        dialog is forgotten (481)."""
        tx, call, fork = self.answered_call()
        self.caller_request(call, "BYE", 2)
        again = self.caller_request(call, "BYE", 2)
        self.assertEqual(again.statuses(), [200])
        self.assertEqual(len(self.core.requests("BYE")), 1)
        self.clock.advance(32)
        late = self.caller_request(call, "BYE", 2)
        self.assertEqual(late.statuses(), [481])

    def test_old_cseq(self):
        """A request with a CSeq below the last one is refused with 500."""
        tx, call, fork = self.answered_call()
        self.caller_request(call, "INFO", 5)
        old = self.caller_request(call, "INFO", 3)
        self.assertEqual(old.statuses(), [500])


class RelayTests(CallHarness, SynchronousTestCase):
    """In-dialog requests are relayed to the other leg, and their answers back."""

    def setUp(self):
        self.setup_module()

    def test_reinvite_with_offer(self):
        """A re-INVITE with SDP goes to the callee in the B dialog; the
        callee's 2xx is ACKed at once and its SDP reaches the caller, whose
        ACK then stops our retransmissions."""
        tx, call, fork = self.answered_call()
        acks = len(self.core.acks())
        reinvite = self.caller_request(call, "INVITE", 2, body=SDP_OFFER)
        out = self.core.last("INVITE")
        self.assertEqual(out.request.get("cseq"), "2 INVITE")
        self.assertEqual(out.request.call_id, call.b_call_id)
        self.assertEqual(out.request.body, SDP_OFFER)
        out.answer(200, body=SDP_ANSWER)
        self.assertEqual(len(self.core.acks()), acks + 1)
        self.assertEqual(self.core.acks()[-1].get("cseq"), "2 ACK")
        self.assertEqual(reinvite.statuses(), [200])
        self.assertEqual(reinvite.last.body, SDP_ANSWER)
        self.clock.advance(0.5)
        self.assertEqual(reinvite.statuses(), [200, 200])
        self.caller_ack(call, 2)
        self.clock.advance(10)
        self.assertEqual(reinvite.statuses(), [200, 200])
        self.assertEqual(call.state, "answered")

    def test_reinvite_without_offer(self):
        """A re-INVITE without SDP: the callee's 2xx carries the offer, so
        its ACK waits for the caller's ACK and carries the caller's answer."""
        tx, call, fork = self.answered_call()
        acks = len(self.core.acks())
        reinvite = self.caller_request(call, "INVITE", 2)
        out = self.core.last("INVITE")
        out.answer(200, body=SDP_ANSWER)
        self.assertEqual(len(self.core.acks()), acks)
        self.assertEqual(reinvite.last.body, SDP_ANSWER)
        self.caller_ack(call, 2, body=SDP_OFFER)
        ack = self.core.acks()[-1]
        self.assertEqual((ack.get("cseq"), ack.body), ("2 ACK", SDP_OFFER))
        # The callee's 2xx retransmission gets the same ACK again.
        out.on_response(out, out.answers[-1])
        self.assertEqual(self.core.acks()[-1].to_bytes(), ack.to_bytes())

    def test_initial_invite_without_offer(self):
        """An INVITE without SDP: the callee's ACK waits for the caller's,
        which carries the answer."""
        tx, call = self.invite(body=b"")
        fork = self.core.last("INVITE")
        fork.answer(200, body=SDP_ANSWER)
        self.assertEqual(self.core.acks(), [])
        self.caller_ack(call, 1, body=SDP_OFFER)
        (ack,) = self.core.acks()
        self.assertEqual(ack.body, SDP_OFFER)
        self.assertEqual(ack.get("content-type"), "application/sdp")

    def test_methods_relayed(self):
        """INFO, MESSAGE, NOTIFY and OPTIONS are relayed with their body
        and content type; the answer's status and body come back."""
        tx, call, fork = self.answered_call()
        for i, method in enumerate(("INFO", "MESSAGE", "NOTIFY", "OPTIONS")):
            headers = [("Content-Type", "text/plain")]
            if method == "NOTIFY":
                headers += [("Event", "talk"), ("Subscription-State", "active")]
            incoming = self.caller_request(call, method, 2 + i, headers=headers, body=b"hello")
            out = self.core.last(method)
            self.assertEqual(out.request.call_id, call.b_call_id)
            self.assertEqual(out.request.body, b"hello")
            self.assertEqual(out.request.get("content-type"), "text/plain")
            if method == "NOTIFY":
                self.assertEqual(out.request.get("event"), "talk")
            out.answer(415 if method == "MESSAGE" else 200, body=b"", to_tag="callee1")
            self.assertEqual(incoming.statuses(), [415 if method == "MESSAGE" else 200])

    def test_callee_request_to_caller(self):
        """The callee's INFO reaches the caller in the A dialog (From our
        To tag, CSeq of our own); the caller's answer goes back."""
        tx, call, fork = self.answered_call()
        incoming = self.callee_request(call, "INFO", 2, headers=[("Content-Type", "application/dtmf-relay")], body=b"Signal=1")
        out = self.core.last("INFO").request
        self.assertEqual(out.call_id, tx.request.call_id)
        self.assertEqual(tag_of(out.get("from")), tx.local_tag())
        self.assertEqual(out.get("cseq"), "1 INFO")
        self.core.last("INFO").answer(200, to_tag="fromtag1")
        self.assertEqual(incoming.statuses(), [200])

    def test_update_offer_becomes_reinvite(self):
        """An UPDATE with SDP to a callee that does not allow UPDATE goes
        as a re-INVITE (ACKed at once); the caller's UPDATE gets 200 with
        the answer."""
        tx, call, fork = self.answered_call()
        update = self.caller_request(call, "UPDATE", 2, body=SDP_OFFER)
        out = self.core.last("INVITE")
        self.assertEqual(out.request.get("cseq"), "2 INVITE")
        out.answer(200, body=SDP_ANSWER)
        self.assertEqual(self.core.acks()[-1].get("cseq"), "2 ACK")
        self.assertEqual(update.statuses(), [200])
        self.assertEqual(update.last.body, SDP_ANSWER)

    def test_update_relayed_when_allowed(self):
        """A callee that lists UPDATE in Allow gets the UPDATE itself."""
        tx, call, fork = self.answered_call(answer_headers=[("Allow", "INVITE, ACK, BYE, CANCEL, UPDATE")])
        self.caller_request(call, "UPDATE", 2, body=SDP_OFFER)
        self.assertEqual(self.core.last("UPDATE").request.body, SDP_OFFER)

    def test_glare(self):
        """While one re-INVITE is being relayed, another one from the
        other side gets 491 Request Pending."""
        tx, call, fork = self.answered_call()
        self.caller_request(call, "INVITE", 2, body=SDP_OFFER)
        crossing = self.callee_request(call, "INVITE", 2, body=SDP_ANSWER)
        self.assertEqual(crossing.statuses(), [491])

    def test_failed_reinvite(self):
        """A refused re-INVITE is refused to the caller too, and the next
        one goes through."""
        tx, call, fork = self.answered_call()
        first = self.caller_request(call, "INVITE", 2, body=SDP_OFFER)
        self.core.last("INVITE").answer(488)
        self.assertEqual(first.statuses(), [488])
        self.caller_request(call, "INVITE", 3, body=SDP_OFFER)
        self.assertEqual(self.core.last("INVITE").request.get("cseq"), "3 INVITE")

    def test_cancelled_reinvite(self):
        """A CANCEL for a relayed re-INVITE: CANCEL to the callee's leg,
        487 to the caller, and the next re-INVITE is not refused as glare."""
        tx, call, fork = self.answered_call()
        reinvite = self.caller_request(call, "INVITE", 2, body=SDP_OFFER)
        out = self.core.last("INVITE")
        out.answer(100, to_tag=None)
        reinvite.cancel()
        self.assertEqual(reinvite.statuses(), [487])
        cancel = self.core.last("CANCEL").request
        self.assertEqual((cancel.top_via, cancel.get("cseq")), (out.request.top_via, "2 CANCEL"))
        out.answer(487)
        again = self.caller_request(call, "INVITE", 3, body=SDP_OFFER)
        self.assertEqual(self.core.last("INVITE").request.get("cseq"), "3 INVITE")
        self.assertEqual(again.statuses(), [])

    def test_reinvite_unanswered_after_provisional(self):
        """A callee that says 100 to a relayed re-INVITE and nothing else:
        after Timer C (181 s) we CANCEL it and the caller gets 487; the
        next re-INVITE is relayed, not refused as glare."""
        tx, call, fork = self.answered_call()
        reinvite = self.caller_request(call, "INVITE", 2, body=SDP_OFFER)
        out = self.core.last("INVITE")
        out.answer(100, to_tag=None)
        self.clock.advance(180)
        self.assertEqual((reinvite.statuses(), self.core.requests("CANCEL")), ([], []))
        self.clock.advance(1)
        self.assertEqual(reinvite.statuses(), [487])
        cancel = self.core.last("CANCEL").request
        self.assertEqual((cancel.top_via, cancel.get("cseq")), (out.request.top_via, "2 CANCEL"))
        self.clock.advance(32)  # no 487 from the callee either: the INVITE gives up
        again = self.caller_request(call, "INVITE", 3, body=SDP_OFFER)
        self.assertEqual(self.core.last("INVITE").request.get("cseq"), "3 INVITE")
        self.assertEqual(again.statuses(), [])

    def test_request_in_early_dialog(self):
        """Before the answer, a request in the caller's early dialog gets 481."""
        self.setup_module(toml="", contacts=TWO)
        tx, call = self.invite(headers=[("Supported", "100rel")])
        fork = self.core.requests("INVITE")[0]
        fork.answer(183, headers=[("Require", "100rel"), ("RSeq", "1")], body=SDP_ANSWER)
        info = self.caller_request(call, "INFO", 2)
        self.assertEqual(info.statuses(), [481])


class RouteSetTests(CallHarness, SynchronousTestCase):
    """Record-Route, route sets and Max-Forwards (RFC 3261 12.1, 12.2.1.1, 16.6)."""

    EDGE = (("Record-Route", "<sip:edge1.example.net;lr>"), ("Record-Route", "<sip:192.0.2.5:5070;lr;ftag=x>"))

    def setUp(self):
        self.setup_module()

    def test_record_route_copied(self):
        """The caller's Record-Route is copied, in order, into our 180 and
        200 (12.1.1), not into the 100."""
        tx, call, fork = self.answered_call(caller_headers=self.EDGE)
        rr = [value for _, value in self.EDGE]
        self.assertEqual([r.get_all("record-route") for r in tx.responses], [[], rr, rr])

    def test_caller_route_set(self):
        """Our BYE to a caller behind record-routing proxies goes to its
        Contact with the Record-Route as Route, in the same order (the UAS
        route set, 12.1.1); so does the ACK's answer path."""
        tx, call, fork = self.answered_call(caller_headers=self.EDGE)
        self.callee_request(call, "BYE", 2)
        bye = self.core.last("BYE").request
        self.assertEqual(bye.uri, "sip:alice@192.0.2.10:5060")
        self.assertEqual(bye.get_all("route"), [value for _, value in self.EDGE])

    def test_strict_router(self):
        """A first route without ;lr is a strict router (RFC 2543): it
        becomes the Request-URI and the remote target goes last as a Route."""
        tx, call, fork = self.answered_call(caller_headers=[("Record-Route", "<sip:192.0.2.99:5060>"), self.EDGE[0]])
        self.callee_request(call, "BYE", 2)
        bye = self.core.last("BYE").request
        self.assertEqual(bye.uri, "sip:192.0.2.99:5060")
        self.assertEqual(bye.get_all("route"), ["<sip:edge1.example.net;lr>", "<sip:alice@192.0.2.10:5060>"])

    def test_callee_route_set(self):
        """The callee's 2xx Record-Route, reversed, is the B leg's route set
        (12.1.2): the ACK and our BYE carry it."""
        tx, call, fork = self.answered_call(
            answer_headers=[("Record-Route", "<sip:p2.example.net;lr>"), ("Record-Route", "<sip:p1.example.net;lr>")]
        )
        ack = self.core.acks()[-1]
        self.assertEqual(ack.get_all("route"), ["<sip:p1.example.net;lr>", "<sip:p2.example.net;lr>"])
        self.caller_request(call, "BYE", 2)
        bye = self.core.last("BYE").request
        self.assertEqual((bye.uri, bye.get_all("route")), ("sip:bob@192.0.2.20:5060", ack.get_all("route")))

    def test_max_forwards_decremented(self):
        """A relayed in-dialog request carries one less Max-Forwards than
        the one that triggered it (16.6 step 3), not a fresh 70; a request
        of our own (the session expired) starts at 70."""
        tx, call, fork = self.answered_call()
        self.caller_request(call, "INFO", 2, max_forwards=10)
        self.assertEqual(self.core.last("INFO").request.get("max-forwards"), "9")
        self.caller_request(call, "BYE", 3, max_forwards=5)
        self.assertEqual(self.core.last("BYE").request.get("max-forwards"), "4")
        tx, call = self.invite(call_id="a-call-2@192.0.2.10")
        self.core.last("INVITE").answer(200, body=SDP_ANSWER)
        call.hangup(R.SESSION_EXPIRED)
        self.assertEqual({b.request.get("max-forwards") for b in self.core.requests("BYE")[1:]}, {"70"})


class AnswerRetransmissionTests(CallHarness, SynchronousTestCase):
    """Our 2xx to the caller is repeated until its ACK (RFC 3261 13.3.1.4)."""

    def test_backoff_until_ack(self):
        """Over UDP the 2xx goes again after T1, 2*T1, 4*T1, ... capped at
        T2; the ACK stops it."""
        self.setup_module()
        tx, call, fork = self.answered_call(ack=False)
        times = []
        for _ in range(40):
            self.clock.advance(0.25)
            times.append(len(tx.responses))
        sent_at = [0.25 * (i + 1) for i, n in enumerate(times) if i == 0 or n != times[i - 1]]
        self.assertEqual(sent_at[1:5], [0.5, 1.5, 3.5, 7.5])
        self.caller_ack(call)
        count = len(tx.responses)
        self.clock.advance(20)
        self.assertEqual(len(tx.responses), count)
        self.assertEqual(call.state, "answered")

    def test_no_ack(self):
        """No ACK within 64*T1: BYE to both legs, reason failed."""
        self.setup_module()
        tx, call, fork = self.answered_call(ack=False)
        self.clock.advance(31.9)
        self.assertEqual(call.state, "answered")
        self.clock.advance(0.2)
        self.assertEqual(call.state, "ended")
        self.assertEqual(sorted(b.request.call_id for b in self.core.requests("BYE")), sorted([tx.request.call_id, call.b_call_id]))
        self.assertEqual(call.record.hangup_reason, R.FAILED)

    def test_reliable_transport(self):
        """Over TCP the 2xx is not repeated, but 64*T1 without ACK still
        ends the call."""
        self.setup_module()
        tx, call = self.invite(transport="TCP")
        self.core.last("INVITE").answer(200, body=SDP_ANSWER)
        self.clock.advance(31)
        self.assertEqual(tx.statuses(), [100, 200])
        self.clock.advance(1)
        self.assertEqual(call.state, "ended")


class TimeoutTests(CallHarness, SynchronousTestCase):
    """max_ring_time: the call gives up with 480 after the ring time."""

    def test_ring_timeout(self):
        """After proxy.max_ring_time the forks are cancelled and the caller
        gets 480; the record says noAnswer."""
        self.setup_module(toml="max_ring_time = 20\n", contacts=TWO)
        tx, call = self.invite()
        f1, f2 = self.core.requests("INVITE")
        f1.answer(180)
        self.clock.advance(19.9)
        self.assertEqual(tx.statuses(), [100, 180])
        self.clock.advance(0.1)
        self.assertEqual(tx.last.status, 480)
        self.assertEqual([c.request.uri for c in self.core.requests("CANCEL")], [f1.request.uri])
        self.assertEqual((call.record.status_code, call.record.hangup_reason), (480, R.NO_ANSWER))

    def test_no_limit(self):
        """max_ring_time = 0 rings for ever: a ringing fork is not given up
        (no 408 from Timer B, which stops at the first provisional, RFC
        3261 17.1.1.2), and the callee may still answer an hour later."""
        self.setup_module(toml="max_ring_time = 0\n")
        tx, call = self.invite()
        fork = self.core.last("INVITE")
        fork.answer(180)
        self.clock.advance(3600)
        self.assertEqual(call.state, "ringing")
        self.assertEqual(set(tx.statuses()), {100, 180})  # the 180 every minute
        self.assertEqual(self.core.requests("CANCEL"), [])
        fork.answer(200, body=SDP_ANSWER)
        self.assertEqual(call.state, "answered")
        self.assertEqual(tx.last.status, 200)

    def test_rings_past_timer_b(self):
        """A callee that rings for 50 s (beyond 64*T1 = 32 s) and then
        answers gets the call: only max_ring_time (60 s here) ends ringing."""
        self.setup_module(toml="max_ring_time = 60\n")
        tx, call = self.invite()
        fork = self.core.last("INVITE")
        self.clock.advance(1)
        fork.answer(180)
        self.clock.advance(49)
        self.assertEqual((call.state, tx.statuses()), ("ringing", [100, 180]))
        fork.answer(200, body=SDP_ANSWER)
        self.assertEqual(tx.last.status, 200)
        self.caller_ack(call)
        self.assertEqual(call.state, "answered")
        self.assertEqual(self.core.acks()[-1].call_id, call.b_call_id)

    def test_ring_timeout_cancels_every_fork(self):
        """When max_ring_time gives up, a fork that rang is cancelled at
        once and a silent one as soon as its first provisional arrives (RFC
        3261 9.1); a fork that never answers is dropped by Timer B."""
        self.setup_module(toml="max_ring_time = 20\n", contacts=TWO + ("<sip:bob@192.0.2.22:5060>",))
        tx, call = self.invite()
        f1, f2, f3 = self.core.requests("INVITE")
        f1.answer(180)
        self.clock.advance(20)
        self.assertEqual(tx.last.status, 480)
        self.assertEqual([c.request.uri for c in self.core.requests("CANCEL")], [f1.request.uri])
        f2.answer(183, to_tag="t2")
        self.assertEqual([c.request.uri for c in self.core.requests("CANCEL")], [f1.request.uri, f2.request.uri])
        for fork, tag in ((f1, "callee1"), (f2, "t2")):
            fork.answer(487, to_tag=tag)
        self.clock.advance(60)
        self.assertEqual(self.sip.transactions.client, {})
        self.assertEqual(set(tx.statuses()), {100, 180, 480})

    def test_decline_cancels_other_forks(self):
        """A 6xx from one fork is final everywhere (RFC 3261 16.7): the
        other ringing forks are cancelled and the caller gets the 603."""
        self.setup_module(contacts=TWO)
        tx, call = self.invite()
        f1, f2 = self.core.requests("INVITE")
        f1.answer(180)
        f2.answer(180, to_tag="t2")
        f2.answer(603, "Decline", to_tag="t2")
        self.assertEqual([c.request.uri for c in self.core.requests("CANCEL")], [f1.request.uri])
        f1.answer(487)
        self.assertEqual(tx.last.status, 603)

    def test_provisional_repeated_every_minute(self):
        """While the callee rings, the caller gets our 180 again every
        minute (RFC 3261 13.3.1.1), the same response, until the answer."""
        self.setup_module(toml="max_ring_time = 0\n")
        tx, call = self.invite()
        fork = self.core.last("INVITE")
        fork.answer(180)
        self.clock.advance(59)
        self.assertEqual(tx.statuses(), [100, 180])
        self.clock.advance(1)
        self.assertEqual(tx.statuses(), [100, 180, 180])
        self.assertEqual(tx.responses[1].to_bytes(), tx.responses[2].to_bytes())
        self.clock.advance(60)
        self.assertEqual(tx.statuses(), [100, 180, 180, 180])
        fork.answer(200, body=SDP_ANSWER)
        self.caller_ack(call)
        self.clock.advance(300)
        self.assertEqual(tx.statuses(), [100, 180, 180, 180, 200])

    def test_failure_after_forking_cancels(self):
        """A call that fails for a local reason after it forked (here a
        routing error) leaves no fork ringing: CANCEL to each that rang."""
        self.setup_module(contacts=TWO)
        tx, call = self.invite()
        f1, f2 = self.core.requests("INVITE")
        f1.answer(180)
        call.fail(500, "Server Internal Error")
        self.assertEqual([c.request.uri for c in self.core.requests("CANCEL")], [f1.request.uri])
        f2.answer(180, to_tag="t2")
        self.assertEqual(len(self.core.requests("CANCEL")), 2)

    def test_answer_stops_ring_timer(self):
        """An answer before the ring time cancels the timer."""
        self.setup_module(toml="max_ring_time = 20\n")
        tx, call, fork = self.answered_call()
        self.clock.advance(60)
        self.assertEqual(call.state, "answered")


class MaxDurationTests(CallHarness, SynchronousTestCase):
    """
    max_call_duration: an answered call whose phones vanished without a BYE
    (media not anchored, so no rtp_timeout; no session timer negotiated)
    still ends, as in RustPBX (an hour by default).
    """

    def test_default_is_an_hour(self):
        """With the defaults (no session timer asked for by either phone)
        the call is hung up after 3600 s: BYE to both legs, record
        autohangup; nothing of the call's is left on the clock."""
        self.setup_module()
        tx, call, fork = self.answered_call()
        self.assertEqual(self.module.config.proxy.max_call_duration, 3600)
        self.clock.advance(3599)
        self.assertEqual((call.state, self.core.requests("BYE")), ("answered", []))
        self.clock.advance(1)
        self.assertEqual(call.state, "ended")
        self.assertEqual(sorted(b.request.call_id for b in self.core.requests("BYE")), sorted([tx.request.call_id, call.b_call_id]))
        self.assertEqual(call.record.hangup_reason, R.AUTOHANGUP)
        self.assertEqual({d.getTime() - self.clock.seconds() for d in self.module_timers()}, {32})  # only the forget timers

    def test_zero_is_no_limit(self):
        """max_call_duration = 0: a call stays up for a day."""
        self.setup_module(toml="max_call_duration = 0\n")
        tx, call, fork = self.answered_call()
        self.clock.advance(86400)
        self.assertEqual((call.state, self.core.requests("BYE")), ("answered", []))

    def test_counts_from_the_answer(self):
        """Ringing does not count: 50 s of ringing, then 100 s of talk."""
        self.setup_module(toml="max_call_duration = 100\nmax_ring_time = 60\n")
        tx, call = self.invite()
        fork = self.core.last("INVITE")
        fork.answer(180)
        self.clock.advance(50)
        fork.answer(200, body=SDP_ANSWER)
        self.caller_ack(call)
        self.clock.advance(99.9)
        self.assertEqual(call.state, "answered")
        self.clock.advance(0.1)
        self.assertEqual((call.state, call.record.hangup_reason), ("ended", R.AUTOHANGUP))

    def test_ended_call_stops_the_timer(self):
        """A call hung up by the caller leaves no max_call_duration timer."""
        self.setup_module()
        tx, call, fork = self.answered_call()
        self.caller_request(call, "BYE", 2)
        self.assertEqual(call.state, "ended")
        self.assertIsNone(call.duration_timer)
        self.assertEqual([d for d in self.clock.getDelayedCalls() if getattr(d.func, "__func__", None) is type(call)._max_duration], [])

    def test_trunk_overrides(self):
        """A trunk's max_call_duration beats proxy.max_call_duration for
        calls it answers."""
        toml = "max_call_duration = 1000\n" + TRUNK_TOML.replace(
            'password = "trunk-secret"', 'password = "trunk-secret"\nmax_call_duration = 30'
        )
        self.setup_module(toml=toml, contacts=())
        tx, call = self.invite(uri="sip:9555@example.com")
        self.core.last("INVITE").answer(200, body=SDP_ANSWER)
        self.caller_ack(call)
        self.clock.advance(29.9)
        self.assertEqual(call.state, "answered")
        self.clock.advance(0.1)
        self.assertEqual(call.record.hangup_reason, R.AUTOHANGUP)


class FailureTests(CallHarness, SynchronousTestCase):
    """What the caller hears when nobody answers."""

    def test_passthrough(self):
        """With passthrough_failure (the default) the best fork answer is
        relayed: 486 beats 503."""
        self.setup_module(contacts=TWO)
        tx, call = self.invite()
        f1, f2 = self.core.requests("INVITE")
        f1.answer(503)
        self.assertEqual(tx.statuses(), [100])
        f2.answer(486, "Busy Here", to_tag="t2")
        self.assertEqual(tx.last.status, 486)
        self.assertEqual((call.record.status_code, call.record.hangup_reason), (486, R.REJECTED))

    def test_generic(self):
        """With passthrough_failure = false the caller gets 480."""
        self.setup_module(toml="passthrough_failure = false\n")
        tx, call = self.invite()
        self.core.last("INVITE").answer(486)
        self.assertEqual(tx.last.status, 480)
        self.assertEqual((call.record.status_code, call.record.hangup_reason), (480, R.REJECTED))

    def test_decline_wins(self):
        """A 603 from one fork ends the call with 603 even while the other
        would still ring."""
        self.setup_module(contacts=TWO)
        tx, call = self.invite()
        f1, f2 = self.core.requests("INVITE")
        f2.answer(180, to_tag="t2")
        f1.answer(603, "Decline")
        self.assertEqual(tx.last.status, 180)
        f2.answer(480, to_tag="t2")
        self.assertEqual(tx.last.status, 603)

    def test_unavailable_is_no_answer(self):
        """480 from the callee: reason noAnswer."""
        self.setup_module()
        tx, call = self.invite()
        self.core.last("INVITE").answer(480)
        self.assertEqual(call.record.hangup_reason, R.NO_ANSWER)

    def test_server_error(self):
        """500 from the callee: reason serverUnavailable."""
        self.setup_module()
        tx, call = self.invite()
        self.core.last("INVITE").answer(500)
        self.assertEqual((tx.last.status, call.record.hangup_reason), (500, R.SERVER_UNAVAILABLE))

    def test_not_acceptable_is_failed(self):
        """488 from the callee: reason failed."""
        self.setup_module()
        tx, call = self.invite()
        self.core.last("INVITE").answer(488)
        self.assertEqual((tx.last.status, call.record.hangup_reason), (488, R.FAILED))

    def test_redirect_keeps_contact(self):
        """A 302 reaches the caller with the callee's Contact, not ours."""
        self.setup_module()
        tx, call = self.invite()
        self.core.last("INVITE").answer(302, headers=[("Contact", "<sip:carol@192.0.2.30>")])
        self.assertEqual(tx.last.status, 302)
        self.assertEqual(tx.last.get_all("contact"), ["<sip:carol@192.0.2.30>"])

    def test_unknown_user(self):
        """A user we know nothing about gets 404 (rejected)."""
        self.setup_module()
        tx, call = self.invite(uri="sip:nobody@example.com")
        self.assertEqual(tx.last.status, 404)
        self.assertEqual(self.records.saved[0].hangup_reason, R.REJECTED)


TRUNK_TOML = """
[proxy.trunks.carrier]
dest = "sip:198.51.100.5:5060"
backup_dest = "sip:198.51.100.6:5060"
username = "pbx"
password = "trunk-secret"

[[proxy.routes]]
name = "out"
dest = "carrier"
[proxy.routes.match]
"to.user" = "^9"
"""


class TrunkCallTests(CallHarness, SynchronousTestCase):
    """Calls through a trunk: failover and the carrier's digest challenge."""

    def setUp(self):
        self.setup_module(toml=TRUNK_TOML, contacts=())

    def test_failover_on_503(self):
        """A 503 from dest sends the call to backup_dest; its answer wins
        and the record names the route and trunk."""
        tx, call = self.invite(uri="sip:9555@example.com")
        first = self.core.last("INVITE")
        self.assertEqual(first.flow.remote, ("198.51.100.5", 5060))
        first.answer(503)
        self.assertEqual(tx.statuses(), [100])
        second = self.core.last("INVITE")
        self.assertEqual(second.flow.remote, ("198.51.100.6", 5060))
        second.answer(200, body=SDP_ANSWER)
        self.assertEqual(tx.last.status, 200)
        self.assertEqual((call.record.route, call.record.trunk), ("out", "carrier"))

    def test_failover_on_timeout(self):
        """A 408 (the transaction timed out) also fails over."""
        tx, call = self.invite(uri="sip:9555@example.com")
        self.core.last("INVITE").answer(408, to_tag=None)
        self.assertEqual(len(self.core.requests("INVITE")), 2)

    def test_no_failover_on_busy(self):
        """A 486 is the callee's answer: no failover."""
        tx, call = self.invite(uri="sip:9555@example.com")
        self.core.last("INVITE").answer(486)
        self.assertEqual(len(self.core.requests("INVITE")), 1)
        self.assertEqual(tx.last.status, 486)

    def test_no_failover_on_decline(self):
        """A 6xx is final everywhere (RFC 3261 16.7): no failover."""
        tx, call = self.invite(uri="sip:9555@example.com")
        self.core.last("INVITE").answer(603)
        self.assertEqual(len(self.core.requests("INVITE")), 1)
        self.assertEqual(tx.last.status, 603)

    def test_all_fail(self):
        """dest and backup_dest both 503: the caller gets 503, reason serverUnavailable."""
        tx, call = self.invite(uri="sip:9555@example.com")
        self.core.last("INVITE").answer(503)
        self.core.last("INVITE").answer(503)
        self.assertEqual(tx.last.status, 503)
        self.assertEqual(call.record.hangup_reason, R.SERVER_UNAVAILABLE)

    def assert_digest(self, request, header, method="INVITE"):
        _, params = parse_auth_params(request.get(header))
        self.assertEqual(params["username"], "pbx")
        ha1 = compute_ha1("MD5", "pbx", params["realm"], "trunk-secret")
        expected = compute_response("MD5", ha1, method, params["uri"], params["nonce"], params.get("nc"), params.get("cnonce"), params.get("qop"))
        self.assertEqual(params["response"], expected)
        self.assertEqual(params["uri"], request.uri)

    def test_proxy_challenge_answered_once(self):
        """A 407 is answered with the trunk's credentials in a new INVITE
        (CSeq 2, new branch); a second 407 fails the call without relaying
        the carrier's challenge to the caller (403)."""
        tx, call = self.invite(uri="sip:9555@example.com")
        first = self.core.last("INVITE")
        first.answer(407, headers=[("Proxy-Authenticate", 'Digest realm="carrier", nonce="abc", qop="auth", algorithm=MD5')])
        second = self.core.last("INVITE")
        self.assertIsNot(second, first)
        self.assertEqual(second.request.get("cseq"), "2 INVITE")
        self.assertNotEqual(second.request.top_via, first.request.top_via)
        self.assert_digest(second.request, "proxy-authorization")
        self.assertEqual(tx.statuses(), [100])
        second.answer(407, headers=[("Proxy-Authenticate", 'Digest realm="carrier", nonce="def", algorithm=MD5')])
        self.assertEqual(len(self.core.requests("INVITE")), 2)
        self.assertEqual(tx.last.status, 403)
        self.assertEqual(call.record.hangup_reason, R.FAILED)

    def test_www_challenge(self):
        """A 401 is answered with Authorization; the ACK for the 2xx carries it too."""
        tx, call = self.invite(uri="sip:9555@example.com")
        self.core.last("INVITE").answer(401, headers=[("WWW-Authenticate", 'Digest realm="carrier", nonce="abc"')])
        retry = self.core.last("INVITE")
        self.assert_digest(retry.request, "authorization")
        retry.answer(200, body=SDP_ANSWER)
        self.assertEqual(tx.last.status, 200)
        self.assertEqual(self.core.acks()[-1].get("authorization"), retry.request.get("authorization"))
        self.assertEqual(self.core.acks()[-1].get("cseq"), "2 ACK")

    def test_route_ring_time(self):
        """A route's max_ring_time overrides the proxy's."""
        toml = TRUNK_TOML.replace('dest = "carrier"\n', 'dest = "carrier"\nmax_ring_time = 5\n')
        self.setup_module(toml=toml, contacts=())
        tx, call = self.invite(uri="sip:9555@example.com")
        self.core.last("INVITE").answer(180)
        self.clock.advance(5)
        self.assertEqual(tx.last.status, 480)


class PrackTests(CallHarness, SynchronousTestCase):
    """Reliable provisional responses (RFC 3262)."""

    def setUp(self):
        self.setup_module()

    def test_100rel_offered_only_when_caller_supports_it(self):
        """The callee is offered 100rel only if the caller supports it."""
        self.invite(headers=[("Supported", "100rel, timer")])
        self.assertIn("100rel", self.core.last("INVITE").request.get_all("supported"))
        self.invite(call_id="a-call-2@192.0.2.10")
        self.assertNotIn("100rel", self.core.last("INVITE").request.get_all("supported"))

    def test_relayed_end_to_end(self):
        """A reliable 183 is relayed reliably with our own RSeq; the
        caller's PRACK becomes a PRACK in the callee's early dialog (RAck
        with the callee's RSeq) and its 200 comes back; after the 2xx, the
        B dialog's CSeq continues after the PRACK."""
        tx, call = self.invite(headers=[("Supported", "100rel")])
        fork = self.core.last("INVITE")
        fork.answer(183, headers=[("Require", "100rel"), ("RSeq", "7")], body=SDP_ANSWER)
        relayed = tx.last
        self.assertEqual(relayed.status, 183)
        self.assertEqual(relayed.get("require"), "100rel")
        a_rseq = int(relayed.get("rseq"))
        self.assertEqual(relayed.body, SDP_ANSWER)
        prack = self.caller_request(call, "PRACK", 2, headers=[("RAck", f"{a_rseq} 1 INVITE")])
        out = self.core.last("PRACK").request
        self.assertEqual(out.uri, "sip:bob@192.0.2.20:5060")
        self.assertEqual(out.get("rack"), "7 1 INVITE")
        self.assertEqual(out.get("cseq"), "2 PRACK")
        self.assertEqual(tag_of(out.get("to")), "callee1")
        self.core.last("PRACK").answer(200)
        self.assertEqual(prack.statuses(), [200])
        fork.answer(200, body=SDP_ANSWER)
        self.caller_ack(call)
        self.caller_request(call, "BYE", 3)
        self.assertEqual(self.core.last("BYE").request.get("cseq"), "3 BYE")

    def test_retransmitted_reliable_provisional(self):
        """The callee's retransmission of a reliable 183 is relayed with
        the same RSeq; a second one gets the next RSeq."""
        tx, call = self.invite(headers=[("Supported", "100rel")])
        fork = self.core.last("INVITE")
        fork.answer(183, headers=[("Require", "100rel"), ("RSeq", "7")])
        fork.answer(183, headers=[("Require", "100rel"), ("RSeq", "7")])
        fork.answer(180, headers=[("Require", "100rel"), ("RSeq", "8")])
        first, again, ring = [int(r.get("rseq")) for r in tx.responses[1:]]
        self.assertEqual(first, again)
        self.assertEqual(ring, first + 1)

    def test_unknown_rack(self):
        """A PRACK for no provisional of ours gets 481."""
        tx, call = self.invite(headers=[("Supported", "100rel")])
        fork = self.core.last("INVITE")
        fork.answer(183, headers=[("Require", "100rel"), ("RSeq", "7")])
        prack = self.caller_request(call, "PRACK", 2, headers=[("RAck", "1 1 INVITE")])
        self.assertEqual(prack.statuses(), [481])

    def test_caller_without_100rel(self):
        """A callee that sends a reliable provisional to a call whose caller
        does not do 100rel gets our own PRACK; the caller gets it
        unreliably (no Require, no RSeq)."""
        tx, call = self.invite()
        fork = self.core.last("INVITE")
        fork.answer(180, headers=[("Require", "100rel"), ("RSeq", "3")])
        (prack,) = self.core.requests("PRACK")
        self.assertEqual(prack.request.get("rack"), "3 1 INVITE")
        self.assertEqual(tx.last.status, 180)
        self.assertIsNone(tx.last.get("rseq"))
        self.assertIsNone(tx.last.get("require"))
        fork.answer(180, headers=[("Require", "100rel"), ("RSeq", "3")])
        self.assertEqual(len(self.core.requests("PRACK")), 1)

    def test_caller_requires_100rel(self):
        """A caller that requires 100rel never gets an unreliable provisional."""
        tx, call = self.invite(headers=[("Require", "100rel")])
        self.core.last("INVITE").answer(180)
        self.assertEqual(tx.statuses(), [100])


class RecordTests(CallHarness, SynchronousTestCase):
    """Call records and the SIP flow kept with them."""

    def test_sip_flow(self):
        """The flow holds both legs' messages in order with direction and peer."""
        self.setup_module()
        tx, call, fork = self.answered_call()
        items = call.record.sip_flow.items
        first = items[0]
        self.assertEqual((first["leg"], first["direction"], first["peer"]), ("a", "in", "192.0.2.10:5060"))
        self.assertTrue(first["message"].startswith("INVITE sip:bob@example.com"))
        summary = [(i["leg"], i["direction"], i["message"].split("\r\n", 1)[0]) for i in items]
        self.assertIn(("b", "out", "INVITE sip:bob@192.0.2.20:5060 SIP/2.0"), summary)
        self.assertIn(("b", "in", "SIP/2.0 200 OK"), summary)
        self.assertIn(("a", "out", "SIP/2.0 200 OK"), summary)
        self.assertIn(("a", "in", "ACK sip:pbx@192.0.2.1:5060 SIP/2.0"), summary)

    def test_sip_flow_bounded(self):
        """sip_flow_max_items caps the flow; the rest is counted as dropped."""
        self.setup_module(toml="sip_flow_max_items = 3\n")
        tx, call, fork = self.answered_call()
        self.assertEqual(len(call.record.sip_flow.items), 3)
        self.assertGreater(call.record.sip_flow.dropped, 0)

    def test_orphans_closed_at_start(self):
        """Starting the module closes rows a previous run left open."""
        self.setup_module()
        self.assertEqual(self.records.orphans_closed_at, [0])

    def test_stop(self):
        """stop() ends every call with bySystem: an answered call gets BYE
        on both legs, a ringing one is cancelled and its caller gets 503;
        both records are saved."""
        self.setup_module(contacts=TWO)
        tx1, answered, fork = self.answered_call()
        tx2, ringing = self.invite(call_id="a-call-2@192.0.2.10")
        f3 = self.core.requests("INVITE")[-1]
        f3.answer(180, to_tag="r3")
        byes = len(self.core.requests("BYE"))
        self.module.stop()
        self.assertEqual(len(self.core.requests("BYE")), byes + 2)
        self.assertEqual(tx2.last.status, 503)
        self.assertIn(f3.request.uri, [c.request.uri for c in self.core.requests("CANCEL")])
        self.assertEqual({r.hangup_reason for r in self.records.saved[-2:]}, {R.BY_SYSTEM})
        self.assertEqual(self.module.calls, set())
        self.assertEqual(self.module_timers(), [])
        # The service then stops the core's transactions: nothing is left.
        self.sip.shutdown()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_refuse_while_stopping(self):
        """A new call during stop gets 503 and still leaves a record."""
        self.setup_module()
        self.module.stop()
        tx, call = self.invite()
        self.assertEqual(tx.last.status, 503)
        self.assertEqual(self.records.saved[-1].hangup_reason, R.BY_SYSTEM)
        self.assertEqual(self.core.requests("INVITE"), [])

    def test_stop_waits_for_records(self):
        """stop()'s Deferred fires only once the records are written."""
        from twisted.internet import defer

        self.setup_module()
        pending = defer.Deferred()
        self.records.pending_write = pending
        self.answered_call()
        d = self.module.stop()
        fired = []
        d.addCallback(fired.append)
        self.assertEqual(fired, [])
        pending.callback(None)
        self.assertEqual(len(fired), 1)

    def test_addon_hooks(self):
        """Addons see created/ringing/answered/hangup events and the finished record."""
        self.setup_module()
        seen = []

        class Addon:
            id = "probe"

            def on_call_event(self, name, call):
                seen.append(name)

            def on_call_record(self, record):
                seen.append(("record", record.hangup_reason))

        self.context.addons.append(Addon())
        tx, call, fork = self.answered_call()
        self.caller_request(call, "BYE", 2)
        self.assertEqual(seen, ["created", "ringing", "answered", "hangup", ("record", R.BY_CALLER)])


class AllowTests(CallHarness, SynchronousTestCase):
    def test_in_dialog_methods_reach_the_module(self):
        """Every method the call module handles inside dialogs (PRACK
        included) is in its allow_methods, so the pipeline offers it."""
        from rustpbx_py.modules.call import IN_DIALOG_METHODS

        module = self.setup_module()
        self.assertEqual(set(IN_DIALOG_METHODS) - set(module.allow_methods()), set())


class NameAddrSanity(SynchronousTestCase):
    def test_from_keeps_display_name(self):
        """The B leg's From keeps the caller's display name with our tag."""
        harness = CallHarness()
        harness.setup_module()
        tx, call = harness.invite(headers=())
        na = NameAddr.parse(harness.core.last("INVITE").request.get("from"))
        self.assertEqual(na.tag, call.b_tag)
        self.assertEqual(str(na.uri), "sip:alice@example.com")


class AddonRouteHookTests(CallHarness, SynchronousTestCase):
    """Addons see and may reorder or filter the trunks a route chose."""

    TOML = TRUNK_TOML + """
[proxy.trunks.other]
dest = "sip:198.51.100.7:5060"
"""

    def test_reorder(self):
        """An addon's route_hook puts "other" first: the first INVITE goes there."""
        self.setup_module(toml=self.TOML.replace('dest = "carrier"', 'dest = ["carrier", "other"]\nselect = "rr"'), contacts=())
        seen = []

        class Prefer:
            id = "prefer"

            def route_hook(self, call, trunks):
                seen.append(list(trunks))
                return ["other"] + [t for t in trunks if t != "other"]

        self.context.addons = [Prefer()]
        self.invite(uri="sip:9555@example.com")
        self.assertEqual(seen, [["carrier", "other"]])
        self.assertEqual(self.core.requests("INVITE")[0].flow.remote, ("198.51.100.7", 5060))

    def test_filter_all(self):
        """An addon that removes every trunk leaves the call refused with 503."""
        self.setup_module(toml=TRUNK_TOML, contacts=())

        class Block:
            id = "block"

            def route_hook(self, call, trunks):
                return []

        self.context.addons = [Block()]
        tx, call = self.invite(uri="sip:9555@example.com")
        self.assertEqual(self.core.requests("INVITE"), [])
        self.assertEqual(tx.last.status, 503)

    def test_failing_addon_skipped(self):
        """An addon whose hook raises is logged and the route's order stands."""
        self.setup_module(toml=TRUNK_TOML, contacts=())

        class Broken:
            id = "broken"

            def route_hook(self, call, trunks):
                raise RuntimeError("boom")

        self.context.addons = [Broken()]
        self.invite(uri="sip:9555@example.com")
        self.assertEqual(self.core.last("INVITE").flow.remote, ("198.51.100.5", 5060))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
