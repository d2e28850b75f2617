"""
Tests for L{rustpbx_py.settings} (Settings > Proxy Settings) and the
settings file it writes, C{generated_dir/proxy.generated.toml}, which
L{rustpbx_py.config.load_config} merges over C{[proxy]}.
"""

from __future__ import annotations

import os

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from rustpbx_py.config import ConfigError, load_config
from rustpbx_py.generated import Problems
from rustpbx_py.settings import LIVE_KEYS, ProxySettings, fields, form_text, parse_form_value
from rustpbx_py.test.sip_phones import Network, Phone

MAIN = """
[proxy]
udp_port = 0
realms = ["example.com"]
media_proxy = "none"
audio_codecs = ["pcmu"]

[[proxy.user_backends]]
type = "memory"
users = [{ username = "alice", password = "pw-alice" }, { username = "bob", password = "pw-bob" }]
"""


def tree(testcase: SynchronousTestCase, main: str = MAIN, files: dict = {}) -> str:
    base = os.path.abspath(testcase.mktemp())
    os.makedirs(base)
    for name, text in {"pbx.toml": main, **files}.items():
        path = os.path.join(base, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    return os.path.join(base, "pbx.toml")


class SettingsFileTests(SynchronousTestCase):
    """proxy.generated.toml is merged over [proxy] by the loader."""

    def test_merged_over_proxy(self) -> None:
        """A key of the settings file replaces the main file's (an alias
        included); the others stay."""
        path = tree(self, files={"config/proxy.generated.toml": '[proxy]\nrealms = ["b.example"]\ncodecs = ["pcma"]\n'})
        config = load_config(path)
        self.assertEqual(config.proxy.realms, ["b.example"])
        self.assertEqual(config.proxy.codecs, ["pcma"])
        self.assertEqual(config.proxy.udp_port, 0)

    def test_follows_generated_dir(self) -> None:
        path = tree(
            self,
            MAIN.replace("[proxy]\n", '[proxy]\ngenerated_dir = "gen"\n'),
            {"gen/proxy.generated.toml": "[proxy]\nmax_contacts = 3\n", "config/proxy.generated.toml": "[proxy]\nmax_contacts = 4\n"},
        )
        self.assertEqual(load_config(path).proxy.max_contacts, 3)

    def test_wrong_value_named_in_its_file(self) -> None:
        """A wrong value is reported naming the settings file and key, with
        the message the main file would give; keys with their own files
        (routes, trunks, ACL, users) and generated_dir are refused."""
        path = tree(self, files={"config/proxy.generated.toml": '[proxy]\nudp_port = "abc"\nroutes = []\ngenerated_dir = "x"\n[other]\n'})
        with self.assertRaises(ConfigError) as caught:
            load_config(path)
        problems = caught.exception.problems
        self.assertEqual(len(problems), 4, problems)
        self.assertIn('proxy.generated.toml: proxy.udp_port: expected an integer port 0-65535, found "abc"', problems[1])
        main = tree(self, MAIN.replace("udp_port = 0", 'udp_port = "abc"'))
        with self.assertRaises(ConfigError) as caught:
            load_config(main)
        self.assertEqual(caught.exception.problems[0].split(": ", 1)[1], problems[1].split(": ", 1)[1])
        self.assertTrue(any("proxy.routes: unknown key or one the proxy settings file may not set" in p for p in problems))
        self.assertTrue(any("proxy.generated_dir: unknown key" in p for p in problems))
        self.assertTrue(any(p.endswith("other: unknown key (the proxy settings file holds only [proxy])") for p in problems))

    def test_text_in_place_of_file(self) -> None:
        """load_config(generated=...) checks a text before it is written;
        None stands for no file."""
        path = tree(self, files={"config/proxy.generated.toml": "[proxy]\nmax_contacts = 4\n"})
        self.assertEqual(load_config(path, generated={"proxy": "[proxy]\nmax_contacts = 5\n"}).proxy.max_contacts, 5)
        self.assertEqual(load_config(path, generated={"proxy": None}).proxy.max_contacts, 10)


class FormTests(SynchronousTestCase):
    """The form's fields and their text."""

    def test_fields(self) -> None:
        by_key = {f.key: f for f in fields()}
        self.assertEqual(by_key["realms"].kind, "list")
        self.assertFalse(by_key["realms"].live)
        self.assertEqual(by_key["realms"].id, "field-realms")
        self.assertEqual(by_key["media_proxy"].choices, ("auto", "all", "none", "nat", "bypass"))
        self.assertTrue(by_key["tcp_port"].optional)
        for excluded in ("routes", "trunks", "acl_rules", "user_backends", "generated_dir", "routes_files"):
            self.assertNotIn(excluded, by_key)
        self.assertTrue(set(LIVE_KEYS) <= set(by_key))

    def test_parse(self) -> None:
        by_key = {f.key: f for f in fields()}
        self.assertEqual(parse_form_value(by_key["realms"], "a.example\r\n b.example ,c.example\n\n"), ["a.example", "b.example", "c.example"])
        self.assertEqual(parse_form_value(by_key["realms"], ""), [])
        self.assertEqual(parse_form_value(by_key["udp_port"], "5070"), 5070)
        self.assertEqual(parse_form_value(by_key["udp_port"], "abc"), "abc")
        self.assertEqual(parse_form_value(by_key["udp_port"], " "), None)
        self.assertEqual(parse_form_value(by_key["ensure_user"], "false"), False)
        self.assertEqual(parse_form_value(by_key["auth_failure_delay"], "2.5"), 2.5)
        self.assertEqual(form_text(by_key["realms"], ["a", "b"]), "a\nb")
        self.assertEqual(form_text(by_key["ensure_user"], True), "true")


class SaveTests(SynchronousTestCase):
    """Saving from the console: checked, written to generated_dir, applied
    at once or at the next start."""

    def setUp(self) -> None:
        self.path = tree(self)
        self.clock = task.Clock()
        self.clock.advance(1_000_000)
        self.net = Network(
            self.clock,
            realms=["example.com"],
            codecs=["pcmu"],
            user_backends=[{"type": "memory", "users": [{"username": "alice", "password": "pw-alice"}, {"username": "bob", "password": "pw-bob"}]}],
        )
        self.addCleanup(self.net.stop)
        self.context = self.net.module("call").context
        # The running configuration came from this file (the PBX of
        # sip_phones is built without one: take its paths).
        self.context.config.path = self.path
        loaded = load_config(self.path)
        self.context.config.proxy.generated_dir = loaded.proxy.generated_dir
        self.context.config.proxy.queue_dir = loaded.proxy.queue_dir
        self.settings = ProxySettings(self.context)
        self.file = os.path.join(os.path.dirname(self.path), "config", "proxy.generated.toml")
        with open(self.path) as f:
            self.main_text = f.read()

    def test_realms_need_a_restart(self) -> None:
        """New realms are written and loaded at the next start; the running
        PBX keeps its realms and says a restart is needed."""
        result = self.settings.save({"realms": ["example.com", "voice.example"]})
        self.assertEqual((result.applied, result.restart), ([], ["realms"]))
        self.assertEqual(self.context.config.proxy.realms, ["example.com"])
        self.assertEqual(load_config(self.path).proxy.realms, ["example.com", "voice.example"])
        current = self.settings.current()["realms"]
        self.assertEqual((current["value"], current["source"], current["pending"], current["live"]), (["example.com", "voice.example"], "settings", True, False))
        with open(self.path) as f:
            self.assertEqual(f.read(), self.main_text)

    def test_wrong_value_by_field(self) -> None:
        """A wrong value is refused with the loader's message next to its
        field; nothing is written or applied."""
        with self.assertRaises(Problems) as caught:
            self.settings.save({"udp_port": "abc", "max_contacts": 0, "ua_black_list": ["x"]})
        self.assertEqual(caught.exception.fields, {
            "udp_port": ['proxy.udp_port: expected an integer port 0-65535, found "abc"'],
            "max_contacts": ["proxy.max_contacts: expected an integer >= 1, found 0"],
        })
        self.assertFalse(os.path.exists(self.file))
        self.assertEqual(self.net.module("acl").black_list, ["friendly-scanner", "pplsip"])

    def test_cross_key_check(self) -> None:
        """Checks between keys (t1x64_timer >= t1_timer) name their field too."""
        with self.assertRaises(Problems) as caught:
            self.settings.save({"t1x64_timer": 100})
        self.assertEqual(list(caught.exception.fields), ["t1x64_timer"])

    def test_same_as_file_not_kept(self) -> None:
        """A value equal to the main file's (or the default) is not written;
        with nothing left the settings file goes."""
        self.settings.save({"max_contacts": 3})
        self.assertTrue(os.path.exists(self.file))
        self.settings.save({"max_contacts": 10, "realms": ["example.com"]})
        self.assertFalse(os.path.exists(self.file))

    def test_user_agent_lists_apply_at_once(self) -> None:
        """ua_black_list: the next request from a listed User-Agent is
        dropped without a word."""
        alice = Phone(self.net, "alice", "pw-alice", ("203.0.113.10", 5060))
        alice.options()
        self.assertEqual(alice.answers, [("OPTIONS", 200)])
        result = self.settings.save({"ua_black_list": ["officephone"]})
        self.assertEqual(result.applied, ["ua_black_list"])
        alice.options()
        self.assertEqual(alice.answers, [("OPTIONS", 200)])

    def test_max_contacts_applies_at_once(self) -> None:
        """max_contacts: the next REGISTER beyond the new limit gets 403."""
        self.settings.save({"max_contacts": 1})
        alice = Phone(self.net, "alice", "pw-alice", ("203.0.113.10", 5060), ("10.0.0.2", 5060))
        alice.register()
        other = Phone(self.net, "alice", "pw-alice", ("203.0.113.11", 5060), ("10.0.0.3", 5060))
        other.register()
        self.assertEqual(alice.answers, [("REGISTER", 401), ("REGISTER", 200)])
        self.assertEqual(other.answers, [("REGISTER", 401), ("REGISTER", 403)])

    def test_frequency_limiter_applies_at_once(self) -> None:
        """frequency_limiter: a source over the new limit is dropped."""
        self.settings.save({"frequency_limiter": "2/60s"})
        alice = Phone(self.net, "alice", "pw-alice", ("203.0.113.10", 5060))
        for _ in range(4):
            alice.options("sip:nobody@example.com")
        self.assertEqual(len(alice.answers), 2)

    def test_callid_suffix_applies_at_once(self) -> None:
        """callid_suffix (read per call): the next call's B leg carries the
        new Call-ID host."""
        bob = Phone(self.net, "bob", "pw-bob", ("203.0.113.20", 5060), ("10.0.0.20", 5060))
        bob.register()
        alice = Phone(self.net, "alice", "pw-alice", ("203.0.113.10", 5060))
        self.settings.save({"callid_suffix": "pbx.example"})
        alice.call("bob", 5)
        ((invite, _),) = bob._incoming.values()
        self.assertTrue(invite.call_id.endswith("@pbx.example"), invite.call_id)

    def test_every_live_key_changes_the_running_value(self) -> None:
        """Each live key, saved, is the running value at once."""
        samples = {
            "passthrough_failure": False, "max_ring_time": 7, "max_call_duration": 120, "sip_flow_max_items": 9, "session_timer": False,
            "session_expires": 600, "media_proxy": "all", "codecs": ["pcma"], "codec_strategy": "quality",
            "enable_latching": False, "latching_probation_max_packets": 3, "rtp_timeout": 11,
            "callid_suffix": "pbx.example", "ua_black_list": ["x"], "ua_white_list": ["y"],
            "frequency_limiter": "5/1s", "max_contacts": 2, "nat_fix": False, "ensure_user": False,
            "max_concurrency": 12,
        }
        self.assertEqual(set(samples), set(LIVE_KEYS))
        result = self.settings.save(samples)
        self.assertEqual(sorted(result.applied), sorted(samples))
        self.assertEqual(result.restart, [])
        fresh = load_config(self.path)
        for key in samples:
            self.assertEqual(getattr(self.context.config.proxy, key), getattr(fresh.proxy, key), key)
        self.assertEqual(self.net.module("acl").white_list, ["y"])
        self.assertEqual(self.net.module("acl").limiter.count, 5)
        self.assertFalse(self.net.module("registrar").nat_fix)
        self.assertFalse(self.net.module("auth").ensure_user)
        self.assertEqual(self.net.core.max_concurrency, 12)
