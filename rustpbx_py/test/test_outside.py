"""
Tests for L{rustpbx_py.call.outside} and the core's 405/501: MESSAGE and
OPTIONS to a user outside a dialog, through the real core, transaction
layer and call module (L{rustpbx_py.test.core_phones}).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from rustpbx_py.test.core_phones import CorePbx

TEXT = "text/plain;charset=UTF-8"


class MessageTests(SynchronousTestCase):
    """RFC 3428 MESSAGE to a user: forked to every contact, first 2xx wins."""

    def setUp(self):
        self.pbx = CorePbx()
        self.addCleanup(self.pbx.stop)
        self.alice = self.pbx.phone("alice")
        self.bob1 = self.pbx.phone("bob")
        self.bob2 = self.pbx.phone("bob")

    def test_forked_with_body_intact(self):
        """Both of bob's contacts get the MESSAGE, body and Content-Type
        unchanged; the first 200 goes back to alice and the second answer
        is dropped; alice gets nothing else (no 100 for a relayed MESSAGE
        is required, none is invented)."""
        body = "héllo ✓ bob".encode("utf-8")
        self.alice.request("MESSAGE", "sip:bob@example.com", headers=[("Content-Type", TEXT)], body=body)
        (m1,) = self.bob1.take("MESSAGE")
        (m2,) = self.bob2.take("MESSAGE")
        for m in (m1, m2):
            self.assertEqual(m.body, body)
            self.assertEqual(m.get("content-type"), TEXT)
            self.assertEqual(m.uri, "sip:bob@%s:5060" % (m is m1 and self.bob1.host or self.bob2.host))
            self.assertIn("sip:alice@example.com", m.get("from"))
        self.assertEqual(m1.call_id, m2.call_id)
        self.bob2.answer(m2, 200, "OK")
        self.assertEqual(self.alice.responses(), [200])
        self.bob1.answer(m1, 486, "Busy Here")
        self.assertEqual(self.alice.responses(), [200])

    def test_all_fail_best_answer(self):
        """When every contact refuses, alice gets the best failure (486 over 480)."""
        self.alice.request("MESSAGE", "sip:bob@example.com", headers=[("Content-Type", TEXT)], body=b"hi")
        (m1,) = self.bob1.take("MESSAGE")
        (m2,) = self.bob2.take("MESSAGE")
        self.bob1.answer(m1, 480, "Temporarily Unavailable")
        self.assertEqual(self.alice.responses(), [])
        self.bob2.answer(m2, 486, "Busy Here")
        self.assertEqual(self.alice.responses(), [486])

    def test_timeout_is_408(self):
        """Contacts that never answer: the transaction times out, alice gets 408."""
        self.alice.request("MESSAGE", "sip:bob@example.com", headers=[("Content-Type", TEXT)], body=b"hi")
        for _ in range(80):
            self.pbx.advance(0.5)
        self.assertIn(408, self.alice.responses())

    def test_unknown_user_404(self):
        """A MESSAGE to nobody we know is 404."""
        self.alice.request("MESSAGE", "sip:zed@example.com", headers=[("Content-Type", TEXT)], body=b"hi")
        self.assertEqual(self.alice.responses(), [404])

    def test_known_user_offline_480(self):
        """A user of ours with no registered contact: 480."""
        self.alice.request("MESSAGE", "sip:carol@example.com", headers=[("Content-Type", TEXT)], body=b"hi")
        self.assertEqual(self.alice.responses(), [480])


class MessageTrunkTests(SynchronousTestCase):
    """A MESSAGE to a number goes out through the routes like a call."""

    TOML = """
[proxy.trunks.carrier]
dest = "sip:198.51.100.5:5060"
username = "pbx"
password = "trunk-secret"

[[proxy.routes]]
name = "out"
dest = "carrier"
[proxy.routes.match]
"to.user" = "^9"
"""

    def test_routed_to_trunk(self):
        """The route's trunk gets the MESSAGE with its host, answers the
        carrier's 407 with the trunk's credentials, and its 202 comes back."""
        from rustpbx_py.test.core_phones import WireFlow

        pbx = CorePbx(self.TOML)
        self.addCleanup(pbx.stop)
        alice = pbx.phone("alice")
        carrier = pbx.phone("carrier", register=False)
        flow = WireFlow(carrier, ("198.51.100.5", 5060))
        resolved = []

        def resolve(transport, host, port):
            from twisted.internet import defer

            resolved.append((host, port))
            return defer.succeed(flow)

        pbx.core.resolve = resolve
        alice.request("MESSAGE", "sip:9555@example.com", headers=[("Content-Type", TEXT)], body=b"out")
        (m,) = carrier.take("MESSAGE")
        self.assertEqual(resolved, [("198.51.100.5", 5060)])
        self.assertEqual(m.uri, "sip:9555@198.51.100.5:5060")
        self.assertEqual(m.body, b"out")
        carrier.answer(m, 407, "Proxy Authentication Required", [("Proxy-Authenticate", 'Digest realm="carrier", nonce="n1"')])
        self.assertEqual(alice.responses(), [])
        (m2,) = carrier.take("MESSAGE")
        self.assertIn('username="pbx"', m2.get("proxy-authorization"))
        self.assertEqual(m2.body, b"out")
        carrier.answer(m2, 202, "Accepted")
        self.assertEqual(alice.responses(), [202])


class MessageUriRouteTests(SynchronousTestCase):
    """A route without trunks forwards the MESSAGE to its (rewritten) Request-URI."""

    TOML = """
[[proxy.routes]]
name = "gw"
[proxy.routes.match]
"to.user" = "^8"
[proxy.routes.rewrite]
"to.host" = "198.51.100.9"
"""

    def test_forwarded_to_rewritten_uri(self):
        """The MESSAGE goes to the rewritten host (looked up as calls are,
        RFC 3263) and the gateway's 200 comes back."""
        from twisted.internet import defer

        from rustpbx_py.test.core_phones import WireFlow

        pbx = CorePbx(self.TOML)
        self.addCleanup(pbx.stop)
        alice = pbx.phone("alice")
        gateway = pbx.phone("gw", register=False)
        resolved = []

        def resolve(transport, host, port):
            resolved.append((host, port))
            return defer.succeed(WireFlow(gateway, (host, port or 5060)))

        pbx.core.resolve = resolve
        alice.request("MESSAGE", "sip:8123@example.com", headers=[("Content-Type", TEXT)], body=b"gw")
        (m,) = gateway.take("MESSAGE")
        self.assertEqual(resolved, [("198.51.100.9", 5060)])
        self.assertEqual(m.uri, "sip:8123@198.51.100.9")
        gateway.answer(m, 200, "OK")
        self.assertEqual(alice.responses(), [200])


class OptionsTests(SynchronousTestCase):
    """OPTIONS to a user goes to the user; OPTIONS to the PBX stays the core's."""

    def setUp(self):
        self.pbx = CorePbx()
        self.addCleanup(self.pbx.stop)
        self.alice = self.pbx.phone("alice")
        self.bob = self.pbx.phone("bob")

    def test_to_user_relayed(self):
        """bob's phone answers the OPTIONS; its Allow and Accept come back."""
        self.alice.request("OPTIONS", "sip:bob@example.com", headers=[("Accept", "application/sdp")])
        (o,) = self.bob.take("OPTIONS")
        self.bob.answer(o, 200, "OK", [("Allow", "INVITE, ACK, BYE, MESSAGE"), ("Accept", "application/sdp")])
        (r,) = self.alice.take(200)
        self.assertEqual(r.get("allow"), "INVITE, ACK, BYE, MESSAGE")

    def test_to_self_answered_by_core(self):
        """OPTIONS to the PBX is answered by the core: 200 with the true
        Allow, and Allow-Events naming the presence module's packages."""
        self.alice.request("OPTIONS", "sip:example.com")
        (r,) = self.alice.take(200)
        allow = [m.strip() for m in r.get("allow").split(",")]
        self.assertEqual(self.bob.inbox, [])
        for method in ("INVITE", "MESSAGE", "REFER", "SUBSCRIBE", "PUBLISH", "NOTIFY", "OPTIONS"):
            self.assertIn(method, allow)
        self.assertNotIn("REGISTER", allow)  # no registrar module in this pipeline
        self.assertEqual(r.get("allow-events"), "presence, message-summary")


class MethodNotAllowedTests(SynchronousTestCase):
    """What stays unsupported gets 405 (or 501 for unknown methods) with a true Allow."""

    def setUp(self):
        self.pbx = CorePbx()
        self.addCleanup(self.pbx.stop)
        self.alice = self.pbx.phone("alice")

    def test_register_without_registrar_405(self):
        """REGISTER with no registrar module: 405 and an Allow without REGISTER."""
        self.alice.request("REGISTER", "sip:example.com")
        (r,) = self.alice.take(405)
        self.assertNotIn("REGISTER", r.get("allow"))
        self.assertIn("MESSAGE", r.get("allow"))

    def test_unknown_method_501(self):
        """A method nobody knows is 501 Not Implemented, with Allow."""
        self.alice.request("FROB", "sip:bob@example.com")
        (r,) = self.alice.take(501)
        self.assertIn("INVITE", r.get("allow"))

    def test_dialog_only_methods_481(self):
        """NOTIFY, INFO, UPDATE, BYE outside any dialog: 481 (no dialog to belong to)."""
        for method in ("NOTIFY", "INFO", "UPDATE", "BYE"):
            self.alice.request(method, "sip:bob@example.com")
        self.assertEqual(self.alice.responses(), [481, 481, 481, 481])
