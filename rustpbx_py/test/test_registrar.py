# -*- test-case-name: rustpbx_py.test.test_registrar -*-
"""
Tests for L{rustpbx_py.registrar} and L{rustpbx_py.modules.registrar}: the
RFC 3261 10.3 rules, RFC 3327 Path, RFC 5626/5627 instance replacement,
nat_fix, write-through persistence and expiry.

Time comes from a L{task.Clock}; the database is a real SQLite file in the
test's temporary directory (its queries run in adbapi's threads, so those
tests return Deferreds).
"""

from __future__ import annotations

import os
from email.utils import parsedate_to_datetime
from typing import List, Optional, Sequence, Tuple

from twisted.internet import defer, task
from twisted.plugin import getPlugins
from twisted.trial import unittest
from zope.interface.verify import verifyObject

import rustpbx_py.plugins
from rustpbx_py.interfaces import ABORT, CONTINUE, ILocator, IProxyModule, IProxyModuleFactory, IRegistry
from rustpbx_py.modules.registrar import RegistrarModule, contact_params_text
from rustpbx_py.registrar import Binding, OutOfOrder, Registry, make_aor, needs_nat_fix
from rustpbx_py.sip.headers import URI
from rustpbx_py.store.db import Database
from rustpbx_py.test.fakes import FakeFlow, FakeServerContext, FakeServerTransaction, make_request, proxy_config

NOW = 1_700_000_000.0
ALICE = "alice@example.com"


def register_request(
    *contacts: str,
    expires: Optional[int] = None,
    call_id: str = "reg-1@192.0.2.10",
    cseq: int = 1,
    to: str = "sip:alice@example.com",
    headers: Sequence[Tuple[str, str]] = (),
):
    """A REGISTER with exactly the given Contact elements (none: a query)."""
    req = make_request("REGISTER", "sip:example.com", from_uri=to, to_uri=to, call_id=call_id, cseq=cseq)
    req.remove("Contact")
    for c in contacts:
        req.add("Contact", c)
    if expires is not None:
        req.add("Expires", str(expires))
    for name, value in headers:
        req.add(name, value)
    return req


class FakeStore:
    """
    A store double whose writes complete only when the test says so:
    C{writes} holds (statements, Deferred) per transaction.
    """

    def __init__(self) -> None:
        self.writes: List[Tuple[list, defer.Deferred]] = []

    def run_many(self, statements) -> defer.Deferred:
        d = defer.Deferred()
        self.writes.append((list(statements), d))
        return d

    def run_operation(self, sql, params=()) -> defer.Deferred:
        return defer.succeed(None)

    def run_query(self, sql, params=()) -> defer.Deferred:
        return defer.succeed([])


class RegistrarTestsMixin:
    """Builds a module on a Clock; C{self.store} decides persistence."""

    store = None

    def make_module(self, registrar_expires: int = 3600, nat_fix: bool = True, store=None) -> RegistrarModule:
        if not hasattr(self, "clock"):
            self.clock = task.Clock()
            self.clock.advance(NOW)
        registry = Registry(store if store is not None else self.store, self.clock)
        return RegistrarModule(registry, registrar_expires=registrar_expires, nat_fix=nat_fix)

    def send(self, module: RegistrarModule, request, flow: Optional[FakeFlow] = None, realm=None, user=None):
        """Offer C{request} to C{module}; fires with the transaction."""
        tx = FakeServerTransaction(request, flow)
        tx.context.realm = realm
        tx.context.user = user
        d = defer.maybeDeferred(module.on_transaction_begin, tx)

        def check(action):
            assert action == ABORT, action
            return tx

        return d.addCallback(check)

    def contacts(self, tx) -> List[str]:
        return tx.last.get_all("contact")


class MemoryRegistrarTests(RegistrarTestsMixin, unittest.SynchronousTestCase):
    """
    The REGISTER rules with a memory-only registry: every Deferred has
    fired by the time C{send} returns.
    """

    def setUp(self) -> None:
        self.module = self.make_module()

    def reg(self, *contacts: str, flow=None, realm=None, user=None, **kw) -> FakeServerTransaction:
        return self.successResultOf(self.send(self.module, register_request(*contacts, **kw), flow, realm, user))

    def test_register_creates_binding(self) -> None:
        """
        A REGISTER with one Contact and no expiry gets the default
        (registrar_expires), a 200 listing the contact with its expiry and a
        Date, and a binding that records source, transport, flow, user agent
        and registration time.
        """
        flow = FakeFlow(("203.0.113.7", 40000), "UDP", ("198.51.100.1", 5060))
        tx = self.reg("<sip:alice@203.0.113.7:40000>", flow=flow)
        self.assertEqual(tx.last.status, 200)
        self.assertEqual(self.contacts(tx), ["<sip:alice@203.0.113.7:40000>;expires=3600"])
        self.assertEqual(parsedate_to_datetime(tx.last.get("date")).timestamp(), NOW)
        [b] = self.module.registry.lookup(ALICE)
        self.assertEqual(b.contact, "sip:alice@203.0.113.7:40000")
        self.assertEqual(b.source, ("203.0.113.7", 40000))
        self.assertEqual(b.local, ("198.51.100.1", 5060))
        self.assertEqual(b.transport, "UDP")
        self.assertEqual(b.flow_id, flow.id)
        self.assertEqual(b.user_agent, "TestPhone/1.0")
        self.assertEqual(b.registered_at, NOW)
        self.assertEqual(b.expires_at, NOW + 3600)
        self.assertFalse(b.nat)
        self.assertEqual(b.destination, ("UDP", "203.0.113.7", 40000))

    def test_observers_see_registered_and_unregistered(self) -> None:
        """
        Observers hear (aor, True) at an AoR's first binding and (aor,
        False) when it loses its last one (unregister, or expiry at the
        sweep); refreshes and second contacts change nothing.
        """
        seen = []
        self.module.registry.observers.append(lambda aor, up: seen.append((aor, up)))
        self.reg("<sip:alice@192.0.2.10>", expires=120)
        self.reg("<sip:alice@192.0.2.10>", expires=120, cseq=2)
        self.reg("<sip:alice@192.0.2.11>", expires=120, call_id="other")
        self.assertEqual(seen, [(ALICE, True)])
        self.reg("*", expires=0, call_id="new")
        self.assertEqual(seen, [(ALICE, True), (ALICE, False)])
        self.reg("<sip:alice@192.0.2.10>", expires=60, call_id="third")
        self.clock.advance(61)
        self.module.registry.sweep()
        self.assertEqual(seen, [(ALICE, True), (ALICE, False), (ALICE, True), (ALICE, False)])

    def test_not_register_continues(self) -> None:
        """Other methods pass by the registrar untouched."""
        tx = FakeServerTransaction(make_request("INVITE"))
        self.assertEqual(self.module.on_transaction_begin(tx), CONTINUE)
        self.assertEqual(tx.responses, [])
        self.assertEqual(self.module.allow_methods(), ["REGISTER"])

    def test_expires_param_beats_header(self) -> None:
        """
        RFC 3261 10.3 step 7: a Contact's expires parameter wins over the
        Expires header, which applies to contacts without one.
        """
        tx = self.reg("<sip:a@192.0.2.10>;expires=120", "<sip:b@192.0.2.10>", expires=600)
        self.assertEqual(
            sorted(self.contacts(tx)),
            ["<sip:a@192.0.2.10>;expires=120", "<sip:b@192.0.2.10>;expires=600"],
        )

    def test_expires_capped(self) -> None:
        """An expiry above registrar_expires is shortened to it."""
        tx = self.reg("<sip:a@192.0.2.10>", expires=999999999999)
        self.assertEqual(self.contacts(tx), ["<sip:a@192.0.2.10>;expires=3600"])

    def test_interval_too_brief(self) -> None:
        """
        An expiry above zero but under the minimum gets 423 with
        Min-Expires, and no binding changes.
        """
        tx = self.reg("<sip:a@192.0.2.10>;expires=10")
        self.assertEqual(tx.last.status, 423)
        self.assertEqual(tx.last.get("min-expires"), "60")
        self.assertEqual(self.module.registry.lookup(ALICE), [])

    def test_min_expires_not_above_registrar_expires(self) -> None:
        """With registrar_expires under a minute the minimum follows it down."""
        self.module = self.make_module(registrar_expires=30)
        self.assertEqual(self.reg("<sip:a@192.0.2.10>", expires=30).last.status, 200)
        tx = self.reg("<sip:a@192.0.2.10>", expires=20, cseq=2)
        self.assertEqual((tx.last.status, tx.last.get("min-expires")), (423, "30"))

    def test_malformed_expires(self) -> None:
        """An Expires header that is not a number is a 400 naming it."""
        tx = self.reg("<sip:a@192.0.2.10>", headers=[("Expires", "soon")])
        self.assertEqual(tx.last.status, 400)
        self.assertIn("Expires", tx.last.reason)

    def test_several_contacts_and_remaining_time(self) -> None:
        """
        An AOR keeps several contacts; the 200 lists every current binding
        with the seconds it has left, most recent first.
        """
        self.reg("<sip:a@192.0.2.10>", expires=600)
        self.clock.advance(100)
        tx = self.reg("<sip:b@192.0.2.11>", expires=300, call_id="other")
        self.assertEqual(
            self.contacts(tx),
            ["<sip:b@192.0.2.11>;expires=300", "<sip:a@192.0.2.10>;expires=500"],
        )
        self.assertEqual([b.contact for b in self.module.registry.lookup(ALICE)], ["sip:b@192.0.2.11", "sip:a@192.0.2.10"])

    def test_max_contacts_default(self) -> None:
        """
        By default a user may have 10 live contacts: a REGISTER listing 250
        (one call would fork 250 INVITEs) gets 403 and stores nothing, and an
        11th contact added later gets 403 while refreshing or replacing one
        of the 10 still works.
        """
        many = [f"<sip:p{i}@192.0.2.{i % 250 + 1}:{5000 + i}>" for i in range(250)]
        tx = self.reg(*many)
        self.assertEqual(tx.last.status, 403)
        self.assertIn("10 contacts", tx.last.reason)
        self.assertEqual(self.module.registry.lookup(ALICE), [])
        ten = many[:10]
        self.assertEqual(self.reg(*ten, cseq=2).last.status, 200)
        tx = self.reg(many[10], call_id="eleventh")
        self.assertEqual(tx.last.status, 403)
        self.assertEqual(len(self.module.registry.lookup(ALICE)), 10)
        self.assertEqual(self.reg(*ten, cseq=3).last.status, 200, "a refresh of all ten")
        swap = self.reg(many[0].replace(">", ";expires=0>").replace(";expires=0>", ">;expires=0"), many[10], cseq=4)
        self.assertEqual(swap.last.status, 200, "one removed, one added in the same REGISTER")
        self.assertEqual(len(self.module.registry.lookup(ALICE)), 10)

    def test_max_contacts_configured(self) -> None:
        """max_contacts from the config: 1 lets a second phone of the same user in only after the first leaves."""
        from rustpbx_py.test.fakes import FakeServerContext, proxy_config

        context = FakeServerContext(proxy_config(max_contacts=1))
        context.reactor.advance(NOW)
        self.module = RegistrarModule.from_context(context)
        self.clock = context.reactor
        self.assertEqual(self.module.max_contacts, 1)
        self.assertEqual(self.reg("<sip:a@192.0.2.10>").last.status, 200)
        self.assertEqual(self.reg("<sip:b@192.0.2.11>", call_id="b").last.status, 403)
        self.assertEqual(self.reg("<sip:a@192.0.2.10>", expires=0, cseq=2).last.status, 200)
        self.assertEqual(self.reg("<sip:b@192.0.2.11>", call_id="b", cseq=2).last.status, 200)

    def test_expires_zero_removes(self) -> None:
        """A contact with expires=0 removes its binding; the others stay."""
        self.reg("<sip:a@192.0.2.10>", "<sip:b@192.0.2.11>")
        tx = self.reg("<sip:a@192.0.2.10>;expires=0", cseq=2)
        self.assertEqual(self.contacts(tx), ["<sip:b@192.0.2.11>;expires=3600"])

    def test_expires_zero_always_allowed(self) -> None:
        """Removal is never "too brief", even with Expires: 0 in the header."""
        self.reg("<sip:a@192.0.2.10>")
        tx = self.reg("<sip:a@192.0.2.10>", expires=0, cseq=2)
        self.assertEqual((tx.last.status, self.contacts(tx)), (200, []))
        self.assertEqual(self.module.registry.lookup(ALICE), [])

    def test_query(self) -> None:
        """A REGISTER without Contact changes nothing and lists the bindings."""
        self.reg("<sip:a@192.0.2.10>")
        self.clock.advance(10)
        tx = self.reg(cseq=2)
        self.assertEqual((tx.last.status, self.contacts(tx)), (200, ["<sip:a@192.0.2.10>;expires=3590"]))

    def test_wildcard_removes_all(self) -> None:
        """Contact: * with Expires: 0 removes every binding of the AOR."""
        self.reg("<sip:a@192.0.2.10>", "<sip:b@192.0.2.11>")
        self.reg("<sip:bob@192.0.2.12>", to="sip:bob@example.com")
        tx = self.reg("*", expires=0, call_id="new")
        self.assertEqual((tx.last.status, self.contacts(tx)), (200, []))
        self.assertEqual(self.module.registry.lookup(ALICE), [])
        self.assertEqual(len(self.module.registry.lookup("bob@example.com")), 1)

    def test_wildcard_needs_expires_zero(self) -> None:
        """
        Contact: * with any Expires but 0, without Expires, or with another
        Contact is a 400 and removes nothing.
        """
        self.reg("<sip:a@192.0.2.10>")
        for kw in ({"expires": 3600}, {}):
            tx = self.reg("*", call_id="x", **kw)
            self.assertEqual(tx.last.status, 400)
        tx = self.reg("*", "<sip:b@192.0.2.11>", expires=0, call_id="x")
        self.assertEqual(tx.last.status, 400)
        self.assertEqual(len(self.module.registry.lookup(ALICE)), 1)

    def test_out_of_order_cseq(self) -> None:
        """
        RFC 3261 10.3 step 7: the same Call-ID with a CSeq not higher than
        the binding's fails with 500 and leaves the binding as it was; a
        different Call-ID may carry any CSeq.
        """
        self.reg("<sip:a@192.0.2.10>", cseq=5, expires=600)
        for cseq in (5, 4):
            tx = self.reg("<sip:a@192.0.2.10>", cseq=cseq, expires=0)
            self.assertEqual(tx.last.status, 500)
        [b] = self.module.registry.lookup(ALICE)
        self.assertEqual((b.cseq, b.expires), (5, 600))
        tx = self.reg("<sip:a@192.0.2.10>", cseq=1, call_id="rebooted")
        self.assertEqual(tx.last.status, 200)
        self.assertEqual(self.module.registry.lookup(ALICE)[0].call_id, "rebooted")

    def test_out_of_order_wildcard(self) -> None:
        """Contact: * with a stale CSeq of the same Call-ID removes nothing (500)."""
        self.reg("<sip:a@192.0.2.10>", cseq=5)
        tx = self.reg("*", expires=0, cseq=3)
        self.assertEqual(tx.last.status, 500)
        self.assertEqual(len(self.module.registry.lookup(ALICE)), 1)

    def test_refresh_same_call_id(self) -> None:
        """A refresh (same Call-ID, higher CSeq) updates the one binding."""
        self.reg("<sip:a@192.0.2.10>", cseq=1, expires=600)
        self.clock.advance(300)
        tx = self.reg("<sip:a@192.0.2.10>", cseq=2, expires=600)
        self.assertEqual(self.contacts(tx), ["<sip:a@192.0.2.10>;expires=600"])
        [b] = self.module.registry.lookup(ALICE)
        self.assertEqual((b.cseq, b.registered_at), (2, NOW + 300))

    def test_instance_reg_id_replaces(self) -> None:
        """
        RFC 5626: a Contact with the same +sip.instance and reg-id replaces
        the old binding even though the Contact URI (new NAT port, new
        connection) changed; another reg-id is another flow, kept beside it.
        The 200 repeats the parameters as the phone wrote them.
        """
        inst = '+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"'
        self.reg(f"<sip:a@192.0.2.10:5060;ob>;{inst};reg-id=1", flow=FakeFlow(("192.0.2.10", 5060)))
        tx = self.reg(
            f"<sip:a@192.0.2.10:6000;ob>;{inst};reg-id=1",
            call_id="after-reboot",
            flow=FakeFlow(("192.0.2.10", 6000)),
        )
        self.assertEqual(self.contacts(tx), [f"<sip:a@192.0.2.10:6000;ob>;{inst};reg-id=1;expires=3600"])
        tx = self.reg(f"<sip:a@192.0.2.10:6001;ob>;{inst};reg-id=2", call_id="second-flow")
        self.assertEqual(len(self.contacts(tx)), 2)
        [b2, b1] = self.module.registry.lookup(ALICE)
        self.assertEqual((b1.reg_id, b1.instance), ("1", "<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"))
        self.assertEqual(b2.reg_id, "2")

    def test_instance_without_reg_id_replaces(self) -> None:
        """RFC 5627: without reg-id the instance alone names the binding."""
        inst = '+sip.instance="<urn:uuid:abc>"'
        self.reg(f"<sip:a@192.0.2.10:5060>;{inst}")
        tx = self.reg(f"<sip:a@192.0.2.99:5062>;{inst}", call_id="moved")
        self.assertEqual(self.contacts(tx), [f"<sip:a@192.0.2.99:5062>;{inst};expires=3600"])

    def test_same_contact_replaces_across_call_ids(self) -> None:
        """RFC 3261: the Contact URI is the binding; a new Call-ID refreshes it."""
        self.reg("<sip:a@192.0.2.10>")
        tx = self.reg("<sip:a@192.0.2.10>", call_id="another")
        self.assertEqual(len(self.contacts(tx)), 1)

    def test_path_stored_and_echoed(self) -> None:
        """
        RFC 3327: the Path is stored with the binding (the route towards the
        phone) and echoed with Supported: path to a UA that supports it; an
        edge proxy does the NAT handling, so nat_fix stays out.
        """
        path = [("Path", "<sip:edge1.example.net;lr>"), ("Path", "<sip:edge2.example.net;lr>"), ("Supported", "path, outbound")]
        tx = self.reg("<sip:a@10.0.0.5>", headers=path, flow=FakeFlow(("198.51.100.9", 5060)))
        self.assertEqual(tx.last.get_all("path"), ["<sip:edge1.example.net;lr>", "<sip:edge2.example.net;lr>"])
        self.assertEqual(tx.last.get("supported"), "path")
        [b] = self.module.registry.lookup(ALICE)
        self.assertEqual(b.path, ("<sip:edge1.example.net;lr>", "<sip:edge2.example.net;lr>"))
        self.assertFalse(b.nat)

    def test_path_not_echoed_without_support(self) -> None:
        """A UA that did not say Supported: path gets no Path back, but it is stored."""
        tx = self.reg("<sip:a@192.0.2.10>", headers=[("Path", "<sip:edge1.example.net;lr>")])
        self.assertIsNone(tx.last.get("path"))
        self.assertEqual(self.module.registry.lookup(ALICE)[0].path, ("<sip:edge1.example.net;lr>",))

    def test_nat_fix_private_contact(self) -> None:
        """
        nat_fix: a phone behind NAT registers its private address; requests
        go to the address the REGISTER came from, while the 200 lists the
        contact exactly as registered.
        """
        flow = FakeFlow(("203.0.113.50", 61000))
        tx = self.reg("<sip:alice@192.168.1.20:5060;transport=udp>", flow=flow)
        self.assertEqual(self.contacts(tx), ["<sip:alice@192.168.1.20:5060;transport=udp>;expires=3600"])
        [b] = self.module.registry.lookup(ALICE)
        self.assertTrue(b.nat)
        self.assertEqual(b.contact, "sip:alice@192.168.1.20:5060;transport=udp")
        self.assertEqual(b.destination, ("UDP", "203.0.113.50", 61000))

    def test_nat_fix_off(self) -> None:
        """With nat_fix off the Contact is the destination, as registered."""
        self.module = self.make_module(nat_fix=False)
        self.reg("<sip:alice@192.168.1.20:5070>", flow=FakeFlow(("203.0.113.50", 61000)))
        [b] = self.module.registry.lookup(ALICE)
        self.assertFalse(b.nat)
        self.assertEqual(b.destination, ("UDP", "192.168.1.20", 5070))

    def test_realm_from_auth(self) -> None:
        """
        The AOR's domain is the realm auth set, lower-cased with the user,
        not the To host.
        """
        self.reg("<sip:a@192.0.2.10>", to="sip:Alice@192.0.2.1", realm="Example.COM")
        self.assertEqual(len(self.module.registry.lookup(ALICE)), 1)
        self.assertEqual(make_aor("Alice", "Example.COM"), ALICE)

    def test_realm_from_to_host(self) -> None:
        """Without auth's realm, the To host (lower-cased) is the domain."""
        self.reg("<sip:a@192.0.2.10>", to="sip:alice@PBX.example.org")
        self.assertEqual(len(self.module.registry.lookup("alice@pbx.example.org")), 1)

    def test_authenticated_user_must_match(self) -> None:
        """RFC 3261 10.3 step 4: bob's credentials cannot register alice (403)."""

        class User:
            username = "bob"

        tx = self.reg("<sip:a@192.0.2.10>", user=User())
        self.assertEqual(tx.last.status, 403)
        self.assertEqual(self.module.registry.lookup(ALICE), [])

    def test_webrtc_bindings(self) -> None:
        """
        A binding is a WebRTC endpoint (RustPBX's supports_webrtc) when it
        registered over WS or WSS, when its Contact says transport=ws/wss
        (a browser behind an edge proxy), or when its user has
        is_support_webrtc; a desk phone over UDP is not.
        """
        from rustpbx_py.users import SipUser

        cases = [
            ("<sip:a@df7jal23ls0d.invalid;transport=ws>", FakeFlow(("192.0.2.10", 50000), "WSS"), None, True),
            ("<sip:a@df7jal23ls0d.invalid;transport=ws>", FakeFlow(("192.0.2.10", 50000), "WS"), None, True),
            ("<sip:a@192.0.2.10:5060;transport=wss>", FakeFlow(("192.0.2.10", 5060), "TLS"), None, True),
            ("<sip:a@192.0.2.10:5060>", FakeFlow(("192.0.2.10", 5060)), SipUser("alice", is_support_webrtc=True), True),
            ("<sip:a@192.0.2.10:5060>", FakeFlow(("192.0.2.10", 5060)), SipUser("alice"), False),
            ("<sip:a@192.0.2.10:5060>", FakeFlow(("192.0.2.10", 5060)), None, False),
        ]
        for cseq, (contact, flow, user, webrtc) in enumerate(cases, 1):
            tx = self.reg(contact, flow=flow, user=user, cseq=cseq, call_id=f"webrtc-{cseq}")
            self.assertEqual(tx.last.status, 200)
            (binding,) = [b for b in self.module.registry.lookup(ALICE) if b.call_id == f"webrtc-{cseq}"]
            self.assertEqual(binding.webrtc, webrtc, (contact, flow.transport, user))
            self.reg(contact, flow=flow, user=user, cseq=cseq + 100, call_id=f"webrtc-{cseq}", expires=0)

    def test_bad_contacts(self) -> None:
        """Malformed or non-SIP Contacts and a missing To user are 400s."""
        for contact in ("<sip:a@192.0.2.10", "<mailto:a@example.com>"):
            self.assertEqual(self.reg(contact).last.status, 400)
        self.assertEqual(self.reg("<sip:a@192.0.2.10>", to="sip:example.com").last.status, 400)

    def test_lookup_skips_expired_before_sweep(self) -> None:
        """The call path never gets an expired binding, swept or not."""
        self.reg("<sip:a@192.0.2.10>", expires=60)
        self.clock.advance(60)
        self.assertEqual(self.module.registry.lookup(ALICE), [])
        self.assertEqual(self.contacts(self.reg(cseq=2)), [])

    def test_sweep_memory(self) -> None:
        """The sweep timer drops expired bindings from memory."""
        registry = self.module.registry
        self.successResultOf(registry.start())
        self.reg("<sip:a@192.0.2.10>", expires=60)
        self.reg("<sip:b@192.0.2.11>", expires=600, call_id="2")
        self.clock.advance(61)
        self.assertEqual(list(registry._index), [ALICE])
        self.assertEqual(len(registry._index[ALICE]), 1)
        self.clock.advance(600)
        self.assertEqual(registry._index, {})
        self.successResultOf(registry.stop())


class NatDecisionTests(unittest.SynchronousTestCase):
    """L{needs_nat_fix}: when requests go to the source rather than the Contact."""

    def check(self, contact: str, source, transport: str = "UDP", nat_fix: bool = True, path: bool = False) -> bool:
        return needs_nat_fix(URI.parse(contact), source, transport, nat_fix, path)

    def test_private_and_shared_ranges(self) -> None:
        """RFC 1918 and RFC 6598 (100.64/10) contacts from elsewhere are rewritten."""
        for host in ("10.1.2.3", "172.16.0.9", "192.168.0.2", "100.64.1.1"):
            self.assertTrue(self.check(f"sip:a@{host}", ("203.0.113.1", 5060)), host)

    def test_same_address_not_rewritten(self) -> None:
        """A phone whose Contact is its source (LAN phone, public IP) keeps it."""
        self.assertFalse(self.check("sip:a@192.168.0.2", ("192.168.0.2", 5060)))
        self.assertFalse(self.check("sip:a@[2001:db8::1]:5080", ("2001:db8::1", 5080)))

    def test_udp_port_change(self) -> None:
        """A NAT that keeps the address but changes the UDP port is caught."""
        self.assertTrue(self.check("sip:a@198.51.100.7", ("198.51.100.7", 40000)))

    def test_stream_ephemeral_port(self) -> None:
        """Over TCP the source port is the connection's: only the host counts."""
        self.assertFalse(self.check("sip:a@198.51.100.7;transport=tcp", ("198.51.100.7", 40000), "TCP"))
        self.assertTrue(self.check("sip:a@10.0.0.7;transport=tcp", ("198.51.100.7", 40000), "TCP"))

    def test_hostname_trusted(self) -> None:
        """A Contact naming a host is left to DNS."""
        self.assertFalse(self.check("sip:a@phone.example.com", ("203.0.113.1", 5060)))

    def test_invalid_host_always(self) -> None:
        """RFC 7118 clients' .invalid hosts are reached by their source even with nat_fix off."""
        self.assertTrue(self.check("sip:x@df7jal23ls0d.invalid;transport=ws", ("203.0.113.1", 50000), "WS", nat_fix=False))

    def test_off_or_path(self) -> None:
        """nat_fix off, or a Path (an edge proxy does it), means no rewrite."""
        self.assertFalse(self.check("sip:a@10.0.0.1", ("203.0.113.1", 5060), nat_fix=False))
        self.assertFalse(self.check("sip:a@10.0.0.1", ("203.0.113.1", 5060), path=True))


class ContactTextTests(unittest.SynchronousTestCase):
    """How the 200 repeats a Contact's parameters."""

    def test_expires_removed_rest_verbatim(self) -> None:
        """Only expires goes; quoting and order of the others stay."""
        self.assertEqual(
            contact_params_text('"A;b" <sip:a@h;ob>;expires=60;+sip.instance="<urn:uuid:1>";q=0.5'),
            ';+sip.instance="<urn:uuid:1>";q=0.5',
        )

    def test_addr_spec(self) -> None:
        """
        An addr-spec Contact's parameters (Grandstream-style, no brackets)
        are found even when a quoted one contains angle brackets.
        """
        self.assertEqual(contact_params_text('sip:a@h;+sip.instance="<urn:uuid:1>";expires=30'), ';+sip.instance="<urn:uuid:1>"')
        self.assertEqual(contact_params_text("sip:a@h"), "")

    def test_destination_transport(self) -> None:
        """
        A Contact without transport= is reached over the transport it
        registered with; sips over TCP means TLS on 5061.
        """
        b = Binding(aor=ALICE, contact="sip:a@192.0.2.1", key="k", call_id="c", cseq=1, expires=60,
                    registered_at=0, transport="TCP", source=("192.0.2.1", 40000))
        self.assertEqual(b.destination, ("TCP", "192.0.2.1", 5060))
        b = Binding(aor=ALICE, contact="sips:a@192.0.2.1", key="k", call_id="c", cseq=1, expires=60,
                    registered_at=0, transport="TCP", source=("192.0.2.1", 40000))
        self.assertEqual(b.destination, ("TLS", "192.0.2.1", 5061))


class LiveFlowTests(unittest.SynchronousTestCase):
    """L{Binding.live_flow}: the call path's check that a phone's flow still works."""

    def binding(self, flow_id: Optional[str]) -> Binding:
        return Binding(aor=ALICE, contact="sip:a@10.0.0.2;transport=tcp", key="k", call_id="c", cseq=1,
                       expires=60, registered_at=0, transport="TCP", source=("203.0.113.5", 40000),
                       flow_id=flow_id, nat=True)

    def test_connected_closed_gone(self) -> None:
        """
        A connected flow is returned; a closed or forgotten one gives None,
        and the binding itself stays usable through its destination.
        """
        flow = FakeFlow(("203.0.113.5", 40000), "TCP")

        class Transports:
            flows = {flow.id: flow}

            def flow_by_id(self, flow_id):
                return self.flows.get(flow_id)

        transports = Transports()
        b = self.binding(flow.id)
        self.assertIs(b.live_flow(transports), flow)
        flow.connected = False
        self.assertIsNone(b.live_flow(transports))
        del transports.flows[flow.id]
        self.assertIsNone(b.live_flow(transports))
        self.assertIsNone(self.binding(None).live_flow(transports))
        self.assertEqual(b.destination, ("TCP", "203.0.113.5", 40000))


class WriteThroughTests(RegistrarTestsMixin, unittest.SynchronousTestCase):
    """
    The ordering of acknowledgement and commit, with a store whose writes
    finish only when the test fires them.
    """

    def setUp(self) -> None:
        self.fake = FakeStore()
        self.module = self.make_module(store=self.fake)

    def test_ok_only_after_commit(self) -> None:
        """The 200 waits for the database; until then lookups see nothing new."""
        d = self.send(self.module, register_request("<sip:a@192.0.2.10>"))
        self.assertNoResult(d)
        self.assertEqual(self.module.registry.lookup(ALICE), [])
        [(statements, write)] = self.fake.writes
        self.assertTrue(any(s.startswith("INSERT") for s, _ in statements))
        write.callback(None)
        tx = self.successResultOf(d)
        self.assertEqual(tx.last.status, 200)
        self.assertEqual(len(self.module.registry.lookup(ALICE)), 1)

    def test_failed_write(self) -> None:
        """A failed write answers 503 with Retry-After and changes nothing."""
        d = self.send(self.module, register_request("<sip:a@192.0.2.10>"))
        self.fake.writes[0][1].errback(RuntimeError("disk full"))
        tx = self.successResultOf(d)
        self.assertEqual((tx.last.status, tx.last.get("retry-after")), (503, "5"))
        self.assertEqual(self.module.registry.lookup(ALICE), [])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_group_commit(self) -> None:
        """
        REGISTERs arriving while a commit is in flight share the next
        transaction: three users, two commits.
        """
        ds = [
            self.send(self.module, register_request(f"<sip:u{i}@192.0.2.10>", to=f"sip:u{i}@example.com"))
            for i in range(3)
        ]
        self.assertEqual(len(self.fake.writes), 1)
        self.fake.writes[0][1].callback(None)
        self.assertEqual(self.successResultOf(ds[0]).last.status, 200)
        self.assertEqual(len(self.fake.writes), 2)
        self.assertEqual(len([s for s, _ in self.fake.writes[1][0] if s.startswith("INSERT")]), 2)
        self.assertNoResult(ds[1])
        self.fake.writes[1][1].callback(None)
        self.assertEqual([self.successResultOf(d).last.status for d in ds[1:]], [200, 200])
        self.assertEqual(self.module.registry.commits, 2)

    def test_failed_batch_retried_alone(self) -> None:
        """A batch that fails is retried one REGISTER at a time, so only the bad one fails."""
        first = self.send(self.module, register_request("<sip:u0@192.0.2.10>", to="sip:u0@example.com"))
        ds = [
            self.send(self.module, register_request(f"<sip:u{i}@192.0.2.10>", to=f"sip:u{i}@example.com"))
            for i in (1, 2)
        ]
        self.fake.writes[0][1].callback(None)
        self.successResultOf(first)
        self.fake.writes[1][1].errback(RuntimeError("constraint"))
        self.assertEqual(len(self.fake.writes), 3, "retried one at a time, in order")
        self.fake.writes[2][1].callback(None)
        self.assertEqual(len(self.fake.writes), 4)
        self.fake.writes[3][1].errback(RuntimeError("constraint"))
        self.assertEqual([self.successResultOf(d).last.status for d in ds], [200, 503])
        self.flushLoggedErrors(RuntimeError)

    def test_same_aor_serialised(self) -> None:
        """
        A second REGISTER of an AOR is checked only after the first
        committed, so a stale CSeq is caught even when both are in flight.
        """
        d1 = self.send(self.module, register_request("<sip:a@192.0.2.10>", cseq=5))
        d2 = self.send(self.module, register_request("<sip:a@192.0.2.10>", cseq=4))
        self.assertEqual(len(self.fake.writes), 1)
        self.fake.writes[0][1].callback(None)
        self.assertEqual(self.successResultOf(d1).last.status, 200)
        self.assertEqual(self.successResultOf(d2).last.status, 500)
        self.assertEqual(len(self.fake.writes), 1)

    def test_stop_waits_for_writes(self) -> None:
        """stop() fires only once pending writes are committed."""
        self.successResultOf(self.module.start())
        self.send(self.module, register_request("<sip:a@192.0.2.10>"))
        d = self.module.stop()
        self.assertNoResult(d)
        self.fake.writes[0][1].callback(None)
        self.successResultOf(d)


class RestartSurvivalMixin:
    """
    Bindings survive a restart on the database C{self.open_db()} opens
    (C{self.db} is the first connection, migrated): SQLite here, PostgreSQL
    in L{rustpbx_py.test.interop.test_postgresql}.
    """

    @defer.inlineCallbacks
    def test_restart_survival(self):
        """
        A binding acknowledged with 200 is found by a new registry on the
        same database file, with every field; bindings that expired while
        the service was down are dropped (from the table too).
        """
        module = self.make_module(store=self.db)
        yield module.start()
        inst = '+sip.instance="<urn:uuid:1>"'
        flow = FakeFlow(("203.0.113.50", 61000), "TCP", ("198.51.100.1", 5060))
        req = register_request(f"<sip:alice@10.0.0.2:5060;transport=tcp>;{inst};reg-id=1", expires=600,
                               headers=[("Path", "<sip:edge.example.net;lr>")])
        tx = yield self.send(module, req, flow)
        self.assertEqual(tx.last.status, 200)
        tx = yield self.send(module, register_request("<sip:bob@192.0.2.9>", expires=60, to="sip:bob@example.com"))
        self.assertEqual(tx.last.status, 200)
        [before] = module.registry.lookup(ALICE)
        yield module.stop()
        self.db.close()

        self.clock.advance(120)
        db = self.open_db()
        registry = Registry(db, self.clock)
        count = yield registry.start()
        self.assertEqual(count, 1)
        [after] = registry.lookup(ALICE)
        self.assertEqual(after.row(), before.row())
        self.assertEqual(after.path, ("<sip:edge.example.net;lr>",))
        self.assertEqual(after.flow_id, flow.id)
        self.assertEqual(after.instance, "<urn:uuid:1>")
        self.assertEqual(registry.lookup("bob@example.com"), [])
        rows = yield db.run_query("SELECT aor FROM registrations")
        self.assertEqual(rows, [(ALICE,)])
        yield registry.stop()


    @defer.inlineCallbacks
    def test_refresh_and_removal_rows(self):
        """
        A refresh rewrites its binding's row in place (one row, the new
        expiry); a REGISTER with expires 0 deletes the row; both as the
        table holds them after a restart.
        """
        module = self.make_module(store=self.db)
        yield module.start()
        for cseq, expires in ((1, 600), (2, 1200)):
            tx = yield self.send(module, register_request("<sip:alice@192.0.2.10>", expires=expires, cseq=cseq))
            self.assertEqual(tx.last.status, 200)
        tx = yield self.send(module, register_request("<sip:bob@192.0.2.9>", expires=600, to="sip:bob@example.com"))
        tx = yield self.send(
            module, register_request("<sip:bob@192.0.2.9>", expires=0, cseq=2, to="sip:bob@example.com")
        )
        self.assertEqual(tx.last.status, 200)
        yield module.stop()
        rows = yield self.db.run_query("SELECT aor, expires FROM registrations")
        self.assertEqual(rows, [(ALICE, 1200)])


class DatabaseTests(RestartSurvivalMixin, RegistrarTestsMixin, unittest.TestCase):
    """Persistence on a real SQLite file."""

    @defer.inlineCallbacks
    def setUp(self):
        self.path = os.path.abspath(self.mktemp()) + ".sqlite3"
        self.db = self.open_db()
        yield self.db.migrate()

    def open_db(self) -> Database:
        db = Database("sqlite:///" + self.path)
        self.addCleanup(db.close)
        return db

    @defer.inlineCallbacks
    def test_webrtc_survives_restart(self):
        """A binding's webrtc flag (here from the user's is_support_webrtc,
        over UDP) is stored, and a new registry on the file finds it."""
        from rustpbx_py.users import SipUser

        module = self.make_module(store=self.db)
        yield module.start()
        tx = yield self.send(module, register_request("<sip:alice@192.0.2.10>", expires=600), None, None,
                             SipUser("alice", is_support_webrtc=True))
        self.assertEqual(tx.last.status, 200)
        yield module.stop()
        registry = Registry(self.db, self.clock)
        yield registry.start()
        [binding] = registry.lookup(ALICE)
        self.assertTrue(binding.webrtc)
        rows = yield self.db.run_query("SELECT webrtc FROM registrations")
        self.assertEqual(rows, [(1,)])
        yield registry.stop()

    @defer.inlineCallbacks
    def test_updates_replace_rows(self):
        """
        Refreshes, instance replacement, removal and Contact: * leave the
        table matching memory.
        """
        module = self.make_module(store=self.db)
        inst = '+sip.instance="<urn:uuid:1>"'
        yield self.send(module, register_request(f"<sip:a@192.0.2.10:5060>;{inst};reg-id=1", cseq=1))
        yield self.send(module, register_request(f"<sip:a@192.0.2.10:5070>;{inst};reg-id=1", cseq=2))
        yield self.send(module, register_request("<sip:b@192.0.2.10>", "<sip:c@192.0.2.10>", cseq=3))
        yield self.send(module, register_request("<sip:b@192.0.2.10>;expires=0", cseq=4))
        rows = yield self.db.run_query("SELECT contact FROM registrations ORDER BY contact")
        self.assertEqual([r[0] for r in rows], ["sip:a@192.0.2.10:5070", "sip:c@192.0.2.10"])
        self.assertEqual(sorted(b.contact for b in module.registry.lookup(ALICE)), [r[0] for r in rows])
        tx = yield self.send(module, register_request("*", expires=0, cseq=5))
        self.assertEqual(tx.last.status, 200)
        rows = yield self.db.run_query("SELECT contact FROM registrations")
        self.assertEqual(rows, [])

    @defer.inlineCallbacks
    def test_sweep_database(self):
        """The sweep timer deletes expired rows from the database too."""
        module = self.make_module(store=self.db)
        yield module.start()
        yield self.send(module, register_request("<sip:a@192.0.2.10>", expires=60))
        yield self.send(module, register_request("<sip:b@192.0.2.10>", expires=600, call_id="2"))
        self.clock.advance(61)
        self.clock.advance(30)
        yield module.registry._writer.drained()
        rows = yield self.db.run_query("SELECT contact FROM registrations")
        self.assertEqual(rows, [("sip:b@192.0.2.10",)])
        self.assertEqual([b.contact for b in module.registry.lookup(ALICE)], ["sip:b@192.0.2.10"])
        yield module.stop()

    @defer.inlineCallbacks
    def test_concurrent_registers(self):
        """
        Two hundred REGISTERs of different users at once all get their 200
        and their row, in far fewer transactions.
        """
        module = self.make_module(store=self.db)
        ds = [
            self.send(module, register_request(f"<sip:u{i}@192.0.2.10:{5000 + i}>", to=f"sip:u{i}@example.com"))
            for i in range(200)
        ]
        txs = yield defer.gatherResults(ds)
        self.assertEqual({tx.last.status for tx in txs}, {200})
        rows = yield self.db.run_query("SELECT COUNT(*) FROM registrations")
        self.assertEqual(rows, [(200,)])
        self.assertLess(module.registry.commits, 200)


class PluginTests(unittest.SynchronousTestCase):
    """The plugin the service finds by name."""

    def test_found_and_built(self) -> None:
        """
        getPlugins finds a "registrar" IProxyModuleFactory; its module takes
        registrar_expires and nat_fix from the proxy config and exposes a
        registry that is the service's IRegistry/ILocator.
        """
        [factory] = [p for p in getPlugins(IProxyModuleFactory, rustpbx_py.plugins) if p.name == "registrar"]
        context = FakeServerContext(proxy_config(registrar_expires=120, nat_fix=False))
        module = factory.build(context)
        verifyObject(IProxyModule, module)
        verifyObject(IRegistry, module.registry)
        verifyObject(ILocator, module.registry)
        self.assertEqual((module.name, module.registrar_expires, module.nat_fix), ("registrar", 120, False))
        self.assertIs(module.registry.reactor, context.reactor)

    def test_out_of_order_is_an_exception(self) -> None:
        """OutOfOrder is what IRegistry.update fails with for stale CSeqs."""
        registry = Registry(None, task.Clock())
        b = Binding(aor=ALICE, contact="sip:a@h", key="k", call_id="c", cseq=2, expires=60,
                    registered_at=0, transport="UDP", source=("h", 5060))
        self.successResultOf(registry.update(ALICE, [b]))
        stale = Binding(aor=ALICE, contact="sip:a@h", key="k", call_id="c", cseq=2, expires=60,
                        registered_at=0, transport="UDP", source=("h", 5060))
        self.failureResultOf(registry.update(ALICE, [stale]), OutOfOrder)
