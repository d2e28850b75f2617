"""
Tests for L{rustpbx_py.tap} and the twistd entry point: a bad config stops
start-up with a message naming the file and key, never a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from rustpbx_py import tap


def write(testcase, text: str) -> str:
    path = os.path.abspath(testcase.mktemp()) + ".toml"
    with open(path, "w") as f:
        f.write(text)
    return path


class OptionsTests(SynchronousTestCase):
    def test_valid(self):
        """A valid file loads into options["loaded"]."""
        path = write(self, "[proxy]\nudp_port = 0\n")
        options = tap.Options()
        options.parseOptions(["--config", path])
        self.assertEqual(options["loaded"].proxy.udp_port, 0)

    def test_bad_value(self):
        """A wrong value is refused (exit status 1) naming the file and the key."""
        path = write(self, '[proxy]\nmedia_proxy = "sometimes"\n')
        options = tap.Options()
        e = self.assertRaises(tap.ConfigRefused, options.parseOptions, ["--config", path])
        self.assertIn(path, str(e))
        self.assertIn("proxy.media_proxy", str(e))
        self.assertEqual(e.code, str(e))  # SystemExit(message): printed, status 1

    def test_unknown_module(self):
        """A module no plugin provides stops start-up listing those that exist."""
        path = write(self, '[proxy]\nmodules = ["acl", "nosuch"]\n')
        options = tap.Options()
        e = self.assertRaises(tap.ConfigRefused, options.parseOptions, ["--config", path])
        self.assertIn("'nosuch'", str(e))
        self.assertIn("registrar", str(e))

    def test_unknown_addon(self):
        """An addon no plugin provides stops start-up too."""
        path = write(self, '[proxy]\naddons = ["wholesale-nope"]\n')
        e = self.assertRaises(tap.ConfigRefused, tap.Options().parseOptions, ["--config", path])
        self.assertIn("proxy.addons", str(e))


class TwistdTests(SynchronousTestCase):
    """twistd itself, as an admin runs it."""

    def twistd(self, *args):
        code = "import sys; from twisted.scripts.twistd import run; sys.argv = ['twistd'] + sys.argv[1:]; run()"
        return subprocess.run(
            [sys.executable, "-c", code] + list(args),
            capture_output=True,
            text=True,
            timeout=60,
            cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(tap.__file__)))),
        )

    def test_help(self):
        """twistd pbx --help describes the service and its --config option."""
        result = self.twistd("pbx", "--help")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("--config", result.stdout)
        self.assertIn("SIP PBX", result.stdout)

    def test_broken_config(self):
        """twistd -n pbx --config broken.toml exits non-zero with the message
        and no traceback."""
        path = write(self, "[proxy]\nudp_port = \"abc\"\nudp_prot = 1\n")
        result = self.twistd("-n", "--pidfile=", "pbx", "--config", path)
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, 1, output)
        self.assertIn("proxy.udp_port", output)
        self.assertIn("did you mean", output)
        self.assertNotIn("Traceback", output)

    def test_port_taken(self):
        """A SIP port already in use ends start-up with exit status 1 and one
        line naming the config, not a traceback."""
        import socket

        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        self.addCleanup(s.close)
        port = s.getsockname()[1]
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        path = os.path.join(base, "pbx.toml")
        with open(path, "w") as f:
            f.write(f'database_url = "sqlite:///{base}/db.sqlite3"\nhttp_addr = "127.0.0.1:0"\n[proxy]\naddr = "127.0.0.1"\nudp_port = {port}\n')
        result = self.twistd("-n", "--pidfile=", "--logfile=-", "pbx", "--config", path)
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, 1, output)
        self.assertIn("cannot start the SIP listeners", output)
        self.assertNotIn("Traceback", output)


class StartupLogTests(SynchronousTestCase):
    """What twistd -n pbx writes while starting, at the level asked for."""

    def run_until_started(self, *args: str, toml: str = "", marker: bytes = b"rustpbx_py started", linger: float = 0.0) -> str:
        """Start twistd pbx on ephemeral loopback ports, read its log until
        C{marker} (or 60 s) and C{linger} seconds more, stop it with
        SIGTERM; the whole log."""
        import select
        import signal
        import time

        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        path = os.path.join(base, "pbx.toml")
        with open(path, "w") as f:
            f.write(
                f'database_url = "sqlite:///{base}/db.sqlite3"\nhttp_addr = "127.0.0.1:0"\n[proxy]\naddr = "127.0.0.1"\nudp_port = 0\ntcp_port = 0\n'
                'frequency_limiter = "100/60s"\nmedia_proxy = "none"\n' + toml
            )
        code = "import sys; from twisted.scripts.twistd import run; sys.argv = ['twistd'] + sys.argv[1:]; run()"
        process = subprocess.Popen(
            [sys.executable, "-c", code, "-n", "--pidfile=", "--logfile=-", "pbx", "--config", path, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(tap.__file__)))),
        )
        output = b""
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline:
                if marker in output:
                    deadline = min(deadline, time.monotonic() + linger)
                    if not linger:
                        break
                ready, _, _ = select.select([process.stdout], [], [], 1.0)
                if ready:
                    chunk = os.read(process.stdout.fileno(), 65536)
                    if not chunk:
                        break
                    output += chunk
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            rest, _ = process.communicate(timeout=60)
            output += rest
        return output.decode("utf-8", "replace")

    def test_info(self):
        """At info: each listener, the ACL with its limiter on (it used to
        say "off"), the trunk host names resolved, the modules, a started
        line; and no object repr ("<... at 0x...>") anywhere."""
        log = self.run_until_started(
            "--log-level", "info",
            toml='[proxy.trunks.local]\ndest = "sip:127.0.0.1:5099"\ninbound_hosts = ["localhost"]\n',
        )
        self.assertIn("rustpbx_py started", log)
        self.assertRegex(log, r"listening for SIP over UDP on 127\.0\.0\.1:\d+")
        self.assertRegex(log, r"listening for SIP over TCP on 127\.0\.0\.1:\d+")
        self.assertRegex(log, r"acl: \d+ rules, 1 trunks, limiter 100/60s")
        self.assertIn("localhost resolves to 127.0.0.1", log)
        self.assertIn("modules: acl, auth, registrar, call", log)
        self.assertNotRegex(log, r" at 0x[0-9a-f]+")
        self.assertNotIn("Traceback", log)

    def test_warn_level(self):
        """--log-level warn keeps the info lines out once logging is
        filtered; warnings still show."""
        log = self.run_until_started(
            "--log-level", "warn",
            toml='[proxy.trunks.t]\ndest = "sip:127.0.0.1:5099"\nrecording = { enabled = true }\n',
            marker=b"proxy.trunks.t.recording",
            linger=3.0,
        )
        self.assertNotIn("listening for SIP", log)
        self.assertNotIn("acl: ", log)
        self.assertIn("proxy.trunks.t.recording", log)

    def test_bad_level(self):
        """An unknown --log-level stops twistd with status 1 and a message."""
        result = TwistdTests.twistd(self, "-n", "--pidfile=", "pbx", "--config", write(self, "[proxy]\nudp_port = 0\n"), "--log-level", "loud")
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assertIn("--log-level", result.stdout + result.stderr)


class GarbageCollectorTests(SynchronousTestCase):
    def test_tuning(self):
        """The twistd service tunes the collector: full collections only after
        many young ones, start-up objects frozen (checked in a child process
        so this test process keeps its own settings)."""
        code = (
            "import gc; from rustpbx_py.server import tune_garbage_collector, GC_GEN2_THRESHOLD; "
            "before = gc.get_freeze_count(); tune_garbage_collector(); "
            "print(gc.get_threshold()[2] == GC_GEN2_THRESHOLD, gc.get_freeze_count() > before)"
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        self.assertEqual(result.stdout.split(), ["True", "True"], result.stderr)

    def test_build_service_tunes(self):
        """buildService (what twistd runs) asks for the tuning; tests' services do not."""
        from rustpbx_py.config import default_config
        from rustpbx_py.server import PbxService, buildService

        self.assertTrue(buildService(default_config()).tune_gc)
        self.assertFalse(PbxService(default_config()).tune_gc)
