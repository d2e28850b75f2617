"""
The frequency limiter with a whole PBX (real core, transaction layer, UDP
protocol, acl/auth/registrar/call modules) on a L{task.Clock}: an office of
fifty phones behind one NAT address is never cut off by
C{frequency_limiter = "100/60s"}, while a scanner from one address is.
"""

from __future__ import annotations

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from rustpbx_py.test.sip_phones import Network, Phone

OFFICE_NAT = "203.0.113.50"
SCANNER = "198.51.100.66"
PHONES = 50
MINUTES = 5


def office_users():
    return [{"username": str(2000 + i), "password": f"pw-{2000 + i}"} for i in range(PHONES)]


class OfficeBehindNatTests(SynchronousTestCase):
    """Fifty phones, one address, "100/60s"."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(1_000_000)
        self.net = Network(
            self.clock,
            realms=["example.com"],
            frequency_limiter="100/60s",
            user_backends=[{"type": "memory", "users": office_users()}],
        )
        self.addCleanup(self.net.stop)
        self.phones = [
            Phone(self.net, str(2000 + i), f"pw-{2000 + i}", (OFFICE_NAT, 40000 + i), ("10.0.0.%d" % (10 + i), 5060))
            for i in range(PHONES)
        ]

    def run_office(self, minutes: int) -> None:
        """
        Each phone re-registers every 60 s (answering a fresh 401 each time),
        sends an OPTIONS keep-alive every 30 s and a CRLF every 15 s, and
        calls its neighbour for 20 s every 2 minutes (answering the 407): about
        325 requests (and 200 CRLFs) a minute from the one address, more than
        three times the limit.
        """
        clock = self.clock
        for i, phone in enumerate(self.phones):
            start = i * 1.1
            for t in range(0, minutes * 60, 60):
                clock.callLater(start + t, phone.register, 120)
            for t in range(5, minutes * 60, 30):
                clock.callLater(start + t, phone.options)
            for t in range(3, minutes * 60, 15):
                clock.callLater(start + t, phone.crlf)
            callee = self.phones[(i + 1) % PHONES].user
            for t in range(10 + (i % 2) * 60, minutes * 60 - 30, 120):
                clock.callLater(start + t, phone.call, callee, 20)
        self.net.advance(minutes * 60 + 60)

    def test_office_never_cut_off(self):
        """
        Over five minutes every request of every phone is answered: every
        REGISTER ends in 200, every keep-alive OPTIONS in 200, every call is
        answered and hung up with 200, and the limiter never drops one.
        """
        self.run_office(MINUTES)
        finals = [a for phone in self.phones for a in phone.answers]
        registers = sum(phone.sent.get("REGISTER", 0) for phone in self.phones)
        self.assertEqual(registers, PHONES * MINUTES * 2, "each registration is a 401 round trip")
        self.assertEqual(finals.count(("REGISTER", 200)), PHONES * MINUTES)
        self.assertEqual(finals.count(("REGISTER", 401)), PHONES * MINUTES)
        self.assertEqual(finals.count(("OPTIONS", 200)), sum(p.sent.get("OPTIONS", 0) for p in self.phones))
        invites = finals.count(("INVITE", 200))
        self.assertGreaterEqual(invites, PHONES * 2)
        self.assertEqual(finals.count(("INVITE", 407)), invites)
        self.assertEqual(sum(p.calls_answered for p in self.phones), invites)
        self.assertEqual(finals.count(("BYE", 200)), invites)
        self.assertEqual(set(finals) - {("REGISTER", 200), ("REGISTER", 401), ("OPTIONS", 200), ("INVITE", 200), ("INVITE", 407), ("BYE", 200)}, set())
        sent = sum(sum(p.sent.values()) for p in self.phones)
        self.assertGreater(sent, 3 * 100 * MINUTES, "the office sends far more than the limit")
        self.assertEqual(self.net.lost, [])

    def test_scanner_silenced_office_served(self):
        """
        A scanner at another address floods unauthenticated REGISTER, INVITE
        and OPTIONS (for real extensions, so each would be answered) while the
        office works: it gets at most 100 answers a minute and then silence,
        and the office is still served in full.
        """
        net = self.net
        scanner = Phone(net, "2000", None, (SCANNER, 5070), ("192.168.1.66", 5070), user_agent="probe")
        answered = []

        def flood():
            for i in range(20):
                kind = i % 3
                if kind == 0:
                    scanner.register(password="guess")
                elif kind == 1:
                    scanner.options()
                else:
                    scanner.options(f"sip:{2000 + i}@example.com")
            answered.append(len(scanner.answers))

        loop = task.LoopingCall(flood)
        loop.clock = self.clock
        loop.start(2.0)
        self.run_office(MINUTES)
        loop.stop()
        flood_requests = sum(scanner.sent.values())
        self.assertGreater(flood_requests, 3000)
        # Its answers per minute (30 floods of 20 requests each): at most the
        # limit once the sliding window has history; the first minute may let
        # up to half a window more through (the estimate weighs the previous
        # fixed window as if its requests were spread evenly).
        per_minute = [answered[i + 30] - answered[i] for i in range(0, len(answered) - 30, 30)]
        self.assertGreaterEqual(len(per_minute), 5)
        self.assertLessEqual(per_minute[0], 150, per_minute)
        self.assertLessEqual(max(per_minute[1:]), 100, per_minute)
        self.assertLess(len(scanner.answers), flood_requests / 5)
        finals = [a for phone in self.phones for a in phone.answers]
        self.assertEqual(finals.count(("REGISTER", 200)), PHONES * MINUTES)
        self.assertEqual(finals.count(("OPTIONS", 200)), sum(p.sent.get("OPTIONS", 0) for p in self.phones))
        self.assertEqual(finals.count(("BYE", 200)), finals.count(("INVITE", 200)))

    def test_old_rule_would_cut_off(self):
        """
        The same office against a limiter that counts every request (no
        refunds, no exemptions -- the rule before this change) loses requests:
        what this test suite guards against.
        """
        limiter = self.net.module("acl").limiter
        limiter.credit = lambda source, count=1: None
        self.net.module("acl")._counted = lambda request, key: True
        self.run_office(2)
        finals = [a for phone in self.phones for a in phone.answers]
        sent = sum(p.sent.get("REGISTER", 0) for p in self.phones) // 2
        self.assertLess(finals.count(("REGISTER", 200)), sent)
