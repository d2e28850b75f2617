# -*- test-case-name: rustpbx_py.test.interop.test_big_messages -*-
"""
Big messages on real sockets: a 20 KB REGISTER over UDP is read whole
(Twisted's default read size of 8,192 bytes cut it, and the rest was
answered as malformed), and a request above the 64 KiB limit over TCP gets
513 Message Too Large.
"""

from __future__ import annotations

from twisted.internet import defer, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import DatagramProtocol, Protocol
from twisted.trial.unittest import TestCase

from rustpbx_py.test.interop.support import start_pbx

USERS = [{"type": "memory", "users": [{"username": "1001", "password": "pw-1001"}]}]


def register(transport: str, port: int, pad: int) -> bytes:
    body = b""
    return (
        f"REGISTER sip:127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:{port};branch=z9hG4bKbig{pad};rport\r\n"
        f"X-Pad: {'p' * pad}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:1001@127.0.0.1>;tag=big\r\n"
        "To: <sip:1001@127.0.0.1>\r\n"
        f"Call-ID: big-{pad}\r\n"
        "CSeq: 1 REGISTER\r\n"
        f"Contact: <sip:1001@127.0.0.1:{port}>\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()


class Collect(DatagramProtocol):
    def __init__(self) -> None:
        self.got: list = []

    def datagramReceived(self, data, addr) -> None:
        self.got.append(data)


class Stream(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.closed = defer.Deferred()

    def dataReceived(self, data) -> None:
        self.data += data

    def connectionLost(self, reason=None) -> None:
        self.closed.callback(None)


class BigMessageTests(TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def test_udp_20k_register_read_whole(self):
        """A 20 KB REGISTER over UDP gets its digest challenge (401), not
        a 400 for a message cut at 8,192 bytes."""
        service = yield start_pbx(self, tcp_port=None, user_backends=USERS)
        proto = Collect()
        sock = reactor.listenUDP(0, proto, interface="127.0.0.1")
        self.addCleanup(sock.stopListening)
        data = register("UDP", sock.getHost().port, 20000)
        self.assertGreater(len(data), 20000)
        sock.write(data, ("127.0.0.1", service.ports["UDP"]))
        for _ in range(40):
            if proto.got:
                break
            yield task.deferLater(reactor, 0.05, lambda: None)
        self.assertEqual([d.split(b"\r\n", 1)[0] for d in proto.got], [b"SIP/2.0 401 Unauthorized"])

    @defer.inlineCallbacks
    def test_tcp_above_limit_gets_513(self):
        """A 70 KB request over TCP gets 513 Message Too Large, then the
        connection is closed (its framing cannot be trusted)."""
        service = yield start_pbx(self, udp_port=None, tcp_port=0, user_backends=USERS)
        proto = Stream()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", service.ports["TCP"]), proto)
        proto.transport.write(register("TCP", 5060, 70000))
        yield proto.closed
        self.assertTrue(proto.data.startswith(b"SIP/2.0 513 Message Too Large"), proto.data[:80])
