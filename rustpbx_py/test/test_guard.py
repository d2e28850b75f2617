"""
Tests for L{rustpbx_py.modules.guard} and the auth module's use of it:
password guessing and user enumeration are slowed down, then the source is
banned; accounts are never locked for everyone.
"""

from __future__ import annotations

import re

from twisted.internet import task
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from rustpbx_py.interfaces import ABORT, CONTINUE
from rustpbx_py.modules.guard import MAX_BAN, LoginGuard
from rustpbx_py.test.fakes import make_tx
from rustpbx_py.test.sip_phones import Network, Phone
from rustpbx_py.test.test_auth import AuthTestMixin, challenges, credentials

#: The fail2ban filter the README documents (with <HOST> as fail2ban expands it).
FAIL2BAN_FAILREGEX = r'auth failure: user="[^"]*" source=<HOST> '
FAIL2BAN_HOST = r"(?P<host>[0-9A-Fa-f.:]+)"

ATTACKER = ("198.51.100.66", 5070)
PHONE = ("203.0.113.7", 5060)


class LogCatcher:
    def __init__(self, testcase):
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        testcase.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def lines(self, prefix):
        return [formatEvent(e) for e in self.events if e.get("log_format", "").startswith(prefix)]


class LoginGuardTests(SynchronousTestCase):
    """The counting itself."""

    def test_slow_then_ban(self):
        """Each failure is held back longer; the fifth bans for 900 s, then the source is free again."""
        clock = task.Clock()
        guard = LoginGuard(clock, (5, 600), ban_time=900, delay=1)
        self.assertEqual([guard.failed("a")[1] for _ in range(4)], [1.0, 2.0, 3.0, 4.0])
        self.assertFalse(guard.banned("a"))
        self.assertEqual(guard.failed("a"), (5, 0.0, 900.0))
        self.assertTrue(guard.banned("a"))
        self.assertFalse(guard.banned("b"))
        clock.advance(900)
        self.assertFalse(guard.banned("a"))

    def test_window(self):
        """Failures older than the window are forgotten."""
        clock = task.Clock()
        guard = LoginGuard(clock, (3, 60), ban_time=900, delay=0)
        guard.failed("a")
        guard.failed("a")
        clock.advance(60)
        self.assertEqual(guard.failed("a")[0], 1)

    def test_repeat_bans_double(self):
        """A source banned again within a day is banned twice as long, up to a day."""
        clock = task.Clock()
        guard = LoginGuard(clock, (1, 600), ban_time=900, delay=0)
        seen = []
        for _ in range(10):
            seen.append(guard.failed("a")[2])
            clock.advance(seen[-1])
        self.assertEqual(seen[:4], [900, 1800, 3600, 7200])
        self.assertEqual(max(seen), MAX_BAN)
        clock.advance(MAX_BAN)
        self.assertEqual(guard.failed("a")[2], 900, "forgiven after a quiet day")

    def test_no_ban(self):
        """auth_ban_time = 0 only slows down, up to 10 s."""
        clock = task.Clock()
        guard = LoginGuard(clock, (2, 600), ban_time=0, delay=3)
        delays = [guard.failed("a")[1] for _ in range(6)]
        self.assertEqual(delays, [3, 6, 9, 10, 10, 10])
        self.assertFalse(guard.banned("a"))

    def test_trusted_sources_count_per_user(self):
        """After a success from a source, its failures count per (source, user) for an hour."""
        clock = task.Clock()
        guard = LoginGuard(clock)
        self.assertEqual(guard.key("a", "1001"), "a")
        guard.succeeded("a")
        self.assertEqual(guard.key("a", "1001"), ("a", "1001"))
        clock.advance(3600)
        self.assertEqual(guard.key("a", "1001"), "a")

    def test_bounded(self):
        """A scan from many addresses keeps at most max_keys entries."""
        guard = LoginGuard(task.Clock(), max_keys=100)
        for i in range(1000):
            guard.failed(f"10.0.{i // 256}.{i % 256}")
            guard.succeeded(f"10.1.{i // 256}.{i % 256}")
        self.assertEqual(len(guard), 100)
        self.assertEqual(len(guard._trusted), 100)


class GuessingTests(AuthTestMixin, SynchronousTestCase):
    """A source that keeps failing digests, through the auth module."""

    def guess(self, password, remote=ATTACKER, user="alice"):
        """Answer a fresh challenge with C{password}: (action, tx, seconds the answer took)."""
        action, challenged = self.register(remote=remote, from_uri=f"sip:{user}@example.com")
        if challenged.last is None:
            return action, challenged, None
        header = credentials(challenged.last, user, password, "REGISTER", "sip:example.com", "MD5")
        tx = make_tx(method="REGISTER", uri="sip:example.com", remote=remote, headers=[header], from_uri=f"sip:{user}@example.com")
        result = self.auth.on_transaction_begin(tx)
        waited = 0.0
        while tx.last is None and waited < 20 and getattr(result, "called", True) is False:
            self.clock.advance(0.5)
            waited += 0.5
        return (self.successResultOf(result) if hasattr(result, "addCallback") else result), tx, waited

    def test_slowed_then_banned(self):
        """
        Four wrong passwords get 403 after 1, 2, 3 and 4 s; the fifth gets
        nothing, and from then on the source gets no answer at all -- not even
        a challenge, nor for the right password -- for 900 s; each failure and
        the ban are logged with the source.
        """
        log = LogCatcher(self)
        self.module()
        for n in range(1, 5):
            action, tx, waited = self.guess(f"guess{n}")
            self.assertEqual((tx.last.status, waited), (403, float(n)), n)
        action, tx, waited = self.guess("guess5")
        self.assertEqual((action, tx.last, tx.context.spam), (ABORT, None, True))
        action, tx = self.register(remote=ATTACKER)
        self.assertEqual((tx.last, tx.context.spam), (None, True))
        action, tx, _ = self.guess("wonderland")
        self.assertEqual(tx.last, None)
        failures = log.lines("auth failure")
        self.assertEqual(len(failures), 5)
        self.assertIn('user="alice" source=198.51.100.66 method=REGISTER reason=wrong password failures=5', failures[-1])
        self.assertEqual(log.lines("auth ban"), ['auth ban: source=198.51.100.66 user="*" seconds=900 failures=5'])
        self.clock.advance(900)
        action, tx, _ = self.guess("wonderland")
        self.assertEqual((action, tx.responses), (CONTINUE, []), "the ban ends")

    def test_guesses_per_hour_and_day(self):
        """
        The README's figures: a source guessing every 5 s for a day with the
        defaults has 15 guesses checked in its first hour and 35 in the day.
        """
        self.module()
        checked = []
        guard_failed = self.auth.guard.failed

        def counting(key):
            checked.append(self.clock.seconds())
            return guard_failed(key)

        self.auth.guard.failed = counting
        start = self.clock.seconds()
        nonce_tx = None
        for step in range(86400 // 5):
            if nonce_tx is None or step % 50 == 0:
                _, nonce_tx = self.register(remote=ATTACKER)
                if nonce_tx.last is None:
                    nonce_tx = None
            if nonce_tx is not None:
                header = credentials(nonce_tx.last, "alice", f"guess{step}", "REGISTER", "sip:example.com", "MD5", nc=step + 1)
                tx = make_tx(method="REGISTER", uri="sip:example.com", remote=ATTACKER, headers=[header], from_uri="sip:alice@example.com")
                self.auth.on_transaction_begin(tx)
            self.clock.advance(5)
        self.assertEqual(len([t for t in checked if t < start + 3600]), 15)
        self.assertEqual(len(checked), 35)

    def test_account_never_locked(self):
        """While the guesser is banned the right password from another address registers at once."""
        self.module()
        for n in range(5):
            self.guess(f"guess{n}")
        self.assertTrue(self.auth.guard.banned("198.51.100.66"))
        action, tx, waited = self.guess("wonderland", remote=PHONE)
        self.assertEqual((action, tx.responses, waited), (CONTINUE, [], 0.0))
        self.assertEqual(tx.context.user.username, "alice")

    def test_forged_nonce_rechallenged_not_counted(self):
        """A wrong response with a nonce we never issued (bad HMAC) gets a fresh
        401 (stale), not 403, and is no failure: a guess needs our nonce."""
        self.module()
        _, first = self.register(remote=ATTACKER)
        for i in range(10):
            header = credentials(first.last, "alice", f"guess{i}", "REGISTER", "sip:example.com", "MD5", nonce=f"forged{i}AAAA")
            action, tx = self.register(remote=ATTACKER, headers=[header])
            self.assertEqual(tx.last.status, 401)
            self.assertEqual(challenges(tx.last)[0][1]["stale"], "true")
        self.assertEqual(len(self.auth.guard), 0)

    def test_office_not_banned_for_one_phone(self):
        """
        From a source that authenticated (an office NAT), one phone's wrong
        password silences only that user from that source: the office's other
        users still log in.
        """
        from rustpbx_py.users import SipUser

        self.module(users=[SipUser("alice", password="wonderland"), SipUser("bob", password="builder")])
        self.assertEqual(self.guess("builder", remote=PHONE, user="bob")[0], CONTINUE)
        for n in range(5):
            self.guess(f"typo{n}", remote=PHONE)
        self.assertFalse(self.auth.guard.banned("203.0.113.7"))
        self.assertTrue(self.auth.guard.banned(("203.0.113.7", "alice")))
        action, tx, _ = self.guess("wonderland", remote=PHONE)
        self.assertEqual((tx.last, tx.context.spam), (None, True), "alice from the office: silenced")
        self.assertEqual(self.guess("builder", remote=PHONE, user="bob")[0], CONTINUE)
        self.assertEqual(self.guess("wonderland", remote=ATTACKER)[0], CONTINUE, "alice elsewhere")

    def test_fail2ban_line(self):
        """The documented fail2ban failregex finds the source in every failure line."""
        log = LogCatcher(self)
        self.module(ensure_user=True)
        self.guess("nope")
        self.register(remote=("2001:db8::5", 5060), from_uri="sip:nobody@example.com")
        lines = log.lines("auth failure")
        self.assertEqual(len(lines), 2)
        regex = re.compile(FAIL2BAN_FAILREGEX.replace("<HOST>", FAIL2BAN_HOST))
        self.assertEqual([regex.search(line).group("host") for line in lines], ["198.51.100.66", "2001:db8::5"])

    def test_log_injection(self):
        """A user name cannot forge a second log field or line."""
        log = LogCatcher(self)
        self.module(ensure_user=True)
        self.register(from_uri='sip:x%22%20source=10.0.0.1@example.com')
        self.register(from_uri="sip:a\u2028b@example.com")
        regex = re.compile(FAIL2BAN_FAILREGEX.replace("<HOST>", FAIL2BAN_HOST))
        lines = log.lines("auth failure")
        self.assertEqual(len(lines), 2)
        for line in lines:
            self.assertEqual(line.count("source="), 1, line)
            self.assertEqual(line.count('"'), 2, line)
            self.assertEqual(regex.search(line).group("host"), "192.0.2.10")


class DigestUriTests(AuthTestMixin, SynchronousTestCase):
    """RFC 7616 3.4.6: the digest uri names the Request-URI."""

    def test_mismatch_is_400(self):
        """Right credentials computed for another URI: 400, before any password check (no failure counted)."""
        self.module()
        _, first = self.register()
        header = credentials(first.last, "alice", "wonderland", "REGISTER", "sip:other.example.com", "MD5")
        action, tx = self.register(headers=[header])
        self.assertEqual((action, tx.last.status), (ABORT, 400))
        self.assertIn("digest uri", tx.last.reason)
        self.assertIsNone(tx.context.user)
        self.assertEqual(len(self.auth.guard), 0)

    def test_invite_mismatch(self):
        """An INVITE whose credentials name another callee: 400."""
        self.module()
        action, first = self.invite()
        header = credentials(first.last, "alice", "wonderland", "INVITE", "sip:carol@example.com", "MD5")
        action, tx = self.invite(headers=[header])
        self.assertEqual(tx.last.status, 400)

    def test_same_uri_other_parameters(self):
        """The same URI with or without parameters (transport=udp) or another host case is the same resource."""
        self.module()
        for digest_uri, request_uri in [
            ("sip:example.com", "sip:Example.COM;transport=udp"),
            ("sip:example.com;transport=udp", "sip:example.com"),
        ]:
            _, first = self.register()
            header = credentials(first.last, "alice", "wonderland", "REGISTER", digest_uri, "MD5")
            tx = make_tx(method="REGISTER", uri=request_uri, headers=[header], from_uri="sip:alice@example.com")
            self.assertEqual((self.begin(tx), tx.responses), (CONTINUE, []), digest_uri)

    def test_sipp_userless_uri(self):
        """SIPp 3.6 answers every challenge with uri="sip:HOST:PORT" (no user):
        accepted for the same host and port, refused for another host."""
        self.module()
        action, first = self.invite(uri="sip:bob@example.com:5070")
        header = credentials(first.last, "alice", "wonderland", "INVITE", "sip:example.com:5070", "MD5")
        action, tx = self.invite(uri="sip:bob@example.com:5070", headers=[header])
        self.assertEqual((action, tx.responses), (CONTINUE, []))
        action, first = self.invite(uri="sip:bob@example.com:5070")
        header = credentials(first.last, "alice", "wonderland", "INVITE", "sip:other.example.com:5070", "MD5")
        self.assertEqual(self.invite(uri="sip:bob@example.com:5070", headers=[header])[1].last.status, 400)

    def test_other_port_is_another_resource(self):
        """Another port or user is another resource."""
        self.module()
        for digest_uri in ("sip:example.com:5080", "sip:bob@example.com"):
            _, first = self.register()
            header = credentials(first.last, "alice", "wonderland", "REGISTER", digest_uri, "MD5")
            self.assertEqual(self.register(headers=[header])[1].last.status, 400, digest_uri)


class EnumerationTests(AuthTestMixin, SynchronousTestCase):
    """With ensure_user, a source asking for unknown users is banned."""

    def test_enumeration_stops(self):
        """
        A script asks for extensions 100..199 (alice is known): unknown ones
        get silence, and after five the source is banned, so the known one is
        silent too -- the scan learns nothing -- while another source still
        gets alice's 401.
        """
        from rustpbx_py.users import SipUser

        self.module(users=[SipUser("150", password="pw")], ensure_user=True)
        answered = []
        for ext in range(100, 200):
            _, tx = self.register(remote=ATTACKER, from_uri=f"sip:{ext}@example.com")
            if tx.last is not None:
                answered.append(ext)
        self.assertEqual(answered, [])
        self.assertTrue(self.auth.guard.banned("198.51.100.66"))
        _, tx = self.register(remote=PHONE, from_uri="sip:150@example.com")
        self.assertEqual(tx.last.status, 401)

    def test_known_user_found_before_ban(self):
        """(What a handful means:) a known user among the first four guesses still gets its 401."""
        from rustpbx_py.users import SipUser

        self.module(users=[SipUser("103", password="pw")], ensure_user=True)
        found = []
        for ext in range(100, 110):
            _, tx = self.register(remote=ATTACKER, from_uri=f"sip:{ext}@example.com")
            if tx.last is not None:
                found.append(ext)
        self.assertEqual(found, [103])


class CoreScreenTests(SynchronousTestCase):
    """Through the real core: a banned source gets no answer to anything."""

    def test_banned_source_gets_nothing(self):
        """
        After svcrack-like guessing, the source's OPTIONS to the PBX (which the
        core itself would answer) and its REGISTERs get no answer, while
        another address still registers alice.
        """
        clock = task.Clock()
        clock.advance(1_000_000)
        net = Network(clock, realms=["example.com"], user_backends=[{"type": "memory", "users": [{"username": "alice", "password": "wonderland"}]}])
        self.addCleanup(net.stop)
        attacker = Phone(net, "alice", "x", ATTACKER)
        phone = Phone(net, "alice", "wonderland", PHONE)
        for i in range(5):
            attacker.register(password=f"guess{i}")
            net.advance(11)
        self.assertEqual([s for m, s in attacker.answers], [401, 403, 401, 403, 401, 403, 401, 403, 401])
        attacker.options()
        attacker.register(password="wonderland")
        net.advance(2)
        self.assertEqual(len(attacker.answers), 9, "no answer after the ban")
        phone.register()
        net.advance(1)
        self.assertEqual(phone.answers, [("REGISTER", 401), ("REGISTER", 200)])
