# -*- test-case-name: rustpbx_py.test.interop.test_baresip -*-
"""
What the real-softphone tests share, whatever the phone: a PBX with
password users on UDP, TCP and TLS, the tones each phone sends, the
decoding of what a phone received (which tone is in it), and a child
process whose output the test can wait on.

Each phone sends its own pure tone (A 440 Hz, B 880 Hz, C 660 Hz) from a
WAV file and records what it decoded into another; a call works when each
side's recording holds the other side's tone.  The tone is found with the
Goertzel algorithm (L{rustpbx_py.test.tones}).
"""

from __future__ import annotations

import math
import os
import re
import socket
import struct
import wave
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from twisted.internet import defer, error, protocol, reactor
from twisted.python.failure import Failure

from rustpbx_py.test.interop.support import start_pbx_toml
from rustpbx_py.test.tls import self_signed_for
from rustpbx_py.test.tones import strongest

#: The users of the phone tests: name -> password (memory backend).
USERS: Dict[str, str] = {"alice": "alice-secret", "bob": "bob-secret", "carol": "carol-secret"}

#: The tone each user's phone sends, in Hz.
TONES: Dict[str, int] = {"alice": 440, "bob": 880, "carol": 660}

RATE = 8000


def free_tcp_port() -> int:
    """A TCP port nobody listens on now (for a phone's control socket)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def write_tone(path: str, hz: int, seconds: float = 40.0, rate: int = RATE, channels: int = 1) -> str:
    """A 16-bit WAV file holding a pure tone of C{hz} (the same on every channel)."""
    period = [int(8000 * math.sin(2 * math.pi * hz * i / rate)) for i in range(rate) for _ in range(channels)]
    second = struct.pack(f"<{rate * channels}h", *period)
    with wave.open(path, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(second * int(seconds))
    return path


def read_pcm(path: str) -> Tuple[List[int], int]:
    """
    The 16-bit samples and the rate of a WAV file that may still be being
    written (its header sizes not yet final): the data chunk is read to the
    end of the file, whatever length the header claims.
    """
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 44:
        return [], RATE  # the writer has not written the header yet
    if data[:44] == bytes(44):
        # liblinphone's recorder writes a zeroed canonical 44-byte header
        # and fills it in when the file is closed: mono 16-bit at the G.711
        # rate until then.
        body = data[44:]
        body = body[: len(body) - len(body) % 2]
        return list(struct.unpack(f"<{len(body) // 2}h", body)), RATE
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError(f"{path}: not a WAV file")
    pos, rate, channels = 12, RATE, 1
    while pos + 8 <= len(data):
        tag, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        if tag == b"fmt ":
            channels, rate = struct.unpack("<HI", data[pos + 10:pos + 16])
        if tag == b"data":
            body = data[pos + 8:]
            body = body[: len(body) - len(body) % (2 * channels)]
            samples = list(struct.unpack(f"<{len(body) // 2}h", body))[::channels]
            return samples, rate
        pos += 8 + size + (size & 1)
    return [], rate


def dominant_tone(path: str, candidates: Sequence[int], seconds: float = 1.0) -> Tuple[Optional[int], str]:
    """
    Which of C{candidates} the last C{seconds} of audio recorded in C{path}
    are, or None when the recording is too short or no candidate stands
    out 100 times above the others; with a description for failure messages.
    """
    samples, rate = read_pcm(path)
    want = int(rate * seconds)
    if len(samples) < want:
        return None, f"{path}: {len(samples) / rate:.2f} s of audio, wanted {seconds} s"
    best, powers = strongest(samples[-want:], rate, candidates)
    text = f"{path}: " + ", ".join(f"{hz} Hz: {p:.3g}" for hz, p in sorted(powers.items()))
    return best, text


class PhonePbx:
    """
    A PBX for phone tests: the L{USERS} as password users of the memory
    backend, SIP on UDP, TCP and TLS (a self-signed certificate for
    127.0.0.1 whose file the phones trust), all on ephemeral ports.
    """

    def __init__(self, service, cert: str) -> None:
        self.service = service
        self.cert = cert

    @property
    def ports(self) -> Dict[str, int]:
        return self.service.ports

    @classmethod
    @defer.inlineCallbacks
    def start(cls, testcase, extra: str = "", top: str = ""):
        """C{extra}: more [proxy] lines; C{top}: top-level lines (e.g.
        https_addr)."""
        cert, key = self_signed_for(testcase)
        users = "".join(
            f'[[proxy.user_backends.users]]\nusername = "{name}"\npassword = "{password}"\n\n'
            for name, password in USERS.items()
        )
        text = top + (
            '[proxy]\naddr = "127.0.0.1"\nudp_port = 0\ntcp_port = 0\ntls_port = 0\n'
            f'ssl_certificate = "{cert}"\nssl_private_key = "{key}"\n{extra}\n'
            '[[proxy.user_backends]]\ntype = "memory"\n\n' + users
        )
        service = yield start_pbx_toml(testcase, text)
        return cls(service, cert)


class ChildProcess(protocol.ProcessProtocol):
    """
    A phone program: its output is kept (and copied to a log file for the
    post-mortem), a test can wait until the output matches a pattern, and
    C{stop} ends it (TERM, then KILL) and fires once it has exited.
    """

    def __init__(self, log_path: str) -> None:
        self.output = ""
        self.log = open(log_path, "w")
        self.ended: defer.Deferred = defer.Deferred()
        self.running = False
        self._waiters: List[Tuple[re.Pattern, int, defer.Deferred]] = []

    def spawn(self, args: Sequence[str], cwd: str, env: Optional[Dict[str, str]] = None) -> None:
        env = dict(os.environ if env is None else env)
        reactor.spawnProcess(self, args[0], list(args), env=env, path=cwd)
        self.running = True

    def write(self, text: str) -> None:
        self.transport.write(text.encode())

    def outReceived(self, data: bytes) -> None:
        text = data.decode("utf-8", "replace")
        self.output += text
        self.log.write(text)
        self.log.flush()
        self._check()

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        self.running = False
        self.log.close()
        for _, _, d in self._waiters:
            if not d.called:
                d.errback(AssertionError(f"the phone exited ({reason.value}); output:\n{self.output[-3000:]}"))
        self._waiters = []
        self.ended.callback(None)

    def _check(self) -> None:
        for item in list(self._waiters):
            pattern, start, d = item
            match = pattern.search(self.output, start)
            if match is not None:
                self._waiters.remove(item)
                d.callback(match)

    def wait_output(self, pattern: str, timeout: float = 10.0, since: int = 0) -> defer.Deferred:
        """Fires with the first match of C{pattern} in the output after C{since}; fails after C{timeout} s."""
        d: defer.Deferred = defer.Deferred()
        compiled = re.compile(pattern)
        match = compiled.search(self.output, since)
        if match is not None:
            d.callback(match)
            return d
        if not self.running:
            d.errback(AssertionError(f"the phone is not running; output:\n{self.output[-3000:]}"))
            return d
        item = (compiled, since, d)
        self._waiters.append(item)

        def expire() -> None:
            if item in self._waiters:
                self._waiters.remove(item)
                d.errback(AssertionError(f"no {pattern!r} within {timeout} s; output:\n{self.output[-3000:]}"))

        call = reactor.callLater(timeout, expire)
        d.addBoth(lambda r: (call.cancel() if call.active() else None, r)[1])
        return d

    def stop(self) -> defer.Deferred:
        if not self.running:
            return defer.succeed(None)
        try:
            self.transport.signalProcess("TERM")
        except error.ProcessExitedAlready:
            return defer.succeed(None)

        def kill() -> None:
            try:
                self.transport.signalProcess("KILL")
            except error.ProcessExitedAlready:
                pass

        call = reactor.callLater(3, kill)
        ended = defer.Deferred()
        self.ended.addBoth(lambda r: (call.cancel() if call.active() else None, ended.callback(None), r)[2])
        return ended


def later(seconds: float) -> defer.Deferred:
    """Fires after C{seconds} on the real clock (interop tests only)."""
    from twisted.internet import task

    return task.deferLater(reactor, seconds, lambda: None)


@defer.inlineCallbacks
def until(check: Callable[[], bool], timeout: float, what: str, step: float = 0.2):
    """Wait until C{check()} is true, polling every C{step} s; fail naming C{what} after C{timeout} s."""
    waited = 0.0
    while not check():
        if waited >= timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        yield later(step)
        waited += step
