"""
Tests for call transfer through the B2BUA (L{rustpbx_py.call.transfer}
and the REFER/NOTIFY/SUBSCRIBE relay of L{rustpbx_py.call.b2bua}): blind
and attended transfer between phones, through the real core and
transaction layer (L{rustpbx_py.test.core_phones}).
"""

from __future__ import annotations

from urllib.parse import quote

from twisted.trial.unittest import SynchronousTestCase

from rustpbx_py.call.dialog import tag_of
from rustpbx_py.call.transfer import event_id, parse_replaces, with_event_id
from rustpbx_py.test.core_phones import SDP, CorePbx, place_call

SIPFRAG = ("Content-Type", "message/sipfrag;version=2.0")


class HelperTests(SynchronousTestCase):
    def test_event_id(self):
        """The id of an Event header is read and replaced, spaces and case aside."""
        self.assertEqual(event_id("refer;id=12"), 12)
        self.assertEqual(event_id("refer ; ID = 12"), 12)
        self.assertIsNone(event_id("refer"))
        self.assertEqual(with_event_id("refer;id=12;x=1", 3), "refer;id=3;x=1")

    def test_parse_replaces(self):
        """Replaces: call-id with both tags, in any order; anything less is None."""
        self.assertEqual(parse_replaces("abc@h;from-tag=f;to-tag=t"), ("abc@h", "t", "f"))
        self.assertEqual(parse_replaces("abc@h ; to-tag=t ; from-tag=f;early-only"), ("abc@h", "t", "f"))
        self.assertIsNone(parse_replaces("abc@h;to-tag=t"))
        self.assertIsNone(parse_replaces(None))


class BlindTransferTests(SynchronousTestCase):
    """alice talks to bob and transfers him to carol with REFER."""

    def setUp(self):
        self.pbx = CorePbx()
        self.addCleanup(self.pbx.stop)
        self.alice, self.bob, self.carol = (self.pbx.phone(u) for u in ("alice", "bob", "carol"))
        self.a, self.b, _ = place_call(self.alice, self.bob)
        self.a.cseq = 6  # the REFER's CSeq differs from the PBX's on bob's leg

    def test_refer_notify_subscribe_mapped(self):
        """bob gets the REFER with Refer-To and Referred-By intact; the
        202 comes back; bob's NOTIFYs (Event: refer;id=<his CSeq>) reach
        alice with the id of her REFER; her SUBSCRIBE for that id reaches
        bob with his; bob's new INVITE reaches carol with Referred-By."""
        refer = self.a.request("REFER", [("Refer-To", "<sip:carol@example.com>"), ("Referred-By", "<sip:alice@example.com>")])
        (got,) = self.bob.take("REFER")
        self.assertEqual(got.get("refer-to"), "<sip:carol@example.com>")
        self.assertEqual(got.get("referred-by"), "<sip:alice@example.com>")
        self.assertIsNotNone(got.get("contact"))
        b_cseq = got.cseq[0]
        self.assertNotEqual(b_cseq, refer.cseq[0])
        self.bob.answer(got, 202, "Accepted", to_tag=self.b.local_tag)
        self.assertEqual([r.status for r in self.alice.take(0)], [202])

        self.b.request("NOTIFY", [("Event", f"refer;id={b_cseq}"), ("Subscription-State", "active;expires=60"), SIPFRAG], b"SIP/2.0 100 Trying\r\n")
        (n1,) = self.alice.take("NOTIFY")
        self.assertEqual(n1.get("event"), f"refer;id={refer.cseq[0]}")
        self.assertEqual(n1.get("subscription-state"), "active;expires=60")
        self.assertEqual(n1.body, b"SIP/2.0 100 Trying\r\n")
        self.alice.answer(n1, 200, "OK", to_tag=self.a.local_tag)
        self.assertEqual([r.status for r in self.bob.take(0)], [200])

        self.a.request("SUBSCRIBE", [("Event", f"refer;id={refer.cseq[0]}"), ("Expires", "60")])
        (s,) = self.bob.take("SUBSCRIBE")
        self.assertEqual(s.get("event"), f"refer;id={b_cseq}")
        self.bob.answer(s, 200, "OK", [("Expires", "60")], to_tag=self.b.local_tag)
        (ok,) = self.alice.take(200)
        self.assertEqual(ok.get("expires"), "60")

        self.bob.request("INVITE", "sip:carol@example.com", headers=[("Referred-By", "<sip:alice@example.com>"), ("Content-Type", "application/sdp")], body=SDP)
        (inv,) = self.carol.take("INVITE")
        self.assertEqual(inv.get("referred-by"), "<sip:alice@example.com>")

        self.b.request("NOTIFY", [("Event", f"refer;id={b_cseq}"), ("Subscription-State", "terminated;reason=noresource"), SIPFRAG], b"SIP/2.0 200 OK\r\n")
        (n2,) = self.alice.take("NOTIFY")
        self.assertEqual(n2.get("event"), f"refer;id={refer.cseq[0]}")
        self.assertEqual(n2.body, b"SIP/2.0 200 OK\r\n")
        self.a.request("BYE")
        self.assertEqual(len(self.bob.take("BYE")), 1)


class PresenceFirstTests(SynchronousTestCase):
    """With presence before call in the modules, a call's SUBSCRIBE still reaches the call."""

    def test_refer_subscription_relayed(self):
        """The presence module leaves a SUBSCRIBE inside a call's dialog to
        the call module, which relays it (not 481)."""
        pbx = CorePbx()
        self.addCleanup(pbx.stop)
        from rustpbx_py.pipeline import Pipeline

        pbx.core.pipeline = Pipeline([pbx.presence, pbx.call])
        alice, bob = pbx.phone("alice"), pbx.phone("bob")
        a, b, _ = place_call(alice, bob)
        a.request("SUBSCRIBE", [("Event", "refer"), ("Expires", "0")])
        self.assertEqual(len(bob.take("SUBSCRIBE")), 1)
        self.assertEqual(alice.responses(), [])


class AttendedTransferTests(SynchronousTestCase):
    """alice talks to bob, consults carol, then joins bob and carol (RFC 5589 7)."""

    def setUp(self):
        self.pbx = CorePbx()
        self.addCleanup(self.pbx.stop)
        self.alice, self.bob, self.carol = (self.pbx.phone(u) for u in ("alice", "bob", "carol"))
        self.a1, self.b1, _ = place_call(self.alice, self.bob)
        self.a2, self.c2, self.carol_invite = place_call(self.alice, self.carol)

    def refer_with_replaces(self, replaces: str):
        refer_to = f"<sip:carol@example.com?Replaces={quote(replaces, safe='@')}>"
        self.a1.request("REFER", [("Refer-To", refer_to), ("Referred-By", "<sip:alice@example.com>")])
        (got,) = self.bob.take("REFER")
        self.assertEqual(got.get("refer-to"), refer_to)
        return got

    def test_replaces_mapped_to_carols_dialog(self):
        """bob's INVITE with the Replaces alice gave him (her dialog with
        the PBX) reaches carol's contact with a Replaces naming carol's
        own dialog with the PBX; when carol hangs up the old dialog, alice
        gets the BYE of her consultation call."""
        replaces = f"{self.a2.call_id};to-tag={self.a2.remote_tag};from-tag={self.a2.local_tag}"
        self.refer_with_replaces(replaces)
        self.bob.request("INVITE", "sip:carol@example.com", headers=[("Replaces", replaces), ("Require", "replaces"), ("Content-Type", "application/sdp")], body=SDP)
        (inv,) = self.carol.take("INVITE")
        self.assertEqual(inv.uri, self.carol.contact.strip("<>"))
        self.assertEqual(parse_replaces(inv.get("replaces")), (self.c2.call_id, self.c2.local_tag, self.c2.remote_tag))
        self.assertNotEqual(inv.call_id, self.c2.call_id)
        self.carol.answer(inv, 200, "OK", [("Contact", self.carol.contact)], SDP, to_tag="carol-new")
        self.assertIn(200, self.bob.responses())
        self.c2.request("BYE")
        self.assertEqual(len(self.alice.take("BYE")), 1)

    def test_swapped_tags_accepted(self):
        """A phone that swaps to-tag and from-tag is matched all the same."""
        replaces = f"{self.a2.call_id};to-tag={self.a2.local_tag};from-tag={self.a2.remote_tag}"
        self.bob.request("INVITE", "sip:carol@example.com", headers=[("Replaces", replaces), ("Content-Type", "application/sdp")], body=SDP)
        (inv,) = self.carol.take("INVITE")
        self.assertEqual(parse_replaces(inv.get("replaces"))[0], self.c2.call_id)

    def test_replaces_to_pbx_contact(self):
        """Refer-To may be the PBX's Contact of the consultation dialog
        (what some phones use): the Replaces decides, not the Request-URI."""
        replaces = f"{self.a2.call_id};to-tag={self.a2.remote_tag};from-tag={self.a2.local_tag}"
        self.bob.request("INVITE", "sip:pbx@127.0.0.1:5060", headers=[("Replaces", replaces), ("Content-Type", "application/sdp")], body=SDP)
        self.assertEqual(len(self.carol.take("INVITE")), 1)

    def test_unknown_dialog_481(self):
        """A Replaces naming no dialog of ours: 481 (RFC 3891 3)."""
        self.bob.request("INVITE", "sip:carol@example.com", headers=[("Replaces", "nope@x;to-tag=1;from-tag=2"), ("Content-Type", "application/sdp")], body=SDP)
        self.assertIn(481, self.bob.responses())
        self.assertEqual(self.carol.take("INVITE"), [])
