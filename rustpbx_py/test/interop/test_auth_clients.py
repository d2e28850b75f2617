# -*- test-case-name: rustpbx_py.test.interop.test_auth_clients -*-
"""
Logging in with real clients: Debian's baresip registers a password user
with the default challenge (one MD5 header, C{qop="auth"}), and does not
with the two-header challenge the PBX used to send, which is why the
default changed.
"""

from __future__ import annotations

import os

from twisted.internet import defer, task
from twisted.trial.unittest import TestCase

from rustpbx_py.registrar import make_aor
from rustpbx_py.test.interop.support import require_tool, run_tool, start_pbx
from rustpbx_py.test.interop.test_protection import spy_udp, statuses

BARESIP_CONFIG = """\
poll_method\t\tepoll
sip_listen\t\t127.0.0.1:0
module_path\t\t/usr/lib/baresip/modules
module\t\t\tg711.so
module_app\t\taccount.so
audio_player\t\taufile,/dev/null
audio_source\t\taufile,/dev/null
"""


def baresip_home(testcase, account: str) -> str:
    """A baresip configuration directory with one account line."""
    home = os.path.abspath(testcase.mktemp())
    os.makedirs(home)
    with open(os.path.join(home, "config"), "w") as f:
        f.write(BARESIP_CONFIG)
    with open(os.path.join(home, "accounts"), "w") as f:
        f.write(account + "\n")
    return home


class BaresipLoginTests(TestCase):
    """baresip (libre's digest client) against the auth module."""

    timeout = 60

    def setUp(self) -> None:
        self.baresip = require_tool("baresip")
        if not os.path.isdir("/usr/lib/baresip/modules"):
            from twisted.trial.unittest import SkipTest

            raise SkipTest("baresip modules are not installed in /usr/lib/baresip/modules")

    @defer.inlineCallbacks
    def register(self, **proxy):
        """
        Run baresip for a few seconds with a password account against a PBX
        with C{proxy} settings: (the user's bindings, baresip's SIP trace).
        """
        proxy.setdefault("user_backends", [{"type": "memory", "users": [{"username": "1001", "password": "s3cret-1001"}]}])
        service = yield start_pbx(self, tcp_port=None, **proxy)
        port = service.ports["UDP"]
        account = f"<sip:1001@127.0.0.1:{port};transport=udp>;auth_pass=s3cret-1001;regint=60"
        home = baresip_home(self, account)
        registry = next(m for m in service.modules if m.name == "registrar").registry
        seen = []

        def watch():
            # baresip un-registers when it quits: look while it runs.
            bindings = registry.lookup(make_aor("1001", "127.0.0.1"))
            if len(bindings) > len(seen):
                seen[:] = bindings

        watcher = task.LoopingCall(watch)
        watcher.start(0.1)
        try:
            out, err, code = yield run_tool([self.baresip, "-f", home, "-s", "-t", "3"], timeout=20)
        finally:
            watcher.stop()
        return seen, (out + err).decode("utf-8", "replace")

    @defer.inlineCallbacks
    def test_registers_with_default_challenge(self):
        """With the default config baresip answers the single MD5 401 and is
        registered (its trace shows the 200)."""
        bindings, trace = yield self.register()
        self.assertIn("401 Unauthorized", trace)
        self.assertIn("SIP/2.0 200 OK", trace)
        self.assertEqual(len(bindings), 1, trace[-3000:])
        self.assertIn("127.0.0.1", bindings[0].contact)

    @defer.inlineCallbacks
    def test_two_challenges_break_baresip(self):
        """A 401 with two challenges -- the former default (MD5 then SHA-256)
        or the RFC 8760 order (SHA-256 then MD5) -- leaves baresip 1.0
        unregistered ("Register: Function not implemented"): the reason the
        default is one MD5 challenge and the README warns about SHA-256."""
        for algorithms in (["MD5", "SHA-256"], ["SHA-256", "MD5"]):
            bindings, trace = yield self.register(auth_algorithms=algorithms)
            self.assertIn("algorithm=SHA-256", trace)
            self.assertIn("Function not implemented", trace)
            self.assertEqual(bindings, [], algorithms)


def _sipvicious_target(port: int) -> str:
    return f"udp://127.0.0.1:{port}"


#: What a scanner that hides from C{ua_black_list} says it is.
CHANGED_USER_AGENT = "Zoiper rv2.10.20.1"

#: Runs a sipvicious tool (module name in sys.argv[2]) with the User-Agent
#: in sys.argv[1] instead of its own "friendly-scanner": sipvicious 0.3 has
#: no option for it, so the default of its request builder is changed.
_WITH_USER_AGENT = """\
import importlib, sys
sys.path.insert(0, sys.argv.pop(1))
from sipvicious.libs import svhelper
user_agent, tool = sys.argv.pop(1), sys.argv.pop(1)
defaults = list(svhelper.makeRequest.__defaults__)
defaults[defaults.index("friendly-scanner")] = user_agent
svhelper.makeRequest.__defaults__ = tuple(defaults)
sys.argv[0] = tool
sys.exit(importlib.import_module("sipvicious." + tool).main())
"""


def sipvicious_as(tool: str, user_agent: str) -> list:
    """
    The command line of sipvicious' C{tool} (svmap, svwar, svcrack) sending
    C{User-Agent: user_agent}: the interpreter of the installed script,
    with the package directory Debian installs it in.
    """
    import glob

    path = require_tool(tool)
    with open(path) as f:
        interpreter = f.readline()[2:].strip().split()[0]
    homes = [os.path.dirname(d) for d in glob.glob("/usr/share/sipvicious/sipvicious") + glob.glob("/usr/lib/python3/dist-packages/sipvicious")]
    if not homes:
        from twisted.trial.unittest import SkipTest

        raise SkipTest("sipvicious' package directory not found")
    return [interpreter, "-c", _WITH_USER_AGENT, homes[0], user_agent, tool]


class SipviciousTests(TestCase):
    """sipvicious against the default configuration (ensure_user, login guard)."""

    timeout = 120

    @defer.inlineCallbacks
    def pbx(self, **proxy):
        """
        A PBX with users 1001 and 1002.  sipvicious 0.3 always sends
        C{User-Agent: friendly-scanner}, which the default C{ua_black_list}
        silences; the tests pass C{ua_black_list=[]} to meet the PBX as a
        scanner with a changed User-Agent would.
        """
        users = [{"username": "1001", "password": "dragon42"}, {"username": "1002", "password": "s3cret-1002"}]
        service = yield start_pbx(self, tcp_port=None, user_backends=[{"type": "memory", "users": users}], **proxy)
        return service, next(m for m in service.modules if m.name == "auth")

    @defer.inlineCallbacks
    def test_stock_tools_silenced(self):
        """Stock svwar and svcrack (User-Agent friendly-scanner) get no answer at all."""
        svwar, svcrack = require_tool("svwar"), require_tool("svcrack")
        service, auth = yield self.pbx()
        target = _sipvicious_target(service.ports["UDP"])
        out, err, _ = yield run_tool([svwar, "-e", "1000-1005", "--force", "--maximumtime=3", target], timeout=60)
        self.assertNotIn("1001", (out + err).decode("utf-8", "replace"))
        out, err, _ = yield run_tool([svcrack, "-u", "1001", "-r", "1-10", "--maximumtime=3", target], timeout=60)
        self.assertIn("no server response", (out + err).decode("utf-8", "replace"))
        self.assertEqual(len(auth.guard), 0, "nothing reached the auth module")

    @defer.inlineCallbacks
    def test_svcrack_banned(self):
        """
        svcrack with a 100-word list holding the password at position 50: the
        PBX checks 5 guesses, answers 4 of them late, then bans 127.0.0.1, so
        svcrack gives up without the password.
        """
        svcrack = require_tool("svcrack")
        service, auth = yield self.pbx(ua_black_list=[])
        words = os.path.abspath(self.mktemp())
        with open(words, "w") as f:
            f.write("\n".join([f"wrong{i}" for i in range(49)] + ["dragon42"] + [f"later{i}" for i in range(50)]) + "\n")
        out, err, code = yield run_tool(
            [svcrack, "-u", "1001", "-d", words, "--maximumtime=5", _sipvicious_target(service.ports["UDP"])],
            timeout=90,
        )
        text = (out + err).decode("utf-8", "replace")
        self.assertNotIn("dragon42", text)
        self.assertTrue(auth.guard.banned("127.0.0.1"), text[-2000:])
        self.assertIsNotNone(code, "svcrack ended by itself")

    @defer.inlineCallbacks
    def test_svwar_finds_nothing(self):
        """
        svwar over extensions 900-1100 (1001 and 1002 exist): its first probe
        (a random extension) gets no answer, so svwar gives up ("found
        nothing"); had it gone on, five unknown extensions would have banned
        it (EnumerationTests in test_guard shows that with a script).
        """
        svwar = require_tool("svwar")
        service, auth = yield self.pbx(ua_black_list=[])
        out, err, code = yield run_tool(
            [svwar, "-e", "900-1100", "--force", "--maximumtime=5", _sipvicious_target(service.ports["UDP"])],
            timeout=90,
        )
        text = (out + err).decode("utf-8", "replace")
        self.assertIn("found nothing", text)
        self.assertNotIn("1001", text)
        self.assertNotIn("1002", text)
        self.assertTrue(auth.guard.banned("127.0.0.1") or 1 <= auth.guard.failures("127.0.0.1") <= 5, text[-2000:])

    @defer.inlineCallbacks
    def test_changed_user_agent_svcrack(self):
        """
        svcrack calling itself Zoiper (so the User-Agent black list does
        not see it) against the default configuration, with a 100-word list
        holding the password at position 50: the PBX checks 5 guesses (the
        answers held back 1, 2, 3, 4 s), then bans 127.0.0.1 for
        auth_ban_time (900 s) and answers nothing more; svcrack ends without
        the password.  5 guesses per 15 minutes at most, then fewer (each
        further ban doubles, up to a day).
        """
        command = sipvicious_as("svcrack", CHANGED_USER_AGENT)
        service, auth = yield self.pbx()
        sent = spy_udp(service)
        # How much had been sent when the ban fell: only the held-back 403s
        # of the guesses checked before it may follow (svcrack does not wait
        # for them), no new challenge.
        at_ban = []
        ban = auth.guard._ban
        auth.guard._ban = lambda key, now: (at_ban.append(len(sent)), ban(key, now))[1]
        words = os.path.abspath(self.mktemp())
        with open(words, "w") as f:
            f.write("\n".join([f"wrong{i}" for i in range(49)] + ["dragon42"] + [f"later{i}" for i in range(50)]) + "\n")
        out, err, code = yield run_tool(
            [*command, "-u", "1001", "-d", words, "--maximumtime=5", _sipvicious_target(service.ports["UDP"])],
            timeout=90,
        )
        text = (out + err).decode("utf-8", "replace")
        self.assertNotIn("dragon42", text)
        self.assertTrue(auth.guard.banned("127.0.0.1"), text[-2000:])
        codes = statuses(sent, retransmissions=False)
        self.assertNotIn(200, codes, text[-2000:])
        # One challenge per guess, and a 403 for the four guesses before the
        # ban (a challenge or 403 sent again to svcrack's retransmission of
        # the same request, when the held-back answer was slow, counts once).
        self.assertEqual(codes.count(403), 4, (codes, text[-2000:]))
        self.assertLessEqual(codes.count(401), 6, (codes, text[-2000:]))
        self.assertEqual(len(at_ban), 1, at_ban)
        self.assertEqual([c for c in statuses(sent[at_ban[0]:]) if c != 403], [], "a challenge after the ban")

    @defer.inlineCallbacks
    def test_changed_user_agent_svwar(self):
        """
        svwar calling itself Zoiper against the default configuration, over
        extensions 900-1100 (1001 and 1002 exist): no datagram tells it
        anything (unknown extensions get silence, ensure_user), and it
        finds nothing.
        """
        command = sipvicious_as("svwar", CHANGED_USER_AGENT)
        service, auth = yield self.pbx()
        sent = spy_udp(service)
        out, err, code = yield run_tool(
            [*command, "-e", "900-1100", "--force", "--maximumtime=5", _sipvicious_target(service.ports["UDP"])],
            timeout=90,
        )
        text = (out + err).decode("utf-8", "replace")
        self.assertNotIn("1001", text)
        self.assertNotIn("1002", text)
        self.assertEqual(statuses(sent), [], text[-2000:])

    @defer.inlineCallbacks
    def test_changed_user_agent_svmap(self):
        """
        svmap calling itself Zoiper against the default configuration finds
        nothing: its OPTIONS names extension 100, which does not exist here,
        so ensure_user's silence answers it as it answers svwar; no datagram
        leaves the PBX.  (Where extension 100 exists, svmap finds a SIP
        server, as test_protection.test_svmap_control shows, and learns the
        configured C{useragent}, nothing more.)
        """
        command = sipvicious_as("svmap", CHANGED_USER_AGENT)
        service, auth = yield self.pbx()
        sent = spy_udp(service)
        out, err, code = yield run_tool([*command, "127.0.0.1", "-p", str(service.ports["UDP"])], timeout=90)
        text = (out + err).decode("utf-8", "replace")
        self.assertIn("found nothing", text)
        self.assertEqual(sent, [], text[-2000:])
