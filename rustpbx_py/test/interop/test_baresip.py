"""
baresip phones against the PBX: password users register over UDP, TCP
and TLS and call each other; each side's decoded audio must be the other
side's tone.  Hold/resume, blind transfer and MESSAGE go through the PBX
between real phones.
"""

from __future__ import annotations

import re

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from rustpbx_py.test.interop.baresip import BaresipPhone, module_path
from rustpbx_py.test.interop.phones import PhonePbx
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
        yield caller.dial_up(callee)
        yield caller.hears(callee)
        yield callee.hears(caller)

    @defer.inlineCallbacks
    def test_udp_call(self):
        """Over UDP: both register, alice calls bob, each hears the other's tone, bob sees the BYE."""
        alice, bob = yield self.phones(("alice", "udp"), ("bob", "udp"))
        yield self.call(alice, bob)
        yield alice.hang_up(bob)

    @defer.inlineCallbacks
    def test_tcp_call(self):
        """Over TCP both ways: bob calls alice and hangs up."""
        alice, bob = yield self.phones(("alice", "tcp"), ("bob", "tcp"))
        yield self.call(bob, alice)
        yield bob.hang_up(alice)

    @defer.inlineCallbacks
    def test_tls_call(self):
        """
        Over TLS: alice calls bob, bob hangs up.  (baresip 1.0 does not
        check the PBX's certificate, whatever sip_cafile says.)
        """
        alice, bob = yield self.phones(("alice", "tls"), ("bob", "tls"))
        yield self.call(alice, bob)
        yield bob.hang_up(alice)

    @defer.inlineCallbacks
    def test_mixed_transports(self):
        """A TLS phone calls a UDP phone: the PBX bridges transports, audio both ways."""
        alice, bob = yield self.phones(("alice", "tls"), ("bob", "udp"))
        yield self.call(alice, bob)
        yield alice.hang_up(bob)

    @defer.inlineCallbacks
    def test_hold_resume(self):
        """
        alice holds bob: the re-INVITE's a=sendonly reaches bob and his
        a=recvonly answer comes back to alice; resume brings a=sendrecv both
        ways; then bob (the callee: a re-INVITE the other way through the
        B2BUA) holds and resumes alice the same way; the call still ends
        with a BYE bob sees.  (baresip 1.0 does not restart its own audio
        after a resume, with or without a PBX in between, so only the
        signalling is checked after the first hold.)
        """
        alice, bob = yield self.phones(("alice", "udp"), ("bob", "tcp"))
        yield self.call(alice, bob)
        steps = (("hold", "sendonly", "recvonly"), ("resume", "sendrecv", "sendrecv"))
        for holder, held in ((alice, bob), (bob, alice)):
            for command, offered, answered in steps:
                mark_a, mark_b = holder.mark(), held.mark()
                out_a, out_b = len(holder.process.output), len(held.process.output)
                yield holder.command(command)
                yield held.wait_event("CALL_REMOTE_SDP", since=mark_b, param="offer")
                yield holder.wait_event("CALL_REMOTE_SDP", since=mark_a, param="answer")
                # the held phone's trace: the relayed offer; the holder's: the relayed answer.
                yield held.process.wait_output(rf"(?s)\nINVITE sip:[^\n]*\n.*?\na=({offered})\r?\n", since=out_b)
                yield holder.process.wait_output(rf"(?s)\nSIP/2.0 200 [^\n]*\n.*?\na=({answered})\r?\n", since=out_a)
        self.assertNotIn("CALL_CLOSED", alice.types() + bob.types())
        yield alice.hang_up(bob)

    @defer.inlineCallbacks
    def test_blind_transfer(self):
        """
        alice calls bob, bob transfers her to carol (REFER): alice calls
        carol by herself, they hear each other; alice's NOTIFYs reach bob
        with the Event id of his REFER (no 481), the last one with a
        sipfrag of 200, and bob's call ends.
        """
        alice, bob, carol = yield self.phones(("alice", "udp"), ("bob", "udp"), ("carol", "udp"))
        yield self.call(alice, bob)
        mark_a, mark_b, mark_c = alice.mark(), bob.mark(), carol.mark()
        out_b = len(bob.process.output)
        yield bob.command("transfer", carol.aor)
        refer = yield bob.process.wait_output(r"\nCSeq: (\d+) REFER", since=out_b)
        # the trace puts '#' before each message: [^#] stays inside one.
        yield bob.process.wait_output(
            rf"\nNOTIFY sip:[^#]*\nEvent: refer;id={refer.group(1)}\r?\n[^#]*\r?\n\r?\nSIP/2.0 200 ", since=out_b
        )
        event = yield alice.wait_event("TRANSFER", since=mark_a)
        self.assertIn(carol.aor, event["param"])
        yield alice.wait_event("CALL_ESTABLISHED", since=mark_a, peeruri=carol.aor)
        yield carol.wait_event("CALL_ESTABLISHED", since=mark_c)
        yield alice.hears(carol)
        yield carol.hears(alice)
        yield bob.wait_event("CALL_CLOSED", since=mark_b)
        self.assertNotIn("TRANSFER_FAILED", alice.types(mark_a))
        self.assertNotRegex(bob.process.output[out_b:], r"SIP/2.0 481[^#]*CSeq: \d+ NOTIFY")
        yield alice.hang_up(carol)

    @defer.inlineCallbacks
    def test_message(self):
        """
        alice (UDP) sends bob (TCP) a MESSAGE outside any dialog: the PBX
        relays it to bob's contact with the body intact, bob's 200 comes
        back to alice.
        """
        alice, bob = yield self.phones(("alice", "udp"), ("bob", "tcp"))
        text = "hello bob: 1 2 3, ünïcode & <xml>"
        out_a = len(alice.process.output)
        yield alice.command("message", text)
        yield bob.process.wait_output(re.escape(f'sip:alice@127.0.0.1: "{text}"'))
        yield alice.process.wait_output(r"\nSIP/2.0 200 [^#]*\nCSeq: \d+ MESSAGE", since=out_a)

    @defer.inlineCallbacks
    def test_opus_call(self):
        """
        Both phones offer only Opus (48 kHz): the PBX relays that SDP as is
        and each side decodes the other's tone.
        """
        self.pbx = yield PhonePbx.start(self)
        alice = yield BaresipPhone(self, self.pbx, "alice", "udp", codec="opus").start()
        bob = yield BaresipPhone(self, self.pbx, "bob", "tcp", codec="opus").start()
        yield self.call(alice, bob)
        self.assertRegex(bob.process.output, r"audio: Set audio decoder: opus 48000Hz")
        yield alice.hang_up(bob)

    @defer.inlineCallbacks
    def test_callee_offline(self):
        """alice calls carol, who has no registration: the call fails with 480 (RustPBX's answer) and nothing rings."""
        self.pbx = yield PhonePbx.start(self)
        alice = yield BaresipPhone(self, self.pbx, "alice").start()
        yield alice.command("dial", "sip:carol@127.0.0.1")
        event = yield alice.wait_event("CALL_CLOSED")
        self.assertTrue(event["param"].startswith("480"), event["param"])

    @defer.inlineCallbacks
    def test_callee_busy(self):
        """bob rejects the ringing call (486 Busy Here): alice's call ends with bob's 486, relayed by the PBX."""
        self.pbx = yield PhonePbx.start(self)
        alice = yield BaresipPhone(self, self.pbx, "alice").start()
        bob = yield BaresipPhone(self, self.pbx, "bob", answer="manual").start()
        yield alice.command("dial", bob.aor)
        yield bob.wait_event("CALL_INCOMING")
        yield alice.wait_event("CALL_RINGING")
        yield bob.command("hangup")
        event = yield alice.wait_event("CALL_CLOSED")
        self.assertTrue(event["param"].startswith("486"), event["param"])

    @defer.inlineCallbacks
    def test_caller_cancels(self):
        """alice hangs up while bob's phone rings: the CANCEL reaches bob, whose phone stops ringing."""
        self.pbx = yield PhonePbx.start(self)
        alice = yield BaresipPhone(self, self.pbx, "alice").start()
        bob = yield BaresipPhone(self, self.pbx, "bob", answer="manual").start()
        out_b = len(bob.process.output)
        yield alice.command("dial", bob.aor)
        yield bob.wait_event("CALL_INCOMING")
        yield alice.wait_event("CALL_RINGING")
        yield alice.command("hangup")
        yield bob.wait_event("CALL_CLOSED")
        yield bob.process.wait_output(r"\nCANCEL sip:", since=out_b)
        self.assertNotIn("CALL_ESTABLISHED", bob.types())

    @defer.inlineCallbacks
    def test_unregister_on_exit(self):
        """A phone that exits sends REGISTER with expires=0: the PBX drops its binding at once."""
        self.pbx = yield PhonePbx.start(self)
        bob = yield BaresipPhone(self, self.pbx, "bob", "tcp").start()
        locator = self.pbx.service.context.locator
        self.assertEqual(len(locator.lookup("bob@127.0.0.1")), 1)
        yield bob.stop()
        self.assertEqual(locator.lookup("bob@127.0.0.1"), [])

    @defer.inlineCallbacks
    def test_wrong_password(self):
        """A phone with a wrong password is refused (no binding); the right one then registers."""
        self.pbx = yield PhonePbx.start(self)
        wrong = BaresipPhone(self, self.pbx, "bob", "udp", password="not-bobs")
        failure = yield self.assertFailure(wrong.start(), AssertionError)
        self.assertIn("did not register", str(failure))
        self.assertEqual(self.pbx.service.context.locator.lookup("bob@127.0.0.1"), [])
        yield wrong.stop()
        yield BaresipPhone(self, self.pbx, "bob", "udp").start()
        self.assertEqual(len(self.pbx.service.context.locator.lookup("bob@127.0.0.1")), 1)
