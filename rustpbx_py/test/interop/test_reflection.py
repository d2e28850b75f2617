# -*- test-case-name: rustpbx_py.test.interop.test_reflection -*-
"""
The reflection probe: requests whose Via names a third address
(127.0.0.3) in its sent-by, C{received}, C{rport} and C{maddr} reach a PBX
on real sockets; a listener at that third address counts what arrives and
must get nothing, while the sender gets its answers (RFC 3581's symmetric
response routing, Kamailio's default).
"""

from __future__ import annotations

import socket

from twisted.internet import defer, reactor, task
from twisted.internet.protocol import DatagramProtocol
from twisted.trial.unittest import SkipTest, TestCase

from rustpbx_py.test.interop.support import start_pbx

THIRD = "127.0.0.3"


class Counter(DatagramProtocol):
    """Keeps every datagram that arrives."""

    def __init__(self) -> None:
        self.got: list = []

    def datagramReceived(self, data, addr) -> None:
        self.got.append((data, addr))


def probe(method: str, n: int, third_port: int, src_port: int, extra: str = "") -> bytes:
    via = (
        f"SIP/2.0/UDP {THIRD}:{third_port};branch=z9hG4bKrefl{method}{n};"
        f"received={THIRD};rport={third_port};maddr={THIRD}"
    )
    return (
        f"{method} sip:1001@127.0.0.1 SIP/2.0\r\n"
        f"Via: {via}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:1001@127.0.0.1>;tag=r{n}\r\n"
        "To: <sip:1001@127.0.0.1>\r\n"
        f"Call-ID: reflect-{method}-{n}\r\n"
        f"CSeq: 1 {method}\r\n"
        f"Contact: <sip:victim@{THIRD}:{third_port}>\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n"
    ).encode()


class ReflectionProbeTests(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_third_address_gets_nothing(self):
        """INVITE, REGISTER, OPTIONS, MESSAGE and a malformed request (a
        400 is built for it) all name 127.0.0.3 as where to answer: the
        sender gets every answer, 127.0.0.3 gets no datagram at all, also
        after Timer G's retransmissions of the INVITE's final response."""
        try:
            third = reactor.listenUDP(0, Counter(), interface=THIRD)
        except Exception as e:  # pragma: no cover - a loopback without 127/8
            raise SkipTest(f"cannot bind {THIRD}: {e}")
        self.addCleanup(third.stopListening)
        sender_proto = Counter()
        sender = reactor.listenUDP(0, sender_proto, interface="127.0.0.1")
        self.addCleanup(sender.stopListening)
        service = yield start_pbx(
            self, tcp_port=None, user_backends=[{"type": "memory", "users": [{"username": "1001", "password": "pw-1001"}]}]
        )
        pbx = ("127.0.0.1", service.ports["UDP"])
        third_port = third.getHost().port
        src_port = sender.getHost().port
        requests = [
            probe(m, i, third_port, src_port)
            for i, m in enumerate(["INVITE", "REGISTER", "OPTIONS", "MESSAGE", "SUBSCRIBE"])
        ]
        requests.append(probe("OPTIONS", 9, third_port, src_port, "Content-Length: abc\r\n"))
        for data in requests:
            sender.write(data, pbx)
        # Long enough for the answers and for Timer G to resend the
        # INVITE's final response twice (T1 = 0.5 s, then 1 s).
        yield task.deferLater(reactor, 2.0, lambda: None)
        self.assertEqual(third.protocol.got, [])
        answered = {d.split(b"\r\n", 1)[0] for d, _ in sender_proto.got}
        self.assertGreaterEqual(len(sender_proto.got), len(requests), answered)
