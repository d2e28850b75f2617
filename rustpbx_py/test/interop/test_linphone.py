"""
Linphone (linphonec) against the PBX: a password user registers over
UDP and calls a baresip phone, and is called by one; each side's decoded
audio must be the other side's tone.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from rustpbx_py.test.interop.baresip import BaresipPhone, module_path
from rustpbx_py.test.interop.linphone import LinphonePhone
from rustpbx_py.test.interop.phones import PhonePbx
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
        bob = yield BaresipPhone(self, self.pbx, "bob", "udp").start()
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
