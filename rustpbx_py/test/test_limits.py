"""
Tests for L{rustpbx_py.protocols.limits} and the stream listeners that
use it: per-source and total connection caps with a quiet refusal, the
TLS handshake, first-message and idle timeouts, on TCP and WebSocket,
driven with Twisted's test doubles and a L{task.Clock}.
"""

from __future__ import annotations

from twisted.internet import task
from twisted.internet.error import ConnectionDone
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from rustpbx_py.protocols.limits import ConnectionTimers, StreamLimits, default_max_connections
from rustpbx_py.protocols.stream import SipStreamFactory
from rustpbx_py.test.test_protocols import OPTIONS, Controller


def peer(host="10.0.0.1", port=40000):
    return IPv4Address("TCP", host, port)


class AbortableTransport(StringTransport):
    """A StringTransport that records an abort."""

    aborted = False

    def abortConnection(self):
        self.aborted = True
        self.loseConnection()


def connect(factory, host="10.0.0.1", port=40000):
    """A protocol the factory built for an inbound connection from
    C{host}, connected to a fake transport (None when refused)."""
    protocol = factory.buildProtocol(peer(host, port))
    if protocol is None:
        return None
    transport = AbortableTransport(peerAddress=peer(host, port), hostAddress=IPv4Address("TCP", "127.0.0.1", 5060))
    protocol.makeConnection(transport)
    return protocol


def close(protocol):
    protocol.connectionLost(Failure(ConnectionDone()))


class CapTests(SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.events = []
        StreamLimits.log = Logger(observer=self.events.append)
        self.addCleanup(setattr, StreamLimits, "log", Logger())

    def factory(self, **kw):
        self.limits = StreamLimits(**kw)
        return SipStreamFactory(Controller(), "TCP", 0, self.clock, limits=self.limits)

    def test_per_ip_cap(self):
        """A source at its cap is refused (buildProtocol returns None, so
        Twisted closes the socket at once) while another source is
        served; a closed connection frees its place."""
        factory = self.factory(per_ip=3, total=100)
        held = [connect(factory) for _ in range(3)]
        self.assertTrue(all(held))
        self.assertIsNone(connect(factory))
        self.assertIsNotNone(connect(factory, "10.0.0.2"))
        close(held[0])
        self.assertIsNotNone(connect(factory))
        self.assertEqual(self.limits.counts, {"10.0.0.1": 3, "10.0.0.2": 1})

    def test_total_cap(self):
        """The process-wide cap refuses every source once reached."""
        factory = self.factory(per_ip=100, total=2)
        self.assertIsNotNone(connect(factory, "10.0.0.1"))
        self.assertIsNotNone(connect(factory, "10.0.0.2"))
        self.assertIsNone(connect(factory, "10.0.0.3"))
        self.assertEqual(self.limits.refused, 1)

    def test_refusals_logged_once_a_minute(self):
        """A flood at the limit logs one warning a minute naming the source
        and the key, not one per connection."""
        factory = self.factory(per_ip=1, total=100)
        connect(factory)
        for _ in range(500):
            connect(factory)
        self.assertEqual(len(self.events), 1)
        self.assertIn("tcp_max_connections_per_ip", self.events[0]["why"])
        self.assertIn("10.0.0.1", self.events[0]["why"])
        self.clock.advance(60)
        connect(factory)
        self.assertEqual(len(self.events), 2)
        self.assertEqual(self.events[1]["refused"], 501)

    def test_release_once(self):
        """A connection lost twice (TLS reports it again) frees one place."""
        factory = self.factory(per_ip=2, total=100)
        a = connect(factory)
        connect(factory)
        close(a)
        close(a)
        self.assertEqual(self.limits.counts, {"10.0.0.1": 1})
        self.assertEqual(self.limits.open, 1)

    def test_outbound_not_counted(self):
        """Connections the PBX opens (to trunks) are not counted, and have no
        first-message timer (the peer answers, it does not ask)."""
        factory = self.factory(per_ip=1, total=1)
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(AbortableTransport())
        self.assertEqual(self.limits.open, 0)
        self.clock.advance(31)
        self.assertFalse(protocol.transport.aborted)

    def test_default_total(self):
        """Unset, the total keeps a reserve of descriptors below the
        open-files limit."""
        self.assertEqual(default_max_connections(1024), 1024 - 128)
        self.assertEqual(default_max_connections(65536), 65536 - 6553)


class TimeoutTests(SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.controller = Controller()

    def factory(self, name="TCP", **kw):
        kw.setdefault("first_message_timeout", 30)
        kw.setdefault("handshake_timeout", 10)
        kw.setdefault("idle_timeout", 300)
        self.limits = StreamLimits(**kw)
        return SipStreamFactory(self.controller, name, 0, self.clock, limits=self.limits)

    def test_first_message_timeout(self):
        """A connection that sends nothing valid within the timeout (only
        keep-alives and garbage) is aborted (Asterisk's tcpauthtimeout)."""
        protocol = connect(self.factory())
        protocol.dataReceived(b"\r\n\r\n")
        self.clock.advance(29)
        protocol.dataReceived(b"garbage\r\n\r\n")
        self.clock.advance(1)
        self.assertTrue(protocol.transport.aborted)
        close(protocol)  # what the reactor does after the abort
        self.assertEqual(self.limits.open, 0)

    def test_valid_message_stops_first_timer(self):
        """After a valid SIP message only the idle timer runs."""
        protocol = connect(self.factory())
        protocol.dataReceived(OPTIONS)
        self.assertEqual(len(self.controller.messages), 1)
        self.clock.advance(299)
        self.assertFalse(protocol.transport.aborted)
        self.assertFalse(protocol.transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(protocol.transport.disconnecting)

    def test_tls_handshake_timeout(self):
        """A TLS connection whose handshake does not finish in time is
        aborted; a finished handshake stops that timer."""
        stalled = connect(self.factory("TLS"))
        done = connect(self.factory("TLS"), "10.0.0.2")
        done.handshakeCompleted()
        done.dataReceived(OPTIONS)
        self.clock.advance(10)
        self.assertTrue(stalled.transport.aborted)
        self.assertFalse(done.transport.aborted)

    def test_timers_cancelled_on_close(self):
        """A closed connection leaves no timer behind."""
        protocol = connect(self.factory("TLS"))
        close(protocol)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timer_object(self):
        """ConnectionTimers calls close once, with what ran out."""
        closed = []
        timers = ConnectionTimers(StreamLimits(first_message_timeout=5, idle_timeout=2), self.clock, closed.append, tls=False)
        self.clock.advance(2)
        self.assertEqual(closed, ["idle"])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class WebSocketLimitTests(SynchronousTestCase):
    """The same limits on the WebSocket listeners (which were never reaped)."""

    def setUp(self):
        from rustpbx_py.protocols.ws import SipWebSocketFactory

        self.clock = task.Clock()
        self.limits = StreamLimits(per_ip=2, total=100, first_message_timeout=30, handshake_timeout=10, idle_timeout=300)
        self.factory = SipWebSocketFactory(Controller(), "/ws", "WSS", limits=self.limits, clock=self.clock)
        # These connections never send the HTTP upgrade: Autobahn's own
        # open-handshake timeout (5 s) would drop them before ours run.
        self.factory.setProtocolOptions(openHandshakeTimeout=0)

    def test_per_ip_cap(self):
        """A third connection from one source is refused; another source
        is served."""
        self.assertIsNotNone(connect(self.factory))
        self.assertIsNotNone(connect(self.factory))
        self.assertIsNone(connect(self.factory))
        self.assertIsNotNone(connect(self.factory, "10.0.0.2"))

    def test_autobahn_timers_on_our_clock(self):
        """Autobahn's own open-handshake timer runs on the factory's clock
        and is gone once the connection is (its batched timer left calls
        on the global reactor: a dirty reactor for the next test)."""
        self.factory.setProtocolOptions(openHandshakeTimeout=5)
        protocol = connect(self.factory)
        self.assertTrue(self.clock.getDelayedCalls())
        close(protocol)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stalled_upgrade_dropped(self):
        """A WSS connection that never finishes TLS is dropped after the
        handshake timeout and frees its place."""
        protocol = connect(self.factory)
        self.clock.advance(10)
        self.assertTrue(protocol.transport.aborted)
        close(protocol)
        self.assertEqual(self.limits.open, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_no_sip_dropped(self):
        """TLS done but no valid SIP message (an open WebSocket that only
        holds a place): dropped after the first-message timeout."""
        protocol = connect(self.factory)
        protocol.handshakeCompleted()
        self.clock.advance(29)
        self.assertFalse(protocol.transport.aborted)
        self.clock.advance(1)
        self.assertTrue(protocol.transport.aborted)

    def test_idle_reaped(self):
        """After valid SIP, a WebSocket silent for the idle timeout is
        closed (before this change WebSocket connections lived for ever)."""
        protocol = connect(self.factory)
        protocol.handshakeCompleted()
        closed = []
        protocol.flow = type("F", (), {"connected": True})()
        protocol.sendClose = lambda code=None, reason=None: closed.append((code, reason))
        protocol.onMessage(OPTIONS, False)
        self.clock.advance(299)
        protocol.onMessage(b"\r\n\r\n", False)
        self.clock.advance(299)
        self.assertEqual(closed, [])
        self.clock.advance(1)
        self.assertEqual(closed, [(1000, "idle")])


class SystemdUnitTests(SynchronousTestCase):
    """
    The service's open-files limit: every TCP, TLS and WebSocket connection
    is a file, and with the usual soft limit of 1,024 a flood of 2,000
    connections would take every descriptor (interop
    test_connection_limits.LowFileLimitTests shows what happens then).
    """

    def unit(self):
        import configparser
        import os

        import rustpbx_py

        path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(rustpbx_py.__file__))), "debian", "rustpbx-py.service")
        if not os.path.exists(path):
            raise self.skipTest("the Debian packaging is not part of an installed package")
        unit = configparser.ConfigParser(strict=False, interpolation=None)
        unit.optionxform = str
        unit.read(path)
        return unit["Service"]

    def test_limit_nofile(self):
        """The unit raises LimitNOFILE to 65,536, so that the default
        tcp_max_connections (a tenth below it) holds 58,983 connections."""
        limit = int(self.unit()["LimitNOFILE"])
        self.assertGreaterEqual(limit, 65536)
        self.assertEqual(default_max_connections(limit), limit - limit // 10)
