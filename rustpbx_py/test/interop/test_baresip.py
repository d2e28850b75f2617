"""
baresip phones against the PBX: password users register over UDP, TCP
and TLS and call each other; each side's decoded audio must be the other
side's tone.  Hold/resume, blind transfer and MESSAGE go through the PBX
between real phones.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from rustpbx_py.test.interop.baresip import BaresipPhone, module_path
from rustpbx_py.test.interop.phones import PhonePbx, later
from rustpbx_py.test.interop.support import require_tool


class BaresipTests(TestCase):
    """Two or three baresip phones registered to one PBX."""

    timeout = 60

    def setUp(self) -> None:
        require_tool("baresip")
        module_path()

    @defer.inlineCallbacks
    def phones(self, *specs):
        """Start a PBX, then one registered phone per (user, transport)."""
        self.pbx = yield PhonePbx.start(self)
        phones = []
        for user, transport in specs:
            contacts = tuple(u for u, _ in specs if u != user)
            phone = BaresipPhone(self, self.pbx, user, transport, contacts=contacts)
            yield phone.start()
            phones.append(phone)
        return phones

    @defer.inlineCallbacks
    def call(self, caller: BaresipPhone, callee: BaresipPhone):
        """C{caller} dials C{callee}, who answers by itself; both hear each other."""
        mark_a, mark_b = caller.mark(), callee.mark()
        yield caller.command("dial", callee.aor)
        yield caller.wait_event("CALL_ESTABLISHED", since=mark_a)
        yield callee.wait_event("CALL_ESTABLISHED", since=mark_b)
        yield caller.hears(callee)
        yield callee.hears(caller)

    @defer.inlineCallbacks
    def hangup(self, phone: BaresipPhone, peer: BaresipPhone):
        mark = peer.mark()
        yield phone.command("hangup")
        yield peer.wait_event("CALL_CLOSED", since=mark)

    @defer.inlineCallbacks
    def test_udp_call(self):
        """Over UDP: both register, alice calls bob, each hears the other's tone, bob sees the BYE."""
        alice, bob = yield self.phones(("alice", "udp"), ("bob", "udp"))
        yield self.call(alice, bob)
        yield self.hangup(alice, bob)

    @defer.inlineCallbacks
    def test_tcp_call(self):
        """Over TCP both ways: bob calls alice and hangs up."""
        alice, bob = yield self.phones(("alice", "tcp"), ("bob", "tcp"))
        yield self.call(bob, alice)
        yield self.hangup(bob, alice)

    @defer.inlineCallbacks
    def test_tls_call(self):
        """Over TLS (the phones verify the PBX's certificate): alice calls bob, bob hangs up."""
        alice, bob = yield self.phones(("alice", "tls"), ("bob", "tls"))
        yield self.call(alice, bob)
        yield self.hangup(bob, alice)

    @defer.inlineCallbacks
    def test_mixed_transports(self):
        """A TLS phone calls a UDP phone: the PBX bridges transports, audio both ways."""
        alice, bob = yield self.phones(("alice", "tls"), ("bob", "udp"))
        yield self.call(alice, bob)
        yield self.hangup(alice, bob)

    @defer.inlineCallbacks
    def test_hold_resume(self):
        """
        alice holds bob: the re-INVITE's a=sendonly reaches bob and his
        a=recvonly answer comes back to alice; resume brings a=sendrecv both
        ways, and the call still ends with a BYE bob sees.  (baresip 1.0
        does not restart its own audio after a resume, with or without a
        PBX in between, so only the signalling is checked after the hold.)
        """
        alice, bob = yield self.phones(("alice", "udp"), ("bob", "tcp"))
        yield self.call(alice, bob)
        for command, offered, answered in (("hold", "sendonly", "recvonly"), ("resume", "sendrecv", "sendrecv")):
            mark_a, mark_b = alice.mark(), bob.mark()
            out_a, out_b = len(alice.process.output), len(bob.process.output)
            yield alice.command(command)
            yield bob.wait_event("CALL_REMOTE_SDP", since=mark_b, param="offer")
            yield alice.wait_event("CALL_REMOTE_SDP", since=mark_a, param="answer")
            # bob's trace: the relayed offer; alice's: the relayed answer.
            yield bob.process.wait_output(rf"(?s)\nINVITE sip:[^\n]*\n.*?\na=({offered})\r?\n", since=out_b)
            yield alice.process.wait_output(rf"(?s)\nSIP/2.0 200 [^\n]*\n.*?\na=({answered})\r?\n", since=out_a)
        self.assertNotIn("CALL_CLOSED", alice.types() + bob.types())
        yield self.hangup(alice, bob)

    @defer.inlineCallbacks
    def test_blind_transfer(self):
        """
        alice calls bob, bob transfers her to carol (REFER): alice calls
        carol by herself, they hear each other, and bob's call ends.
        """
        alice, bob, carol = yield self.phones(("alice", "udp"), ("bob", "udp"), ("carol", "udp"))
        yield self.call(alice, bob)
        mark_a, mark_b, mark_c = alice.mark(), bob.mark(), carol.mark()
        yield bob.command("transfer", carol.aor)
        event = yield alice.wait_event("TRANSFER", since=mark_a)
        self.assertIn(carol.aor, event["param"])
        yield alice.wait_event("CALL_ESTABLISHED", since=mark_a, peeruri=carol.aor)
        yield carol.wait_event("CALL_ESTABLISHED", since=mark_c)
        yield alice.hears(carol)
        yield carol.hears(alice)
        yield bob.wait_event("CALL_CLOSED", since=mark_b)
        yield self.hangup(alice, carol)
