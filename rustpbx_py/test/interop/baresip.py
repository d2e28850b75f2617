# -*- test-case-name: rustpbx_py.test.interop.test_baresip -*-
"""
Drive Debian's baresip (1.0, package baresip-core) as a headless phone.

Each phone runs in its own directory (C{baresip -f DIR}) with a generated
config: SIP on 127.0.0.1 with ephemeral ports (UDP, TCP, TLS), no DNS
server but an unused loopback port (so nothing leaves the machine), the
G.711 codecs, C{aufile} as the microphone (the user's tone, see
L{rustpbx_py.test.interop.phones.TONES}), ALSA's C{null} device as the
speaker and the C{sndfile} filter dumping what was decoded into
C{snd/dump-*-dec.wav}: that file is what the phone heard.

Commands and events go through the C{ctrl_tcp} module (netstrings of JSON:
C{{"command": "dial", "params": "sip:bob@127.0.0.1"}} in, responses and
call events out).  What ctrl_tcp does not report is read from the output
(C{-s} prints the SIP trace): the registration result and a received
MESSAGE, which baresip 1.0 only prints.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
from typing import Callable, Dict, List, Optional, Tuple

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.protocols.basic import NetstringReceiver

from rustpbx_py.test.interop.phones import (
    TONES,
    USERS,
    ChildProcess,
    PhonePbx,
    dominant_tone,
    free_tcp_port,
    later,
    until,
    write_tone,
)
from rustpbx_py.test.interop.support import require_tool

MODULE_PATHS = (
    "/usr/lib/baresip/modules",
    "/usr/lib/x86_64-linux-gnu/baresip/modules",
    "/usr/local/lib/baresip/modules",
)

#: The modules a headless test phone needs, all in Debian's baresip-core.
MODULES = ("stdio", "sndfile", "alsa", "aufile")

#: Codec modules by the name a test asks for, with the rate and channels
#: the microphone file must have (aufile refuses any other).
CODECS = {"g711": (8000, 1), "opus": (48000, 2)}
APP_MODULES = ("contact", "menu", "ctrl_tcp")


def module_path() -> str:
    """Where baresip's modules are, or a reason to skip."""
    from twisted.trial.unittest import SkipTest

    for path in MODULE_PATHS:
        if all(os.path.exists(os.path.join(path, f"{m}.so")) for m in MODULES + APP_MODULES + tuple(CODECS)):
            return path
    names = ", ".join(MODULES + APP_MODULES + tuple(CODECS))
    raise SkipTest(f"baresip modules {names} not found in {', '.join(MODULE_PATHS)} (.ci/run installs baresip-core)")


class Control(NetstringReceiver):
    """The ctrl_tcp connection: commands with a token, responses and events."""

    MAX_LENGTH = 1 << 20

    def __init__(self) -> None:
        self.events: List[Dict] = []
        self.pending: Dict[str, defer.Deferred] = {}
        self.waiters: List[Tuple[Callable[[Dict], bool], defer.Deferred]] = []
        self.serial = 0
        self.closed: defer.Deferred = defer.Deferred()

    def stringReceived(self, data: bytes) -> None:
        message = json.loads(data)
        if message.get("response"):
            d = self.pending.pop(message.get("token", ""), None)
            if d is not None:
                d.callback(message)
            return
        if message.get("event"):
            self.events.append(message)
            for item in list(self.waiters):
                match, d = item
                if match(message):
                    self.waiters.remove(item)
                    d.callback(message)

    def connectionLost(self, reason=None) -> None:
        self.closed.callback(None)

    def command(self, name: str, params: Optional[str] = None) -> defer.Deferred:
        self.serial += 1
        token = f"t{self.serial}"
        body: Dict[str, str] = {"command": name, "token": token}
        if params is not None:
            body["params"] = params
        d: defer.Deferred = defer.Deferred()
        self.pending[token] = d
        self.sendString(json.dumps(body).encode())
        return d


class BaresipPhone:
    """
    One baresip user agent registered as C{user} over C{transport} ("udp",
    "tcp" or "tls") to the L{PhonePbx}; it answers calls by itself unless
    C{answer} is "manual" (then the test sends C{accept} or C{hangup}), and
    offers the one C{codec} family given ("g711" or "opus"); C{password}
    replaces the user's own (to try a wrong one).
    """

    def __init__(
        self,
        testcase,
        pbx: PhonePbx,
        user: str,
        transport: str = "udp",
        contacts: Tuple[str, ...] = (),
        answer: str = "auto",
        codec: str = "g711",
        password: Optional[str] = None,
    ) -> None:
        self.testcase = testcase
        self.pbx = pbx
        self.user = user
        self.transport = transport
        self.binary = require_tool("baresip")
        self.modules = module_path()
        self.dir = os.path.abspath(testcase.mktemp())
        os.makedirs(self.dir)
        # sndfile builds its file names in a small buffer: a short directory.
        self.snd = tempfile.mkdtemp(prefix="bs-")
        testcase.addCleanup(shutil.rmtree, self.snd, True)
        self.tone = TONES[user]
        self.ctrl_port = free_tcp_port()
        self.contacts = contacts
        self.answer = answer
        self.codec = codec
        self.password = password
        self.process = ChildProcess(os.path.join(self.dir, "output.log"))
        self.control: Optional[Control] = None

    #: The port baresip's SIP listens on (0: any) and the modules it loads
    #: beyond L{MODULES} and its codec's: what a subclass changes.
    sip_port = 0
    extra_modules: Tuple[str, ...] = ()

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@127.0.0.1"

    def account_line(self) -> str:
        """The line of baresip's accounts file: register with the PBX."""
        pbx_port = self.pbx.ports["TLS" if self.transport == "tls" else self.transport.upper()]
        password = self.password or USERS[self.user]
        return (
            f"<sip:{self.user}@127.0.0.1;transport={self.transport}>;auth_pass={password};"
            f'outbound="sip:127.0.0.1:{pbx_port};transport={self.transport}";regint=600;answermode={self.answer}'
        )

    def write_config(self) -> None:
        rate, channels = CODECS[self.codec]
        # baresip keeps audio_source's device in a 128-byte field: a path
        # under a deep _trial_temp (a package build's) is cut short and the
        # call fails with ENOENT, so the tone lives in the short directory.
        tone = write_tone(os.path.join(self.snd, "tone.wav"), self.tone, rate=rate, channels=channels)
        modules = "".join(f"module {m}.so\n" for m in MODULES + (self.codec,) + self.extra_modules)
        modules += "".join(f"module_app {m}.so\n" for m in APP_MODULES)
        config = f"""poll_method epoll
sip_listen 127.0.0.1:{self.sip_port}
{"" if self.pbx is None else f"sip_cafile {self.pbx.cert}"}
call_local_timeout 60
call_max_calls 4
audio_player alsa,null
audio_alert alsa,null
audio_source aufile,{tone}
audio_level no
ausrc_format s16
auplay_format s16
auenc_format s16
audec_format s16
rtp_tos 0
rtcp_mux no
jitter_buffer_delay 1-5
dns_server 127.0.0.1:9
net_interface 127.0.0.1
module_path {self.modules}
{modules}module_tmp account.so
ctrl_tcp_listen 127.0.0.1:{self.ctrl_port}
snd_path {self.snd}
statmode_default off
menu_bell no
ringback_disabled yes
"""
        with open(os.path.join(self.dir, "config"), "w") as f:
            f.write(config)
        with open(os.path.join(self.dir, "accounts"), "w") as f:
            f.write(self.account_line() + "\n")
        with open(os.path.join(self.dir, "contacts"), "w") as f:
            f.write("".join(f'"{c}" <sip:{c}@127.0.0.1>\n' for c in self.contacts))

    @defer.inlineCallbacks
    def connect_control(self):
        """Connect to baresip's ctrl_tcp once it listens; fails if baresip
        exits first or the socket never comes up (5 s)."""
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.ctrl_port, timeout=2)
        for _ in range(50):
            try:
                self.control = yield connectProtocol(endpoint, Control())
                return self.control
            except Exception:
                if not self.process.running:
                    raise AssertionError(f"baresip exited:\n{self.process.output[-3000:]}")
                yield later(0.1)
        output = self.process.output[-3000:]
        raise AssertionError(f"baresip's ctrl_tcp never listened on {self.ctrl_port}:\n{output}")

    @defer.inlineCallbacks
    def start(self):
        """Start baresip and connect to its control socket; fires once registered (fails if not)."""
        self.write_config()
        self.process.spawn([self.binary, "-s", "-f", self.dir], cwd=self.dir, env={**os.environ, "HOME": self.dir})
        self.testcase.addCleanup(self.stop)
        yield self.connect_control()
        # "{0/UDP/v4} 200 OK ..." once registered, "reg: AOR: 403 Forbidden"
        # on a final failure, "Register: <errno text>" when libre gives up.
        match = yield self.process.wait_output(
            r"\{0/\w+/v4\} (\d{3}) [^\n]*|reg: [^\n]*?: (\d{3}) [^\n]*|Register: [^\n]*", timeout=10
        )
        if match.group(1) != "200":
            raise AssertionError(f"{self.user} did not register over {self.transport}: {match.group(0)}")
        return self

    @defer.inlineCallbacks
    def stop(self):
        if self.control is not None and self.control.transport is not None:
            self.control.transport.loseConnection()
        yield self.process.stop()

    def command(self, name: str, params: Optional[str] = None) -> defer.Deferred:
        """Run a baresip command (C{dial}, C{hangup}, C{hold}, ...); fails unless baresip says ok."""
        d = self.control.command(name, params)

        def check(response: Dict) -> Dict:
            if not response.get("ok"):
                raise AssertionError(f"{self.user}: /{name} {params or ''} failed: {response.get('data')}")
            return response

        return d.addCallback(check)

    def wait_event(self, kind: str, timeout: float = 10.0, since: int = 0, **fields) -> defer.Deferred:
        """
        Fires with the first event of type C{kind} (and with the given field
        values) among the events from index C{since} on, past or future.
        """

        def match(event: Dict) -> bool:
            return event.get("type") == kind and all(event.get(k) == v for k, v in fields.items())

        for event in self.control.events[since:]:
            if match(event):
                return defer.succeed(event)
        d: defer.Deferred = defer.Deferred()
        item = (match, d)
        self.control.waiters.append(item)

        def expire() -> None:
            if item in self.control.waiters:
                self.control.waiters.remove(item)
                seen = [(e.get("type"), e.get("param")) for e in self.control.events if e.get("type") != "CALL_RTCP"]
                d.errback(AssertionError(f"{self.user}: no {kind} {fields or ''} within {timeout} s; events: {seen}"))

        call = reactor.callLater(timeout, expire)
        d.addBoth(lambda r: (call.cancel() if call.active() else None, r)[1])
        return d

    def mark(self) -> int:
        """The index of the next event, for L{wait_event}'s C{since}."""
        return len(self.control.events)

    @defer.inlineCallbacks
    def dial_up(self, callee: "BaresipPhone"):
        """Dial C{callee} (who answers by itself); fires once both report
        the call established."""
        mark_a, mark_b = self.mark(), callee.mark()
        yield self.command("dial", callee.aor)
        yield self.wait_event("CALL_ESTABLISHED", since=mark_a)
        yield callee.wait_event("CALL_ESTABLISHED", since=mark_b)

    @defer.inlineCallbacks
    def hang_up(self, peer: "BaresipPhone"):
        """Hang up the call with C{peer}; fires once C{peer} sees it closed."""
        mark = peer.mark()
        yield self.command("hangup")
        yield peer.wait_event("CALL_CLOSED", since=mark)

    def types(self, since: int = 0) -> List[str]:
        return [e.get("type") for e in self.control.events[since:] if e.get("type") != "CALL_RTCP"]

    def recordings(self) -> List[str]:
        """What this phone decoded, one WAV file a call, oldest first."""
        return sorted(glob.glob(os.path.join(self.snd, "dump-*-dec.wav")))

    @defer.inlineCallbacks
    def hears(self, other: "BaresipPhone", seconds: float = 1.0, timeout: float = 8.0):
        """
        Wait until this phone's latest recording ends with C{seconds} of the
        tone C{other} sends; fail with the measured powers if it never does.
        """
        result: List[str] = []

        def check() -> bool:
            files = self.recordings()
            if not files:
                result[:] = [f"{self.user} recorded nothing in {self.snd}"]
                return False
            tone, text = dominant_tone(files[-1], sorted(set(TONES.values())), seconds)
            result[:] = [text]
            return tone == other.tone

        try:
            yield until(check, timeout, f"{self.user} hearing {other.user}'s {other.tone} Hz", step=0.5)
        except AssertionError as e:
            raise AssertionError(f"{e}; {result[0] if result else ''}")
