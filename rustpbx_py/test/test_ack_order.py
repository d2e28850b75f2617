# -*- test-case-name: rustpbx_py.test.test_ack_order -*-
"""
The order of the caller's ACK and BYE as the callee sees it.

A caller that ACKs the 2xx and hangs up at once sends ACK then BYE back to
back; the callee must get the PBX's ACK before the relayed BYE, or its
INVITE server side ends in error (SIPp counts such a call as failed).  The
ACK for a 2xx never enters the module pipeline (it goes straight from the
transaction layer to the call module), while the BYE is a new server
transaction that the auth module may hold on a user look-up: these tests
run both through the real core with the auth module in front of the call
module and a user backend that answers only when told to (a database or
HTTP backend still busy), and check what reaches the callee, in order.
"""

from __future__ import annotations

from typing import List, Tuple

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from rustpbx_py.modules.auth import AuthModule
from rustpbx_py.pipeline import Pipeline
from rustpbx_py.sip import digest
from rustpbx_py.test.call_fakes import SDP_ANSWER, SDP_OFFER, CallHarness
from rustpbx_py.users import MemoryUserBackend, SipUser

ALICE = SipUser("alice", password="wonderland")
REALM = "example.com"
CALLEE = ("192.0.2.20", 5060)
NO_DIALOG_CACHE = "[proxy.dialog_auth_cache]\nenabled = false\n"


class SlowUsers:
    """A user backend whose look-ups wait until L{answer} (an SQL or HTTP
    backend under load): each C{get_user} is a Deferred not yet fired."""

    def __init__(self, users) -> None:
        self.memory = MemoryUserBackend(users)
        self.pending: List[Tuple[defer.Deferred, str, str]] = []

    def get_user(self, username: str, realm: str) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self.pending.append((d, username, realm))
        return d

    def answer(self) -> int:
        """Answer every look-up under way; how many there were."""
        pending, self.pending = self.pending, []
        for d, username, realm in pending:
            d.callback(self.memory.get_user(username, realm))
        return len(pending)


class AckBeforeByeTests(CallHarness, SynchronousTestCase):
    """The callee gets ACK then BYE when the caller sends them back to back."""

    def setUp(self) -> None:
        self.nc = 0

    def pbx(self, toml: str = "") -> None:
        """The call module behind the auth module, users on L{SlowUsers}."""
        module = self.setup_module(toml)
        self.users = SlowUsers([ALICE])
        self.auth = AuthModule(self.sip.config.proxy, self.users, self.clock, core=self.sip)
        self.auth.start()
        self.context.modules = [self.auth, module]
        self.sip.pipeline = Pipeline([self.auth, module])
        self.nonce = self.auth.nonces.issue(REALM)

    def authorization(self, method: str, uri: str) -> Tuple[str, str]:
        """alice's Proxy-Authorization for C{method} C{uri} (the next nonce-count)."""
        self.nc += 1
        nc = f"{self.nc:08x}"
        ha1 = digest.compute_ha1("MD5", "alice", REALM, "wonderland")
        value = digest.compute_response("MD5", ha1, method, uri, self.nonce, nc, "0a4f113b", "auth")
        return (
            "Proxy-Authorization",
            f'Digest username="alice", realm="{REALM}", nonce="{self.nonce}", uri="{uri}", '
            f'response="{value}", algorithm=MD5, qop=auth, nc={nc}, cnonce="0a4f113b"',
        )

    def answered(self, offer: bytes, answer: bytes = SDP_ANSWER):
        """alice's authenticated INVITE (with C{offer}, or none), answered
        by bob with C{answer}: (the caller's view, the call)."""
        tx, call = self.invite(body=offer, headers=[self.authorization("INVITE", "sip:bob@example.com")])
        self.assertEqual(self.users.answer(), 1)
        call = call or next(iter(self.module.calls))
        fork = self.core.last("INVITE")
        self.assertEqual(fork.request.body, offer)
        fork.answer(180, "Ringing")
        fork.answer(200, "OK", body=answer)
        self.assertEqual(tx.last.status, 200)
        return tx, call

    def to_callee(self) -> List[str]:
        """The methods of the requests the PBX sent the callee, in order."""
        return [m.method for m, flow in self.core.log if m.is_request and tuple(flow.remote) == CALLEE]

    def ack_then_bye(self, call, ack_body: bytes = b"", bye_credentials: bool = False):
        """The caller's ACK and BYE in the same reactor turn; the BYE's view."""
        self.caller_ack(call, cseq=1, body=ack_body)
        headers = [self.authorization("BYE", "sip:pbx@192.0.2.1:5060")] if bye_credentials else []
        return self.caller_request(call, "BYE", 2, headers=headers)

    def test_early_offer_bye_on_user_lookup(self):
        """INVITE with the offer (what SIPp's caller sends): bob's ACK goes
        when his 2xx arrives, before the caller even has its 200; a BYE
        held by the user look-up (no dialog cache) follows it."""
        self.pbx(NO_DIALOG_CACHE)
        tx, call = self.answered(SDP_OFFER)
        self.assertEqual(self.to_callee(), ["INVITE", "ACK"])
        bye = self.ack_then_bye(call, bye_credentials=True)
        self.assertEqual(self.to_callee(), ["INVITE", "ACK"])
        self.assertEqual(self.users.answer(), 1)
        self.assertEqual(self.to_callee(), ["INVITE", "ACK", "BYE"])
        self.core.last("BYE").answer(200, "OK")
        self.assertEqual(bye.statuses(), [200])

    def test_late_offer_bye_on_user_lookup(self):
        """INVITE without an offer: bob's ACK carries the answer from the
        caller's ACK, so it waits for that ACK -- which is relayed as it
        arrives, while the BYE right behind it waits for its user look-up."""
        self.pbx(NO_DIALOG_CACHE)
        tx, call = self.answered(b"", SDP_OFFER)
        self.assertEqual(self.to_callee(), ["INVITE"])
        bye = self.ack_then_bye(call, ack_body=SDP_ANSWER, bye_credentials=True)
        acks = [m for m, flow in self.core.log if m.is_request and m.method == "ACK" and tuple(flow.remote) == CALLEE]
        self.assertEqual([a.body for a in acks], [SDP_ANSWER])
        self.assertEqual(self.to_callee(), ["INVITE", "ACK"])
        self.users.answer()
        self.assertEqual(self.to_callee(), ["INVITE", "ACK", "BYE"])
        self.core.last("BYE").answer(200, "OK")
        self.assertEqual(bye.statuses(), [200])

    def test_late_offer_dialog_cache(self):
        """The default dialog cache lets the BYE through synchronously:
        still after the ACK that came first."""
        self.pbx()
        tx, call = self.answered(b"", SDP_OFFER)
        bye = self.ack_then_bye(call, ack_body=SDP_ANSWER)
        self.assertEqual(self.users.pending, [])
        self.assertEqual(self.to_callee(), ["INVITE", "ACK", "BYE"])
        self.core.last("BYE").answer(200, "OK")
        self.assertEqual(bye.statuses(), [200])

    def test_second_call_lookup_does_not_hold_ack(self):
        """Another call's INVITE waiting on its user look-up (the backend
        busy) holds nothing of this call: its ACK and BYE reach bob in
        order and at once (dialog cache)."""
        self.pbx()
        tx, call = self.answered(b"", SDP_OFFER)
        self.invite(call_id="a-call-2@192.0.2.10", headers=[self.authorization("INVITE", "sip:bob@example.com")])
        self.assertEqual(len(self.users.pending), 1)
        self.ack_then_bye(call, ack_body=SDP_ANSWER)
        self.assertEqual(self.to_callee(), ["INVITE", "ACK", "BYE"])
