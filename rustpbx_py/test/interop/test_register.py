# -*- test-case-name: rustpbx_py.test.interop.test_register -*-
"""
The registrar against SIPp: a thousand users register over UDP and over
TCP (with digest when the auth module is present), every one gets 200, and
the bindings are still there after the service restarts on the same
database file.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import List, Tuple

from twisted.internet import defer, reactor
from twisted.plugin import getPlugins
from twisted.trial.unittest import SkipTest, TestCase

import rustpbx_py.plugins
from rustpbx_py.config import default_config
from rustpbx_py.interfaces import IProxyModuleFactory
from rustpbx_py.server import PbxService
from rustpbx_py.test.interop.support import require_tool, run_tool

SCENARIOS = os.path.join(os.path.dirname(__file__), "scenarios")
USERS = 1000
RATE = 200
REALM = "example.com"


def user(i: int) -> Tuple[str, str]:
    return f"u{i:04d}", f"pw-{i:04d}"


def write_injection_file(path: str, count: int) -> None:
    """
    A SIPp -inf file: the user name, then the credentials as a whole
    C{[authentication ...]} keyword (SIPp does not expand fields inside it).
    """
    with open(path, "w") as f:
        f.write("SEQUENTIAL\n")
        for i in range(count):
            name, password = user(i)
            f.write(f"{name};[authentication username={name} password={password}]\n")


class RegisterTests(TestCase):
    """SIPp registers many users; the registry holds them across a restart."""

    timeout = 180

    def setUp(self) -> None:
        self.sipp = require_tool("sipp")
        self.database_url = "sqlite:///" + os.path.abspath(self.mktemp()) + ".sqlite3"

    def config(self, modules: List[str]):
        # MD5 HA1s only: SIPp 3.6 answers only the first challenge and knows
        # only MD5, so the users must not make auth offer SHA-256 first.
        users = [
            {"username": name, "ha1": hashlib.md5(f"{name}:{REALM}:{password}".encode()).hexdigest()}
            for name, password in map(user, range(USERS))
        ]
        config = default_config(
            addr="127.0.0.1",
            realms=[REALM],
            udp_port=0,
            tcp_port=0,
            modules=modules,
            user_backends=[{"type": "memory", "users": users}],
        )
        config.database_url = self.database_url
        return config

    @defer.inlineCallbacks
    def start(self, modules: List[str]):
        """Start a PBX; stopped at the end of the test unless stopped before."""
        service = PbxService(self.config(modules), reactor)
        service.startService()

        def stop():
            if service.running:
                return service.stopService()

        self.addCleanup(stop)
        yield service.ready
        return service

    @defer.inlineCallbacks
    def sipp_register(self, service, scenario: str, transport: str):
        """Run C{scenario} for every user; fails the test unless SIPp exits 0."""
        inf = os.path.abspath(self.mktemp()) + ".csv"
        write_injection_file(inf, USERS)
        port = service.ports[transport]
        args = [
            self.sipp, f"127.0.0.1:{port}",
            "-sf", os.path.join(SCENARIOS, scenario),
            "-inf", inf,
            "-t", "u1" if transport == "UDP" else "t1",
            "-m", str(USERS), "-r", str(RATE),
            "-i", "127.0.0.1", "-p", "0",
            "-nostdin", "-timeout", "60", "-timeout_error",
            "-trace_err", "-error_file", os.path.abspath(self.mktemp()),
        ]
        started = time.monotonic()
        out, err, code = yield run_tool(args, timeout=120, cwd=os.path.dirname(inf))
        elapsed = time.monotonic() - started
        text = (out + err).decode("utf-8", "replace")
        self.assertEqual(code, 0, text[-3000:])
        return elapsed

    def auth_modules(self) -> List[str]:
        names = {p.name for p in getPlugins(IProxyModuleFactory, rustpbx_py.plugins)}
        if "auth" not in names:
            raise SkipTest("no 'auth' proxy module plugin yet: digest registration cannot be tested")
        return ["auth", "registrar"]

    def registered(self, service) -> List[str]:
        return service.context.locator.aors()

    @defer.inlineCallbacks
    def check_restart(self, service, modules: List[str], transport: str):
        """A new service on the same database finds every binding again."""
        aors = sorted(self.registered(service))
        self.assertEqual(len(aors), USERS)
        first = service.context.locator.lookup(aors[0])[0]
        yield service.stopService()
        again = yield self.start(modules)
        locator = again.context.locator
        self.assertEqual(sorted(locator.aors()), aors)
        [binding] = locator.lookup(aors[0])
        self.assertEqual(binding.row(), first.row())
        self.assertEqual(binding.transport, transport)

    @defer.inlineCallbacks
    def test_digest_udp_and_restart(self):
        """
        1000 users register with digest over UDP, all 200; after a restart
        on the same database every binding is found again.
        """
        modules = self.auth_modules()
        service = yield self.start(modules)
        yield self.sipp_register(service, "register_digest.xml", "UDP")
        yield self.check_restart(service, modules, "UDP")

    @defer.inlineCallbacks
    def test_digest_tcp(self):
        """
        1000 users register with digest over one TCP connection, all 200;
        the bindings record the connection's flow.
        """
        service = yield self.start(self.auth_modules())
        yield self.sipp_register(service, "register_digest.xml", "TCP")
        aors = self.registered(service)
        self.assertEqual(len(aors), USERS)
        # SIPp has exited and closed its connection: the bindings stay (the
        # phone would re-register) and name the flow they came over.
        binding = service.context.locator.lookup(aors[0])[0]
        self.assertEqual(binding.transport, "TCP")
        self.assertTrue(binding.flow_id.startswith("tcp:"), binding.flow_id)

    @defer.inlineCallbacks
    def test_open_udp_and_restart(self):
        """
        Without auth (registrar alone) 1000 users register over UDP, all 200,
        and survive a restart.
        """
        service = yield self.start(["registrar"])
        yield self.sipp_register(service, "register_open.xml", "UDP")
        yield self.check_restart(service, ["registrar"], "UDP")
