"""
Tests for the transports in L{rustpbx_py.protocols}: framing, keep-alives,
idle reaping, the flow table and the WebSocket handshake rules, each driven
through Twisted's test doubles.
"""

from __future__ import annotations

from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from rustpbx_py.protocols.flow import DatagramFlow
from rustpbx_py.protocols.stream import SipStreamFactory
from rustpbx_py.protocols.transports import TransportLayer
from rustpbx_py.protocols.udp import SipDatagramProtocol

OPTIONS = (
    b"OPTIONS sip:127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bKa\r\n"
    b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n"
    b"Max-Forwards: 70\r\nContent-Length: 4\r\n\r\nbody"
)


class Controller:
    """Records what a transport hands up."""

    def __init__(self):
        self.messages = []
        self.errors = []
        self.opened = []
        self.closed = []

    def message_received(self, message, flow):
        self.messages.append((message, flow))

    def parse_error(self, error, data, flow):
        self.errors.append((error.status, data))

    def flow_opened(self, flow):
        self.opened.append(flow)

    def flow_closed(self, flow):
        self.closed.append(flow)

    def send_failed(self, listener, addr, error):
        self.errors.append(("send", addr))


class FakeUDPTransport:
    """Enough of a UDP port for the protocol: records writes."""

    def __init__(self):
        self.written = []

    def write(self, data, addr):
        self.written.append((data, addr))

    def getHost(self):
        return IPv4Address("UDP", "127.0.0.1", 5060)


class DatagramTests(SynchronousTestCase):
    def setUp(self):
        self.controller = Controller()
        self.protocol = SipDatagramProtocol(self.controller)
        self.transport = FakeUDPTransport()
        self.protocol.transport = self.transport
        self.protocol.startProtocol()

    def test_message_with_flow(self):
        """A datagram is one message, handed up with a flow back to its source."""
        self.protocol.datagramReceived(OPTIONS.replace(b"TCP", b"UDP"), ("10.0.0.1", 5062))
        (message, flow), = self.controller.messages
        self.assertEqual(message.method, "OPTIONS")
        self.assertEqual(message.body, b"body")
        self.assertEqual(flow.remote, ("10.0.0.1", 5062))
        flow.send(b"hello")
        self.assertEqual(self.transport.written, [(b"hello", ("10.0.0.1", 5062))])

    def test_keepalive_ignored(self):
        """A CRLF keep-alive datagram is not a message (RFC 5626 3.5.1)."""
        self.protocol.datagramReceived(b"\r\n\r\n", ("10.0.0.1", 5062))
        self.assertEqual((self.controller.messages, self.controller.errors), ([], []))

    def test_garbage_reported(self):
        """A datagram that does not parse goes to parse_error, not up as a message."""
        self.protocol.datagramReceived(b"HELLO\r\n\r\n", ("10.0.0.1", 5062))
        self.assertEqual(self.controller.messages, [])
        self.assertEqual(len(self.controller.errors), 1)

    def test_flow_cache_bounded(self):
        """The per-address flow cache cannot grow without bound under a scan."""
        for i in range(10050):
            self.protocol.flow_for(("10.1.%d.%d" % (i // 250, i % 250), 5060))
        self.assertLessEqual(len(self.protocol._flows), 10001)


class StreamTests(SynchronousTestCase):
    def setUp(self):
        self.controller = Controller()
        self.clock = task.Clock()
        self.factory = SipStreamFactory(self.controller, "TCP", 60, self.clock)
        self.protocol = self.factory.buildProtocol(None)
        self.transport = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 5060), peerAddress=IPv4Address("TCP", "10.0.0.1", 40000)
        )
        self.protocol.makeConnection(self.transport)

    def test_two_messages_one_chunk(self):
        """Content-Length frames several messages arriving in one read."""
        self.protocol.dataReceived(OPTIONS + OPTIONS)
        self.assertEqual(len(self.controller.messages), 2)

    def test_split_message(self):
        """A message split over reads is handed up once it is whole."""
        self.protocol.dataReceived(OPTIONS[:50])
        self.protocol.dataReceived(OPTIONS[50:-2])
        self.assertEqual(self.controller.messages, [])
        self.protocol.dataReceived(OPTIONS[-2:])
        (message, flow), = self.controller.messages
        self.assertEqual(message.body, b"body")
        self.assertEqual(flow.transport, "TCP")
        self.assertEqual(flow.remote, ("10.0.0.1", 40000))

    def test_ping_pong(self):
        """A double-CRLF ping is answered with a single CRLF pong (RFC 5626 4.4.1)."""
        self.protocol.dataReceived(b"\r\n\r\n")
        self.assertEqual(self.transport.value(), b"\r\n")
        self.protocol.dataReceived(OPTIONS)
        self.assertEqual(len(self.controller.messages), 1)

    def test_pong_between_messages(self):
        """A lone CRLF between messages is skipped."""
        self.protocol.dataReceived(b"\r\n" + OPTIONS)
        self.assertEqual(len(self.controller.messages), 1)
        self.assertEqual(self.transport.value(), b"")

    def test_content_length_not_last(self):
        """
        Content-Length anywhere among the headers frames the body (belle-sip,
        i.e. Linphone, writes it before Content-Type), in full or compact
        form, whole or split over reads.
        """
        middle = OPTIONS.replace(b"Content-Length: 4\r\n", b"").replace(b"Via:", b"Content-Length: 4\r\nVia:")
        compact = OPTIONS.replace(b"Content-Length: 4\r\n", b"").replace(b"Via:", b"l:4 \r\nVia:")
        self.protocol.dataReceived(middle + compact[:60])
        self.protocol.dataReceived(compact[60:] + OPTIONS)
        self.assertEqual([m.body for m, _ in self.controller.messages], [b"body"] * 3)
        self.assertEqual(self.controller.errors, [])

    def test_missing_content_length_body_less(self):
        """A body-less message without Content-Length (sipsak over TCP) is read as length 0."""
        self.protocol.dataReceived(OPTIONS.replace(b"Content-Length: 4\r\n", b"")[:-4])
        self.assertEqual(len(self.controller.messages), 1)

    def test_oversized_closes(self):
        """A header section larger than the limit is refused and the connection closed."""
        self.protocol.dataReceived(b"OPTIONS sip:x SIP/2.0\r\nX: " + b"a" * 70000)
        self.assertEqual(self.controller.errors[0][0], 513)
        self.assertTrue(self.transport.disconnecting)

    def test_idle_reaped(self):
        """A connection silent for the idle timeout is closed; traffic resets it."""
        self.clock.advance(59)
        self.protocol.dataReceived(b"\r\n\r\n")
        self.clock.advance(59)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(2)
        self.assertTrue(self.transport.disconnecting)

    def test_flow_table(self):
        """The connection's flow is registered while open and marked closed after."""
        layer = TransportLayer(self.clock)
        flow = self.controller.opened[0]
        layer.flow_opened(flow)
        self.assertIs(layer.flow_by_id(flow.id), flow)
        self.protocol.connectionLost(None)
        layer.flow_closed(flow)
        self.assertFalse(flow.connected)
        self.assertIsNone(layer.flow_by_id(flow.id))
        self.assertEqual(self.controller.closed, [flow])


class FlowIdTests(SynchronousTestCase):
    def test_udp_flow_from_id(self):
        """A UDP flow id (as a registration stores it) gives back a flow
        through the same listener to the same address."""
        layer = TransportLayer(task.Clock())
        listener = SipDatagramProtocol(Controller())
        listener.transport = FakeUDPTransport()
        listener.startProtocol()
        layer.udp.append(listener)
        flow = DatagramFlow(listener, ("10.0.0.9", 5099))
        again = layer.flow_by_id(flow.id)
        self.assertEqual((again.remote, again.listener), (("10.0.0.9", 5099), listener))


class WebSocketHandshakeTests(SynchronousTestCase):
    def handshake(self, path, protocols, origin="", host="127.0.0.1", allowed=()):
        from autobahn.websocket.types import ConnectionRequest

        from rustpbx_py.protocols.ws import SipWebSocketFactory

        factory = SipWebSocketFactory(Controller(), "/ws", allowed_origins=allowed)
        protocol = factory.buildProtocol(None)
        request = ConnectionRequest(
            peer="tcp:127.0.0.1:1", headers={}, host=host, path=path, params={}, version=13,
            origin=origin, protocols=protocols, extensions=[],
        )
        return protocol.onConnect(request)

    def assertForbidden(self, **kw):
        from autobahn.websocket.types import ConnectionDeny

        e = self.assertRaises(ConnectionDeny, self.handshake, "/ws", ["sip"], **kw)
        self.assertEqual(e.code, 403)

    def test_origin_local_page(self):
        """A page served from http://127.0.0.1 or localhost (any port) may
        connect whatever host it connects to (the documented default)."""
        for origin in ("http://127.0.0.1:8000", "http://localhost", "https://[::1]:9443"):
            self.assertEqual(self.handshake("/ws", ["sip"], origin=origin, host="pbx.example.com"), "sip")

    def test_origin_same_host(self):
        """A page from the host the browser connected to may connect, on any
        port or scheme (the console serving its own softphone)."""
        self.assertEqual(self.handshake("/ws", ["sip"], origin="https://PBX.example.com:8443", host="pbx.example.com"), "sip")

    def test_origin_other_site_refused(self):
        """A page of another site gets 403 (a site cannot use its visitors'
        browsers as SIP clients), as does the opaque "null" origin."""
        self.assertForbidden(origin="https://evil.example", host="pbx.example.com")
        self.assertForbidden(origin="null", host="pbx.example.com")
        self.assertForbidden(origin="https://pbx.example.com.evil.example", host="pbx.example.com")

    def test_origin_listed(self):
        """ws_allowed_origins admits a listed site (not its neighbours), and
        "*" admits any page."""
        allowed = ("https://phone.example.com",)
        self.assertEqual(self.handshake("/ws", ["sip"], origin="https://phone.example.com", host="pbx.example.com", allowed=allowed), "sip")
        self.assertForbidden(origin="http://phone.example.com", host="pbx.example.com", allowed=allowed)
        self.assertEqual(self.handshake("/ws", ["sip"], origin="null", host="pbx.example.com", allowed=("*",)), "sip")

    def test_no_origin_accepted(self):
        """A client that sends no Origin (a SIP stack outside a browser) is
        accepted even with a restrictive list."""
        self.assertEqual(self.handshake("/ws", ["sip"], origin="", host="pbx.example.com", allowed=("https://a.example",)), "sip")

    def test_sip_chosen(self):
        """The sip subprotocol is accepted and chosen (RFC 7118)."""
        self.assertEqual(self.handshake("/ws", ["chat", "sip"]), "sip")

    def test_no_sip_refused(self):
        """An offer without sip is refused."""
        from autobahn.websocket.types import ConnectionDeny

        self.assertRaises(ConnectionDeny, self.handshake, "/ws", ["chat"])

    def test_wrong_path_refused(self):
        """Another path than ws_handler is refused with 404."""
        from autobahn.websocket.types import ConnectionDeny

        e = self.assertRaises(ConnectionDeny, self.handshake, "/other", ["sip"])
        self.assertEqual(e.code, 404)


class ClosedListenerTests(SynchronousTestCase):
    def test_write_after_close_dropped(self):
        """A retransmission timer firing after the listener closed is dropped,
        not an AttributeError (seen while a benchmark stopped a worker)."""
        controller = Controller()
        protocol = SipDatagramProtocol(controller)
        protocol.transport = None
        protocol.write(b"late", ("10.0.0.1", 5060))
        self.assertEqual(controller.errors, [])


class TooLargeTests(SynchronousTestCase):
    """Messages above the 64 KiB limit through the real core."""

    def setUp(self):
        from rustpbx_py.config import default_config
        from rustpbx_py.pipeline import Pipeline
        from rustpbx_py.proxy import SipCore

        self.core = SipCore(default_config(), task.Clock(), Pipeline([]))
        self.core.accepting = True

    def test_tcp_body_above_limit_gets_513(self):
        """A TCP request whose Content-Length puts it above 64 KiB gets 513
        Message Too Large on its connection, which is then closed."""
        protocol = SipStreamFactory(self.core, "TCP", 0, task.Clock()).buildProtocol(None)
        transport = StringTransport(
            peerAddress=IPv4Address("TCP", "10.0.0.1", 40000), hostAddress=IPv4Address("TCP", "127.0.0.1", 5060)
        )
        protocol.makeConnection(transport)
        protocol.dataReceived(OPTIONS.replace(b"Content-Length: 4", b"Content-Length: 70000"))
        self.assertTrue(transport.value().startswith(b"SIP/2.0 513 Message Too Large"), transport.value()[:60])
        self.assertIn(b"Call-ID: x\r\n", transport.value())
        self.assertTrue(transport.disconnecting)

    def test_udp_receive_buffer_raised(self):
        """The listener asks for a 4 MiB receive buffer (the kernel default
        of 208 KiB overflowed under load: drops, retransmissions, failed
        calls), once, and not when the socket has a bigger one already."""
        import socket

        from rustpbx_py.protocols.udp import UDP_RECEIVE_BUFFER, listen_udp

        class Socket:
            def __init__(self, size):
                self.size, self.set = size, []

            def getsockopt(self, level, option):
                assert (level, option) == (socket.SOL_SOCKET, socket.SO_RCVBUF)
                return self.size

            def setsockopt(self, level, option, value):
                self.set.append((level, option, value))

        class Port:
            pass

        class Reactor:
            def __init__(self, size):
                self.sock = Socket(size)

            def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
                listener = Port()
                listener.socket = self.sock
                return listener

        small, big = Reactor(212992), Reactor(8 * 1024 * 1024)
        listen_udp(small, 0, SipDatagramProtocol(self.core), "127.0.0.1")
        listen_udp(big, 0, SipDatagramProtocol(self.core), "127.0.0.1")
        self.assertEqual(UDP_RECEIVE_BUFFER, 4 * 1024 * 1024)
        self.assertEqual(small.sock.set, [(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)])
        self.assertEqual(big.sock.set, [])

    def test_udp_listener_reads_64k(self):
        """The listener the server opens reads datagrams up to 64 KiB, not
        Twisted's default 8,192 bytes (an 8 KB REGISTER was cut and became
        "malformed Contact"); the real read is in interop/test_reflection."""
        from twisted.internet import udp

        from rustpbx_py.protocols.udp import MAX_DATAGRAM, listen_udp

        class Reactor:
            def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
                return udp.Port(port, protocol, interface, maxPacketSize)

        port = listen_udp(Reactor(), 0, SipDatagramProtocol(self.core), "127.0.0.1")
        self.assertGreaterEqual(MAX_DATAGRAM, 65535)
        self.assertEqual(port.maxPacketSize, MAX_DATAGRAM)
