# -*- test-case-name: rustpbx_py.test.test_debian -*-
"""
The Debian package, end to end, on this machine: build the .deb, install it
with apt, run the PBX the way its systemd unit does, run the suite on
bookworm's python3-twisted & co., purge it and look for leftovers.

This installs and purges a system package, so it only runs when asked:
C{RUSTPBX_DEB_TEST=1} (as root, on Debian, from a source tree; meant for
C{.ci/run}). Everyone else's C{make test} skips it in no time.

C{RUSTPBX_DEB=path/to/rustpbx-py_X_all.deb} tests that package instead of
building one (C{make deb} leaves it in C{dist/}).

The tests share one build and one installation (L{_Machine}); their names
put the purge last, and each installs the package first if an earlier one
did not, so any of them also runs alone.
"""

from __future__ import annotations

import configparser
import glob
import grp
import os
import pickle
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import tomllib

from twisted.trial.unittest import SkipTest, SynchronousTestCase

PKG = "rustpbx-py"
USER = "rustpbx-py"
ETC = "/etc/rustpbx-py"
STATE = "/var/lib/rustpbx-py"
LOGS = "/var/log/rustpbx-py"
SITE = "/usr/lib/python3/dist-packages"
UNIT = "/lib/systemd/system/rustpbx-py.service"
TWISTD = "/usr/bin/twistd3"
# Left in the state directory by this test, so that it purges only a
# package it installed itself and never an admin's real PBX.
MARKER = os.path.join(STATE, ".installed-by-test_debian")

_SOURCE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _requested() -> bool:
    return os.environ.get("RUSTPBX_DEB_TEST") == "1"


def _env(**extra: str) -> dict[str, str]:
    """The environment of a Debian tool: Debian's PATH and Python, none of the
    virtualenv or pyenv the suite itself may be running in, and no
    C{RUSTPBX_DEB_TEST}, so that the package's own copy of this module, run
    by the build or from the installed tree, skips instead of recursing."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTHON", "PYENV", "VIRTUAL_ENV", "RUSTPBX_DEB"))
    }
    env["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"
    env["DEBIAN_FRONTEND"] = "noninteractive"
    env["LC_ALL"] = "C.UTF-8"
    env.update(extra)
    return env


def _run(argv, timeout=600, check=True, **kw) -> subprocess.CompletedProcess:
    """Run a command from C{/} with L{_env}, output captured as text; raise
    with the command's output when it fails and C{check} is set."""
    kw.setdefault("env", _env())
    kw.setdefault("cwd", "/")
    proc = subprocess.run(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        timeout=timeout,
        **kw,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            "%s exited with %d:\n%s" % (" ".join(argv), proc.returncode, _tail(proc.stdout))
        )
    return proc


def _tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _installed() -> bool:
    proc = _run(["dpkg-query", "-W", "-f=${db:Status-Status}", PKG], check=False)
    return proc.returncode == 0 and proc.stdout.strip() == "installed"


def _known_to_dpkg() -> bool:
    """Installed, half-installed or only config-files left."""
    proc = _run(["dpkg-query", "-W", "-f=${db:Status-Status}", PKG], check=False)
    return proc.returncode == 0 and proc.stdout.strip() not in ("", "not-installed")


def _free_port(kind: int) -> int:
    """A port free for both UDP and TCP on loopback, so one number serves a
    listener whatever its transport."""
    while True:
        s = socket.socket(socket.AF_INET, kind)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        other = socket.socket(
            socket.AF_INET,
            socket.SOCK_STREAM if kind == socket.SOCK_DGRAM else socket.SOCK_DGRAM,
        )
        try:
            other.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            other.close()
        return port


def _plugin_cache(directory: str) -> dict:
    with open(os.path.join(directory, "dropin.cache"), "rb") as f:
        return pickle.load(f)


class _Machine:
    """Build once, install once, shared by the tests of one run."""

    deb: str | None = None
    build_log: str = ""
    install_log: str = ""
    installed: bool = False
    build_error: BaseException | None = None
    install_error: BaseException | None = None

    @classmethod
    def preconditions(cls) -> None:
        if not _requested():
            raise SkipTest(
                "installs and purges the .deb on this machine: set "
                "RUSTPBX_DEB_TEST=1 to run it (as root, on Debian; meant for CI)"
            )
        if not os.path.exists(os.path.join(_SOURCE, "debian", "build-deb.sh")):
            raise SkipTest("not a source tree (no debian/build-deb.sh): nothing to build")
        # Asked for explicitly: what is missing is an error, not a skip.
        if os.geteuid() != 0:
            raise AssertionError("RUSTPBX_DEB_TEST=1 needs root (apt-get, runuser)")
        for tool in ("/usr/bin/apt-get", "/usr/bin/dpkg-query", "/sbin/runuser"):
            if not os.path.exists(tool):
                raise AssertionError("RUSTPBX_DEB_TEST=1 needs Debian: no %s" % (tool,))

    @classmethod
    def build(cls) -> str:
        """The .deb to test, built on the first call; a failed build is
        reported by every test that needs it, not retried by each."""
        cls.preconditions()
        if cls.build_error is not None:
            raise AssertionError("the package build failed (see the first failure):\n"
                                 + _tail(str(cls.build_error), 15))
        try:
            return cls._build()
        except BaseException as e:
            cls.build_error = e
            raise

    @classmethod
    def _build(cls) -> str:
        if cls.deb is None:
            given = os.environ.get("RUSTPBX_DEB")
            if given:
                cls.deb = os.path.abspath(given)
                cls.build_log = _run(["lintian", "--display-info", cls.deb], check=False).stdout
            else:
                out = os.path.join(_SOURCE, "dist")
                proc = _run(
                    ["bash", os.path.join(_SOURCE, "debian", "build-deb.sh")],
                    timeout=1800,
                    # `make test` has just run this suite on the same tree:
                    # running it again inside the build doubles CI time.
                    env=_env(RUSTPBX_DEB_OUT=out,
                             DEB_BUILD_OPTIONS=os.environ.get("DEB_BUILD_OPTIONS", "nocheck")),
                )
                cls.build_log = proc.stdout
                debs = sorted(glob.glob(os.path.join(out, PKG + "_*_all.deb")))
                if len(debs) != 1:
                    raise AssertionError("expected one .deb in %s, found %r" % (out, debs))
                cls.deb = debs[0]
        return cls.deb

    @classmethod
    def install(cls) -> None:
        """Install the package built by this run, once; a copy left behind
        by an earlier, interrupted run of this test is purged first."""
        deb = cls.build()
        if cls.installed and _installed():
            return
        if cls.install_error is not None:
            raise AssertionError("installing the package failed (see the first failure):\n"
                                 + _tail(str(cls.install_error), 15))
        try:
            cls._install(deb)
        except BaseException as e:
            cls.install_error = e
            raise

    @classmethod
    def _install(cls, deb: str) -> None:
        if _known_to_dpkg():
            if not os.path.exists(MARKER):
                raise AssertionError(
                    "%s is already installed on this machine and not by this test: "
                    "refusing to replace and purge it" % (PKG,)
                )
            cls.purge()
        proc = _run(
            ["apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=600", deb],
            timeout=900,
        )
        cls.install_log = proc.stdout
        with open(MARKER, "w") as f:
            f.write("installed by rustpbx_py.test.test_debian; purged by it too\n")
        cls.installed = True

    @classmethod
    def purge(cls) -> str:
        proc = _run(["apt-get", "purge", "-y", "-q", "-o", "DPkg::Lock::Timeout=600", PKG])
        return proc.stdout


class DebianPackageTests(SynchronousTestCase):
    """
    C{apt install ./rustpbx-py_*.deb} gives a supervised PBX, and
    C{apt purge rustpbx-py} takes it all away again.
    """

    def setUp(self) -> None:
        _Machine.preconditions()

    def test_1_package_contents(self) -> None:
        """
        The .deb builds, lintian reports no error, it ships the twistd plugin
        without a C{twisted/__init__.py} or C{twisted/plugins/__init__.py} of
        its own, no plugin cache, and the configuration as a conffile whose
        paths point at the state directory.
        """
        deb = _Machine.build()
        errors = [l for l in _Machine.build_log.splitlines() if l.startswith("E: ")]
        self.assertEqual(errors, [], "lintian errors:\n" + "\n".join(errors))

        listing = _run(["dpkg-deb", "--contents", deb]).stdout
        files = {line.split()[-1].lstrip(".") for line in listing.splitlines()}
        # a symlink line ends in "-> target": not expected here
        self.assertNotIn(SITE + "/twisted/__init__.py", files)
        self.assertNotIn(SITE + "/twisted/plugins/__init__.py", files)
        self.assertIn(SITE + "/twisted/plugins/pbx_plugin.py", files)
        self.assertIn(SITE + "/rustpbx_py/plugins/__init__.py", files)
        self.assertIn(UNIT, files)
        self.assertIn(ETC + "/pbx.toml", files)
        for d in ("routes", "trunks", "acl"):
            self.assertIn(ETC + "/" + d + "/", files)
        self.assertEqual([f for f in files if f.endswith("dropin.cache")], [])
        self.assertEqual([f for f in files if "__pycache__" in f or f.endswith(".pyc")], [])

        # Every data file of the source package reaches the .deb (setup.cfg's
        # package_data is the usual culprit when one does not).
        missing = [
            f for f in _source_data_files()
            if SITE + "/" + f not in files
        ]
        self.assertEqual(
            missing, [],
            "data files not in the .deb: add them to [options.package_data] in setup.cfg",
        )

        with tempfile.TemporaryDirectory() as tmp:
            _run(["dpkg-deb", "--control", deb, tmp + "/control"])
            with open(tmp + "/control/conffiles") as f:
                self.assertIn(ETC + "/pbx.toml", f.read().split())
            with open(tmp + "/control/triggers") as f:
                triggers = f.read()
            for path in (SITE + "/rustpbx_py/plugins", SITE + "/twisted/plugins"):
                self.assertIn("interest-noawait " + path, triggers)
            _run(["dpkg-deb", "--extract", deb, tmp + "/root"])
            with open(tmp + "/root" + ETC + "/pbx.toml", "rb") as f:
                config = tomllib.load(f)
        text = repr(config)
        self.assertIn("'sqlite:///var/lib/rustpbx-py/rustpbx.sqlite3'", text)
        self.assertIn("'/var/lib/rustpbx-py/config'", text)

    def test_2_installed_service(self) -> None:
        """
        Installing creates the C{rustpbx-py} system user and the directories
        it writes, protects the configuration, and installs a systemd unit
        that runs C{twistd3 pbx} as that user with the sandbox the issue
        asks for.
        """
        _Machine.install()
        user = pwd.getpwnam(USER)
        self.assertLess(user.pw_uid, 1000, "not a system user")
        self.assertEqual(user.pw_dir, STATE)
        self.assertEqual(user.pw_shell, "/usr/sbin/nologin")
        self.assertEqual(grp.getgrgid(user.pw_gid).gr_name, USER)

        for d in (STATE, LOGS, STATE + "/config", STATE + "/queues"):
            st = os.stat(d)
            self.assertEqual((st.st_uid, stat.S_IMODE(st.st_mode)), (user.pw_uid, 0o750), d)
        st = os.stat(ETC + "/pbx.toml")
        self.assertEqual(
            (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)), (0, user.pw_gid, 0o640)
        )

        unit = configparser.ConfigParser(strict=False, interpolation=None)
        unit.optionxform = str
        unit.read(UNIT)
        service = unit["Service"]
        self.assertEqual(
            service["ExecStart"],
            TWISTD + " --nodaemon --pidfile= --logfile=- pbx --config /etc/rustpbx-py/pbx.toml",
        )
        expected = {
            "User": USER,
            "StateDirectory": "rustpbx-py",
            "LogsDirectory": "rustpbx-py",
            "AmbientCapabilities": "CAP_NET_BIND_SERVICE",
            "Restart": "on-failure",
            "NoNewPrivileges": "yes",
            "ProtectSystem": "strict",
            "ProtectHome": "yes",
            "PrivateTmp": "yes",
            "Environment": "PYTHONMALLOC=malloc",
        }
        self.assertEqual({k: service.get(k) for k in expected}, expected)
        self.assertTrue(
            os.path.islink("/etc/systemd/system/multi-user.target.wants/rustpbx-py.service"),
            "service not enabled",
        )
        if shutil.which("systemd-analyze", path=_env()["PATH"]):
            _run(["systemd-analyze", "verify", UNIT])

        # twistd3 finds the pbx plugin, as the service user, from the cache
        # root wrote at install time; so do the PBX's own plugin modules.
        self.assertIn("pbx_plugin", _plugin_cache(SITE + "/twisted/plugins"))
        modules = sorted(
            os.path.basename(p)[:-3]
            for p in glob.glob(SITE + "/rustpbx_py/plugins/*.py")
            if not p.endswith("/__init__.py")
        )
        if modules:
            self.assertEqual(sorted(_plugin_cache(SITE + "/rustpbx_py/plugins")), modules)
        proc = _run(["runuser", "-u", USER, "--", TWISTD, "--help"], cwd=STATE)
        self.assertIn(" pbx ", proc.stdout)

    def test_2_installed_config_loads(self) -> None:
        """
        The installed configuration passes the installed package's own
        loader, read as the service user (so its mode lets the service read
        it), and C{rustpbx-py-check} accepts it.
        """
        _Machine.install()
        conf = ETC + "/pbx.toml"
        loader = _run(
            ["runuser", "-u", USER, "--", "/usr/bin/python3", "-c",
             "from rustpbx_py.config import load_config; import sys; "
             "c = load_config(sys.argv[1]); print(c.database_url)", conf],
            cwd=STATE,
            check=False,
        )
        if "cannot import name 'load_config'" in loader.stdout or (
            "No module named 'rustpbx_py.config'" in loader.stdout
        ):
            raise SkipTest("the installed package has no rustpbx_py.config.load_config yet")
        self.assertEqual(loader.returncode, 0, loader.stdout)
        self.assertEqual(loader.stdout.strip(), "sqlite://" + STATE + "/rustpbx.sqlite3")
        cli = _run(["/usr/bin/python3", "-c", "import rustpbx_py.__main__"], check=False)
        if cli.returncode == 0:
            _run(["runuser", "-u", USER, "--", "/usr/bin/rustpbx-py-check", conf],
                 cwd=STATE)

    def test_3_addon_plugin_trigger(self) -> None:
        """
        A third-party package dropping a module into
        C{rustpbx_py/plugins} fires the package's file trigger: the plugin
        cache lists it after the addon's install and no longer after its
        removal.
        """
        _Machine.install()
        plugins = SITE + "/rustpbx_py/plugins"
        name = "rustpbx-py-test-debian-addon"
        with tempfile.TemporaryDirectory() as tmp:
            root = os.path.join(tmp, "root")
            os.makedirs(os.path.join(root, "DEBIAN"))
            os.makedirs(root + plugins)
            with open(os.path.join(root, "DEBIAN", "control"), "w") as f:
                f.write(
                    "Package: %s\nVersion: 1.0\nArchitecture: all\n"
                    "Maintainer: test_debian <test@example.org>\nDepends: %s\n"
                    "Description: addon made by rustpbx_py.test.test_debian\n"
                    " It provides one do-nothing IPlugin.\n" % (name, PKG)
                )
            with open(root + plugins + "/test_debian_addon.py", "w") as f:
                f.write(
                    "from twisted.plugin import IPlugin\n"
                    "from zope.interface import provider\n\n\n"
                    "@provider(IPlugin)\n"
                    "class TestDebianAddon:\n"
                    "    pass\n"
                )
            addon = os.path.join(tmp, name + ".deb")
            _run(["dpkg-deb", "--root-owner-group", "--build", root, addon])
            try:
                _run(["dpkg", "-i", addon])
                self.assertIn("test_debian_addon", _plugin_cache(plugins))
            finally:
                _run(["dpkg", "--purge", name])
        cache = os.path.join(plugins, "dropin.cache")
        if os.path.exists(cache):
            self.assertNotIn("test_debian_addon", _plugin_cache(plugins))
        self.assertFalse(os.path.exists(plugins + "/__pycache__/test_debian_addon.cpython-311.pyc"))

    def test_4_options_answered(self) -> None:
        """
        C{twistd3 pbx} started exactly as the unit starts it (as the service
        user, from the state directory) with the installed configuration
        moved to free ports answers C{sipsak}'s OPTIONS with 200 and shuts
        down cleanly on SIGTERM.
        """
        _Machine.install()
        core = _run(["/usr/bin/python3", "-c", "import rustpbx_py.server"], check=False)
        if core.returncode != 0:
            raise SkipTest(
                "the installed package has no SIP core yet (rustpbx_py.server "
                "does not import):\n" + _tail(core.stdout, 5)
            )
        if not shutil.which("sipsak", path=_env()["PATH"]):
            raise AssertionError("sipsak is not installed (.ci/run installs it)")

        with open(ETC + "/pbx.toml", "rb") as f:
            text = f.read().decode("utf-8")
        sip_port, text = _move_ports(text)
        config = os.path.join(STATE, "test_debian-pbx.toml")
        with open(config, "w") as f:
            f.write(text)
        user = pwd.getpwnam(USER)
        os.chown(config, 0, user.pw_gid)
        os.chmod(config, 0o640)

        argv = [TWISTD, "--nodaemon", "--pidfile=", "--logfile=-", "pbx", "--config", config]
        with tempfile.TemporaryFile("w+") as log:
            pbx = subprocess.Popen(
                ["runuser", "-u", USER, "--"] + argv,
                cwd=STATE,
                env=_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                answer = None
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and pbx.poll() is None:
                    answer = _run(
                        ["sipsak", "-vv", "-H", "127.0.0.1", "-s", "sip:127.0.0.1:%d" % sip_port],
                        timeout=30,
                        check=False,
                    )
                    if answer.returncode == 0:
                        break
                    time.sleep(0.5)
                self.assertIsNone(pbx.poll(), "twistd3 exited:\n" + _read(log))
                self.assertIsNotNone(answer)
                self.assertEqual(
                    answer.returncode,
                    0,
                    "no 200 to OPTIONS:\n%s\n--- twistd3 log:\n%s" % (answer.stdout, _read(log)),
                )
                self.assertRegex(answer.stdout, r"SIP/2\.0 200")
            finally:
                if pbx.poll() is None:
                    # systemd's stop: SIGTERM to twistd itself (runuser's
                    # child); runuser then exits with twistd's status.
                    for child in _children(pbx.pid):
                        os.kill(child, signal.SIGTERM)
                    try:
                        pbx.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        os.killpg(pbx.pid, signal.SIGKILL)
                        pbx.wait()
            # twistd re-raises the SIGTERM it handled once its reactor has
            # stopped; runuser reports that as 128+15, and systemd counts
            # death by SIGTERM as a clean stop.
            self.assertIn(pbx.returncode, (0, 128 + signal.SIGTERM),
                          "twistd3 did not stop cleanly:\n" + _read(log))
            self.assertIn("Server Shut Down.", _read(log))

    def test_5_bookworm_suite(self) -> None:
        """
        The installed package's unit tests pass under C{/usr/bin/python3}
        with Debian's python3-twisted, python3-autobahn and python3-pylibsrtp
        (the build ran the whole suite, interop included, on them already;
        this proves the installed tree carries every module and data file).
        """
        _Machine.install()
        tests = sorted(
            "rustpbx_py.test." + os.path.basename(p)[:-3]
            for p in glob.glob(SITE + "/rustpbx_py/test/test_*.py")
            if not p.endswith("/test_debian.py")
        )
        if not tests:
            raise SkipTest("the package has no unit tests besides this one yet")
        with tempfile.TemporaryDirectory() as tmp:
            proc = _run(
                ["/usr/bin/python3", "-m", "twisted.trial", "--temp-directory",
                 os.path.join(tmp, "_trial_temp")] + tests,
                cwd=tmp,
                env=_env(PYTHONDONTWRITEBYTECODE="1"),
                timeout=900,
                check=False,
            )
        self.assertIn("/usr/lib/python3/dist-packages", _run(
            ["/usr/bin/python3", "-c", "import rustpbx_py, twisted; "
             "print(rustpbx_py.__file__, twisted.__file__)"]).stdout)
        self.assertEqual(proc.returncode, 0, "installed suite failed:\n" + _tail(proc.stdout, 120))
        self.assertRegex(proc.stdout, r"\nRan [1-9][0-9]* tests? ")

    def test_5_reinstall_keeps_state(self) -> None:
        """
        Installing the package again (what an upgrade does: prerm upgrade,
        unpack, postinst configure OLD-VERSION) keeps the admin's edit of the
        conffile, its mode, the state directory's contents and the user.
        """
        _Machine.install()
        conf = ETC + "/pbx.toml"
        uid = pwd.getpwnam(USER).pw_uid
        with open(conf, "a") as f:
            f.write("\n# edited by test_debian\n")
        kept = os.path.join(STATE, "test_debian-kept")
        with open(kept, "w") as f:
            f.write("state\n")
        _run(["dpkg", "-i", _Machine.build()], timeout=600)
        with open(conf) as f:
            self.assertIn("# edited by test_debian", f.read())
        st = os.stat(conf)
        self.assertEqual((st.st_uid, stat.S_IMODE(st.st_mode)), (0, 0o640))
        self.assertTrue(os.path.exists(kept))
        self.assertEqual(pwd.getpwnam(USER).pw_uid, uid)
        self.assertIn("pbx_plugin", _plugin_cache(SITE + "/twisted/plugins"))

    def test_6_purge(self) -> None:
        """
        C{apt-get purge rustpbx-py} leaves nothing behind: no configuration,
        state, logs, unit or enablement link, no plugin cache keeping
        C{rustpbx_py/plugins} alive, and twisted's cache no longer lists the
        pbx plugin. The system user stays, as Debian does for users that may
        still own files.
        """
        _Machine.install()
        log = _Machine.purge()
        self.assertNotIn("not empty so not removed", log)
        self.assertFalse(_known_to_dpkg())
        for path in (
            ETC,
            STATE,
            LOGS,
            SITE + "/rustpbx_py",
            SITE + "/twisted/plugins/pbx_plugin.py",
            "/usr/libexec/rustpbx-py",
            UNIT,
            "/etc/systemd/system/multi-user.target.wants/rustpbx-py.service",
        ):
            self.assertFalse(os.path.lexists(path), path + " left behind")
        if os.path.exists(SITE + "/twisted/plugins/dropin.cache"):
            self.assertNotIn("pbx_plugin", _plugin_cache(SITE + "/twisted/plugins"))
        self.assertEqual(pwd.getpwnam(USER).pw_dir, STATE)


def _source_data_files() -> list[str]:
    """The files under C{rustpbx_py/} and C{twisted/plugins/} of the source
    tree that are neither Python nor byte code (as git knows them when it
    can, so that scratch files are not counted)."""
    listed = _run(
        ["git", "-C", _SOURCE, "ls-files", "--", "rustpbx_py", "twisted/plugins"],
        check=False,
    )
    if listed.returncode == 0:
        names = listed.stdout.split()
    else:
        names = [
            os.path.relpath(os.path.join(d, f), _SOURCE)
            for top in ("rustpbx_py", "twisted/plugins")
            for d, _, fs in os.walk(os.path.join(_SOURCE, top))
            for f in fs
        ]
    return sorted(
        n for n in names
        if not n.endswith((".py", ".pyc")) and "__pycache__" not in n
        and not n.endswith("dropin.cache")
    )


def _children(pid: int) -> list[int]:
    with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
        return [int(c) for c in f.read().split()]


def _read(f) -> str:
    f.flush()
    f.seek(0)
    return _tail(f.read(), 80)


_PORT_KEY = re.compile(r'^(\s*[A-Za-z0-9_]*port\s*=\s*)(\d+)', re.M)
# RTP ranges and the like are not listeners: leave them alone.
_NOT_LISTENER = re.compile(r"rtp|media|start|end|min|max|external|public", re.I)
_ADDR = re.compile(r'^(\s*[A-Za-z0-9_]*addr(?:ess)?\s*=\s*")([^":]*|\[[^\]]*\]):(\d+)"', re.M)


def _move_ports(text: str) -> tuple[int, str]:
    """
    Give every listener of a config its own free port: C{*port = N} keys
    (but not RTP ranges) and C{*addr = "host:N"} strings. Returns the port that
    replaced the config's SIP UDP port (5060) and the new text.
    """
    mapping: dict[int, int] = {}

    def new(port: int) -> int:
        if port not in mapping:
            mapping[port] = _free_port(socket.SOCK_DGRAM)
        return mapping[port]

    def port_key(m: re.Match) -> str:
        if _NOT_LISTENER.search(m.group(1)):
            return m.group(0)
        return m.group(1) + str(new(int(m.group(2))))

    text = _PORT_KEY.sub(port_key, text)
    text = _ADDR.sub(lambda m: '%s%s:%d"' % (m.group(1), m.group(2), new(int(m.group(3)))), text)
    tomllib.loads(text)
    if 5060 not in mapping:
        raise AssertionError("the installed config has no SIP port 5060 to move")
    return mapping[5060], text
