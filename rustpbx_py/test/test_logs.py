# -*- test-case-name: rustpbx_py.test.test_logs -*-
"""
Tests for what an admin reads in the log: L{rustpbx_py.logs} (level and
noise filter), and the info lines the registrar, the call module and the
ACL write (captured with C{twisted.logger} observers), and the settings
named as not implemented.
"""

from __future__ import annotations

import re
from typing import List

from twisted.internet import task
from twisted.logger import LogLevel, LogPublisher, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from rustpbx_py.config import parse_config_text
from rustpbx_py.logs import FIELD_LIMIT, LINE_LIMIT, install_log_filter, is_noise, level_for, parse_level, safe_event, safe_text


_UNSAFE_RE = re.compile("[\x00-\x1f\x7f]")


def capture(testcase, namespace_prefix: str) -> List[dict]:
    """Events of the loggers under C{namespace_prefix}, from the global
    publisher, for the rest of the test."""
    events: List[dict] = []

    def observer(event):
        if str(event.get("log_namespace", "")).startswith(namespace_prefix):
            events.append(event)

    globalLogPublisher.addObserver(observer)
    testcase.addCleanup(globalLogPublisher.removeObserver, observer)
    return events


def legacy(text: str) -> dict:
    """An event as twisted.python.log.msg(text) makes it."""
    return {"log_namespace": "log_legacy", "log_level": LogLevel.info, "log_format": "{log_text}", "log_text": text, "message": (text,)}


class LevelTests(SynchronousTestCase):
    """Level names, from the command line or the config."""

    def test_names(self) -> None:
        """RustPBX's names (trace is our debug), any case."""
        self.assertEqual(parse_level("TRACE"), LogLevel.debug)
        self.assertEqual(parse_level("warn"), LogLevel.warn)
        self.assertEqual(parse_level("warning"), LogLevel.warn)
        self.assertRaises(ValueError, parse_level, "loud")

    def test_option_wins(self) -> None:
        """--log-level beats log_level, which beats the default info."""
        self.assertEqual(level_for("error", "debug"), LogLevel.error)
        self.assertEqual(level_for(None, "debug"), LogLevel.debug)
        self.assertEqual(level_for(None, None), LogLevel.info)

    def test_config_key(self) -> None:
        """log_level is checked; RustPBX's tracing directives keep the
        level and are named in a warning."""
        self.assertEqual(parse_config_text('log_level = "debug"').log_level, "debug")
        config = parse_config_text('log_level = "warn,rustpbx=debug"')
        self.assertEqual(config.log_level, "warn")
        self.assertEqual(len(config.warnings), 1)
        self.assertIn("rustpbx=debug", config.warnings[0])
        from rustpbx_py.config import ConfigError

        e = self.assertRaises(ConfigError, parse_config_text, 'log_level = "loud"')
        self.assertIn("log_level", str(e))


class FilterTests(SynchronousTestCase):
    """L{install_log_filter} in front of a publisher's observers."""

    def setUp(self) -> None:
        self.publisher = LogPublisher()
        self.seen: List[dict] = []
        self.publisher.addObserver(self.seen.append)

    def test_level(self) -> None:
        """Events below the level are dropped, the others pass."""
        install_log_filter(LogLevel.warn, self.publisher)
        self.publisher({"log_level": LogLevel.info, "log_format": "quiet", "log_namespace": "x"})
        self.publisher({"log_level": LogLevel.warn, "log_format": "loud", "log_namespace": "x"})
        self.assertEqual([e["log_format"] for e in self.seen], ["loud"])

    def test_noise(self) -> None:
        """Twisted's per-socket lines and object reprs are dropped; other
        legacy lines pass."""
        install_log_filter(LogLevel.debug, self.publisher)
        for text in (
            "Starting protocol <rustpbx_py.protocols.udp.SipDatagramProtocol object at 0x7f0d3c2b1e50>",
            "Stopping factory <twisted.names.client.DNSClientFactory object at 0x7f0d3c2b1e50>",
            "DNSDatagramProtocol starting on 40000",
            "(UDP Port 40000 Closed)",
            "SipStreamFactory starting on 5060",
            "/etc/resolv.conf changed, reparsing",
            "Resolver added ('192.0.2.53', 53) to server list",
        ):
            self.publisher(legacy(text))
        self.assertEqual([e["log_text"] for e in self.seen], ["Resolver added ('192.0.2.53', 53) to server list"])
        self.assertFalse(is_noise({"log_namespace": "rustpbx_py.x", "log_text": "Starting protocol <"}))

    def test_installed_once(self) -> None:
        """Installing twice does not filter twice (a restart of the service)."""
        install_log_filter(LogLevel.info, self.publisher)
        install_log_filter(LogLevel.error, self.publisher)
        self.publisher({"log_level": LogLevel.warn, "log_format": "kept", "log_namespace": "x"})
        self.assertEqual(len(self.seen), 1)


class RegistrationLineTests(SynchronousTestCase):
    """One info line per registration change (the registry's logger)."""

    def setUp(self) -> None:
        from rustpbx_py.test.test_registrar import NOW, RegistrarTestsMixin

        self.events = capture(self, "rustpbx_py.registrar")
        self.helper = RegistrarTestsMixin()
        self.helper.clock = self.clock = task.Clock()
        self.clock.advance(NOW)
        self.module = self.helper.make_module(registrar_expires=600)

    def reg(self, *contacts, flow=None, **kw):
        from rustpbx_py.test.fakes import FakeFlow
        from rustpbx_py.test.test_registrar import register_request

        flow = flow or FakeFlow(("203.0.113.7", 40000), "UDP", ("198.51.100.1", 5060))
        return self.successResultOf(self.helper.send(self.module, register_request(*contacts, **kw), flow))

    def lines(self) -> List[str]:
        return [formatEvent(e) for e in self.events if e["log_level"] == LogLevel.info]

    def test_register_refresh_unregister(self) -> None:
        """Registered (with user, contact, source, transport and the
        granted expiry, capped by registrar_expires); a refresh from the
        same place logs nothing; a move and an un-REGISTER do."""
        from rustpbx_py.test.fakes import FakeFlow

        self.reg("<sip:alice@203.0.113.7:40000>", expires=7200)
        self.assertEqual(
            self.lines(),
            ["registration registered: alice@example.com contact sip:alice@203.0.113.7:40000 from 203.0.113.7:40000 over UDP, expires 600 s"],
        )
        self.reg("<sip:alice@203.0.113.7:40000>", cseq=2)
        self.assertEqual(len(self.lines()), 1)
        self.reg("<sip:alice@203.0.113.7:40000>", cseq=3, flow=FakeFlow(("203.0.113.8", 5070), "TCP", ("198.51.100.1", 5060)))
        self.assertIn("registration moved: alice@example.com contact sip:alice@203.0.113.7:40000 from 203.0.113.8:5070 over TCP", self.lines()[-1])
        self.reg("<sip:alice@203.0.113.7:40000>", cseq=4, expires=0)
        self.assertTrue(self.lines()[-1].startswith("registration unregistered: alice@example.com contact sip:alice@203.0.113.7:40000"))
        self.assertEqual(len(self.lines()), 3)

    def test_expired(self) -> None:
        """A binding that ran out is logged as expired when swept."""
        self.reg("<sip:alice@203.0.113.7:40000>", expires=120)
        self.clock.advance(121)
        self.module.registry.sweep()
        self.assertTrue(self.lines()[-1].startswith("registration expired: alice@example.com contact sip:alice@203.0.113.7:40000"))


class CallLineTests(SynchronousTestCase):
    """One info line per call (the call module's logger)."""

    def setUp(self) -> None:
        from rustpbx_py.test.call_fakes import CallHarness

        self.events = capture(self, "rustpbx_py.modules.call")
        self.harness = CallHarness()
        self.harness.setup_module()

    def lines(self) -> List[str]:
        return [formatEvent(e) for e in self.events if e["log_format"].startswith("call {call_id}")]

    def test_answered_call(self) -> None:
        """Caller, callee, status, hangup reason and talk time."""
        from rustpbx_py.test.call_fakes import SDP_ANSWER

        tx, call = self.harness.invite()
        self.harness.clock.advance(3)
        self.harness.core.last("INVITE").answer(200, body=SDP_ANSWER)
        self.harness.caller_ack(call)
        self.harness.clock.advance(42)
        self.harness.caller_request(call, "BYE", 2)
        [line] = self.lines()
        caller = call.record.caller
        self.assertEqual(line, f"call a-call-1@192.0.2.10: {caller} -> bob@example.com (internal) 200 byCaller, talked 42.0 s, 45.0 s in all")
        event = [e for e in self.events if e["log_format"].startswith("call {call_id}")][0]
        self.assertEqual((event["status"], event["duration"]), (200, 42.0))

    def test_failed_call(self) -> None:
        """A refused call says how it ended, with no talk time."""
        tx, call = self.harness.invite()
        self.harness.core.last("INVITE").answer(486)
        [line] = self.lines()
        self.assertIn("-> bob@example.com (internal) 486 rejected, talked 0.0 s", line)


class SafeLineTests(SynchronousTestCase):
    """
    Log lines quote what peers sent (URIs, Call-IDs, User-Agents, user
    names, reasons): none of it may forge a line (CR/LF: a fake "banned"
    line for fail2ban), drive a terminal (ESC), reorder what is read (bidi
    overrides) or make a line unbounded.
    """

    FORGED = "x\r\n2026-12-04T00:00:00+0000 [rustpbx_py.modules.guard#warn] auth: banned 192.0.2.66"

    def text_log(self):
        """A publisher with twistd's kind of text file observer behind
        install_log_filter, and the file's text."""
        import io

        from twisted.logger import textFileLogObserver

        out = io.StringIO()
        publisher = LogPublisher(textFileLogObserver(out))
        install_log_filter(LogLevel.info, publisher)
        return publisher, out

    def test_controls_escaped(self) -> None:
        """CR, LF, NUL, ESC, DEL, C1 controls, line separators and bidi
        overrides become escapes; printable text (any script) is kept."""
        self.assertEqual(safe_text("a\r\nb\x00\x1b[2J\x7f\x85\u2028\u202e\u2066"), "a\\x0d\\x0ab\\x00\\x1b[2J\\x7f\\x85\\u2028\\u202e\\u2066")
        self.assertEqual(safe_text("Zoë 田中 <sip:101@example.com>"), "Zoë 田中 <sip:101@example.com>")

    def test_bounded(self) -> None:
        """A text is cut at the limit and says how much was left out."""
        self.assertEqual(safe_text("y" * 300), "y" * FIELD_LIMIT + f"...[{300 - FIELD_LIMIT} more]")

    def test_forged_line(self) -> None:
        """A User-Agent carrying CRLF and a whole fake log line stays on the
        line that quotes it, escaped."""
        from twisted.logger import Logger

        publisher, out = self.text_log()
        Logger(namespace="rustpbx_py.registrar", observer=publisher).info("registration from {ua}", ua=self.FORGED)
        lines = out.getvalue().splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("registration from x\\x0d\\x0a2026-12-04T00:00:00+0000 [rustpbx_py.modules.guard#warn] auth: banned", lines[0])

    def test_long_fields(self) -> None:
        """A 60 KB Call-ID and an object whose str() is 100 KB: the line
        stays within LINE_LIMIT plus its prefix."""
        from twisted.logger import Logger

        class Uri:
            def __str__(self):
                return "sip:" + "\n" * 100000

        publisher, out = self.text_log()
        log = Logger(namespace="rustpbx_py.modules.call", observer=publisher)
        log.info("call {call_id}: {caller}", call_id="c" * 60000, caller="ok")
        log.info("call {call_id}: {caller}", call_id="1", caller=Uri())
        lines = out.getvalue().splitlines()
        self.assertEqual(len(lines), 2, [len(x) for x in lines])
        self.assertLess(len(lines[0]), FIELD_LIMIT + 200)
        self.assertLess(len(lines[1]), LINE_LIMIT + 200)
        self.assertIn("\\x0a\\x0a", lines[1])

    def test_event_untouched(self) -> None:
        """A clean event is passed on as it is; an unsafe one as a copy,
        so that other observers (JSON, the monitor) keep the fields."""
        clean = {"log_format": "call {id}", "id": "abc", "log_level": LogLevel.info}
        self.assertIs(safe_event(clean), clean)
        dirty = {"log_format": "ua {ua}", "ua": "a\nb", "log_level": LogLevel.info}
        copy = safe_event(dirty)
        self.assertEqual((formatEvent(copy), dirty["ua"]), ("ua a\\x0ab", "a\nb"))

    def test_registration_contact(self) -> None:
        """End to end: a REGISTER whose Contact carries a terminal escape
        and DEL (the parser lets them through) is logged by the registrar
        with them escaped."""
        events = capture(self, "rustpbx_py.registrar")
        helper = RegistrationLineTests("test_expired")
        helper.setUp()
        self.addCleanup(helper.tearDown)
        del helper.events[:]
        helper.reg("<sip:al\x1b[2Jice\x7f@203.0.113.7:40000>", expires=600)
        lines = [formatEvent(safe_event(e)) for e in events if e.get("log_format", "").startswith("registration")]
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("contact sip:al\\x1b[2Jice\\x7f@203.0.113.7:40000 from", lines[0])
        self.assertIsNone(_UNSAFE_RE.search(lines[0]))


class AclStartLineTests(SynchronousTestCase):
    """The ACL's start-up line says whether the limiter is on."""

    def start_line(self, toml: str) -> str:
        from rustpbx_py.modules.acl import AclModule

        events = capture(self, "rustpbx_py.modules.acl")
        AclModule(parse_config_text("[proxy]\n" + toml).proxy, task.Clock()).start()
        return formatEvent(events[-1])

    def test_limiter_on(self) -> None:
        """A configured limiter is reported with its rate, although it has
        seen no source yet (it used to read "off": the empty limiter was
        falsy)."""
        self.assertIn("limiter 100/60s", self.start_line('frequency_limiter = "100/60s"'))

    def test_limiter_off(self) -> None:
        """No frequency_limiter: off."""
        self.assertIn("limiter off", self.start_line(""))


class PendingSettingTests(SynchronousTestCase):
    """Settings that do nothing yet are named (start-up and check-config)."""

    def warnings(self, text: str) -> List[str]:
        from rustpbx_py.features import pending_features

        config = parse_config_text(text)
        return config.warnings + pending_features(config)

    def test_extension_backend(self) -> None:
        """The extension user backend is named as skipped."""
        found = self.warnings('[proxy]\nmedia_proxy = "none"\n[[proxy.user_backends]]\ntype = "extension"\n')
        self.assertEqual(len(found), 1)
        self.assertIn("extension user backend", found[0])

    def test_token_cache(self) -> None:
        """The http backend's token cache keys are named when set."""
        base = '[proxy]\nmedia_proxy = "none"\n[[proxy.user_backends]]\ntype = "http"\nurl = "http://127.0.0.1/u"\n'
        self.assertEqual(self.warnings(base), [])
        found = self.warnings(base + "token_cache_ttl_secs = 60\n")
        self.assertEqual(len(found), 1)
        self.assertIn("token_cache_ttl_secs", found[0])

    def test_http_addr(self) -> None:
        """http_addr and [console] are served (rustpbx_py.web): neither is
        named as pending."""
        self.assertEqual(self.warnings('http_addr = "0.0.0.0:8081"\n[console]\n[proxy]\nmedia_proxy = "none"\n'), [])

    def test_trunk_settings(self) -> None:
        """A trunk's call_id_mode = "transparent", video_policy and bind_ip
        are named; the values that name what the PBX does anyway are not,
        nor media_mode and external_ip (the media policy uses them)."""
        base = '[proxy]\nmedia_proxy = "none"\n[proxy.trunks.t]\ndest = "sip:192.0.2.1"\n'
        self.assertEqual(self.warnings(base + 'call_id_mode = "rewrite"\nvideo_policy = "pass_through"\nmedia_mode = "none"\n'), [])
        found = self.warnings(base + 'call_id_mode = "transparent"\nmedia_mode = "bypass"\nvideo_policy = "strip"\nbind_ip = "192.0.2.5"\nexternal_ip = "203.0.113.5"\n')
        self.assertEqual(len(found), 3)
        for warning, key in zip(found, ["call_id_mode", "video_policy", "bind_ip"]):
            self.assertIn(f"proxy.trunks.t.{key}", warning)
            self.assertIn("not implemented", warning)
