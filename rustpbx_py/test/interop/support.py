"""
Helpers for interop tests: start a PBX on ephemeral loopback ports, and run
an external SIP tool as a child process without blocking the reactor.
"""

from __future__ import annotations

import os
import shutil
from typing import List, Optional, Sequence, Tuple

from twisted.internet import defer, error, protocol, reactor
from twisted.python.failure import Failure

from rustpbx_py.config import default_config
from rustpbx_py.server import PbxService


def require_ipv6_loopback() -> None:
    """C{SkipTest} unless a UDP socket can bind ::1 here (containers often
    have no IPv6 loopback)."""
    import socket

    from twisted.trial.unittest import SkipTest

    try:
        probe = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        raise SkipTest("no IPv6 loopback here")


def artefacts_dir(*parts: str) -> str:
    """
    Where tests leave what a person looks at afterwards (screenshots):
    C{$RUSTPBX_ARTEFACTS} when set, else C{artefacts/} in trial's working
    directory (C{_trial_temp/artefacts}); C{parts} name a subfolder,
    created.
    """
    base = os.environ.get("RUSTPBX_ARTEFACTS") or os.path.join(os.getcwd(), "artefacts")
    path = os.path.join(os.path.abspath(base), *parts)
    os.makedirs(path, exist_ok=True)
    return path


def require_tool(name: str) -> str:
    """The path of C{name}, or a reason to skip (as C{SkipTest})."""
    from twisted.trial.unittest import SkipTest

    path = shutil.which(name)
    if path is None:
        raise SkipTest(f"{name} is not installed (.ci/run installs it)")
    return path


def start_pbx(testcase, database_url: Optional[str] = None, **proxy) -> defer.Deferred:
    """
    Start a PBX listening on 127.0.0.1 with ephemeral ports (UDP and TCP
    unless the caller says otherwise) and stop it when the test ends.
    Fires with the L{PbxService}; C{service.ports} has the bound ports.
    """
    proxy.setdefault("addr", "127.0.0.1")
    proxy.setdefault("udp_port", 0)
    proxy.setdefault("tcp_port", 0)
    if database_url is None:
        database_url = "sqlite:///" + os.path.abspath(testcase.mktemp()) + ".sqlite3"
    config = default_config(**proxy)
    config.database_url = database_url
    return start_service(testcase, config)


def start_service(testcase, config) -> defer.Deferred:
    """Start a PBX for an already built config; stopped at test end."""
    service = PbxService(config, reactor)
    service.startService()
    testcase.addCleanup(service.stopService)
    return service.ready


class _Collector(protocol.ProcessProtocol):
    def __init__(self, done: defer.Deferred, stdin: Optional[bytes]) -> None:
        self.done = done
        self.out: List[bytes] = []
        self.err: List[bytes] = []
        self.stdin = stdin

    def connectionMade(self) -> None:
        if self.stdin is not None:
            self.transport.write(self.stdin)
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self.out.append(data)

    def errReceived(self, data: bytes) -> None:
        self.err.append(data)

    def processEnded(self, reason: Failure) -> None:
        code = reason.value.exitCode if isinstance(reason.value, (error.ProcessDone, error.ProcessTerminated)) else None
        self.done.callback((b"".join(self.out), b"".join(self.err), code))


def run_tool(
    args: Sequence[str],
    timeout: float = 60.0,
    stdin: Optional[bytes] = None,
    cwd: Optional[str] = None,
) -> defer.Deferred:
    """
    Run C{args} and fire with (stdout, stderr, exit code).  A process still
    running after C{timeout} seconds is killed (exit code None then).
    """
    done: defer.Deferred = defer.Deferred()
    proto = _Collector(done, stdin)
    process = reactor.spawnProcess(proto, args[0], list(args), env=dict(os.environ), path=cwd)

    def kill() -> None:
        try:
            process.signalProcess("KILL")
        except error.ProcessExitedAlready:
            pass

    timer = reactor.callLater(timeout, kill)

    def finished(result: Tuple[bytes, bytes, Optional[int]]):
        if timer.active():
            timer.cancel()
        return result

    return done.addBoth(finished)


def start_pbx_toml(testcase, toml_text: str) -> defer.Deferred:
    """
    Start a PBX from a RustPBX-style TOML text (written to a temporary file
    and loaded exactly as twistd would), with the database in a temporary
    directory unless the text names one.
    """
    from rustpbx_py.config import load_config

    base = os.path.abspath(testcase.mktemp())
    os.makedirs(base)
    path = os.path.join(base, "pbx.toml")
    if "database_url" not in toml_text:
        toml_text = f'database_url = "sqlite:///{base}/pbx.sqlite3"\n' + toml_text
    with open(path, "w") as f:
        f.write(toml_text)
    return start_service(testcase, loopback_web(load_config(path), toml_text))


def loopback_web(config, toml_text: str):
    """The HTTP(S) server of a test config on 127.0.0.1 ephemeral ports
    unless the text names an address (the defaults, 0.0.0.0:8080 and
    :8443, would clash between tests running at once)."""
    if "http_addr" not in toml_text:
        config.http_addr = "127.0.0.1:0"
    if "https_addr" not in toml_text and config.https_addr is not None:
        config.https_addr = "127.0.0.1:0"
    return config


SCENARIOS = os.path.join(os.path.dirname(__file__), "scenarios")


def scenario(name: str) -> str:
    """The path of a SIPp scenario kept under C{interop/scenarios}."""
    return os.path.join(SCENARIOS, name)


def free_udp_port() -> int:
    """A UDP port nobody listens on now (for a SIPp UAS that must register first)."""
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


#: The two users of the call tests: a caller and the callee 1002.
CALL_USERS = """
[[proxy.user_backends]]
type = "memory"

[[proxy.user_backends.users]]
username = "caller"
password = "caller-secret"

[[proxy.user_backends.users]]
username = "1002"
password = "callee-secret"
"""


def call_pbx_toml(proxy_lines: str = "", tail: str = "") -> str:
    """
    The TOML of a PBX for call tests: C{[proxy]} on 127.0.0.1 with an
    ephemeral UDP port plus C{proxy_lines}, the L{CALL_USERS}, then C{tail}
    (trunks, routes).
    """
    return f'[proxy]\naddr = "127.0.0.1"\nudp_port = 0\n{proxy_lines}\n{CALL_USERS}\n{tail}'


class SippMixin:
    """
    Runs SIPp scenarios against the PBX of a test (C{self.sipp} is the
    binary, C{self.port} the PBX's UDP port), each in its own directory.
    """

    def sipp_run(self, name: str, port: int, extra, remote: bool = True, timeout: float = 120, local_ip: str = "127.0.0.1"):
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        path = name if os.path.isabs(name) else scenario(name)
        args = [self.sipp]
        if remote:
            args.append(f"127.0.0.1:{self.port}")
        args += ["-sf", path, "-i", local_ip, "-p", str(port), "-nostdin", "-timeout", str(int(timeout - 10)),
                 "-trace_err", "-error_file", os.path.join(workdir, "errors.log")]
        args += list(extra)
        return run_tool(args, timeout=timeout, cwd=workdir)

    @defer.inlineCallbacks
    def register_callee(self, port: int):
        """SIPp registers 1002 (digest) from C{port}, where its UAS will listen."""
        out, err, code = yield self.sipp_run(
            "call_register.xml", port, ["-s", "1002", "-au", "1002", "-ap", "callee-secret", "-m", "1"]
        )
        self.assertEqual(code, 0, (out + err).decode("utf-8", "replace")[-2000:])

