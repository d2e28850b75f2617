# -*- test-case-name: rustpbx_py.test.test_config -*-
"""
Tests for L{rustpbx_py.config} and the C{check-config} command.
"""

from __future__ import annotations

import io
import ipaddress
import os
import re
import sys
import textwrap
from typing import Optional

from twisted.trial.unittest import SynchronousTestCase

import rustpbx_py
from rustpbx_py import __main__ as cli
from rustpbx_py.config import (
    AclRule,
    Config,
    ConfigError,
    DialogAuthCacheConfig,
    FrequencyLimit,
    ProxyConfig,
    RouteConfig,
    TrunkConfig,
    UserBackendConfig,
    default_config,
    load_config,
    parse_config_text,
)

DATA = os.path.join(os.path.dirname(__file__), "data", "config")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(rustpbx_py.__file__)))
SAMPLE = os.path.join(REPO, "etc", "pbx.toml")
DOCS = os.path.join(REPO, "README.md")

HEX16 = re.compile(r"^[0-9a-f]{16}$")


def _pem_pair() -> tuple[str, str]:
    """A real self-signed certificate and its key, as text (the loader
    parses them and checks that they go together)."""
    import tempfile

    from rustpbx_py.test.tls import write_self_signed

    with tempfile.TemporaryDirectory() as d:
        cert, key = write_self_signed(d)
        with open(cert) as c, open(key) as k:
            return c.read(), k.read()


CERT_PEM, KEY_PEM = _pem_pair()


class ConfigTestMixin:
    """Write configuration trees in temporary directories and load them."""

    def tree(self, files: dict[str, str]) -> str:
        """Write C{files} (relative name -> text) under a new directory."""
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        for name, text in files.items():
            path = os.path.join(base, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(textwrap.dedent(text))
        return base

    def load(self, text: str, files: Optional[dict[str, str]] = None) -> Config:
        """Load C{text} as C{pbx.toml} next to C{files}."""
        base = self.tree({"pbx.toml": text, **(files or {})})
        return load_config(os.path.join(base, "pbx.toml"))

    def problems(self, text: str, files: Optional[dict[str, str]] = None) -> list[str]:
        """Load C{text}, which must be refused; return the problems."""
        base = self.tree({"pbx.toml": text, **(files or {})})
        with self.assertRaises(ConfigError) as cm:
            load_config(os.path.join(base, "pbx.toml"))
        self.assertEqual(str(cm.exception), "\n".join(cm.exception.problems))
        return cm.exception.problems

    def only_problem(self, text: str, files: Optional[dict[str, str]] = None) -> str:
        problems = self.problems(text, files)
        self.assertEqual(len(problems), 1, problems)
        return problems[0]

    def assertNames(self, message: str, filename: str, key: str) -> None:
        """The message starts with the file and then the key path."""
        self.assertTrue(
            message.startswith(f"{filename}: {key}: ") or (f"{os.sep}{filename}: {key}: " in message),
            f"{message!r} does not name {filename!r} and {key!r}",
        )


class DefaultsTests(ConfigTestMixin, SynchronousTestCase):
    """Every key has RustPBX's documented default when not given."""

    PROXY_DEFAULTS = {
        "addr": "0.0.0.0",
        "udp_port": 5060,
        "tcp_port": None,
        "tls_port": None,
        "ws_port": None,
        "ws_handler": "/ws",
        "wss_port": None,
        "tcp_max_connections": None,
        "tcp_max_connections_per_ip": 200,
        "tcp_first_message_timeout": 30,
        "tls_handshake_timeout": 10,
        "tcp_idle_timeout": None,
        "ws_allowed_origins": [],
        "tls_ca_certificates": None,
        "media_engine": "builtin",
        "rtpengine_servers": [],
        "rtpengine_timeout": 1.0,
        "ssl_certificate": None,
        "ssl_private_key": None,
        "useragent": f"RustPBX-py/{rustpbx_py.__version__}",
        "callid_suffix": "rustpbx-py",
        "realms": [],
        "max_concurrency": 5000,
        "ua_black_list": ["friendly-scanner", "pplsip"],
        "ua_white_list": [],
        "ensure_user": True,
        "auth_algorithms": ["MD5"],
        "nonce_secret": None,
        "frequency_limiter": None,
        "max_contacts": 10,
        "auth_failure_limit": FrequencyLimit(5, 600),
        "auth_failure_delay": 1.0,
        "auth_ban_time": 900,
        "session_timer": True,
        "session_expires": 1800,
        "t1_timer": 500,
        "t1x64_timer": 32000,
        "max_ring_time": 60,
        "modules": ["acl", "auth", "registrar", "call", "presence"],
        "addons": [],
        "media_proxy": "auto",
        "codecs": ["opus", "pcmu", "pcma", "g729"],
        "codec_strategy": "performance",
        "enable_latching": True,
        "latching_probation_max_packets": 6,
        "rtp_timeout": 30,
        "nat_fix": True,
        "routes_files": [],
        "trunks_files": [],
        "acl_files": [],
        "registrar_expires": 3600,
        "passthrough_failure": True,
        "sip_flow_max_items": 1000,
        "dialog_auth_cache": DialogAuthCacheConfig(enabled=True, cache_size=10000, ttl_seconds=3600),
        "routes": [],
        "trunks": {},
    }

    def test_proxy_defaults(self) -> None:
        """An empty [proxy] section gives every documented default."""
        config = self.load("[proxy]\n")
        for key, expected in self.PROXY_DEFAULTS.items():
            self.assertEqual(getattr(config.proxy, key), expected, key)

    def test_missing_proxy_section(self) -> None:
        """A file without [proxy] is the same as an empty [proxy]."""
        config = self.load("")
        self.assertEqual(config.proxy.udp_port, 5060)
        self.assertEqual(config.warnings, [])

    def test_path_defaults_resolved(self) -> None:
        """generated_dir and queue_dir default to ./config and ./queues next to
        the configuration file."""
        config = self.load("")
        self.assertEqual(config.proxy.generated_dir, os.path.join(config.base_dir, "config"))
        self.assertEqual(config.proxy.queue_dir, os.path.join(config.base_dir, "queues"))

    def test_top_level_defaults(self) -> None:
        """Top-level keys default to RustPBX's values; the database is an
        absolute SQLite path next to the configuration file."""
        config = self.load("")
        self.assertEqual(config.http_addr, "0.0.0.0:8080")
        self.assertEqual(
            config.database_url,
            "sqlite://" + os.path.join(config.base_dir, "data", "rustpbx.sqlite3"),
        )
        self.assertTrue(config.database_url.startswith("sqlite:///"))
        self.assertIsNone(config.external_ip)
        self.assertEqual((config.rtp_start_port, config.rtp_end_port), (12000, 42000))
        self.assertIsNone(config.ssl_certificate)
        self.assertIsNone(config.ssl_private_key)
        self.assertEqual(config.warnings, [])

    def test_path_and_base_dir(self) -> None:
        """Config.path is the absolute file name and base_dir its directory,
        even when loaded through a relative name."""
        base = self.tree({"pbx.toml": ""})
        cwd = os.getcwd()
        os.chdir(base)
        self.addCleanup(os.chdir, cwd)
        config = load_config("pbx.toml")
        self.assertEqual(config.path, os.path.join(base, "pbx.toml"))
        self.assertEqual(config.base_dir, base)

    def test_default_acl_rules(self) -> None:
        """With no ACL rule anywhere, RustPBX's ["allow all", "deny all"]
        applies."""
        rules = self.load("").proxy.acl_rules
        self.assertEqual(rules, [AclRule("allow", None, "allow all"), AclRule("deny", None, "deny all")])

    def test_default_user_backend(self) -> None:
        """Without [[proxy.user_backends]] there is one empty memory backend,
        as in RustPBX."""
        backends = self.load("").proxy.user_backends
        self.assertEqual(len(backends), 1)
        self.assertIsInstance(backends[0], UserBackendConfig)
        self.assertEqual(backends[0].type, "memory")
        self.assertEqual(backends[0].users, [])

    def test_identity_shared_random(self) -> None:
        """contact_username and rtc_cname default to one shared random
        16-hex-digit value, new for each load."""
        first = self.load("").proxy
        second = self.load("").proxy
        self.assertRegex(first.contact_username, HEX16)
        self.assertEqual(first.contact_username, first.rtc_cname)
        self.assertNotEqual(first.contact_username, second.contact_username)

    def test_identity_one_given(self) -> None:
        """When only one of contact_username and rtc_cname is given, the other
        still gets the random value."""
        proxy = self.load('[proxy]\ncontact_username = "pbx-01"\n').proxy
        self.assertEqual(proxy.contact_username, "pbx-01")
        self.assertRegex(proxy.rtc_cname, HEX16)
        proxy = self.load('[proxy]\nrtc_cname = "cname-01"\n').proxy
        self.assertEqual(proxy.rtc_cname, "cname-01")
        self.assertRegex(proxy.contact_username, HEX16)

    def test_dialog_auth_cache_partial(self) -> None:
        """A partial dialog_auth_cache table keeps the other defaults."""
        cache = self.load("[proxy]\ndialog_auth_cache = { enabled = false }\n").proxy.dialog_auth_cache
        self.assertEqual(cache, DialogAuthCacheConfig(enabled=False, cache_size=10000, ttl_seconds=3600))


class DefaultConfigTests(SynchronousTestCase):
    """default_config() builds configurations for other layers' tests."""

    def test_defaults(self) -> None:
        """Without arguments it is the configuration of an empty file."""
        config = default_config()
        self.assertIsInstance(config, Config)
        self.assertIsInstance(config.proxy, ProxyConfig)
        for key, expected in DefaultsTests.PROXY_DEFAULTS.items():
            self.assertEqual(getattr(config.proxy, key), expected, key)
        self.assertEqual(config.path, "<default_config>")

    def test_overrides_in_toml_form(self) -> None:
        """Overrides in TOML form are validated and typed as in a file."""
        config = default_config(
            udp_port=0,
            realms=["example.com"],
            frequency_limiter="10/1s",
            acl_rules=["deny 192.0.2.0/24", "allow all"],
            trunks={"t": {"dest": "sip:192.0.2.1"}},
            routes=[{"name": "r", "dest": "t"}],
        )
        self.assertEqual(config.proxy.udp_port, 0)
        self.assertEqual(config.proxy.realms, ["example.com"])
        self.assertEqual(config.proxy.frequency_limiter, FrequencyLimit(count=10, window_seconds=1))
        self.assertEqual(config.proxy.acl_rules[0].network, ipaddress.ip_network("192.0.2.0/24"))
        self.assertEqual(config.proxy.routes[0].dest, ["t"])

    def test_typed_overrides(self) -> None:
        """Already typed values are set as they are."""
        limit = FrequencyLimit(count=1, window_seconds=1)
        rules = [AclRule("deny", None, "deny all")]
        config = default_config(frequency_limiter=limit, acl_rules=rules, tls_port=None)
        self.assertIs(config.proxy.frequency_limiter, limit)
        self.assertEqual(config.proxy.acl_rules, rules)

    def test_invalid_override(self) -> None:
        """An invalid override is refused with the usual message."""
        with self.assertRaises(ConfigError) as cm:
            default_config(udp_port="abc")
        self.assertEqual(
            cm.exception.problems,
            ['<default_config>: proxy.udp_port: expected an integer port 0-65535, found "abc"'],
        )

    def test_unknown_override(self) -> None:
        """An override that is not a [proxy] key is refused with a suggestion."""
        with self.assertRaises(ConfigError) as cm:
            default_config(udp_prot=0)
        self.assertIn('did you mean "udp_port"?', str(cm.exception))

    def test_generated_dir_not_read(self) -> None:
        """default_config does not read the generated directory, so tests do
        not depend on files lying around in the current directory."""
        base = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(base, "config", "acl"))
        with open(os.path.join(base, "config", "acl", "acl.generated.toml"), "w") as f:
            f.write('acl_rules = ["deny 192.0.2.1"]\n')
        cwd = os.getcwd()
        os.chdir(base)
        self.addCleanup(os.chdir, cwd)
        self.assertEqual([r.text for r in default_config().proxy.acl_rules], ["allow all", "deny all"])


class ParsingTests(ConfigTestMixin, SynchronousTestCase):
    """Every key is read and typed."""

    def test_every_proxy_key(self) -> None:
        """Each [proxy] key of RustPBX's reference is read into the attribute
        of the same name."""
        cert = self.tree({"cert.pem": CERT_PEM, "key.pem": KEY_PEM})
        config = self.load(
            f"""
            [proxy]
            addr = "127.0.0.1"
            udp_port = 5070
            tcp_port = 5071
            tls_port = 5072
            ws_port = 8089
            ws_handler = "/sip"
            ssl_certificate = "{cert}/cert.pem"
            ssl_private_key = "{cert}/key.pem"
            useragent = "UA/1"
            callid_suffix = "example.com"
            realms = ["example.com", "sip.example.org"]
            max_concurrency = 10
            ua_black_list = ["bad"]
            ua_white_list = ["good"]
            ensure_user = false
            frequency_limiter = "100/60s"
            session_timer = false
            session_expires = 900
            t1_timer = 250
            t1x64_timer = 16000
            max_ring_time = 30
            modules = ["auth", "call"]
            addons = ["wholesale", "monitor"]
            media_proxy = "nat"
            codecs = ["g722", "telephone-event"]
            codec_strategy = "quality"
            enable_latching = false
            latching_probation_max_packets = 12
            nat_fix = false
            generated_dir = "gen"
            routes_files = ["r/*.toml"]
            trunks_files = ["t/*.toml"]
            acl_files = ["a/*.toml"]
            queue_dir = "q"
            registrar_expires = 120
            passthrough_failure = false
            sip_flow_max_items = 5
            dialog_auth_cache = {{ enabled = true, cache_size = 5, ttl_seconds = 60 }}
            contact_username = "pbx-01"
            rtc_cname = "cname-01"
            """
        )
        p = config.proxy
        base = config.base_dir
        self.assertEqual(p.addr, "127.0.0.1")
        self.assertEqual((p.udp_port, p.tcp_port, p.tls_port, p.ws_port), (5070, 5071, 5072, 8089))
        self.assertEqual(p.ws_handler, "/sip")
        self.assertEqual(p.ssl_certificate, os.path.join(cert, "cert.pem"))
        self.assertEqual(p.ssl_private_key, os.path.join(cert, "key.pem"))
        self.assertEqual(p.useragent, "UA/1")
        self.assertEqual(p.callid_suffix, "example.com")
        self.assertEqual(p.realms, ["example.com", "sip.example.org"])
        self.assertEqual(p.max_concurrency, 10)
        self.assertEqual((p.ua_black_list, p.ua_white_list), (["bad"], ["good"]))
        self.assertFalse(p.ensure_user)
        self.assertEqual(p.frequency_limiter, FrequencyLimit(count=100, window_seconds=60))
        self.assertFalse(p.session_timer)
        self.assertEqual((p.session_expires, p.t1_timer, p.t1x64_timer, p.max_ring_time), (900, 250, 16000, 30))
        self.assertEqual(p.modules, ["auth", "call"])
        self.assertEqual(p.addons, ["wholesale", "monitor"])
        self.assertEqual(p.media_proxy, "nat")
        self.assertEqual(p.codecs, ["g722", "telephone-event"])
        self.assertEqual(p.codec_strategy, "quality")
        self.assertFalse(p.enable_latching)
        self.assertEqual(p.latching_probation_max_packets, 12)
        self.assertFalse(p.nat_fix)
        self.assertEqual(p.generated_dir, os.path.join(base, "gen"))
        self.assertEqual(p.routes_files, [os.path.join(base, "r", "*.toml")])
        self.assertEqual(p.trunks_files, [os.path.join(base, "t", "*.toml")])
        self.assertEqual(p.acl_files, [os.path.join(base, "a", "*.toml")])
        self.assertEqual(p.queue_dir, os.path.join(base, "q"))
        self.assertEqual(p.registrar_expires, 120)
        self.assertFalse(p.passthrough_failure)
        self.assertEqual(p.sip_flow_max_items, 5)
        self.assertEqual(p.dialog_auth_cache, DialogAuthCacheConfig(enabled=True, cache_size=5, ttl_seconds=60))
        self.assertEqual((p.contact_username, p.rtc_cname), ("pbx-01", "cname-01"))
        self.assertEqual(config.warnings, [])

    def test_top_level_keys(self) -> None:
        """http_addr, database_url, external_ip and the RTP range are read."""
        config = self.load(
            """
            http_addr = "[::]:8081"
            database_url = "postgres://pbx:pw@db/pbx"
            external_ip = "203.0.113.10"
            rtp_start_port = 20000
            rtp_end_port = 20100
            """
        )
        self.assertEqual(config.http_addr, "[::]:8081")
        self.assertEqual(config.database_url, "postgres://pbx:pw@db/pbx")
        self.assertEqual(config.external_ip, "203.0.113.10")
        self.assertEqual((config.rtp_start_port, config.rtp_end_port), (20000, 20100))

    def test_sqlite_url_relative(self) -> None:
        """A relative SQLite path (RustPBX's "sqlite://rustpbx.sqlite3") is
        made absolute against the configuration file's directory."""
        config = self.load('database_url = "sqlite://db/pbx.sqlite3?mode=rwc"\n')
        self.assertEqual(config.database_url, "sqlite://" + os.path.join(config.base_dir, "db", "pbx.sqlite3") + "?mode=rwc")
        config = self.load('database_url = "sqlite:///var/lib/pbx.sqlite3"\n')
        self.assertEqual(config.database_url, "sqlite:///var/lib/pbx.sqlite3")

    def test_ephemeral_ports(self) -> None:
        """Port 0 asks for an ephemeral port and is valid for every listener."""
        p = self.load("[proxy]\nudp_port = 0\ntcp_port = 0\nws_port = 0\n").proxy
        self.assertEqual((p.udp_port, p.tcp_port, p.ws_port), (0, 0, 0))

    def test_frequency_limiter_units(self) -> None:
        """The limiter window takes the units s, m and h; a missing number
        means one unit."""
        for text, expected in [
            ("100/60s", FrequencyLimit(100, 60)),
            ("5/2m", FrequencyLimit(5, 120)),
            ("1000/1h", FrequencyLimit(1000, 3600)),
            ("10/s", FrequencyLimit(10, 1)),
        ]:
            proxy = self.load(f'[proxy]\nfrequency_limiter = "{text}"\n').proxy
            self.assertEqual(proxy.frequency_limiter, expected, text)

    def test_auth_algorithms(self) -> None:
        """auth_algorithms: case-insensitive names kept in order; unknown names,
        duplicates, an empty list and a non-list are refused naming the key."""
        proxy = self.load('[proxy]\nauth_algorithms = ["sha-256", "MD5", "md5-sess"]\n').proxy
        self.assertEqual(proxy.auth_algorithms, ["SHA-256", "MD5", "MD5-sess"])
        self.assertEqual(self.load("").proxy.auth_algorithms, ["MD5"])
        for text, where in [
            ('["SHA-512-256"]', "proxy.auth_algorithms[0]: expected a digest algorithm"),
            ('["MD5", "md5"]', "proxy.auth_algorithms[1]: expected each algorithm once"),
            ("[]", "proxy.auth_algorithms: expected a non-empty list"),
            ('"MD5"', "proxy.auth_algorithms: expected a non-empty list"),
        ]:
            problems = self.problems(f"[proxy]\nauth_algorithms = {text}\n")
            self.assertEqual(len(problems), 1, problems)
            self.assertIn(where, problems[0])
            self.assertIn("pbx.toml", problems[0])

    def test_login_guard_keys(self) -> None:
        """auth_failure_limit, auth_failure_delay and auth_ban_time are read and checked."""
        proxy = self.load('[proxy]\nauth_failure_limit = "3/1h"\nauth_failure_delay = 0.5\nauth_ban_time = 0\n').proxy
        self.assertEqual((proxy.auth_failure_limit, proxy.auth_failure_delay, proxy.auth_ban_time), (FrequencyLimit(3, 3600), 0.5, 0))
        for text, where in [
            ('auth_failure_limit = "5 per minute"', 'proxy.auth_failure_limit: expected a limit "COUNT/WINDOW"'),
            ('auth_failure_limit = "0/10m"', "proxy.auth_failure_limit: expected a limit"),
            ("auth_failure_delay = -1", "proxy.auth_failure_delay: expected a number of seconds >= 0, found -1"),
            ('auth_failure_delay = "1s"', "proxy.auth_failure_delay: expected a number of seconds >= 0"),
            ("auth_ban_time = -5", "proxy.auth_ban_time: expected an integer >= 0, found -5"),
        ]:
            problems = self.problems(f"[proxy]\n{text}\n")
            self.assertEqual(len(problems), 1, problems)
            self.assertIn(where, problems[0])

    def test_rtp_timeout(self) -> None:
        """rtp_timeout (RustPBX's RTP inactivity timeout) is read without a warning; 0 turns
        it off; it is an integer of seconds >= 0."""
        config = self.load("[proxy]\nrtp_timeout = 0\n")
        self.assertEqual(config.proxy.rtp_timeout, 0)
        self.assertEqual(self.load("[proxy]\nrtp_timeout = 45\n").proxy.rtp_timeout, 45)
        self.assertFalse([w for w in config.warnings if "rtp_timeout" in w])
        for text in ("rtp_timeout = -1", "rtp_timeout = 2.5", 'rtp_timeout = "30s"'):
            problems = self.problems(f"[proxy]\n{text}\n")
            self.assertEqual(len(problems), 1, problems)
            self.assertIn("proxy.rtp_timeout: expected an integer >= 0", problems[0])

    def test_max_contacts(self) -> None:
        """max_contacts is an integer >= 1."""
        self.assertEqual(self.load("[proxy]\nmax_contacts = 3\n").proxy.max_contacts, 3)
        problems = self.problems("[proxy]\nmax_contacts = 0\n")
        self.assertEqual(len(problems), 1, problems)
        self.assertIn("proxy.max_contacts: expected an integer >= 1, found 0", problems[0])

    def test_nonce_secret(self) -> None:
        """nonce_secret is a non-empty string; unset means random per process."""
        self.assertEqual(self.load('[proxy]\nnonce_secret = "s3cret"\n').proxy.nonce_secret, "s3cret")
        problems = self.problems("[proxy]\nnonce_secret = 42\n")
        self.assertEqual(len(problems), 1, problems)
        self.assertIn("proxy.nonce_secret: expected a non-empty string, found 42", problems[0])

    def test_frequency_limiter_db(self) -> None:
        """RustPBX's "db" limiter is accepted with a warning and no limit."""
        config = self.load('[proxy]\nfrequency_limiter = "db"\n')
        self.assertIsNone(config.proxy.frequency_limiter)
        self.assertEqual(len(config.warnings), 1)
        self.assertIn("proxy.frequency_limiter", config.warnings[0])

    def test_codec_names(self) -> None:
        """Codec names are case-insensitive, RustPBX's aliases ulaw/alaw map to
        pcmu/pcma and duplicates are dropped."""
        proxy = self.load('[proxy]\ncodecs = ["PCMU", "alaw", "G722", "ulaw"]\n').proxy
        self.assertEqual(proxy.codecs, ["pcmu", "pcma", "g722"])

    def test_audio_codecs_alias(self) -> None:
        """RustPBX 0.4.5 reads the codec list from audio_codecs: it sets
        codecs."""
        proxy = self.load('[proxy]\naudio_codecs = ["pcma"]\n').proxy
        self.assertEqual(proxy.codecs, ["pcma"])

    def test_acl_rules(self) -> None:
        """ACL rules become AclRule objects with ipaddress networks, IPv6
        included; host bits are masked as RustPBX does."""
        rules = self.load(
            '[proxy]\nacl_rules = ["allow 10.1.2.3/8", "DENY 192.0.2.7", "allow 2001:db8::/32", "deny all"]\n'
        ).proxy.acl_rules
        self.assertEqual([r.action for r in rules], ["allow", "deny", "allow", "deny"])
        self.assertEqual(rules[0].network, ipaddress.ip_network("10.0.0.0/8"))
        self.assertEqual(rules[1].network, ipaddress.ip_network("192.0.2.7/32"))
        self.assertEqual(rules[2].network, ipaddress.ip_network("2001:db8::/32"))
        self.assertIsNone(rules[3].network)
        self.assertTrue(rules[0].matches("10.9.9.9"))
        self.assertFalse(rules[0].matches("11.0.0.1"))
        self.assertFalse(rules[0].matches("2001:db8::1"))
        self.assertTrue(rules[2].matches("2001:db8::1"))
        self.assertTrue(rules[3].matches("198.51.100.1"))
        self.assertTrue(rules[0].allow)

    def test_memory_backend(self) -> None:
        """A memory backend holds typed users with RustPBX's SipUser fields
        (and the ha1 extension)."""
        proxy = self.load(
            """
            [[proxy.user_backends]]
            type = "memory"
            users = [
                { username = "1001", password = "pw", realm = "example.com", display_name = "Alice", allow_guest_calls = true },
                { username = "1002", ha1 = "0123456789abcdef0123456789abcdef", enabled = false },
            ]
            """
        ).proxy
        (backend,) = proxy.user_backends
        self.assertEqual(backend.type, "memory")
        alice, bob = backend.users
        self.assertEqual((alice.username, alice.password, alice.realm, alice.display_name), ("1001", "pw", "example.com", "Alice"))
        self.assertTrue(alice.allow_guest_calls)
        self.assertEqual(bob.ha1, "0123456789abcdef0123456789abcdef")
        self.assertFalse(bob.enabled)

    def test_plain_backend(self) -> None:
        """A plain backend's file is resolved, read and its username:password
        lines typed as users."""
        config = self.load(
            '[[proxy.user_backends]]\ntype = "plain"\npath = "users.txt"\n',
            {"users.txt": "# comment\n1001:secret\n\n1002 : two:colons\n"},
        )
        (backend,) = config.proxy.user_backends
        self.assertEqual(backend.path, os.path.join(config.base_dir, "users.txt"))
        self.assertEqual([(u.username, u.password) for u in backend.users], [("1001", "secret"), ("1002", "two:colons")])

    def test_database_and_extension_backends(self) -> None:
        """database and extension backends take RustPBX's column names and
        default to the top-level database_url."""
        config = self.load(
            """
            database_url = "postgres://db/pbx"
            [[proxy.user_backends]]
            type = "database"
            table_name = "accounts"
            id_column = "id"
            username_column = "user"
            password_column = "secret"
            enabled_column = "active"
            realm_column = "domain"

            [[proxy.user_backends]]
            type = "database"
            url = "sqlite:///tmp/other.sqlite3"

            [[proxy.user_backends]]
            type = "extension"
            ttl = 60
            """
        )
        db, other, ext = config.proxy.user_backends
        self.assertEqual(db.url, "postgres://db/pbx")
        self.assertEqual(
            (db.table_name, db.id_column, db.username_column, db.password_column, db.enabled_column, db.realm_column),
            ("accounts", "id", "user", "secret", "active", "domain"),
        )
        self.assertEqual((other.url, other.table_name, other.username_column, other.password_column), ("sqlite:///tmp/other.sqlite3", "users", "username", "password"))
        self.assertEqual((ext.database_url, ext.ttl), ("postgres://db/pbx", 60))

    def test_http_backend(self) -> None:
        """An http backend takes RustPBX's fields with their defaults."""
        proxy = self.load(
            """
            [[proxy.user_backends]]
            type = "http"
            url = "https://auth.example.com/verify"
            method = "post"
            headers = { "X-Api-Key" = "k" }
            http_timeout_ms = 1500
            """
        ).proxy
        (b,) = proxy.user_backends
        self.assertEqual((b.url, b.method, b.headers, b.http_timeout_ms), ("https://auth.example.com/verify", "POST", {"X-Api-Key": "k"}, 1500))
        self.assertEqual((b.username_field, b.realm_field, b.http_retry_count, b.http_retry_delay_ms), ("username", "realm", 1, 500))
        self.assertEqual((b.sip_headers, b.token_cache_ttl_secs, b.token_cache_size), ([], 0, 10000))

    def test_trunk_fields(self) -> None:
        """Inline trunks are typed with RustPBX's fields and defaults."""
        proxy = self.load(
            """
            [proxy.trunks.pstn]
            dest = "sip:sip.provider.example:5060"
            backup_dest = "backup.provider.example"
            transport = "TCP"
            username = "u"
            password = "p"
            inbound_hosts = ["192.0.2.1", "198.51.100.0/24", "2001:db8::/48", "sip.provider.example", "192.0.2.9:5060"]
            direction = "outbound"
            max_calls = 10
            max_cps = 2
            allow_codecs = ["PCMA"]
            did_numbers = ["+15550100"]
            register_enabled = true
            policy = { daily_limit = { count = 100 }, frequency_limit = { count = 5, window_hours = 1 } }
            """
        ).proxy
        trunk = proxy.trunks["pstn"]
        self.assertIsInstance(trunk, TrunkConfig)
        self.assertEqual(trunk.name, "pstn")
        self.assertEqual(trunk.dest, "sip:sip.provider.example:5060")
        self.assertEqual(trunk.backup_dest, "sip:backup.provider.example")
        self.assertEqual(trunk.transport, "tcp")
        self.assertEqual((trunk.username, trunk.password), ("u", "p"))
        self.assertEqual(len(trunk.inbound_hosts), 5)
        self.assertEqual(trunk.direction, "outbound")
        self.assertEqual((trunk.max_calls, trunk.max_cps), (10, 2))
        self.assertEqual(trunk.codec, ["pcma"])
        self.assertEqual(trunk.did_numbers, ["+15550100"])
        self.assertTrue(trunk.register_enabled)
        self.assertEqual(trunk.register_expires, 300)
        self.assertTrue(trunk.rewrite_hostport)
        self.assertEqual(trunk.weight, 100)
        self.assertEqual(trunk.policy.daily_limit.count, 100)
        self.assertEqual((trunk.policy.frequency_limit.count, trunk.policy.frequency_limit.window_hours), (5, 1))

    def test_route_fields(self) -> None:
        """Inline routes are typed in RustPBX's format: match and rewrite
        keyed by "from.user"-style strings, action keys on the route."""
        proxy = self.load(
            r"""
            [proxy.trunks.a]
            dest = "sip:192.0.2.1"
            [proxy.trunks.b]
            dest = "sip:192.0.2.2"

            [[proxy.routes]]
            name = "out"
            description = "to the PSTN"
            priority = 10
            source_trunks = ["a"]
            dest = ["a", "b"]
            select = "hash"
            hash_key = "from.user"
            codecs = ["pcma"]
            max_ring_time = 20
            policy = { concurrency = { max_total = 3, max_per_account = { acme = 1 } }, time_window = { start = "08:00", end = "18:00", timezone = "UTC" } }

            [proxy.routes.match]
            "to.user" = '^0(\d+)$'
            "header.X-Tenant" = "acme"
            "caller" = "1001@example.com"

            [proxy.routes.rewrite]
            "to.user" = "{1}"
            "header.X-Routed" = "yes"
            """
        ).proxy
        (route,) = proxy.routes
        self.assertIsInstance(route, RouteConfig)
        self.assertEqual((route.name, route.description, route.priority), ("out", "to the PSTN", 10))
        self.assertEqual(route.action, "forward")
        self.assertEqual(route.dest, ["a", "b"])
        self.assertEqual((route.select, route.hash_key), ("hash", "from.user"))
        self.assertEqual(route.source_trunks, ["a"])
        self.assertEqual(route.match, {"to.user": r"^0(\d+)$", "header.X-Tenant": "acme", "caller": "1001@example.com"})
        self.assertEqual(route.rewrite, {"to.user": "{1}", "header.X-Routed": "yes"})
        self.assertEqual(route.codecs, ["pcma"])
        self.assertEqual(route.max_ring_time, 20)
        self.assertEqual(route.policy.concurrency.max_per_account, {"acme": 1})
        self.assertEqual(route.policy.time_window.start, "08:00")
        self.assertFalse(route.disabled)

    def test_route_action_derived(self) -> None:
        """Without an action key, RustPBX derives it: reject table -> reject,
        queue -> queue, app -> application, otherwise forward; a single dest
        becomes a one-element list."""
        proxy = self.load(
            """
            [proxy.trunks.t]
            dest = "sip:192.0.2.1"
            [[proxy.routes]]
            name = "r"
            reject = { code = 486, reason = "Busy" }
            [[proxy.routes]]
            name = "q"
            queue = "support"
            [[proxy.routes]]
            name = "a"
            app = "voicemail"
            app_params = { box = "1001" }
            [[proxy.routes]]
            name = "f"
            dest = "t"
            [[proxy.routes]]
            name = "b"
            action = "busy"
            """
        ).proxy
        by_name = {r.name: r for r in proxy.routes}
        self.assertEqual(by_name["r"].action, "reject")
        self.assertEqual((by_name["r"].reject.code, by_name["r"].reject.reason), (486, "Busy"))
        self.assertEqual(by_name["q"].action, "queue")
        self.assertEqual(by_name["a"].action, "application")
        self.assertEqual(by_name["a"].app_params, {"box": "1001"})
        self.assertTrue(by_name["a"].auto_answer)
        self.assertEqual((by_name["f"].action, by_name["f"].dest), ("forward", ["t"]))
        self.assertEqual(by_name["b"].action, "busy")

    def test_route_match_unquoted_keys(self) -> None:
        """Leniency: admins often write to.user = "..." without quotes, which
        TOML reads as a nested table; it is taken as "to.user"."""
        proxy = self.load('[[proxy.routes]]\nname = "r"\n[proxy.routes.match]\nto.user = "100"\nheader.X-A = "b"\n').proxy
        self.assertEqual(proxy.routes[0].match, {"to.user": "100", "header.X-A": "b"})

    def test_routes_sorted_by_priority(self) -> None:
        """Routes come highest priority first, then in definition order."""
        proxy = self.load(
            """
            [[proxy.routes]]
            name = "low"
            priority = 1
            [[proxy.routes]]
            name = "high"
            priority = 100
            [[proxy.routes]]
            name = "low2"
            priority = 1
            [[proxy.routes]]
            name = "negative"
            priority = -5
            """
        ).proxy
        self.assertEqual([r.name for r in proxy.routes], ["high", "low", "low2", "negative"])

    def test_included_files(self) -> None:
        """routes_files, trunks_files and acl_files are glob patterns whose
        files are merged after the inline definitions."""
        config = self.load(
            """
            [proxy]
            routes_files = ["routes/*.toml"]
            trunks_files = ["trunks/*.toml"]
            acl_files = ["acl/*.toml"]
            acl_rules = ["allow 127.0.0.1"]
            [proxy.trunks.inline]
            dest = "sip:192.0.2.1"
            """,
            {
                "routes/a.toml": '[[routes]]\nname = "to-file-trunk"\ndest = "fromfile"\n',
                "routes/b.toml": '[[routes]]\nname = "to-inline-trunk"\npriority = 5\ndest = "inline"\n',
                "trunks/t.toml": '[trunks.fromfile]\ndest = "sip:192.0.2.2"\n',
                "acl/a.toml": 'acl_rules = ["deny all"]\n',
            },
        )
        p = config.proxy
        self.assertEqual(sorted(p.trunks), ["fromfile", "inline"])
        self.assertEqual(p.trunks["fromfile"].origin, os.path.relpath(os.path.join(config.base_dir, "trunks", "t.toml")))
        self.assertEqual([r.name for r in p.routes], ["to-inline-trunk", "to-file-trunk"])
        self.assertEqual([r.text for r in p.acl_rules], ["allow 127.0.0.1", "deny all"])

    def test_tls_files(self) -> None:
        """TLS files are read from [proxy], falling back to the top-level
        ssl_* keys."""
        files = {"certs/c.pem": CERT_PEM, "certs/k.pem": KEY_PEM}
        config = self.load(
            'ssl_certificate = "certs/c.pem"\nssl_private_key = "certs/k.pem"\n[proxy]\ntls_port = 5061\n', files
        )
        self.assertEqual(config.proxy.ssl_certificate, os.path.join(config.base_dir, "certs", "c.pem"))
        self.assertEqual(config.proxy.ssl_private_key, os.path.join(config.base_dir, "certs", "k.pem"))
        self.assertEqual(config.ssl_certificate, config.proxy.ssl_certificate)


class ErrorTests(ConfigTestMixin, SynchronousTestCase):
    """Bad configuration is refused with messages naming file and key."""

    def test_wrong_type(self) -> None:
        """A value of the wrong type: the message says what was expected and
        shows what was found."""
        message = self.only_problem('[proxy]\nudp_port = "abc"\n')
        self.assertNames(message, "pbx.toml", "proxy.udp_port")
        self.assertTrue(message.endswith('proxy.udp_port: expected an integer port 0-65535, found "abc"'), message)

    def test_out_of_range(self) -> None:
        """Integers outside their range are refused."""
        for text, key in [
            ("[proxy]\nudp_port = 70000\n", "proxy.udp_port"),
            ("[proxy]\nsession_expires = 30\n", "proxy.session_expires"),
            ("[proxy]\nlatching_probation_max_packets = 0\n", "proxy.latching_probation_max_packets"),
            ("[proxy]\nensure_user = 1\n", "proxy.ensure_user"),
        ]:
            self.assertNames(self.only_problem(text), "pbx.toml", key)

    def test_unknown_key_suggestion(self) -> None:
        """A key neither RustPBX nor rustpbx_py has is an error with a "did you
        mean" suggestion, at the top level and in [proxy]."""
        problems = self.problems("loglevel = 3\n[proxy]\nudp_prot = 5060\n")
        self.assertEqual(len(problems), 2)
        self.assertNames(problems[0], "pbx.toml", "loglevel")
        self.assertIn('did you mean "log_level"?', problems[0])
        self.assertNames(problems[1], "pbx.toml", "proxy.udp_prot")
        self.assertIn('did you mean "udp_port"?', problems[1])

    def test_unknown_key_without_suggestion(self) -> None:
        """A key close to nothing is still an error, without a suggestion."""
        message = self.only_problem("[proxy]\nzzzzzz = 1\n")
        self.assertTrue(message.endswith("proxy.zzzzzz: unknown key"), message)

    def test_bad_enum(self) -> None:
        """A value outside an enumeration lists the allowed values."""
        message = self.only_problem('[proxy]\nmedia_proxy = "sometimes"\n')
        self.assertNames(message, "pbx.toml", "proxy.media_proxy")
        self.assertIn('expected one of "auto", "all", "none", "nat"', message)
        self.assertIn('found "sometimes"', message)

    def test_bad_frequency_limiter(self) -> None:
        """frequency_limiter must be COUNT/WINDOW with a unit."""
        for bad in ('"100 per minute"', '"100/60"', '"0/60s"', "100"):
            message = self.only_problem(f"[proxy]\nfrequency_limiter = {bad}\n")
            self.assertNames(message, "pbx.toml", "proxy.frequency_limiter")
            self.assertIn('"100/60s"', message)

    def test_unknown_codec(self) -> None:
        """A codec RustPBX does not know is refused with a suggestion."""
        message = self.only_problem('[proxy]\ncodecs = ["opus", "pcmx"]\n')
        self.assertNames(message, "pbx.toml", "proxy.codecs[1]")
        self.assertIn('did you mean "pcmu"?', message)

    def test_both_codec_spellings(self) -> None:
        """codecs and its alias audio_codecs cannot both be given."""
        message = self.only_problem('[proxy]\ncodecs = ["opus"]\naudio_codecs = ["pcmu"]\n')
        self.assertIn("give only one", message)

    def test_missing_tls_files(self) -> None:
        """A certificate or key file that cannot be read is an error naming
        the key that set it."""
        problems = self.problems('[proxy]\ntls_port = 5061\nssl_certificate = "nosuch.pem"\nssl_private_key = "nokey.pem"\n')
        self.assertEqual(len(problems), 2)
        self.assertNames(problems[0], "pbx.toml", "proxy.ssl_certificate")
        self.assertIn("nosuch.pem", problems[0])
        self.assertNames(problems[1], "pbx.toml", "proxy.ssl_private_key")

    def test_missing_top_level_tls_files(self) -> None:
        """When the files come from the top-level fallback, the top-level key
        is named."""
        message = self.only_problem('ssl_certificate = "nosuch.pem"\nssl_private_key = "k.pem"\n', {"k.pem": "K"})
        self.assertNames(message, "pbx.toml", "ssl_certificate")

    def test_tls_port_without_certificate(self) -> None:
        """A TLS listener without a certificate is refused."""
        message = self.only_problem("[proxy]\ntls_port = 5061\n")
        self.assertNames(message, "pbx.toml", "proxy.tls_port")
        self.assertIn("ssl_certificate", message)

    def test_tls_ca_certificates(self) -> None:
        """The outbound CA bundle must be readable and hold a certificate."""
        message = self.only_problem('[proxy]\ntls_ca_certificates = "nosuch.pem"\n')
        self.assertNames(message, "pbx.toml", "proxy.tls_ca_certificates")
        self.assertIn("nosuch.pem", message)
        message = self.only_problem('[proxy]\ntls_ca_certificates = "ca.pem"\n', {"ca.pem": "not a certificate"})
        self.assertNames(message, "pbx.toml", "proxy.tls_ca_certificates")
        self.assertIn("no PEM certificate", message)

    def test_connection_limits(self) -> None:
        """The connection limits are integers in range, named when wrong."""
        p = self.load("[proxy]\ntcp_max_connections = 5000\ntcp_max_connections_per_ip = 10\ntcp_idle_timeout = 0\n").proxy
        self.assertEqual((p.tcp_max_connections, p.tcp_max_connections_per_ip, p.tcp_idle_timeout), (5000, 10, 0))
        for key, bad in (("tcp_max_connections", "0"), ("tcp_max_connections_per_ip", "0"),
                         ("tcp_first_message_timeout", "-1"), ("tls_handshake_timeout", '"10s"')):
            message = self.only_problem(f"[proxy]\n{key} = {bad}\n")
            self.assertNames(message, "pbx.toml", f"proxy.{key}")

    def test_wss_port_without_certificate(self) -> None:
        """A secure WebSocket listener without a certificate is refused."""
        message = self.only_problem("[proxy]\nwss_port = 8443\n")
        self.assertNames(message, "pbx.toml", "proxy.wss_port")
        self.assertIn("ssl_certificate", message)

    def test_wss_port_shares_ws_port(self) -> None:
        """wss_port and ws_port are two TCP listeners: not on one port."""
        message = self.only_problem(
            '[proxy]\nws_port = 8089\nwss_port = 8089\nssl_certificate = "c.pem"\nssl_private_key = "k.pem"\n',
            {"c.pem": CERT_PEM, "k.pem": KEY_PEM},
        )
        self.assertNames(message, "pbx.toml", "proxy.wss_port")
        self.assertIn("ws_port", message)

    def test_ws_allowed_origins(self) -> None:
        """Origins are kept lower-cased; "*" is allowed; an origin with a
        path, another scheme or no scheme is refused naming the entry."""
        p = self.load('[proxy]\nws_allowed_origins = ["*", "https://Phone.Example.com", "http://[::1]:8000"]\n').proxy
        self.assertEqual(p.ws_allowed_origins, ["*", "https://phone.example.com", "http://[::1]:8000"])
        for bad in ('"https://a.example/page"', '"ftp://a.example"', '"a.example"', "5"):
            message = self.only_problem(f"[proxy]\nws_allowed_origins = [{bad}]\n")
            self.assertNames(message, "pbx.toml", "proxy.ws_allowed_origins[0]")
            self.assertIn("scheme://host[:port]", message)

    def test_certificate_without_key(self) -> None:
        """A certificate without its key is refused."""
        message = self.only_problem('[proxy]\nssl_certificate = "c.pem"\n', {"c.pem": "C"})
        self.assertNames(message, "pbx.toml", "proxy.ssl_private_key")

    def test_unreadable_route_file(self) -> None:
        """A file matched by routes_files that cannot be read is an error
        naming that file."""
        base = self.tree({"pbx.toml": '[proxy]\nroutes_files = ["routes/*.toml"]\n', "routes/ok.toml": ""})
        os.makedirs(os.path.join(base, "routes", "broken.toml"))  # a directory cannot be read
        with self.assertRaises(ConfigError) as cm:
            load_config(os.path.join(base, "pbx.toml"))
        (message,) = cm.exception.problems
        self.assertIn(os.path.join("routes", "broken.toml") + ": cannot read this routes file", message)

    def test_unparsable_route_file(self) -> None:
        """A routes file with a TOML syntax error names the file and line."""
        problems = self.problems(
            '[proxy]\nroutes_files = ["routes/*.toml"]\n',
            {"routes/bad.toml": '[[routes]]\nname = "x"\ndest = \n'},
        )
        (message,) = problems
        self.assertIn(os.path.join("routes", "bad.toml") + ": TOML syntax error", message)
        self.assertIn("line 3", message)

    def test_route_file_errors_name_that_file(self) -> None:
        """Problems inside an included file name that file and the key path
        inside it."""
        problems = self.problems(
            '[proxy]\nroutes_files = ["r.toml"]\ntrunks_files = ["t.toml"]\n',
            {
                "r.toml": '[[routes]]\nname = "x"\nselect = "first"\n[[proxies]]\n',
                "t.toml": '[trunks.t]\ndest = "sip:192.0.2.1"\nmax_calls = -1\n',
            },
        )
        self.assertEqual(len(problems), 3, problems)
        self.assertNames(problems[0], "t.toml", "trunks.t.max_calls")
        self.assertNames(problems[1], "r.toml", "proxies")
        self.assertNames(problems[2], "r.toml", "routes[0].select")

    def test_missing_explicit_file(self) -> None:
        """A pattern without wildcards must name an existing file."""
        message = self.only_problem('[proxy]\nacl_files = ["acl.toml"]\n')
        self.assertNames(message, "pbx.toml", "proxy.acl_files[0]")

    def test_bad_cidr(self) -> None:
        """A bad network in an ACL rule names the key and the index."""
        message = self.only_problem('[proxy]\nacl_rules = ["allow all", "deny 10.0.0.0/33"]\n')
        self.assertNames(message, "pbx.toml", "proxy.acl_rules[1]")
        self.assertIn('found "deny 10.0.0.0/33"', message)

    def test_bad_acl_rule_in_file(self) -> None:
        """A bad rule in an ACL file names that file, the key and the index."""
        message = self.only_problem(
            '[proxy]\nacl_files = ["acl/*.toml"]\n', {"acl/x.toml": 'acl_rules = ["permit 1.2.3.4", "allow ::1"]\n'}
        )
        self.assertNames(message, "x.toml", "acl_rules[0]")

    def test_bad_inbound_host(self) -> None:
        """Trunk inbound_hosts that look like addresses must be valid ones."""
        message = self.only_problem('[proxy.trunks.t]\ndest = "sip:192.0.2.1"\ninbound_hosts = ["192.0.2.300"]\n')
        self.assertNames(message, "pbx.toml", "proxy.trunks.t.inbound_hosts[0]")

    def test_route_dest_unknown_trunk(self) -> None:
        """A route whose dest names a trunk defined nowhere is refused."""
        message = self.only_problem(
            '[proxy.trunks.pstn]\ndest = "sip:192.0.2.1"\n[[proxy.routes]]\nname = "out"\ndest = "psnt"\n'
        )
        self.assertNames(message, "pbx.toml", "proxy.routes[0].dest")
        self.assertIn('found "psnt"', message)
        self.assertIn('did you mean "pstn"?', message)

    def test_route_dest_unknown_trunk_in_file(self) -> None:
        """In a routes file, the unknown trunk names that file and index."""
        problems = self.problems(
            '[proxy]\nroutes_files = ["r.toml"]\n',
            {"r.toml": '[[routes]]\nname = "a"\n[[routes]]\nname = "b"\ndest = ["x", "y"]\n'},
        )
        self.assertEqual(len(problems), 2, problems)
        self.assertNames(problems[0], "r.toml", "routes[1].dest[0]")
        self.assertNames(problems[1], "r.toml", "routes[1].dest[1]")

    def test_route_problems(self) -> None:
        """Route keys are checked: name required, match keys, regexes,
        rewrite templates, reject codes, and the action table of RustPBX's
        docs (which RustPBX itself refuses)."""
        problems = self.problems(
            """
            [[proxy.routes]]
            description = "no name"
            [[proxy.routes]]
            name = "m"
            match = { "from.usr" = "1", "to.user" = "^(1" }
            rewrite = { "to.user" = "{x}" }
            reject = { code = 200 }
            [[proxy.routes]]
            name = "t"
            action = { type = "forward" }
            [[proxy.routes]]
            name = "q"
            action = "queue"
            """
        )
        self.assertEqual(len(problems), 7, problems)
        self.assertNames(problems[0], "pbx.toml", "proxy.routes[0].name")
        self.assertNames(problems[1], "pbx.toml", 'proxy.routes[1].match."from.usr"')
        self.assertIn('did you mean "from.user"?', problems[1])
        self.assertNames(problems[2], "pbx.toml", 'proxy.routes[1].match."to.user"')
        self.assertIn("regular expression", problems[2])
        self.assertNames(problems[3], "pbx.toml", 'proxy.routes[1].rewrite."to.user"')
        self.assertNames(problems[4], "pbx.toml", "proxy.routes[1].reject.code")
        self.assertNames(problems[5], "pbx.toml", "proxy.routes[2].action")
        self.assertIn("keys of the route itself", problems[5])
        self.assertNames(problems[6], "pbx.toml", "proxy.routes[3].queue")

    def test_user_backend_problems(self) -> None:
        """User backends: unknown type, keys of another type, missing username,
        missing url or path, duplicate users, bad plain file lines."""
        problems = self.problems(
            """
            [[proxy.user_backends]]
            type = "ldap"
            [[proxy.user_backends]]
            type = "memory"
            path = "users.txt"
            users = [{ password = "x" }]
            [[proxy.user_backends]]
            type = "memory"
            users = [{ username = "a" }, { username = "a", realm = "r" }, { username = "a" }]
            [[proxy.user_backends]]
            type = "http"
            [[proxy.user_backends]]
            type = "plain"
            [[proxy.user_backends]]
            type = "plain"
            path = "bad.txt"
            [[proxy.user_backends]]
            """,
            {"bad.txt": "1001:x\njust-a-name\n"},
        )
        self.assertEqual(len(problems), 8, problems)
        self.assertNames(problems[0], "pbx.toml", "proxy.user_backends[0].type")
        self.assertNames(problems[1], "pbx.toml", "proxy.user_backends[1].path")
        self.assertIn('belongs to type "plain"', problems[1])
        self.assertNames(problems[2], "pbx.toml", "proxy.user_backends[1].users[0].username")
        self.assertNames(problems[3], "pbx.toml", "proxy.user_backends[2].users[2]")
        self.assertIn("defined twice", problems[3])
        self.assertNames(problems[4], "pbx.toml", "proxy.user_backends[3].url")
        self.assertNames(problems[5], "pbx.toml", "proxy.user_backends[4].path")
        self.assertNames(problems[6], "pbx.toml", "proxy.user_backends[5].path")
        self.assertIn("bad.txt, line 2", problems[6])
        self.assertNames(problems[7], "pbx.toml", "proxy.user_backends[6].type")

    def test_top_level_problems(self) -> None:
        """Top-level values are checked: http_addr, external_ip, database
        scheme, RTP range."""
        problems = self.problems(
            'http_addr = "8080"\nexternal_ip = "1.2.3.4:5060"\ndatabase_url = "mysql://db/pbx"\n'
            "rtp_start_port = 30000\nrtp_end_port = 30000\n"
        )
        self.assertEqual(len(problems), 4, problems)
        self.assertNames(problems[0], "pbx.toml", "http_addr")
        self.assertNames(problems[1], "pbx.toml", "external_ip")
        self.assertNames(problems[2], "pbx.toml", "database_url")
        self.assertIn("not MySQL", problems[2])
        self.assertNames(problems[3], "pbx.toml", "rtp_end_port")

    def test_proxy_cross_checks(self) -> None:
        """Stream listeners cannot share a port, T1x64 cannot be below T1,
        modules are listed once."""
        problems = self.problems(
            '[proxy]\ntcp_port = 5060\nws_port = 5060\nt1_timer = 1000\nt1x64_timer = 500\nmodules = ["acl", "acl"]\n'
        )
        self.assertEqual(len(problems), 3, problems)
        self.assertNames(problems[0], "pbx.toml", "proxy.t1x64_timer")
        self.assertNames(problems[1], "pbx.toml", "proxy.ws_port")
        self.assertNames(problems[2], "pbx.toml", "proxy.modules")

    def test_all_problems_collected(self) -> None:
        """Every problem is reported at once, across the main file and the
        included files."""
        problems = self.problems(
            """
            [proxy]
            udp_port = "abc"
            media_proxy = "sometimes"
            frequency_limiter = "fast"
            acl_rules = ["deny 300.0.0.0/8"]
            routes_files = ["r.toml"]
            [[proxy.routes]]
            name = "x"
            dest = "nowhere"
            """,
            {"r.toml": '[[routes]]\nname = "y"\nselect = "first"\n'},
        )
        self.assertEqual(len(problems), 6, problems)

    def test_toml_syntax_error(self) -> None:
        """A TOML syntax error names the file and the line."""
        message = self.only_problem("[proxy]\nudp_port = = 5060\n")
        self.assertIn("pbx.toml: TOML syntax error", message)
        self.assertIn("line 2", message)

    def test_unreadable_main_file(self) -> None:
        """A missing configuration file is a ConfigError, not a traceback."""
        with self.assertRaises(ConfigError) as cm:
            load_config("no/such/pbx.toml")
        self.assertEqual(cm.exception.problems, ["no/such/pbx.toml: cannot read the configuration file: no such file or directory"])

    def test_not_utf8(self) -> None:
        """A file that is not UTF-8 is a ConfigError."""
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        with open(os.path.join(base, "pbx.toml"), "wb") as f:
            f.write(b'callid_suffix = "\xff"\n')
        self.assertRaises(ConfigError, load_config, os.path.join(base, "pbx.toml"))

    def test_wrong_shapes_never_traceback(self) -> None:
        """Sections and lists of the wrong shape are reported, never raise
        anything but ConfigError."""
        for text in [
            "proxy = 5\n",
            '[proxy]\nroutes = "x"\n',
            "[proxy]\ntrunks = [1]\n",
            "[proxy]\ntrunks = { t = 1 }\n",
            "[proxy]\nuser_backends = { type = 1 }\n",
            "[proxy]\nuser_backends = [1]\n",
            "[proxy]\ndialog_auth_cache = true\n",
            "[proxy]\nacl_rules = [1, []]\n",
            "[proxy]\nrealms = [1]\n",
            "[[proxy.routes]]\nname = 1\nmatch = []\nrewrite = { x = 1 }\n",
            "[[proxy.routes]]\nname = \"x\"\ndest = []\npolicy = { daily_limit = 5 }\n",
            "[proxy.trunks.t]\ndest = 5\n",
            "[proxy.trunks.t]\n",
            "http_addr = 1979-05-27T07:32:00Z\n",
        ]:
            problems = self.problems(text)
            self.assertTrue(problems, text)


class GeneratedDirTests(ConfigTestMixin, SynchronousTestCase):
    """Files in generated_dir are loaded last and win."""

    MAIN = """
        [proxy]
        generated_dir = "gen"
        routes_files = ["routes/*.toml"]
        trunks_files = ["trunks/*.toml"]
        acl_files = ["acl/*.toml"]
        acl_rules = ["allow 127.0.0.1"]
        """

    def test_generated_files_win(self) -> None:
        """A generated route or trunk replaces the hand-written one of the same
        name; generated ACL rules come after all others."""
        config = self.load(
            self.MAIN,
            {
                "routes/r.toml": '[[routes]]\nname = "same"\ndest = "t"\npriority = 1\n[[routes]]\nname = "hand"\n',
                "trunks/t.toml": '[trunks.t]\ndest = "sip:192.0.2.1"\n',
                "acl/a.toml": 'acl_rules = ["allow 10.0.0.0/8"]\n',
                "gen/routes/routes.generated.toml": '[[routes]]\nname = "same"\ndest = "t"\npriority = 7\n',
                "gen/trunks/trunks.generated.toml": '[trunks.t]\ndest = "sip:192.0.2.99"\n',
                "gen/acl/acl.generated.toml": 'acl_rules = ["deny all"]\n',
            },
        )
        p = config.proxy
        self.assertEqual(p.trunks["t"].dest, "sip:192.0.2.99")
        self.assertIn("gen", p.trunks["t"].origin)
        same = [r for r in p.routes if r.name == "same"]
        self.assertEqual(len(same), 1)
        self.assertEqual(same[0].priority, 7)
        self.assertEqual([r.name for r in p.routes], ["same", "hand"])
        self.assertEqual([r.text for r in p.acl_rules], ["allow 127.0.0.1", "allow 10.0.0.0/8", "deny all"])

    def test_generated_file_matched_by_pattern(self) -> None:
        """RustPBX writes routes.generated.toml next to the files of the first
        routes_files pattern; matched by the pattern, it still loads last."""
        config = self.load(
            self.MAIN,
            {
                "routes/a.toml": '[[routes]]\nname = "r"\npriority = 1\n',
                "routes/routes.generated.toml": '[[routes]]\nname = "r"\npriority = 2\n',
                "routes/z.toml": '[[routes]]\nname = "r"\npriority = 3\n',
            },
        )
        self.assertEqual([r.priority for r in config.proxy.routes], [2])

    def test_generated_route_uses_hand_written_trunk(self) -> None:
        """Generated routes can name trunks from any source, and a generated
        route naming an unknown trunk is an error naming the generated file."""
        problems = self.problems(
            self.MAIN,
            {"gen/routes/routes.generated.toml": '[[routes]]\nname = "g"\ndest = "missing"\n'},
        )
        (message,) = problems
        self.assertNames(message, "routes.generated.toml", "routes[0].dest")


class RelativePathTests(ConfigTestMixin, SynchronousTestCase):
    """Relative paths resolve against the configuration file's directory."""

    def test_independent_of_cwd(self) -> None:
        """Loading from another working directory finds the same files."""
        base = self.tree(
            {
                "etc/pbx.toml": '[proxy]\nroutes_files = ["routes/*.toml"]\nqueue_dir = "../q"\n',
                "etc/routes/r.toml": '[[routes]]\nname = "r"\n',
            }
        )
        elsewhere = os.path.abspath(self.mktemp())
        os.makedirs(elsewhere)
        cwd = os.getcwd()
        os.chdir(elsewhere)
        self.addCleanup(os.chdir, cwd)
        config = load_config(os.path.join(base, "etc", "pbx.toml"))
        self.assertEqual([r.name for r in config.proxy.routes], ["r"])
        self.assertEqual(config.proxy.queue_dir, os.path.join(base, "q"))
        self.assertEqual(config.base_dir, os.path.join(base, "etc"))

    def test_parse_config_text(self) -> None:
        """parse_config_text resolves against the directory of the given path,
        or against the current directory for a <placeholder> name."""
        config = parse_config_text('[proxy]\nqueue_dir = "q"\n', "/srv/pbx/pbx.toml")
        self.assertEqual(config.proxy.queue_dir, "/srv/pbx/q")
        self.assertEqual(config.path, "/srv/pbx/pbx.toml")
        config = parse_config_text('[proxy]\nqueue_dir = "q"\n')
        self.assertEqual(config.proxy.queue_dir, os.path.join(os.getcwd(), "q"))
        self.assertEqual(config.path, "<string>")
        with self.assertRaises(ConfigError) as cm:
            parse_config_text("[proxy]\nudp_port = -1\n")
        self.assertEqual(cm.exception.problems, ["<string>: proxy.udp_port: expected an integer port 0-65535, found -1"])


class WarningTests(ConfigTestMixin, SynchronousTestCase):
    """RustPBX settings not implemented yet are accepted with a warning."""

    def test_rustpbx_keys_warned(self) -> None:
        """Top-level, [proxy] and trunk settings of RustPBX are warnings naming
        the file and the key, not errors."""
        config = self.load(
            """
            log_file = "/var/log/rustpbx.log"
            [console]
            allow_registration = true
            [proxy]
            locator = { type = "memory" }
            dos_enabled = true
            [proxy.trunks.t]
            dest = "sip:192.0.2.1"
            recording = { enabled = true }
            """
        )
        self.assertEqual(len(config.warnings), 5, config.warnings)
        for warning, key in zip(config.warnings, ["log_file", "console.allow_registration", "proxy.locator", "proxy.dos_enabled", "proxy.trunks.t.recording"]):
            self.assertNames(warning, "pbx.toml", key)
            self.assertIn("not implement", warning)

    def test_inbound_hosts_without_acl(self) -> None:
        """As RustPBX does, warn when trunks have inbound_hosts but the acl
        module that matches them is off."""
        config = self.load('[proxy]\nmodules = ["auth", "call"]\n[proxy.trunks.t]\ndest = "sip:192.0.2.1"\ninbound_hosts = ["192.0.2.1"]\n')
        (warning,) = config.warnings
        self.assertNames(warning, "pbx.toml", "proxy.modules")

    def test_rustpbx_style_file(self) -> None:
        """A configuration written for RustPBX loads, with warnings for what is
        not implemented and its values typed."""
        config = load_config(os.path.join(DATA, "rustpbx-style.toml"))
        self.assertEqual(config.proxy.udp_port, 15060)
        self.assertEqual(config.proxy.codecs, ["pcma", "pcmu", "g722"])
        self.assertEqual(config.proxy.trunks["upstream"].codec, ["pcma"])
        self.assertEqual(config.proxy.routes[0].rewrite, {"to.user": "00{1}", "from.host": "198.51.100.7"})
        self.assertEqual(config.database_url, "sqlite://" + os.path.join(DATA, "rustpbx.sqlite3"))
        self.assertEqual([b.type for b in config.proxy.user_backends], ["memory", "extension"])
        warned = {w.split(": ")[1] for w in config.warnings}
        self.assertEqual(
            warned,
            {
                "http_gzip", "log_file", "media_cache_path", "ice_servers", "console.allow_registration", "ami",
                "recording", "callrecord", "proxy.ami_path", "proxy.session_timer_always", "proxy.locator",
                "proxy.trunks.upstream.recording",
            },
        )


class SampleConfigTests(SynchronousTestCase):
    """The shipped etc/pbx.toml and its documentation."""

    def setUp(self) -> None:
        if not os.path.exists(SAMPLE):
            raise self.skipTest("etc/pbx.toml is not part of an installed package")

    def test_sample_loads(self) -> None:
        """etc/pbx.toml loads without problems or warnings, with the demo
        users, the example routes, trunk and ACL files."""
        config = load_config(SAMPLE)
        self.assertEqual(config.warnings, [])
        p = config.proxy
        self.assertEqual((p.udp_port, p.tcp_port, p.ws_port, p.tls_port), (5060, 5060, 8089, None))
        self.assertEqual(p.addons, [])
        users = [u.username for b in p.user_backends if b.type == "memory" for u in b.users]
        self.assertEqual(users, ["1001", "1002"])
        self.assertTrue(p.routes)
        self.assertTrue(p.trunks)
        self.assertEqual(p.acl_rules[0].text, "allow 127.0.0.0/8")
        self.assertTrue(any(r.dest for r in p.routes))

    def test_sample_sets_every_key(self) -> None:
        """etc/pbx.toml mentions every [proxy] key, with a comment above it."""
        with open(SAMPLE, encoding="utf-8") as f:
            lines = f.read().splitlines()
        for name in _proxy_keys():
            if name in ("routes", "trunks", "user_backends"):
                name = f"proxy.{name}"
            found = [i for i, line in enumerate(lines) if re.match(rf"^#?\s*\[*{re.escape(name)}\b", line)]
            self.assertTrue(found, name)
            self.assertTrue(lines[found[0] - 1].startswith("#"), name)

    def test_docs_cover_every_key(self) -> None:
        """The README's configuration reference has an entry for every key."""
        if not os.path.exists(DOCS):
            raise self.skipTest("the README is not part of an installed package")
        with open(DOCS, encoding="utf-8") as f:
            text = f.read()
        for name in _proxy_keys() + ["http_addr", "database_url", "external_ip", "rtp_start_port", "rtp_end_port", "ssl_certificate", "ssl_private_key"]:
            self.assertIn(f"`{name}`", text, name)


def _proxy_keys() -> list[str]:
    import dataclasses

    return [f.name for f in dataclasses.fields(ProxyConfig) if "read" in f.metadata]


class CheckConfigTests(ConfigTestMixin, SynchronousTestCase):
    """python -m rustpbx_py check-config FILE."""

    def run_main(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        self.patch(sys, "stdout", out)
        self.patch(sys, "stderr", err)
        code = cli.main(list(argv))
        return code, out.getvalue(), err.getvalue()

    def test_ok(self) -> None:
        """A good file prints FILE: OK and its warnings, exit status 0."""
        base = self.tree({"pbx.toml": 'log_file = "pbx.log"\n[proxy]\nmedia_proxy = "none"\n'})
        path = os.path.join(base, "pbx.toml")
        code, out, err = self.run_main("check-config", path)
        self.assertEqual(code, 0)
        lines = out.splitlines()
        self.assertEqual(lines[0], f"{path}: OK")
        self.assertEqual(len(lines), 2)
        self.assertIn("log_file", lines[1])
        self.assertEqual(err, "")

    def test_pending_feature_warning(self) -> None:
        """check-config also names settings that have no effect yet (a
        route whose action is a queue)."""
        base = self.tree({"pbx.toml": '[proxy]\n[[proxy.routes]]\nname = "q"\nqueue = "support"\n'})
        code, out, err = self.run_main("check-config", os.path.join(base, "pbx.toml"))
        self.assertEqual(code, 0)
        self.assertIn("route 'q'", out)

    def test_problems(self) -> None:
        """A bad file prints every problem on stderr, exit status 1."""
        base = self.tree({"pbx.toml": '[proxy]\nudp_port = "abc"\nmedia_proxy = "sometimes"\n'})
        path = os.path.join(base, "pbx.toml")
        code, out, err = self.run_main("check-config", path)
        self.assertEqual(code, 1)
        self.assertEqual(out, "")
        lines = err.splitlines()
        self.assertEqual(lines[0], f'{path}: proxy.udp_port: expected an integer port 0-65535, found "abc"')
        self.assertIn("proxy.media_proxy", lines[1])
        self.assertNotIn("Traceback", err)

    def test_missing_file(self) -> None:
        """A missing file is exit status 1 with a message, no traceback."""
        code, out, err = self.run_main("check-config", "no/such/file.toml")
        self.assertEqual(code, 1)
        self.assertIn("no/such/file.toml: cannot read the configuration file", err)
        self.assertNotIn("Traceback", err)

    def test_usage(self) -> None:
        """Missing arguments are a usage error (status 2), not an exception."""
        code, out, err = self.run_main()
        self.assertEqual(code, 2)
        self.assertIn("usage:", err)

    def test_sample(self) -> None:
        """etc/pbx.toml passes check-config."""
        if not os.path.exists(SAMPLE):
            raise self.skipTest("etc/pbx.toml is not part of an installed package")
        code, out, err = self.run_main("check-config", SAMPLE)
        self.assertEqual((code, out, err), (0, f"{SAMPLE}: OK\n", ""))


class StartupTrapTests(ConfigTestMixin, SynchronousTestCase):
    """
    check-config catches what start-up would otherwise trip on, each as one
    line naming the file and the key, never a traceback.
    """

    run_main = CheckConfigTests.run_main

    def check(self, text: str, files: Optional[dict[str, str]] = None) -> str:
        base = self.tree({"pbx.toml": text, **(files or {})})
        code, out, err = self.run_main("check-config", os.path.join(base, "pbx.toml"))
        self.assertEqual(code, 1, out)
        self.assertNotIn("Traceback", err)
        return err

    def test_useragent_with_crlf(self) -> None:
        """A useragent holding CR or LF (every response would fail to be
        written: the PBX answered nothing) is refused."""
        for value in ('"PBX\\r\\nX-Injected: 1"', '"PBX\\n"', '"PBX\\u0000"'):
            err = self.check(f"[proxy]\nuseragent = {value}\n")
            self.assertIn("proxy.useragent: expected", err)

    def test_deep_nesting(self) -> None:
        """Arrays nested a thousand deep: a problem naming the file, not a
        RecursionError traceback."""
        err = self.check("a = " + "[" * 1000 + "]" * 1000 + "\n")
        self.assertIn("pbx.toml: ", err)
        self.assertIn("nested too deeply", err)
        err = self.check("a = " + "{b=" * 1000 + "1" + "}" * 1000 + "\n")
        self.assertIn("nested too deeply", err)

    def test_certificate_does_not_parse(self) -> None:
        """A certificate file that is readable but not a PEM certificate (or
        a key that is not a key, or does not go with the certificate) is a
        problem naming the key."""
        from rustpbx_py.test.tls import write_self_signed

        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        cert, key = write_self_signed(base)
        garbage = os.path.join(base, "garbage.pem")
        with open(garbage, "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
        err = self.check(f'[proxy]\ntls_port = 0\nssl_certificate = "{garbage}"\nssl_private_key = "{key}"\n')
        self.assertIn("proxy.ssl_certificate: expected a PEM certificate", err)
        err = self.check(f'[proxy]\ntls_port = 0\nssl_certificate = "{cert}"\nssl_private_key = "{garbage}"\n')
        self.assertIn("proxy.ssl_private_key: expected a PEM private key", err)
        os.makedirs(os.path.join(base, "other"))
        other_cert, other_key = write_self_signed(os.path.join(base, "other"))
        err = self.check(f'[proxy]\ntls_port = 0\nssl_certificate = "{cert}"\nssl_private_key = "{other_key}"\n')
        self.assertIn("does not go with", err)

    def test_good_certificate_passes(self) -> None:
        """A matching certificate and key pass."""
        from rustpbx_py.test.tls import write_self_signed

        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        cert, key = write_self_signed(base)
        path = os.path.join(self.tree({"pbx.toml": f'[proxy]\ntls_port = 0\nssl_certificate = "{cert}"\nssl_private_key = "{key}"\n'}), "pbx.toml")
        code, out, err = self.run_main("check-config", path)
        self.assertEqual((code, err), (0, ""))
