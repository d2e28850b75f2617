"""
Tests for L{rustpbx_py.reload}: routes, trunks and ACL rules swapped into a
running PBX (real core, transaction layer, UDP protocol and modules on a
L{task.Clock}, L{rustpbx_py.test.sip_phones}) without a restart; a bad
file keeps the old set.
"""

from __future__ import annotations

import os

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from rustpbx_py.config import generated_file
from rustpbx_py.generated import GeneratedFiles, write_atomic
from rustpbx_py.reload import ReloadError, reload_routing
from rustpbx_py.sip.message import parse_message
from rustpbx_py.test.sip_phones import Network, Phone

MAIN = """
[proxy]
realms = ["example.com"]
media_proxy = "none"

[proxy.trunks.carrier]
dest = "sip:192.0.2.50:5060"

[[proxy.user_backends]]
type = "memory"
users = [{ username = "alice", password = "pw-alice" }]
"""

ROUTE = '[[routes]]\nname = "out"\ndest = "carrier"\n[routes.match]\n"to.user" = "^9"\n'


class ReloadTests(SynchronousTestCase):
    """A running PBX takes new routes, trunks and ACL rules from a reload."""

    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(self.base)
        self.path = os.path.join(self.base, "pbx.toml")
        with open(self.path, "w") as f:
            f.write(MAIN)
        self.clock = task.Clock()
        self.clock.advance(1_000_000)
        self.net = Network(
            self.clock,
            realms=["example.com"],
            trunks={"carrier": {"dest": "sip:192.0.2.50:5060"}},
            user_backends=[{"type": "memory", "users": [{"username": "alice", "password": "pw-alice"}]}],
        )
        self.addCleanup(self.net.stop)
        self.context = self.net.module("call").context
        # The running configuration came from this file.
        self.context.config.path = self.path
        self.context.config.proxy.generated_dir = os.path.join(self.base, "config")
        self.alice = Phone(self.net, "alice", "pw-alice", ("203.0.113.10", 5060))
        self.gen = os.path.join(self.base, "config")

    def write(self, kind: str, text: str) -> None:
        write_atomic(generated_file(self.gen, kind), text)

    def invites_to(self, host: str) -> list:
        return [parse_message(d) for d, addr in self.net.lost if addr[0] == host and d.startswith(b"INVITE ")]

    def test_new_route_routes_the_next_call(self) -> None:
        """Before the reload 9001 is no one (404); after it, the new route
        sends the same call to the carrier trunk."""
        self.alice.call("9001", 5)
        self.assertEqual(self.alice.answers[-1], ("INVITE", 404))
        self.assertEqual(self.invites_to("192.0.2.50"), [])
        self.write("routes", ROUTE)
        result = reload_routing(self.context)
        self.assertEqual((result.routes, result.trunks), (1, 1))
        self.alice.call("9001", 5)
        (invite,) = self.invites_to("192.0.2.50")
        self.assertEqual(invite.uri, "sip:9001@192.0.2.50:5060")
        self.assertEqual([r.name for r in self.context.config.proxy.routes], ["out"])

    def test_new_trunk(self) -> None:
        """A trunk added by a reload is used by a route of the same reload,
        and the ACL recognises requests from it."""
        self.write("trunks", '[trunks.second]\ndest = "sip:192.0.2.60"\n')
        self.write("routes", ROUTE.replace('"carrier"', '"second"'))
        reload_routing(self.context)
        self.alice.call("9002", 5)
        self.assertEqual(len(self.invites_to("192.0.2.60")), 1)
        self.assertEqual(self.net.module("acl").trunks.for_source("192.0.2.60"), "second")
        self.assertIs(self.net.module("acl").trunks, self.net.module("call").trunks)

    def test_bad_file_keeps_the_old_set(self) -> None:
        """A route naming no trunk is refused with the loader's message and
        the running routes stay."""
        self.write("routes", ROUTE)
        reload_routing(self.context)
        self.write("routes", ROUTE.replace('"carrier"', '"nowhere"'))
        with self.assertRaises(ReloadError) as caught:
            reload_routing(self.context)
        (problem,) = caught.exception.problems
        self.assertIn("routes.generated.toml: routes[0].dest", problem)
        self.assertIn('found "nowhere"', problem)
        self.alice.call("9003", 5)
        self.assertEqual(len(self.invites_to("192.0.2.50")), 1)

    def test_acl_rules(self) -> None:
        """New ACL rules apply to the next request: a denied source gets no
        answer at all."""
        self.write("acl", 'acl_rules = ["deny 203.0.113.10", "allow all"]\n')
        reload_routing(self.context)
        self.alice.options()
        self.assertEqual(self.alice.answers, [])
        bob = Phone(self.net, "bob", None, ("203.0.113.11", 5060))
        bob.options()
        self.assertEqual(bob.answers, [("OPTIONS", 200)])

    def test_calls_in_progress_keep_counting(self) -> None:
        """A call up over a trunk still counts against it after a reload,
        and ends cleanly even when the reload removed the trunk."""
        trunks = self.net.module("call").trunks
        trunks.call_started("carrier")
        self.write("trunks", '[trunks.carrier]\ndest = "sip:192.0.2.51"\n')
        reload_routing(self.context)
        self.assertEqual(trunks.active_calls("carrier"), 1)
        self.assertEqual(trunks.destination("carrier").host, "192.0.2.51")
        self.write("trunks", '[trunks.other]\ndest = "sip:192.0.2.52"\n')
        with open(self.path, "w") as f:
            f.write(MAIN.replace("[proxy.trunks.carrier]\ndest = \"sip:192.0.2.50:5060\"\n", ""))
        reload_routing(self.context)
        trunks.call_ended("carrier")
        self.assertEqual(trunks.names(), ["other"])


class GeneratedFilesTests(SynchronousTestCase):
    """Routes, trunks and ACL rules written by the console in RustPBX's
    formats, checked by the loader before they are written."""

    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(self.base)
        self.path = os.path.join(self.base, "pbx.toml")
        with open(self.path, "w") as f:
            f.write(MAIN)
        self.files = GeneratedFiles(self.path)
        self.config = self.files.load()

    def test_routes_round_trip(self) -> None:
        """Route tables written as routes/routes.generated.toml are read
        back by load_config as the same routes."""
        routes = [{"name": "out", "priority": 5, "dest": "carrier", "match": {"to.user": "^9(.*)"}, "rewrite": {"to.user": "{1}"}}]
        loaded = self.files.write(self.config, "routes", routes)
        path = os.path.join(self.base, "config", "routes", "routes.generated.toml")
        self.assertTrue(os.path.isfile(path))
        from rustpbx_py.config import load_config

        again = load_config(self.path)
        for config in (loaded, again):
            (route,) = config.proxy.routes
            self.assertEqual((route.name, route.priority, route.dest), ("out", 5, ["carrier"]))
            self.assertEqual(route.rewrite, {"to.user": "{1}"})
        self.assertEqual(self.files.document(again, "routes"), routes)

    def test_refused_route_not_written(self) -> None:
        """A wrong route is refused with the loader's message, by field, and
        no file is written."""
        from rustpbx_py.generated import Problems

        with self.assertRaises(Problems) as caught:
            self.files.write(self.config, "routes", [{"name": "r", "priority": "high"}])
        self.assertEqual(list(caught.exception.fields), ["routes"])
        self.assertIn("routes[0].priority: expected an integer", caught.exception.fields["routes"][0])
        self.assertFalse(os.path.exists(os.path.join(self.base, "config", "routes")))

    def test_trunks_and_acl(self) -> None:
        loaded = self.files.write(self.config, "trunks", {"t2": {"dest": "sip:192.0.2.9", "max_calls": 3, "inbound_hosts": ["192.0.2.0/28"]}})
        self.assertEqual(loaded.proxy.trunks["t2"].max_calls, 3)
        loaded = self.files.write(self.config, "acl", ["allow 10.0.0.0/8", "deny all"])
        self.assertEqual([r.text for r in loaded.proxy.acl_rules], ["allow 10.0.0.0/8", "deny all"])


class HealthAcrossReloadTests(SynchronousTestCase):
    """Trunk OPTIONS probes (trunk_health) follow a reload: an unchanged
    trunk keeps its probe and health, a changed one gets a new probe, a
    removed one's probe stops."""

    def setUp(self) -> None:
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        self.path = os.path.join(base, "pbx.toml")
        self.main = MAIN.replace('dest = "sip:192.0.2.50:5060"\n', 'dest = "sip:192.0.2.50:5060"\nhealth_check_enabled = true\n')
        with open(self.path, "w") as f:
            f.write(self.main)
        self.clock = task.Clock()
        self.net = Network(self.clock, trunks={"carrier": {"dest": "sip:192.0.2.50:5060", "health_check_enabled": True}})
        self.addCleanup(self.net.stop)
        self.context = self.net.module("call").context
        self.context.config.path = self.path
        self.context.config.proxy.generated_dir = os.path.join(base, "config")
        self.clock.advance(0)  # the call module starts the probes on the next turn
        self.health = self.net.module("call").trunk_health

    def test_follow(self) -> None:
        trunks = self.net.module("call").trunks
        reload_routing(self.context)  # the running trunks now come from the file
        probe = self.health.probes["carrier"]
        state = trunks.health("carrier")
        reload_routing(self.context)
        self.assertIs(self.health.probes["carrier"], probe)
        self.assertIs(trunks.health("carrier"), state)
        self.assertTrue(probe.running)
        write_atomic(generated_file(self.context.config.proxy.generated_dir, "trunks"),
                     '[trunks.carrier]\ndest = "sip:192.0.2.51"\nhealth_check_enabled = true\n')
        reload_routing(self.context)
        self.assertFalse(probe.running)
        self.assertIsNot(self.health.probes["carrier"], probe)
        self.assertEqual(self.health.probes["carrier"].destination.host, "192.0.2.51")
        with open(self.path, "w") as f:
            f.write(self.main.replace("[proxy.trunks.carrier]", "[proxy.trunks.other]"))
        write_atomic(generated_file(self.context.config.proxy.generated_dir, "trunks"), None)
        second = self.health.probes["carrier"]
        reload_routing(self.context)
        self.assertFalse(second.running)
        self.assertEqual(list(self.health.probes), ["other"])
