# -*- test-case-name: rustpbx_py.test.interop.test_linphone -*-
"""
Drive Debian's linphonec (package linphone-cli, liblinphone 5.1) as a
headless phone: commands on its standard input, results read from its
output.

What it takes to run it without a desktop: C{HOME} in the phone's own
directory with C{.local/share/linphone} created (liblinphone 5 does not
start its SIP stack at all, silently, when it cannot open its database
there), a SIP port chosen by the test (C{sip_port=-1} yields a broken
Contact), G.711 only, and C{soundcard use files}: C{play} then names the WAV file sent
as the microphone and C{record} the file the decoded audio goes to.
"""

from __future__ import annotations

import os
import re
from typing import Optional

from twisted.internet import defer

from rustpbx_py.test.interop.phones import (
    TONES,
    USERS,
    ChildProcess,
    PhonePbx,
    dominant_tone,
    free_tcp_port,
    until,
    write_tone,
)
from rustpbx_py.test.interop.support import free_udp_port, require_tool


class LinphonePhone:
    """
    One linphonec registered as C{user} over C{transport} ("udp", "tcp" or
    "tls") to the L{PhonePbx}; with C{late_offer} its INVITEs carry no SDP
    (the callee offers in its 2xx, linphonec answers in the ACK).
    """

    def __init__(
        self,
        testcase,
        pbx: PhonePbx,
        user: str,
        auto_answer: bool = True,
        transport: str = "udp",
        late_offer: bool = False,
    ) -> None:
        self.testcase = testcase
        self.transport = transport
        self.late_offer = late_offer
        self.pbx = pbx
        self.user = user
        self.binary = require_tool("linphonec")
        self.dir = os.path.abspath(testcase.mktemp())
        os.makedirs(os.path.join(self.dir, ".local", "share", "linphone"))
        self.tone = TONES[user]
        self.auto_answer = auto_answer
        self.recording = os.path.join(self.dir, "received.wav")
        self.process = ChildProcess(os.path.join(self.dir, "output.log"))

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@127.0.0.1"

    def write_config(self) -> str:
        path = os.path.join(self.dir, "linphonerc")
        with open(path, "w") as f:
            if self.transport == "tls":
                # The PBX's self-signed certificate is the one trusted root;
                # the chain is verified but not the name: liblinphone's TLS
                # (mbedTLS 2) does not match a certificate for an IP address.
                ports = f"sip_port=0\nsip_tcp_port=0\nsip_tls_port={free_tcp_port()}\nroot_ca={self.pbx.cert}\n"
            elif self.transport == "tcp":
                ports = f"sip_port=0\nsip_tcp_port={free_tcp_port()}\nsip_tls_port=0\n"
            else:
                ports = f"sip_port={free_udp_port()}\nsip_tcp_port=0\nsip_tls_port=0\n"
            f.write(
                f"[sip]\n{ports}use_ipv6=0\nverify_server_certs=1\nverify_server_cn=0\n"
                # sdp_200_ack: INVITEs without SDP, the answer in the ACK
                f"sdp_200_ack={int(self.late_offer)}\n"
                "[rtp]\naudio_rtp_port=-1\n[sound]\nechocancellation=0\n[video]\nenabled=0\n"
            )
        return path

    def send(self, line: str) -> int:
        """Type one command; returns where the output stood, for L{wait}'s C{since}."""
        mark = len(self.process.output)
        self.process.write(line + "\n")
        return mark

    def wait(self, pattern: str, since: int = 0, timeout: float = 10.0) -> defer.Deferred:
        return self.process.wait_output(pattern, timeout=timeout, since=since)

    @defer.inlineCallbacks
    def start(self):
        """Start linphonec in file mode with the user's tone; fires once the PBX holds its binding."""
        rc = self.write_config()
        tone = write_tone(os.path.join(self.dir, "tone.wav"), self.tone)
        args = [self.binary, "-c", rc, "-d", "5", "-l", os.path.join(self.dir, "linphone.log")]
        self.process.spawn(args, cwd=self.dir, env={**os.environ, "HOME": self.dir})
        self.testcase.addCleanup(self.stop)
        yield self.wait(r"linphonec> ")
        # G.711 only, as baresip offers: the recorder's header stays zeroed
        # until the file is closed, so its rate must be known (8 kHz).
        mark = self.send("codec list")
        yield self.wait(r"linphonec> ", since=mark + 1)
        for index, name in re.findall(r"(?m)^\s*(\d+): (\S+) \(\d+\) enabled", self.process.output[mark:]):
            if name not in ("PCMU", "PCMA"):
                self.send(f"codec disable {index}")
        for line in ("soundcard use files", f"play {tone}", f"record {self.recording}"):
            self.send(line)
        if self.auto_answer:
            self.send("autoanswer enable")
        port = self.pbx.ports[self.transport.upper()]
        self.send(f"register {self.aor} <sip:127.0.0.1:{port};transport={self.transport}> {USERS[self.user]}")
        locator = self.pbx.service.context.locator
        yield until(lambda: bool(locator.lookup(f"{self.user}@127.0.0.1")), 10, f"linphonec registering {self.user}")
        return self

    @defer.inlineCallbacks
    def stop(self):
        if self.process.running:
            self.send("quit")
            try:
                yield self.process.wait_output(r"Terminating", timeout=3)
            except AssertionError:
                pass
        yield self.process.stop()

    @defer.inlineCallbacks
    def hears(self, other, seconds: float = 1.0, timeout: float = 8.0):
        """Wait until what this phone recorded ends with C{other}'s tone."""
        result = [""]

        def check() -> bool:
            if not os.path.exists(self.recording):
                result[0] = f"{self.user} recorded nothing in {self.recording}"
                return False
            tone, result[0] = dominant_tone(self.recording, sorted(set(TONES.values())), seconds)
            return tone == other.tone

        try:
            yield until(check, timeout, f"{self.user} hearing {other.user}'s {other.tone} Hz", step=0.5)
        except AssertionError as e:
            raise AssertionError(f"{e}; {result[0]}")

    def call_id(self, output: str, peer: str) -> Optional[str]:
        """The linphonec call number of the call with C{peer} in C{output}."""
        match = re.search(rf"Call (\d+) (?:with|to|from) {re.escape(peer)}", output)
        return match.group(1) if match else None
