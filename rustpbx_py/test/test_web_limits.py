"""
The web ports under the stream listeners' limits, on a PBX started as
twistd starts it (in this process, on 127.0.0.1 ephemeral ports): HTTP
connections count against C{tcp_max_connections_per_ip}, so idle ones
from one address cannot hold every descriptor, while another address is
still served; a SIP WebSocket upgraded on the HTTP port leaves the HTTP
site's bookkeeping (it was kept for ever before) and is counted once.
"""

from __future__ import annotations

import socket

from twisted.internet import defer
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from rustpbx_py.test.interop.support import start_pbx_toml
from rustpbx_py.test.waiting import until

PBX = """
http_addr = "127.0.0.1:0"

[proxy]
addr = "127.0.0.1"
udp_port = 0
tcp_max_connections_per_ip = 3
"""

UPGRADE = (b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
           b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           b"Sec-WebSocket-Protocol: sip\r\n\r\n")


def _connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    s = socket.socket()
    s.settimeout(5)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def _closed_by_peer(s: socket.socket) -> bool:
    """Whether the server closed C{s} (reset or end of stream) within 5 s."""
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def _get(port: int, source: str) -> bytes:
    with _connect(port, source) as s:
        s.sendall(b"GET /nothing-here HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        return s.recv(65536)


class WebLimitsTests(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        self.pbx = yield start_pbx_toml(self, PBX)
        self.port = self.pbx.ports["HTTP"]
        self.site = self.pbx.web
        self.limits = self.site.limits
        self.sockets = []
        self.addCleanup(lambda: [s.close() for s in self.sockets])

    @defer.inlineCallbacks
    def test_per_source_cap(self):
        """Three idle connections from 127.0.0.1 are held; the fourth is
        closed at once and counted as refused; 127.0.0.2 still gets an
        answer; closing them gives the room back."""
        for _ in range(3):
            self.sockets.append((yield deferToThread(_connect, self.port)))
        yield until(self, lambda: self.limits.counts.get("127.0.0.1") == 3, "three HTTP connections counted")
        refused = self.limits.refused
        fourth = yield deferToThread(_connect, self.port)
        self.sockets.append(fourth)
        self.assertTrue((yield deferToThread(_closed_by_peer, fourth)))
        self.assertEqual(self.limits.refused, refused + 1)
        answer = yield deferToThread(_get, self.port, "127.0.0.2")
        self.assertTrue(answer.startswith(b"HTTP/1.1 404"), answer[:100])
        for s in self.sockets:
            s.close()
        yield until(self, lambda: "127.0.0.1" not in self.limits.counts, "the connections uncounted")
        answer = yield deferToThread(_get, self.port, "127.0.0.1")
        self.assertTrue(answer.startswith(b"HTTP/1.1 404"), answer[:100])

    @defer.inlineCallbacks
    def test_websocket_upgrade_counted_once(self):
        """A SIP WebSocket upgraded on the HTTP port is counted once (as a
        WebSocket), leaves the site's open channels, and is uncounted when
        it closes; with it and two HTTP connections held, a fourth
        connection is refused."""
        ws = yield deferToThread(_connect, self.port)
        self.sockets.append(ws)
        yield deferToThread(ws.sendall, UPGRADE)
        answer = yield deferToThread(ws.recv, 65536)
        self.assertTrue(answer.startswith(b"HTTP/1.1 101"), answer[:200])
        yield until(self, lambda: self.limits.counts.get("127.0.0.1") == 1, "the WebSocket counted once")
        self.assertEqual(len(self.site.channels), 0)
        for _ in range(2):
            self.sockets.append((yield deferToThread(_connect, self.port)))
        yield until(self, lambda: self.limits.counts.get("127.0.0.1") == 3, "two HTTP connections more")
        fourth = yield deferToThread(_connect, self.port)
        self.sockets.append(fourth)
        self.assertTrue((yield deferToThread(_closed_by_peer, fourth)))
        for s in self.sockets:
            s.close()
        yield until(self, lambda: "127.0.0.1" not in self.limits.counts, "everything uncounted")
        self.assertEqual(self.limits.open, 0)
        self.assertEqual(len(self.site.channels), 0)
