"""
Linphone (linphonec) against the PBX: a password user registers over
UDP and calls a baresip phone, and is called by one; each side's decoded
audio must be the other side's tone.  Between Linphone phones: hold and
resume (the held side stops and restarts sending because the PBX relays
the re-INVITEs), and an attended transfer (REFER with Replaces).  MESSAGE
both ways between linphonec and baresip.
"""

from __future__ import annotations

import re

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from rustpbx_py.test.interop.baresip import BaresipPhone, module_path
from rustpbx_py.test.interop.linphone import LinphonePhone
from rustpbx_py.test.interop.phones import PhonePbx, later, read_pcm
from rustpbx_py.test.interop.support import require_tool


class LinphoneTests(TestCase):
    """linphonec as alice, baresip as bob, one PBX."""

    timeout = 60

    def setUp(self) -> None:
        require_tool("linphonec")
        require_tool("baresip")
        module_path()

    @defer.inlineCallbacks
    def phones(self):
        self.pbx = yield PhonePbx.start(self)
        alice = yield LinphonePhone(self, self.pbx, "alice").start()
        bob = yield BaresipPhone(self, self.pbx, "bob", "udp", contacts=("alice",)).start()
        return alice, bob

    @defer.inlineCallbacks
    def test_linphone_calls_baresip(self):
        """linphonec dials bob, bob answers; both hear each other; linphonec hangs up and bob sees the BYE."""
        alice, bob = yield self.phones()
        mark = alice.send(f"call {bob.aor}")
        yield alice.wait(rf"Call \d+ with {bob.aor} connected", since=mark)
        yield bob.wait_event("CALL_ESTABLISHED")
        yield alice.hears(bob)
        yield bob.hears(alice)
        mark_b = bob.mark()
        mark = alice.send("terminate")
        yield alice.wait(r"Call \d+ with [^\n]* ended", since=mark)
        yield bob.wait_event("CALL_CLOSED", since=mark_b)

    @defer.inlineCallbacks
    def test_baresip_calls_linphone(self):
        """bob dials alice's linphonec, which answers by itself; both hear each other; bob hangs up."""
        alice, bob = yield self.phones()
        mark = len(alice.process.output)
        yield bob.command("dial", alice.aor)
        yield bob.wait_event("CALL_ESTABLISHED")
        yield alice.wait(r"Call \d+ with [^\n]* connected", since=mark)
        yield alice.hears(bob)
        yield bob.hears(alice)
        mark = len(alice.process.output)
        yield bob.command("hangup")
        yield alice.wait(r"Call \d+ with [^\n]* ended", since=mark)

    @defer.inlineCallbacks
    def test_hold_resume(self):
        """
        alice (linphonec) pauses her call with bob (linphonec): bob gets the
        relayed a=sendonly, answers a=recvonly and stops sending, so alice's
        recording stops growing; after resume she hears bob again, and bob
        her.
        """
        self.pbx = yield PhonePbx.start(self)
        alice = yield LinphonePhone(self, self.pbx, "alice").start()
        bob = yield LinphonePhone(self, self.pbx, "bob").start()
        mark = alice.send(f"call {bob.aor}")
        yield alice.wait(r"Call 1 with [^\n]* connected", since=mark)
        yield alice.hears(bob)
        yield bob.hears(alice)
        mark = alice.send("pause 1")
        yield alice.wait(r"Call 1 with [^\n]* is now paused", since=mark)
        yield later(0.5)
        held = len(read_pcm(alice.recording)[0])
        yield later(1.5)
        grown = len(read_pcm(alice.recording)[0]) - held
        self.assertLess(grown, 800, f"bob kept sending {grown / 8000:.2f} s of audio while on hold")
        mark = alice.send("resume 1")
        yield alice.wait(r"Media streams established with [^\n]* for call 1", since=mark)
        yield alice.hears(bob)
        yield bob.hears(alice)

    @defer.inlineCallbacks
    def test_attended_transfer(self):
        """
        bob (linphonec) talks to alice, holds her, calls carol, then
        transfers alice to carol (REFER with Replaces): alice's INVITE
        reaches carol with a Replaces header that names carol's own dialog,
        so carol (who does not auto-answer) takes it in place of bob's call
        without ringing; alice and carol hear each other, bob's calls end.
        """
        self.pbx = yield PhonePbx.start(self)
        bob = yield LinphonePhone(self, self.pbx, "bob").start()
        alice = yield LinphonePhone(self, self.pbx, "alice").start()
        carol = yield LinphonePhone(self, self.pbx, "carol", auto_answer=False).start()
        mark = bob.send(f"call {alice.aor}")
        yield bob.wait(r"Call 1 with [^\n]* connected", since=mark)
        mark = bob.send("pause 1")
        yield bob.wait(r"Call 1 with [^\n]* is now paused", since=mark)
        mark_c = len(carol.process.output)
        mark = bob.send(f"call {carol.aor}")
        yield carol.wait(r"Receiving new incoming call", since=mark_c)
        carol.send("answer")
        yield bob.wait(r"Call 2 with [^\n]* connected", since=mark)
        mark_a, mark_c = len(alice.process.output), len(carol.process.output)
        mark = bob.send("transfer 1 --to-call 2")
        yield alice.wait(r"Call 2 with <sip:carol@127.0.0.1\?Replaces=[^\n]* connected", since=mark_a)
        yield carol.wait(r"Call \d+ with sip:alice@127.0.0.1 connected", since=mark_c)
        yield bob.wait(r"Call 1 with sip:alice@127.0.0.1 ended", since=mark)
        yield bob.wait(r"Call 2 with sip:carol@127.0.0.1 ended", since=mark)
        yield alice.hears(carol)
        yield carol.hears(alice)

    @defer.inlineCallbacks
    def test_message(self):
        """
        MESSAGE both ways between linphonec and baresip through the PBX,
        each text delivered intact and answered 200.
        """
        alice, bob = yield self.phones()
        out_b = len(bob.process.output)
        alice.send(f"chat {bob.aor} from-linphone-1-2-3")
        yield bob.process.wait_output(re.escape('sip:alice@127.0.0.1: "from-linphone-1-2-3"'), since=out_b)
        yield bob.process.wait_output(r"\nSIP/2.0 200 [^#]*\nCSeq: \d+ MESSAGE", since=out_b)
        mark = len(alice.process.output)
        yield bob.command("message", "from baresip: 4 5 6")
        yield alice.wait(re.escape("Message received from sip:bob@127.0.0.1: from baresip: 4 5 6"), since=mark)

    @defer.inlineCallbacks
    def stream_call(self, transport: str):
        """linphonec registers over C{transport} and calls a baresip phone on the same; both hear each other."""
        self.pbx = yield PhonePbx.start(self)
        alice = yield LinphonePhone(self, self.pbx, "alice", transport=transport).start()
        bob = yield BaresipPhone(self, self.pbx, "bob", transport).start()
        mark = alice.send(f"call {bob.aor}")
        yield alice.wait(rf"Call \d+ with {bob.aor} connected", since=mark)
        yield alice.hears(bob)
        yield bob.hears(alice)
        mark_b = bob.mark()
        alice.send("terminate")
        yield bob.wait_event("CALL_CLOSED", since=mark_b)

    def test_tcp_call(self):
        """
        linphonec over TCP: its requests carry Content-Length among the other
        headers, not last, and are framed by it.
        """
        return self.stream_call("tcp")

    def test_tls_call(self):
        """linphonec over TLS, trusting the PBX's self-signed certificate."""
        return self.stream_call("tls")

    @defer.inlineCallbacks
    def test_fork_to_two_phones(self):
        """
        bob has two phones, linphonec (answers by itself) and baresip (rings
        only): alice's call rings both, linphonec answers, the PBX cancels the
        baresip leg; alice and linphonec hear each other.
        """
        self.pbx = yield PhonePbx.start(self)
        linphone = yield LinphonePhone(self, self.pbx, "bob").start()
        baresip = yield BaresipPhone(self, self.pbx, "bob", "tcp", answer="manual").start()
        alice = yield BaresipPhone(self, self.pbx, "alice", "udp").start()
        self.assertEqual(len(self.pbx.service.context.locator.lookup("bob@127.0.0.1")), 2)
        mark = len(linphone.process.output)
        out_b = len(baresip.process.output)
        yield alice.command("dial", "sip:bob@127.0.0.1")
        yield alice.wait_event("CALL_ESTABLISHED")
        yield linphone.wait(r"Call \d+ with sip:alice@127.0.0.1 connected", since=mark)
        yield baresip.wait_event("CALL_INCOMING")
        yield baresip.wait_event("CALL_CLOSED")
        yield baresip.process.wait_output(r"\nCANCEL sip:", since=out_b)
        self.assertNotIn("CALL_ESTABLISHED", baresip.types())
        yield alice.hears(linphone)
        yield linphone.hears(alice)

    @defer.inlineCallbacks
    def test_late_offer(self):
        """
        linphonec calls with an INVITE without SDP: baresip offers in its
        200, linphonec answers in the ACK, and the PBX relays both, so each
        side hears the other.
        """
        self.pbx = yield PhonePbx.start(self)
        alice = yield LinphonePhone(self, self.pbx, "alice", late_offer=True).start()
        bob = yield BaresipPhone(self, self.pbx, "bob", "udp").start()
        out_b = len(bob.process.output)
        mark = alice.send(f"call {bob.aor}")
        yield alice.wait(rf"Call \d+ with {bob.aor} connected", since=mark)
        # bob's trace: an INVITE with no body, then an ACK with the answer.
        yield bob.process.wait_output(r"\nINVITE sip:[^#]*\nContent-Length: 0\r?\n", since=out_b)
        yield bob.process.wait_output(r"\nACK sip:[^#]*\r?\n\r?\nv=0", since=out_b)
        yield alice.hears(bob)
        yield bob.hears(alice)

    @defer.inlineCallbacks
    def test_blind_transfer(self):
        """
        bob (linphonec) talks to alice (baresip) and transfers her blind to
        carol (baresip): alice calls carol by herself, they hear each other,
        and bob learns the transfer succeeded (the NOTIFYs reach him).
        """
        self.pbx = yield PhonePbx.start(self)
        bob = yield LinphonePhone(self, self.pbx, "bob").start()
        alice = yield BaresipPhone(self, self.pbx, "alice", "udp").start()
        carol = yield BaresipPhone(self, self.pbx, "carol", "tcp").start()
        mark = bob.send(f"call {alice.aor}")
        yield bob.wait(r"Call 1 with [^\n]* connected", since=mark)
        mark_a, mark_c = alice.mark(), carol.mark()
        mark = bob.send(f"transfer 1 {carol.aor}")
        yield alice.wait_event("TRANSFER", since=mark_a)
        yield carol.wait_event("CALL_ESTABLISHED", since=mark_c)
        yield bob.wait(r"has been transfered", since=mark)
        yield alice.hears(carol)
        yield carol.hears(alice)
