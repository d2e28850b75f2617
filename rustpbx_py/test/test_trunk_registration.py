"""
Tests for L{rustpbx_py.call.trunk_registration}: a trunk with
C{register_enabled} REGISTERs with its provider, answers the challenge,
refreshes before expiry, backs off after failures and unregisters on stop.
"""

from __future__ import annotations

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from rustpbx_py.call.trunk_registration import TrunkRegistrar, refresh_delay, retry_delay
from rustpbx_py.call.trunks import TrunkSet
from rustpbx_py.config import parse_config_text
from rustpbx_py.sip.digest import compute_ha1, compute_response
from rustpbx_py.sip.headers import parse_auth_params
from rustpbx_py.test.call_fakes import CallHarness, FakeCore

TOML = """
[proxy]
[proxy.trunks.carrier]
dest = "sip:198.51.100.5:5080"
username = "acct"
password = "s3cret"
register_enabled = true
register_expires = {expires}
{extra}
[proxy.trunks.quiet]
dest = "sip:198.51.100.9"
username = "x"
password = "y"

[proxy.trunks.off]
dest = "sip:198.51.100.10"
username = "x"
password = "y"
register_enabled = true
disabled = true
"""

CHALLENGE = 'Digest realm="carrier.example", nonce="n0nce", qop="auth", algorithm=MD5'


class DelayTests(SynchronousTestCase):
    def test_refresh_delay(self):
        """30 s before expiry, but never before half the lifetime."""
        self.assertEqual(refresh_delay(300), 270)
        self.assertEqual(refresh_delay(3600), 3570)
        self.assertEqual(refresh_delay(40), 20)
        self.assertEqual(refresh_delay(1), 0.5)

    def test_retry_delay(self):
        """5 s after the first failure, doubling, at most 300 s."""
        self.assertEqual([retry_delay(n) for n in range(1, 9)], [5, 10, 20, 40, 80, 160, 300, 300])


class RegistrationTests(SynchronousTestCase):
    def setUp(self):
        self.start()

    def start(self, expires=300, extra=""):
        self.clock = task.Clock()
        self.core = FakeCore(self.clock)
        config = parse_config_text(TOML.format(expires=expires, extra=extra))
        self.registrar = TrunkRegistrar(config.proxy, TrunkSet(config.proxy.trunks, self.clock), self.core, self.clock)
        self.registrar.start()
        self.registration = self.registrar.registrations["carrier"]

    def registers(self):
        return self.core.requests("REGISTER")

    def assert_digest(self, request, header="authorization", nc="00000001"):
        _, params = parse_auth_params(request.get(header))
        self.assertEqual((params["username"], params["realm"], params["uri"]), ("acct", "carrier.example", request.uri))
        self.assertEqual(params.get("nc"), nc)
        ha1 = compute_ha1("MD5", "acct", "carrier.example", "s3cret")
        expected = compute_response("MD5", ha1, "REGISTER", params["uri"], params["nonce"], params.get("nc"), params.get("cnonce"), params.get("qop"))
        self.assertEqual(params["response"], expected)

    def register(self, granted="300"):
        """Answer the first REGISTER with 401 and the retry with 200."""
        self.registers()[-1].answer(401, headers=[("WWW-Authenticate", CHALLENGE)], to_tag="reg")
        self.registers()[-1].answer(200, headers=[("Expires", granted)] if granted else [], to_tag="reg")

    def test_only_enabled_trunks(self):
        """Only trunks with register_enabled that are not disabled register."""
        self.assertEqual(list(self.registrar.registrations), ["carrier"])
        self.assertEqual(self.core.resolved, [("udp", "198.51.100.5", 5080)])

    def test_first_register(self):
        """The REGISTER names the provider's host as registrar and the
        trunk's username as the address of record, with our Contact and
        register_expires."""
        (tx,) = self.registers()
        request = tx.request
        self.assertEqual(request.uri, "sip:198.51.100.5:5080")
        self.assertEqual(request.get("to"), "<sip:acct@198.51.100.5>")
        self.assertTrue(request.get("from").startswith("<sip:acct@198.51.100.5>;tag="))
        self.assertEqual(request.get("contact"), "<sip:acct@192.0.2.1:5060>")
        self.assertEqual((request.get("expires"), request.get("cseq")), ("300", "1 REGISTER"))
        self.assertIsNone(request.get("authorization"))
        self.assertEqual(self.registration.state, "registering")

    def test_challenge_answered(self):
        """A 401 is answered with the trunk's credentials in the same
        Call-ID with the next CSeq; the 200 registers the trunk."""
        self.register()
        first, second = self.registers()
        self.assertEqual(second.request.call_id, first.request.call_id)
        self.assertEqual(second.request.get("cseq"), "2 REGISTER")
        self.assert_digest(second.request)
        self.assertEqual((self.registration.state, self.registration.expires), ("registered", 300))
        self.assertEqual(self.registration.status()["registered"], True)

    def test_proxy_challenge(self):
        """A 407 is answered with Proxy-Authorization."""
        self.registers()[-1].answer(407, headers=[("Proxy-Authenticate", CHALLENGE)])
        self.assert_digest(self.registers()[-1].request, "proxy-authorization")

    def test_refresh(self):
        """30 s before the granted expiry the binding is refreshed, reusing
        the nonce with the next nonce-count."""
        self.register()
        self.clock.advance(269)
        self.assertEqual(len(self.registers()), 2)
        self.clock.advance(1)
        refresh = self.registers()[-1].request
        self.assertEqual(refresh.get("cseq"), "3 REGISTER")
        self.assert_digest(refresh, nc="00000002")
        self.registers()[-1].answer(200, headers=[("Expires", "300")])
        self.clock.advance(270)
        self.assertEqual(len(self.registers()), 4)
        self.assertEqual(self.registration.registrations, 2)

    def test_granted_by_contact(self):
        """The expires parameter of our Contact in the 200 wins over the
        Expires header."""
        self.registers()[-1].answer(200, headers=[("Contact", "<sip:acct@192.0.2.1:5060>;expires=60"), ("Expires", "300")])
        self.assertEqual(self.registration.expires, 60)
        self.clock.advance(30)
        self.assertEqual(len(self.registers()), 2)

    def test_granted_default(self):
        """A 200 that names no lifetime grants what we asked."""
        self.register(granted=None)
        self.assertEqual(self.registration.expires, 300)

    def test_wrong_password(self):
        """A second challenge means the credentials are wrong: the attempt
        fails, and the next one comes after a back-off that doubles."""
        self.registers()[-1].answer(401, headers=[("WWW-Authenticate", CHALLENGE)])
        self.registers()[-1].answer(401, headers=[("WWW-Authenticate", CHALLENGE.replace("n0nce", "other"))])
        self.assertEqual(len(self.registers()), 2)
        self.assertEqual(self.registration.state, "failed")
        self.assertIn("401", self.registration.error)
        self.clock.advance(4.9)
        self.assertEqual(len(self.registers()), 2)
        self.clock.advance(0.1)
        self.assertEqual(len(self.registers()), 3)
        self.registers()[-1].answer(503)
        self.assertEqual(self.registration.failures, 2)
        self.clock.advance(9.9)
        self.assertEqual(len(self.registers()), 3)
        self.clock.advance(0.1)
        self.assertEqual(len(self.registers()), 4)

    def test_stale_nonce(self):
        """stale=true after our answer: answered once more with the new nonce."""
        self.registers()[-1].answer(401, headers=[("WWW-Authenticate", CHALLENGE)])
        self.registers()[-1].answer(401, headers=[("WWW-Authenticate", CHALLENGE.replace("n0nce", "fresh") + ", stale=true")])
        self.assertEqual(len(self.registers()), 3)
        self.assertIn('nonce="fresh"', self.registers()[-1].request.get("authorization"))

    def test_timeout_backoff_then_success(self):
        """A timed-out REGISTER (408) is retried after 5 s; success resets
        the failure count."""
        self.registers()[-1].answer(408, to_tag=None)
        self.clock.advance(5)
        self.assertEqual(len(self.registers()), 2)
        self.register()
        self.assertEqual((self.registration.state, self.registration.failures, self.registration.error), ("registered", 0, None))

    def test_interval_too_brief(self):
        """A 423 is answered with the provider's Min-Expires."""
        self.registers()[-1].answer(423, headers=[("Min-Expires", "600")])
        self.assertEqual(self.registers()[-1].request.get("expires"), "600")

    def test_stop_unregisters(self):
        """Stopping sends Expires: 0 with credentials; the Deferred fires
        on the provider's answer and no timer is left."""
        self.register()
        d = self.registrar.stop()
        fired = []
        d.addCallback(fired.append)
        unregister = self.registers()[-1]
        self.assertEqual(unregister.request.get("expires"), "0")
        self.assert_digest(unregister.request, nc="00000002")
        self.assertEqual(fired, [])
        unregister.answer(200)
        self.assertEqual(len(fired), 1)
        self.assertEqual(self.registration.state, "unregistered")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stop_answers_challenge(self):
        """A challenge to the un-REGISTER is answered once."""
        self.register()
        self.registrar.stop()
        self.registers()[-1].answer(401, headers=[("WWW-Authenticate", CHALLENGE.replace("n0nce", "bye"))])
        last = self.registers()[-1].request
        self.assertEqual(last.get("expires"), "0")
        self.assertIn('nonce="bye"', last.get("authorization"))

    def test_stop_times_out(self):
        """A provider that never answers the un-REGISTER delays stop by 2 s at most."""
        self.register()
        fired = []
        self.registrar.stop().addCallback(fired.append)
        self.clock.advance(2)
        self.assertEqual(len(fired), 1)

    def test_stop_unregistered(self):
        """Nothing to remove when never registered: no REGISTER, fires at once."""
        self.registers()[-1].answer(503)
        fired = []
        self.registrar.stop().addCallback(fired.append)
        self.assertEqual(len(fired), 1)
        self.assertEqual(len(self.registers()), 1)
        self.clock.advance(600)
        self.assertEqual(len(self.registers()), 1)

    def test_extra_headers(self):
        """register_extra_headers go into every REGISTER."""
        self.start(extra='register_extra_headers = { "X-Account" = "42" }')
        self.assertEqual(self.registers()[-1].request.get("x-account"), "42")


class ModuleTests(CallHarness, SynchronousTestCase):
    """The call module starts and stops trunk registrations."""

    def test_started_and_stopped(self):
        """CallModule.start registers the trunk (on the next turn, once the
        core accepts responses); stop unregisters it."""
        self.setup_module(toml=TOML.format(expires=300, extra="").replace("[proxy]\n", ""))
        self.assertEqual(self.core.requests("REGISTER"), [])
        self.clock.advance(0)
        (register,) = self.core.requests("REGISTER")
        register.answer(200, headers=[("Expires", "300")])
        self.module.stop()
        self.assertEqual(self.core.requests("REGISTER")[-1].request.get("expires"), "0")
