"""
Tests for L{rustpbx_py.modules.presence}: SUBSCRIBE (presence,
message-summary), PUBLISH with entity-tags, NOTIFY to watchers, through
the real core and transaction layer (L{rustpbx_py.test.core_phones}).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from rustpbx_py.call.dialog import tag_of
from rustpbx_py.test.core_phones import CorePbx

PIDF_BUSY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:bob@example.com">'
    b"<tuple id=\"t1\"><status><basic>open</basic></status><note>On the phone</note></tuple></presence>"
)
PIDF = ("Content-Type", "application/pidf+xml")


class PresenceTests(SynchronousTestCase):
    def setUp(self):
        self.pbx = CorePbx()
        self.addCleanup(self.pbx.stop)
        self.alice = self.pbx.phone("alice")
        self.bob = self.pbx.phone("bob")

    def subscribe(self, event="presence", uri="sip:bob@example.com", expires="600", extra=()):
        headers = [("Event", event), ("Expires", expires)] + list(extra)
        return self.alice.request("SUBSCRIBE", uri, headers=headers)

    def test_subscribe_registered_user_open(self):
        """alice watches bob (registered, published nothing): 200 with
        Expires and Contact, then a NOTIFY in the new dialog with an
        "open" PIDF and Subscription-State active."""
        sub = self.subscribe()
        (ok,) = self.alice.take(200)
        self.assertEqual(ok.get("expires"), "600")
        self.assertIsNotNone(ok.get("contact"))
        (notify,) = self.alice.take("NOTIFY")
        self.assertEqual(notify.call_id, sub.call_id)
        self.assertEqual(tag_of(notify.get("from")), tag_of(ok.get("to")))
        self.assertEqual(notify.get("event"), "presence")
        self.assertEqual(notify.get("subscription-state"), "active;expires=600")
        self.assertEqual(notify.get("content-type"), "application/pidf+xml")
        self.assertIn(b"<basic>open</basic>", notify.body)
        self.assertIn(b'entity="sip:bob@example.com"', notify.body)
        self.alice.answer(notify, 200, "OK", to_tag=tag_of(sub.get("from")))

    def test_subscribe_behind_record_routing_proxy(self):
        """A SUBSCRIBE that came through record-routing proxies: the 200
        that creates the subscription copies their Record-Route in order
        (RFC 3261 12.1.1) and our NOTIFYs follow them as Route."""
        rr = ["<sip:edge1.example.net;lr>", "<sip:edge2.example.net;lr>"]
        self.subscribe(extra=[("Record-Route", value) for value in rr])
        (ok,) = self.alice.take(200)
        self.assertEqual(ok.get_all("record-route"), rr)
        (notify,) = self.alice.take("NOTIFY")
        self.assertEqual(notify.get_all("route"), rr)

    def test_unregistered_user_closed(self):
        """A user of ours with no contact is "closed"."""
        self.subscribe(uri="sip:carol@example.com")
        self.assertEqual(self.alice.responses(), [200])
        (notify,) = self.alice.take("NOTIFY")
        self.assertIn(b"<basic>closed</basic>", notify.body)

    def test_registration_notifies(self):
        """carol (not registered) is closed; when she registers, her
        watchers get a NOTIFY saying open."""
        sub = self.subscribe(uri="sip:carol@example.com")
        self.alice.take(200)
        (first,) = self.alice.take("NOTIFY")
        self.alice.answer(first, 200, "OK", to_tag=tag_of(sub.get("from")))
        self.pbx.phone("carol")
        (notify,) = self.alice.take("NOTIFY")
        self.assertIn(b"<basic>open</basic>", notify.body)

    def test_unknown_target_404(self):
        """SUBSCRIBE to nobody we know: 404."""
        self.subscribe(uri="sip:zed@example.com")
        self.assertEqual(self.alice.responses(), [404])

    def test_bad_event_489(self):
        """An event package we do not serve: 489 with Allow-Events."""
        self.subscribe(event="dialog")
        (r,) = self.alice.take(489)
        self.assertEqual(r.get("allow-events"), "presence, message-summary")

    def test_accept_refused_406(self):
        """A watcher that accepts no PIDF gets 406."""
        self.subscribe(extra=[("Accept", "application/xpidf+xml")])
        self.assertEqual(self.alice.responses(), [406])

    def test_interval_too_brief(self):
        """Expires below 60 s: 423 with Min-Expires."""
        self.subscribe(expires="10")
        (r,) = self.alice.take(423)
        self.assertEqual(r.get("min-expires"), "60")

    def test_publish_notifies_watchers(self):
        """bob PUBLISHes a PIDF: 200 with SIP-ETag and Expires; alice, who
        watches bob, gets a NOTIFY with bob's document as published."""
        sub = self.subscribe()
        self.alice.take(200)
        self.alice.take("NOTIFY")
        self.bob.request("PUBLISH", "sip:bob@example.com", headers=[("Event", "presence"), ("Expires", "300"), PIDF], body=PIDF_BUSY)
        (ok,) = self.bob.take(200)
        self.assertTrue(ok.get("sip-etag"))
        self.assertEqual(ok.get("expires"), "300")
        (notify,) = self.alice.take("NOTIFY")
        self.assertEqual(notify.body, PIDF_BUSY)
        self.assertEqual(notify.call_id, sub.call_id)
        self.assertEqual(notify.cseq[0], 2)

    def test_publish_refresh_modify_remove(self):
        """RFC 3903: a refresh with SIP-If-Match keeps the document under a
        new tag; an unknown tag is 412; Expires 0 removes it and the user
        is back to its registration state; the publication expires alone."""
        self.bob.request("PUBLISH", "sip:bob@example.com", headers=[("Event", "presence"), ("Expires", "300"), PIDF], body=PIDF_BUSY)
        etag = self.bob.take(200)[0].get("sip-etag")
        self.bob.request("PUBLISH", "sip:bob@example.com", headers=[("Event", "presence"), ("Expires", "300"), ("SIP-If-Match", etag)])
        etag2 = self.bob.take(200)[0].get("sip-etag")
        self.assertNotEqual(etag, etag2)
        self.assertEqual(self.pbx.presence.state("bob@example.com", "sip:bob@example.com")[0], PIDF_BUSY)
        self.bob.request("PUBLISH", "sip:bob@example.com", headers=[("Event", "presence"), ("SIP-If-Match", etag)])
        self.assertEqual(self.bob.responses(), [412])
        self.bob.take(412)
        self.bob.request("PUBLISH", "sip:bob@example.com", headers=[("Event", "presence"), ("Expires", "0"), ("SIP-If-Match", etag2)])
        self.assertEqual(self.bob.responses(), [200])
        self.assertIn(b"<basic>open</basic>", self.pbx.presence.state("bob@example.com", "sip:bob@example.com")[0])
        self.bob.take(200)
        self.bob.request("PUBLISH", "sip:bob@example.com", headers=[("Event", "presence"), ("Expires", "120"), PIDF], body=PIDF_BUSY)
        self.pbx.advance(121)
        self.assertEqual(self.pbx.presence.publications, {})

    def test_publish_other_event_489_and_type_415(self):
        """PUBLISH for another package: 489; a body that is not PIDF: 415."""
        self.bob.request("PUBLISH", "sip:bob@example.com", headers=[("Event", "dialog"), PIDF], body=PIDF_BUSY)
        self.bob.request("PUBLISH", "sip:bob@example.com", headers=[("Event", "presence"), ("Content-Type", "text/plain")], body=b"x")
        self.assertEqual(self.bob.responses(), [489, 415])

    def test_refresh_and_unsubscribe(self):
        """A SUBSCRIBE inside the dialog refreshes it (200 and a NOTIFY);
        Expires 0 ends it with a terminated NOTIFY; after that the dialog
        is gone (481)."""
        sub = self.subscribe()
        ok = self.alice.take(200)[0]
        self.alice.take("NOTIFY")
        to = ok.get("to")
        ftag = tag_of(sub.get("from"))
        self.alice.request("SUBSCRIBE", "sip:pbx@127.0.0.1", to=to, call_id=sub.call_id, from_tag=ftag, cseq=2,
                           headers=[("Event", "presence"), ("Expires", "900")])
        self.assertEqual(self.alice.take(200)[0].get("expires"), "900")
        self.assertEqual(self.alice.take("NOTIFY")[0].get("subscription-state"), "active;expires=900")
        self.alice.request("SUBSCRIBE", "sip:pbx@127.0.0.1", to=to, call_id=sub.call_id, from_tag=ftag, cseq=3,
                           headers=[("Event", "presence"), ("Expires", "0")])
        self.assertEqual(self.alice.responses(), [200])
        self.alice.take(200)
        self.assertEqual(self.alice.take("NOTIFY")[0].get("subscription-state"), "terminated;reason=timeout")
        self.alice.request("SUBSCRIBE", "sip:pbx@127.0.0.1", to=to, call_id=sub.call_id, from_tag=ftag, cseq=4,
                           headers=[("Event", "presence"), ("Expires", "600")])
        self.assertEqual(self.alice.responses(), [481])

    def test_expiry_and_refused_notify(self):
        """An unrefreshed subscription ends with a terminated NOTIFY at its
        expiry; a watcher answering a NOTIFY with 481 is dropped at once."""
        first = self.subscribe(expires="60")
        self.alice.take(200)
        (notify,) = self.alice.take("NOTIFY")
        self.alice.answer(notify, 200, "OK", to_tag=tag_of(first.get("from")))
        self.pbx.advance(60)
        self.assertEqual(self.alice.take("NOTIFY")[0].get("subscription-state"), "terminated;reason=timeout")
        self.assertEqual(self.pbx.presence.subscriptions, {})
        sub = self.subscribe()
        self.alice.take(200)
        (notify,) = self.alice.take("NOTIFY")
        self.alice.answer(notify, 481, "Gone", to_tag=tag_of(sub.get("from")))
        self.assertEqual(self.pbx.presence.subscriptions, {})

    def test_message_summary(self):
        """message-summary: 200, then a NOTIFY saying no messages wait
        (this PBX keeps no voicemail)."""
        self.subscribe(event="message-summary", uri="sip:alice@example.com")
        self.assertEqual(self.alice.take(0)[0].status, 200)
        (notify,) = self.alice.take("NOTIFY")
        self.assertEqual(notify.get("content-type"), "application/simple-message-summary")
        self.assertIn(b"Messages-Waiting: no", notify.body)
        self.assertIn(b"Message-Account: sip:alice@example.com", notify.body)
