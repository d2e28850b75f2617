"""
Tests for L{rustpbx_py.transaction}: the RFC 3261 section 17 state machines
with every timer driven by L{task.Clock}.
"""

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from rustpbx_py.sip.message import Request, Response, parse_message
from rustpbx_py.transaction import server as S
from rustpbx_py.transaction.client import build_ack, build_cancel
from rustpbx_py.transaction.layer import TransactionLayer, server_key
from rustpbx_py.transaction.responses import build_response
from rustpbx_py.transaction.timers import FixedDelayQueue, TimerSet, TimerValues


class RecordingFlow:
    """A flow that keeps what is sent through it."""

    transport = "UDP"
    connected = True

    def __init__(self, reliable=False, remote=("192.0.2.1", 5060)):
        self.reliable = reliable
        self.remote = remote
        self.local = ("127.0.0.1", 5060)
        self.id = "test"
        self.sent = []

    def send(self, data):
        self.sent.append(parse_message(data))

    def to(self, remote):
        self.remote = remote
        return self


class RecordingTU:
    """A transaction user that records what the layer tells it."""

    def __init__(self):
        self.new = []
        self.acks = []
        self.stray = []
        self.cancels = []
        self.ended = []

    def new_transaction(self, tx):
        self.new.append(tx)

    def cancel_received(self, cancel_tx, invite_tx):
        self.cancels.append((cancel_tx, invite_tx))

    def ack_received(self, ack, flow):
        self.acks.append(ack)

    def stray_response(self, response, flow):
        self.stray.append(response)

    def transaction_ended(self, tx):
        self.ended.append(tx)


def make_request(method="INVITE", branch="z9hG4bKabc", cseq=1, to_tag=None):
    to = "<sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else "")
    return Request(
        method,
        "sip:bob@example.com",
        [
            ["via", "Via", f"SIP/2.0/UDP 192.0.2.1:5060;branch={branch}"],
            ["from", "From", "<sip:alice@example.com>;tag=a1"],
            ["to", "To", to],
            ["call-id", "Call-ID", "call-1"],
            ["cseq", "CSeq", f"{cseq} {method}"],
            ["max-forwards", "Max-Forwards", "70"],
        ],
    )


def setup(t1_ms=500, t1x64_ms=32000):
    clock = task.Clock()
    tu = RecordingTU()
    layer = TransactionLayer(tu, clock, TimerValues(t1_ms, t1x64_ms), server_header="test/1")
    return clock, tu, layer


class ServerKeyTests(SynchronousTestCase):
    def test_ack_matches_invite(self):
        """An ACK for a non-2xx keys to its INVITE's transaction (17.2.3)."""
        self.assertEqual(server_key(make_request("ACK")), server_key(make_request("INVITE")))

    def test_cancel_is_separate(self):
        """A CANCEL is its own transaction although it shares the branch."""
        self.assertNotEqual(server_key(make_request("CANCEL")), server_key(make_request("INVITE")))

    def test_rfc2543_fallback(self):
        """Without the magic cookie, Call-ID, From tag, CSeq and Via identify it."""
        a = server_key(make_request("INVITE", branch="old1"))
        self.assertEqual(a[0], "2543")
        self.assertEqual(a, server_key(make_request("ACK", branch="old1")))


class ServerTransactionTests(SynchronousTestCase):
    def test_non_invite_retransmission_absorbed(self):
        """A retransmitted request is answered with the last response and
        never reaches the TU twice; Timer J forgets it after 64*T1."""
        clock, tu, layer = setup()
        flow = RecordingFlow()
        layer.request_received(make_request("OPTIONS"), flow)
        self.assertEqual(len(tu.new), 1)
        tx = tu.new[0]
        tx.reply(200)
        layer.request_received(make_request("OPTIONS"), flow)
        self.assertEqual(len(tu.new), 1)
        self.assertEqual([r.status for r in flow.sent], [200, 200])
        self.assertEqual(tx.state, S.COMPLETED)
        clock.advance(31.9)
        self.assertIn(tx.key, layer.server)
        clock.advance(0.2)
        self.assertNotIn(tx.key, layer.server)
        self.assertEqual(tu.ended, [tx])

    def test_non_invite_reliable_terminates_at_once(self):
        """Over a reliable transport Timer J is zero."""
        clock, tu, layer = setup()
        layer.request_received(make_request("OPTIONS"), RecordingFlow(reliable=True))
        tu.new[0].reply(200)
        clock.advance(0)
        self.assertEqual(layer.server, {})

    def test_invite_non_2xx_retransmitted_until_ack(self):
        """Timer G repeats a non-2xx final response at T1, 2T1, ... capped at
        T2 until the ACK, which is absorbed (Timer I then ends it)."""
        clock, tu, layer = setup()
        flow = RecordingFlow()
        layer.request_received(make_request(), flow)
        tx = tu.new[0]
        tx.reply(486)
        clock.advance(0.5)
        clock.advance(1.0)
        clock.advance(2.0)
        clock.advance(4.0)
        self.assertEqual([r.status for r in flow.sent], [486] * 5)
        layer.request_received(make_request("ACK", to_tag=tx.to_tag), flow)
        self.assertEqual(tu.acks, [])
        self.assertEqual(tx.state, S.CONFIRMED)
        clock.advance(10)
        self.assertEqual(len(flow.sent), 5)
        self.assertNotIn(tx.key, layer.server)

    def test_invite_timer_h(self):
        """Without an ACK, Timer H ends the transaction after 64*T1."""
        clock, tu, layer = setup()
        layer.request_received(make_request(), RecordingFlow())
        tx = tu.new[0]
        tx.reply(404)
        clock.pump([1] * 33)
        self.assertEqual(tx.state, S.TERMINATED)

    def test_invite_2xx_accepted_state(self):
        """After a 2xx the transaction is Accepted (RFC 6026): a retransmitted
        INVITE is absorbed, the 2xx ACK goes to the TU, Timer L ends it."""
        clock, tu, layer = setup()
        flow = RecordingFlow()
        layer.request_received(make_request(), flow)
        tx = tu.new[0]
        tx.reply(200)
        self.assertEqual(tx.state, S.ACCEPTED)
        layer.request_received(make_request(), flow)
        self.assertEqual(len(tu.new), 1)
        layer.request_received(make_request("ACK", branch="z9hG4bKother", to_tag=tx.to_tag), flow)
        self.assertEqual(len(tu.acks), 1)
        clock.advance(32)
        self.assertEqual(tx.state, S.TERMINATED)

    def test_to_tag_stable(self):
        """Every response of one transaction carries the same To tag."""
        clock, tu, layer = setup()
        flow = RecordingFlow()
        layer.request_received(make_request(), flow)
        tx = tu.new[0]
        tx.reply(180)
        tx.reply(486)
        tags = {r.get("to").split("tag=")[1] for r in flow.sent}
        self.assertEqual(len(tags), 1)
        self.assertEqual(flow.sent[0].get("server"), "test/1")

    def test_cancel_matched_to_invite(self):
        """A CANCEL reaches the TU with the INVITE transaction it cancels."""
        clock, tu, layer = setup()
        flow = RecordingFlow()
        layer.request_received(make_request(), flow)
        layer.request_received(make_request("CANCEL"), flow)
        self.assertEqual(len(tu.cancels), 1)
        cancel_tx, invite_tx = tu.cancels[0]
        self.assertIs(invite_tx, tu.new[0])

    def test_cancel_without_observer_answers_487(self):
        """An INVITE nobody watches for CANCEL is answered 487 (9.2)."""
        clock, tu, layer = setup()
        flow = RecordingFlow()
        layer.request_received(make_request(), flow)
        tu.new[0].cancel()
        self.assertEqual(flow.sent[-1].status, 487)

    def test_pending_count(self):
        """The in-flight count covers requests not yet finally answered."""
        clock, tu, layer = setup()
        layer.request_received(make_request("OPTIONS", branch="z9hG4bK1"), RecordingFlow())
        layer.request_received(make_request("OPTIONS", branch="z9hG4bK2"), RecordingFlow())
        self.assertEqual(layer.pending, 2)
        tu.new[0].reply(200)
        self.assertEqual(layer.pending, 1)


class ClientTransactionTests(SynchronousTestCase):
    def responses(self):
        got = []
        return got, lambda tx, r: got.append(r)

    def test_invite_timer_a_and_b(self):
        """Timer A doubles from T1; Timer B gives the TU a 408 at 64*T1."""
        clock, tu, layer = setup()
        flow = RecordingFlow()
        got, cb = self.responses()
        layer.send_request(make_request(), flow, cb)
        for step in (0.5, 1, 2, 4, 8, 16):
            clock.advance(step)
        self.assertEqual(len(flow.sent), 7)
        clock.advance(0.5)
        self.assertEqual([r.status for r in got], [408])
        self.assertEqual(layer.client, {})

    def test_invite_provisional_stops_retransmission(self):
        """A 1xx moves to Proceeding and stops Timer A."""
        clock, tu, layer = setup()
        flow = RecordingFlow()
        got, cb = self.responses()
        req = make_request()
        layer.send_request(req, flow, cb)
        layer.response_received(build_response(req, 180, to_tag="b"), flow)
        clock.advance(10)
        self.assertEqual(len(flow.sent), 1)
        self.assertEqual([r.status for r in got], [180])

    def test_invite_timer_b_stops_at_provisional(self):
        """Timer B runs only in Calling (RFC 3261 17.1.1.2): after a 180 the
        INVITE waits for its final response as long as the TU wants, and a
        200 an hour later is still passed up."""
        clock, tu, layer = setup()
        flow = RecordingFlow()
        got, cb = self.responses()
        req = make_request()
        tx = layer.send_request(req, flow, cb)
        clock.advance(1)
        layer.response_received(build_response(req, 180, to_tag="b"), flow)
        clock.advance(3600)
        self.assertEqual([r.status for r in got], [180])
        self.assertEqual(tx.state, "proceeding")
        layer.response_received(build_response(req, 200, to_tag="b"), flow)
        self.assertEqual([r.status for r in got], [180, 200])

    def test_cancelled_invite_gives_up_after_64t1(self):
        """Once the TU CANCELs a ringing INVITE, a final response that never
        comes ends the INVITE 64*T1 later (RFC 3261 9.1), as a 408."""
        clock, tu, layer = setup()
        flow = RecordingFlow()
        got, cb = self.responses()
        req = make_request()
        layer.send_request(req, flow, cb)
        layer.response_received(build_response(req, 180, to_tag="b"), flow)
        clock.advance(100)
        layer.send_request(build_cancel(req), flow, lambda tx, r: None)
        clock.advance(31.9)
        self.assertEqual([r.status for r in got], [180])
        clock.advance(0.2)
        self.assertEqual([r.status for r in got], [180, 408])
        self.assertNotIn(("z9hG4bKabc", "INVITE"), layer.client)

    def test_invite_non_2xx_acked(self):
        """A non-2xx final is ACKed by the transaction with the same branch and
        the response's To; a retransmitted final is ACKed again, not passed up."""
        clock, tu, layer = setup()
        flow = RecordingFlow()
        got, cb = self.responses()
        req = make_request()
        layer.send_request(req, flow, cb)
        resp = build_response(req, 486, to_tag="b")
        layer.response_received(resp, flow)
        layer.response_received(resp, flow)
        acks = [m for m in flow.sent if isinstance(m, Request) and m.method == "ACK"]
        self.assertEqual(len(acks), 2)
        self.assertIn("z9hG4bKabc", acks[0].top_via)
        self.assertIn("tag=b", acks[0].get("to"))
        self.assertEqual(acks[0].cseq, (1, "ACK"))
        self.assertEqual([r.status for r in got], [486])
        clock.advance(32)
        self.assertEqual(layer.client, {})

    def test_invite_2xx_retransmissions_passed_up(self):
        """In Accepted every 2xx goes to the TU (which ACKs each), Timer M ends it."""
        clock, tu, layer = setup()
        flow = RecordingFlow()
        got, cb = self.responses()
        req = make_request()
        layer.send_request(req, flow, cb)
        ok = build_response(req, 200, to_tag="b")
        layer.response_received(ok, flow)
        layer.response_received(ok, flow)
        self.assertEqual([r.status for r in got], [200, 200])
        clock.advance(32)
        self.assertEqual(layer.client, {})

    def test_non_invite_timer_e_capped(self):
        """Timer E doubles up to T2; after a 1xx it fires every T2; F times out."""
        clock, tu, layer = setup()
        flow = RecordingFlow()
        got, cb = self.responses()
        req = make_request("OPTIONS")
        layer.send_request(req, flow, cb)
        clock.advance(0.5)
        clock.advance(1)
        clock.advance(2)
        clock.advance(4)
        clock.advance(4)
        self.assertEqual(len(flow.sent), 6)
        clock.advance(20.5)
        self.assertEqual([r.status for r in got], [408])

    def test_non_invite_timer_k(self):
        """After the final response, Timer K (T4) absorbs retransmissions."""
        clock, tu, layer = setup()
        flow = RecordingFlow()
        got, cb = self.responses()
        req = make_request("OPTIONS")
        layer.send_request(req, flow, cb)
        ok = build_response(req, 200, to_tag="b")
        layer.response_received(ok, flow)
        layer.response_received(ok, flow)
        self.assertEqual([r.status for r in got], [200])
        clock.advance(5)
        self.assertEqual(layer.client, {})

    def test_configured_t1(self):
        """t1_timer from the config sets the first retransmission interval."""
        clock, tu, layer = setup(t1_ms=100, t1x64_ms=6400)
        flow = RecordingFlow()
        got, cb = self.responses()
        layer.send_request(make_request("OPTIONS"), flow, cb)
        clock.advance(0.1)
        self.assertEqual(len(flow.sent), 2)
        clock.advance(6.31)
        self.assertEqual([r.status for r in got], [408])

    def test_stray_response(self):
        """A response matching no client transaction goes to the TU."""
        clock, tu, layer = setup()
        layer.response_received(build_response(make_request(), 200), RecordingFlow())
        self.assertEqual(len(tu.stray), 1)

    def test_transport_failure_is_503(self):
        """A flow that fails gives its pending requests a 503 (17.1.4)."""
        clock, tu, layer = setup()
        flow = RecordingFlow(reliable=True)
        got, cb = self.responses()
        layer.send_request(make_request("OPTIONS"), flow, cb)
        layer.flow_failed(flow)
        self.assertEqual([r.status for r in got], [503])


class BuildersTests(SynchronousTestCase):
    def test_cancel(self):
        """A CANCEL copies Request-URI, Call-ID, From, To and the top Via and
        keeps the CSeq number (9.1)."""
        req = make_request()
        cancel = build_cancel(req)
        self.assertEqual(cancel.uri, req.uri)
        self.assertEqual(cancel.top_via, req.top_via)
        self.assertEqual(cancel.cseq, (1, "CANCEL"))
        self.assertEqual(cancel.get("from"), req.get("from"))

    def test_ack(self):
        """The ACK of a non-2xx has the response's To tag."""
        req = make_request()
        ack = build_ack(req, build_response(req, 404, to_tag="zz"))
        self.assertTrue(ack.get("to").endswith("tag=zz"))

    def test_response_copies(self):
        """A response copies Via, From, To, Call-ID and CSeq, and adds a tag."""
        req = make_request()
        resp = build_response(req, 200, to_tag="t1", server="x")
        self.assertEqual(resp.get("call-id"), "call-1")
        self.assertEqual(resp.get("to"), "<sip:bob@example.com>;tag=t1")
        self.assertEqual(resp.get("server"), "x")
        self.assertIsInstance(resp, Response)


class FixedDelayQueueTests(SynchronousTestCase):
    """The one-call queue of the 64*T1 timers fires each at its own deadline."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.queue = FixedDelayQueue(self.clock, 32.0)
        self.fired = []

    def start(self, name):
        return self.queue.start(lambda: self.fired.append((name, self.clock.seconds())))

    def test_exact_deadlines_one_call(self) -> None:
        """Timers started at 0, 1 and 1 fire at 32, 33 and 33, in start order,
        with one reactor call pending at any time."""
        self.start("a")
        self.clock.advance(1)
        self.start("b")
        self.start("c")
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(30.9)
        self.assertEqual(self.fired, [])
        self.clock.advance(0.1)
        self.assertEqual(self.fired, [("a", 32.0)])
        self.clock.advance(1)
        self.assertEqual(self.fired, [("a", 32.0), ("b", 33.0), ("c", 33.0)])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancel(self) -> None:
        """A cancelled timer never fires, and the queue moves on to the next."""
        a = self.start("a")
        self.clock.advance(5)
        self.start("b")
        a.cancel()
        self.assertFalse(a.active())
        self.clock.advance(27)
        self.assertEqual(self.fired, [])
        self.clock.advance(5)
        self.assertEqual(self.fired, [("b", 37.0)])

    def test_started_while_firing(self) -> None:
        """A timer started by a firing one does not delay those already queued."""
        self.queue.start(lambda: self.start("late"))
        self.clock.advance(1)
        self.start("queued")
        self.clock.advance(31)
        self.clock.advance(1)
        self.assertEqual(self.fired, [("queued", 33.0)])
        self.clock.advance(31)
        self.assertEqual(self.fired, [("queued", 33.0), ("late", 64.0)])

    def test_stop(self) -> None:
        """stop() cancels every timer and the pending reactor call."""
        self.start("a")
        self.queue.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(64)
        self.assertEqual(self.fired, [])

    def test_timer_set_uses_the_queue(self) -> None:
        """A TimerSet puts timers of the queue's delay there, others on the clock."""
        timers = TimerSet(self.clock, self.queue)
        timers.start("J", 32.0, lambda: self.fired.append("J"))
        timers.start("E", 0.5, lambda: self.fired.append("E"))
        timers.start("F", 32.0, lambda: self.fired.append("F"))
        timers.stop("F")
        self.assertEqual(len(self.clock.getDelayedCalls()), 2)
        self.clock.advance(32)
        self.assertEqual(self.fired, ["E", "J"])


class RaisingFlow(RecordingFlow):
    """A flow whose every send raises, as a broken connection or a socket
    refusing an address can."""

    def send(self, data):
        raise RuntimeError("cannot send")


class SendFailureTests(SynchronousTestCase):
    """A send that raises never stops a transaction from reaching its end."""

    def test_server_non_invite(self):
        """A non-INVITE whose final response cannot be sent still
        terminates on Timer J, and the error reaches the TU once."""
        clock, tu, layer = setup()
        errors = []
        tu.send_failed = lambda listener, addr, error: errors.append(error)
        layer.request_received(make_request("OPTIONS"), RaisingFlow())
        tu.new[0].reply(200)
        clock.advance(33)
        self.assertEqual((layer.server, layer.pending, len(tu.ended)), ({}, 0, 1))
        self.assertEqual(len(errors), 1)

    def test_server_invite_error(self):
        """An INVITE's 486 that cannot be sent still ends on Timer H
        (the retransmissions by Timer G fail too, quietly)."""
        clock, tu, layer = setup()
        layer.request_received(make_request("INVITE"), RaisingFlow())
        tu.new[0].reply(486)
        for _ in range(40):
            clock.advance(1)
        self.assertEqual((layer.server, layer.pending, len(tu.ended)), ({}, 0, 1))

    def test_client(self):
        """A request that cannot be sent still times out with a 408 to its
        sender and leaves no client transaction."""
        clock, tu, layer = setup()
        got = []
        layer.send_request(make_request("OPTIONS"), RaisingFlow(), lambda tx, r: got.append(r.status))
        for _ in range(40):
            clock.advance(1)
        self.assertEqual((layer.client, got), ({}, [408]))
