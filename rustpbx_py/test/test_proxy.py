"""
Tests for L{rustpbx_py.proxy.SipCore}: what the core answers itself, how it
stamps Vias, and how it hands requests to the pipeline.
"""

from __future__ import annotations

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from rustpbx_py.config import default_config
from rustpbx_py.interfaces import ABORT, CONTINUE
from rustpbx_py.pipeline import Pipeline
from rustpbx_py.proxy import SipCore
from rustpbx_py.sip.message import SipParseError, parse_message


class Flow:
    """A UDP-like flow that records what is sent and where."""

    transport = "UDP"
    reliable = False
    connected = True

    def __init__(self, remote=("203.0.113.7", 40000)):
        self.remote = remote
        self.local = ("127.0.0.1", 5060)
        self.id = "udp:test"
        self.sent = []

    def send(self, data):
        self.sent.append((self.remote, parse_message(data)))

    def to(self, remote):
        other = Flow(remote)
        other.sent = self.sent
        return other


class Module:
    """A pipeline module that records what it saw and answers as told."""

    name = "probe"

    def __init__(self, action=CONTINUE, methods=("*",), spam=False, status=None):
        self.action = action
        self.methods = list(methods)
        self.spam = spam
        self.status = status
        self.seen = []

    def allow_methods(self):
        return self.methods

    def start(self):
        pass

    def stop(self):
        pass

    def on_transaction_begin(self, tx):
        self.seen.append(tx.request)
        if self.spam:
            tx.context.spam = True
        if self.status:
            tx.reply(self.status)
        return self.action

    def on_transaction_end(self, tx):
        pass


def request(method="OPTIONS", uri="sip:127.0.0.1", via="SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKx1;rport", extra=""):
    return (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: {via}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@example.com>;tag=a\r\n"
        "To: <sip:bob@example.com>\r\n"
        "Call-ID: core-1\r\n"
        f"CSeq: 1 {method}\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def core(modules=(), **proxy):
    proxy.setdefault("useragent", "CoreTest/1")
    c = SipCore(default_config(**proxy), task.Clock(), Pipeline(list(modules)))
    c.accepting = True
    return c


def feed(c, data, flow=None):
    flow = flow or Flow()
    c.message_received(parse_message(data), flow)
    return flow


class CoreAnswerTests(SynchronousTestCase):
    def test_options_to_self(self):
        """OPTIONS to the PBX gets 200 with Allow (from the modules), Accept,
        Supported and the configured Server header."""
        flow = feed(core([Module(methods=["REGISTER"])]), request())
        (addr, response), = flow.sent
        self.assertEqual(response.status, 200)
        self.assertIn("REGISTER", response.get("allow"))
        self.assertEqual(response.get("accept"), "application/sdp")
        self.assertIn("timer", response.get("supported"))
        self.assertEqual(response.get("server"), "CoreTest/1")

    def test_unhandled_is_405(self):
        """A SIP method no module answers gets 405 Method Not Allowed with
        the Allow of the modules (RFC 3261 21.4.6)."""
        flow = feed(core([Module(methods=["REGISTER"])]), request("SUBSCRIBE", "sip:bob@example.com"))
        response = flow.sent[0][1]
        self.assertEqual(response.status, 405)
        self.assertEqual(response.get("allow"), "OPTIONS, ACK, CANCEL, REGISTER")

    def test_unknown_dialog_is_481(self):
        """A request inside a dialog no module knows (a To tag) gets 481,
        not 405: the method is fine, the dialog is gone (12.2.2)."""
        flow = feed(core([Module(methods=["REGISTER"])]), request("SUBSCRIBE", "sip:bob@example.com").replace(b"To: <sip:bob@example.com>", b"To: <sip:bob@example.com>;tag=gone"))
        self.assertEqual(flow.sent[0][1].status, 481)

    def test_unknown_method_is_501(self):
        """A method that is no SIP method we know gets 501 with Allow."""
        flow = feed(core([Module(methods=["REGISTER"])]), request("FROB", "sip:bob@example.com"))
        response = flow.sent[0][1]
        self.assertEqual(response.status, 501)
        self.assertEqual(response.get("allow"), "OPTIONS, ACK, CANCEL, REGISTER")

    def test_spam_gets_nothing(self):
        """A request a module marks as spam gets no answer at all."""
        flow = feed(core([Module(action=ABORT, spam=True)]), request())
        self.assertEqual(flow.sent, [])

    def test_module_error_is_500(self):
        """A module that raises answers 500."""

        class Broken(Module):
            def on_transaction_begin(self, tx):
                raise RuntimeError("boom")

        flow = feed(core([Broken()]), request())
        self.assertEqual(flow.sent[0][1].status, 500)
        self.flushLoggedErrors(RuntimeError)

    def test_module_order_and_abort(self):
        """Modules run in order; after one aborts, later ones do not see it."""
        first, second = Module(action=ABORT, status=403), Module()
        feed(core([first, second]), request())
        self.assertEqual((len(first.seen), len(second.seen)), (1, 0))

    def test_max_forwards_zero(self):
        """Max-Forwards: 0 gets 483 before any module sees the request."""
        probe = Module()
        flow = feed(core([probe]), request().replace(b"Max-Forwards: 70", b"Max-Forwards: 0"))
        self.assertEqual(flow.sent[0][1].status, 483)
        self.assertEqual(probe.seen, [])

    def test_unsupported_require(self):
        """Require: with an unknown option tag gets 420 listing it in Unsupported."""
        flow = feed(core(), request(extra="Require: foo, timer\r\n"))
        response = flow.sent[0][1]
        self.assertEqual(response.status, 420)
        self.assertEqual(response.get("unsupported"), "foo")

    def test_overload(self):
        """More server transactions in flight than max_concurrency: 503 with Retry-After."""
        c = core([Module(action=ABORT)], max_concurrency=2)
        for i in range(2):
            feed(c, request("INVITE", "sip:bob@example.com", via=f"SIP/2.0/UDP 10.0.0.5;branch=z9hG4bKo{i}"))
        flow = feed(c, request("INVITE", "sip:bob@example.com", via="SIP/2.0/UDP 10.0.0.5;branch=z9hG4bKo9"))
        self.assertEqual(flow.sent[-1][1].status, 503)
        self.assertEqual(flow.sent[-1][1].get("retry-after"), "5")

    def test_cancel_without_invite(self):
        """A CANCEL matching no INVITE gets 481."""
        flow = feed(core(), request("CANCEL", "sip:bob@example.com"))
        self.assertEqual(flow.sent[0][1].status, 481)

    def test_cancel_after_final(self):
        """A CANCEL for an INVITE already answered gets 200 with the
        INVITE's To tag and changes nothing else (RFC 3261 9.2)."""
        c = core([Module(action=ABORT, status=486)])
        invite = request("INVITE", "sip:bob@example.com")
        flow = feed(c, invite)
        busy = flow.sent[-1][1]
        self.assertEqual(busy.status, 486)
        feed(c, request("CANCEL", "sip:bob@example.com"), flow)
        cancel_ok = flow.sent[-1][1]
        self.assertEqual((cancel_ok.status, cancel_ok.cseq), (200, (1, "CANCEL")))
        self.assertEqual(cancel_ok.get("to"), busy.get("to"))
        self.assertEqual([m.status for _, m in flow.sent], [486, 200])

    def test_trying_before_slow_module(self):
        """An INVITE whose module waits on a slow look-up gets 100 Trying at
        once (RFC 3261 17.2.1), then the module's answer; a non-INVITE does
        not, nor does a request a module dropped as spam synchronously."""
        from twisted.internet import defer

        class Slow(Module):
            def on_transaction_begin(self, tx):
                self.seen.append(tx)
                self.waiting = defer.Deferred()
                return self.waiting

        probe = Slow()
        c = core([probe])
        flow = feed(c, request("INVITE", "sip:bob@example.com"))
        self.assertEqual([m.status for _, m in flow.sent], [100])
        probe.seen[0].reply(180)
        probe.waiting.callback(ABORT)
        self.assertEqual([m.status for _, m in flow.sent], [100, 180])
        other = Slow()
        flow = feed(core([other]), request("MESSAGE", "sip:bob@example.com"))
        self.assertEqual(flow.sent, [])
        flow = feed(core([Module(action=CONTINUE, spam=True), Slow()]), request("INVITE", "sip:bob@example.com"))
        self.assertEqual(flow.sent, [])

    def test_dropped_until_started(self):
        """Before the modules have started the core answers nothing."""
        c = core()
        c.accepting = False
        self.assertEqual(feed(c, request()).sent, [])


class ViaTests(SynchronousTestCase):
    def test_received_and_rport(self):
        """The top Via gets received= and rport= from the real source, and the
        response goes to that address (RFC 3581), not to the Via's."""
        flow = feed(core(), request())
        addr, response = flow.sent[0]
        self.assertEqual(addr, ("203.0.113.7", 40000))
        self.assertIn("received=203.0.113.7", response.top_via)
        self.assertIn("rport=40000", response.top_via)

    def test_no_rport(self):
        """Without rport, received= is added when the host differs, and the
        response still goes to the packet's source port, not the Via's
        (symmetric response routing: see L{ReflectionTests})."""
        flow = feed(core(), request(via="SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bKy"))
        addr, response = flow.sent[0]
        self.assertEqual(addr, ("203.0.113.7", 40000))
        self.assertNotIn("rport", response.top_via)

    def test_same_host_untouched(self):
        """A Via that already says where the request came from is left as is."""
        flow = Flow(remote=("10.0.0.5", 5060))
        feed(core(), request(via="SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKz"), flow)
        self.assertEqual(flow.sent[0][1].top_via, "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKz")


class ParseErrorTests(SynchronousTestCase):
    def test_bad_request_answered(self):
        """A request that does not parse but has a usable Via gets 400."""
        c = core()
        data = request().replace(b"CSeq: 1 OPTIONS", b"CSeq: 1 OPTIONS\r\nContent-Length: abc")
        flow = Flow()
        try:
            parse_message(data)
        except SipParseError as e:
            c.parse_error(e, data, flow)
        else:  # pragma: no cover
            self.fail("the message should not parse")
        self.assertEqual(flow.sent[0][1].status, 400)
        self.assertEqual(flow.sent[0][1].call_id, "core-1")

    def test_bad_version_is_505(self):
        """SIP/7.0 gets 505 (RFC 4475 badvers)."""
        c = core()
        data = request().replace(b"sip:127.0.0.1 SIP/2.0", b"sip:127.0.0.1 SIP/7.0")
        flow = Flow()
        with self.assertRaises(SipParseError) as cm:
            parse_message(data)
        c.parse_error(cm.exception, data, flow)
        self.assertEqual(flow.sent[0][1].status, 505)

    def test_response_garbage_dropped(self):
        """An unparsable response is dropped: nothing can be answered."""
        c = core()
        flow = Flow()
        c.parse_error(SipParseError("bad", None), b"SIP/2.0 abc\r\n\r\n", flow)
        self.assertEqual(flow.sent, [])


class ScreenTests(SynchronousTestCase):
    """Screens (the acl module) see every request before the core answers."""

    def screened(self):
        c = core([Module()])
        seen = []

        def screen(request, flow):
            seen.append(request.method)
            return request.get("user-agent") == "friendly-scanner"

        c.screens.append(screen)
        return c, seen

    def test_dropped_before_core_answers(self):
        """A screened request with Max-Forwards 0 gets no 483: nothing at all."""
        c, seen = self.screened()
        data = request(extra="User-Agent: friendly-scanner\r\n").replace(b"Max-Forwards: 70", b"Max-Forwards: 0")
        self.assertEqual(feed(c, data).sent, [])
        self.assertEqual(seen, ["OPTIONS"])

    def test_parse_error_screened(self):
        """An unparsable request from a screened agent gets no 400 either."""
        c, seen = self.screened()
        data = request(extra="User-Agent: friendly-scanner\r\nContent-Length: abc\r\n")
        flow = Flow()
        with self.assertRaises(SipParseError) as cm:
            parse_message(data)
        c.parse_error(cm.exception, data, flow)
        self.assertEqual(flow.sent, [])

    def test_others_answered(self):
        """A request the screen lets through is answered as usual."""
        c, seen = self.screened()
        self.assertEqual(feed(c, request()).sent[0][1].status, 200)


class _OsLikeSocket:
    """
    A datagram socket that checks its address as CPython's C{sendto} does
    (port 0-65535, a name is looked up and not found) and records what it
    would have sent.
    """

    def __init__(self, sent):
        self.sent = sent

    def sendto(self, data, addr):
        import socket

        if not 0 <= addr[1] <= 65535:
            raise OverflowError("sendto(): port must be 0-65535.")
        try:
            socket.inet_pton(socket.AF_INET, addr[0])
        except OSError:
            raise socket.gaierror(-2, "Name or service not known")
        self.sent.append((addr, data))


def udp_core(clock=None):
    """
    A real core behind a real L{SipDatagramProtocol} whose transport is
    Twisted's own UDP port class (its address checks run) over a socket
    double: what goes out lands in the returned list as (address, bytes).
    """
    from twisted.internet import udp

    from rustpbx_py.protocols.udp import SipDatagramProtocol

    c = SipCore(default_config(useragent="CoreTest/1"), clock or task.Clock(), Pipeline([]))
    c.accepting = True
    protocol = SipDatagramProtocol(c)
    port = udp.Port(5060, protocol, interface="127.0.0.1")
    sent = []
    port.socket = _OsLikeSocket(sent)
    protocol.transport = port
    protocol.local = ("127.0.0.1", 5060)
    c.transports.udp.append(protocol)
    return c, protocol, sent


def options(i, via_params, source="198.51.100.9"):
    return request(via=f"SIP/2.0/UDP {source}:5060;branch=z9hG4bKleak{i}{via_params}").replace(
        b"Call-ID: core-1", b"Call-ID: leak-%d" % i
    )


class SendFailureTests(SynchronousTestCase):
    """
    A reply that cannot be sent must not leak its transaction: whatever the
    socket raises, the transaction reaches its end state on its timers.
    """

    def test_unsendable_replies_leave_no_transactions(self):
        """Thousands of OPTIONS whose Via names port 70000, a maddr host
        name or a received= name, with the socket refusing every send:
        after 64*T1 no server transaction is left and none is pending."""
        clock = task.Clock()
        c, protocol, sent = udp_core(clock)

        class Refusing(_OsLikeSocket):
            def sendto(self, data, addr):
                raise OSError(1, "Operation not permitted")

        kinds = [";rport=70000", ";maddr=pbx.invalid", ";received=host.invalid;rport=5"]
        for i in range(3000):
            if i == 1500:
                protocol.transport.socket = Refusing(sent)
            protocol.datagramReceived(options(i, kinds[i % 3]), ("198.51.100.9", 5060))
        clock.advance(33)
        clock.advance(33)
        self.assertEqual((len(c.transactions.server), c.transactions.pending), (0, 0))

    def test_send_errors_counted_and_logged_once(self):
        """Each failed send is counted; the log gets one line, not one per
        datagram (a flood of unsendable requests cannot flood the log)."""
        from twisted.logger import globalLogPublisher

        clock = task.Clock()
        c, protocol, sent = udp_core(clock)

        class Refusing(_OsLikeSocket):
            def sendto(self, data, addr):
                raise OSError(1, "Operation not permitted")

        protocol.transport.socket = Refusing(sent)
        logged = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        for i in range(100):
            protocol.datagramReceived(options(i, ";rport"), ("198.51.100.9", 5060))
        self.assertEqual(c.counters["send_errors"], 100)
        lines = [e for e in logged if "send" in str(e.get("log_format", ""))]
        self.assertEqual(len(lines), 1)


class ReflectionTests(SynchronousTestCase):
    """
    Responses go to the packet's source (RFC 3581, Kamailio's default), not
    to an address the request names: a stranger cannot point the PBX at a
    third party.
    """

    def test_client_received_rport_maddr_ignored(self):
        """An INVITE whose Via names another host in received=, rport= and
        maddr= gets every response at its source address only."""
        clock = task.Clock()
        c, protocol, sent = udp_core(clock)
        via = "SIP/2.0/UDP 198.51.100.9:5060;branch=z9hG4bKrefl;received=192.0.2.77;rport=9999;maddr=192.0.2.78"
        data = request("INVITE", "sip:nobody@127.0.0.1", via=via)
        protocol.datagramReceived(data, ("198.51.100.9", 5060))
        for _ in range(12):
            protocol.datagramReceived(data, ("198.51.100.9", 5060))  # retransmissions
            clock.advance(4)
        self.assertTrue(sent)
        self.assertEqual({addr for addr, _ in sent}, {("198.51.100.9", 5060)})

    def test_via_names_third_party(self):
        """A Via whose sent-by is a third party (no rport): the 501 still
        goes to where the packet came from."""
        c, protocol, sent = udp_core()
        data = request(via="SIP/2.0/UDP 192.0.2.77:7777;branch=z9hG4bKthird")
        protocol.datagramReceived(data, ("198.51.100.9", 40000))
        self.assertEqual([addr for addr, _ in sent], [("198.51.100.9", 40000)])

    def test_parse_error_answer_to_source(self):
        """A 400 for a malformed request also goes to the source, not maddr."""
        c, protocol, sent = udp_core()
        data = request(via="SIP/2.0/UDP 198.51.100.9:5060;branch=z9hG4bKbad;maddr=192.0.2.78;rport=1").replace(
            b"CSeq: 1 OPTIONS", b"CSeq: 1 OPTIONS\r\nContent-Length: abc"
        )
        protocol.datagramReceived(data, ("198.51.100.9", 5062))
        self.assertEqual([addr for addr, _ in sent], [("198.51.100.9", 5062)])
