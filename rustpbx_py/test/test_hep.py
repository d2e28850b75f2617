"""
Tests for L{rustpbx_py.protocols.hep}: HEP3 packets are checked with a
decoder written here from the HEP3 specification (not with the module's
own tables), and the exporter taps the real core of a PBX on a
L{task.Clock} (scripted phones, in-memory sockets).
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Dict, List, Tuple

from twisted.internet import defer, task
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from rustpbx_py.protocols.hep import HepExporter, call_id_of, encode, exporter_from_settings, parse_target
from rustpbx_py.test.core_wire import MemoryUDPSocket
from rustpbx_py.test.sip_phones import PBX_ADDRESS, Network, Phone
from rustpbx_py.test.waiting import until

USERS = [{"type": "memory", "users": [{"username": "alice", "password": "wonderland"}, {"username": "bob", "password": "builder"}]}]


def decode_hep3(packet: bytes) -> Dict[str, object]:
    """
    An independent HEP3 decoder (the HEP3 specification, "HEP3 Network
    Protocol Specification", chunk types of vendor 0): checks the magic,
    the total length and every chunk length, and returns the chunks by
    name.  Raises AssertionError on anything malformed.
    """
    assert packet[:4] == b"HEP3", packet[:4]
    (total,) = struct.unpack("!H", packet[4:6])
    assert total == len(packet), (total, len(packet))
    fields: Dict[str, object] = {}
    seen: List[int] = []
    offset = 6
    while offset < total:
        vendor, kind, length = struct.unpack("!HHH", packet[offset : offset + 6])
        assert vendor == 0, vendor
        assert length >= 6 and offset + length <= total, (kind, length)
        value = packet[offset + 6 : offset + length]
        offset += length
        seen.append(kind)
        if kind == 1:
            (fields["family"],) = value
        elif kind == 2:
            (fields["proto"],) = value
        elif kind in (3, 4):
            assert len(value) == 4
            fields["src_ip" if kind == 3 else "dst_ip"] = str(ipaddress.IPv4Address(value))
        elif kind in (5, 6):
            assert len(value) == 16
            fields["src_ip" if kind == 5 else "dst_ip"] = str(ipaddress.IPv6Address(value))
        elif kind in (7, 8):
            (fields["src_port" if kind == 7 else "dst_port"],) = struct.unpack("!H", value)
        elif kind == 9:
            (fields["sec"],) = struct.unpack("!I", value)
        elif kind == 10:
            (fields["usec"],) = struct.unpack("!I", value)
        elif kind == 11:
            (fields["proto_type"],) = value
        elif kind == 12:
            (fields["capture_id"],) = struct.unpack("!I", value)
        elif kind == 14:
            fields["auth_key"] = value.decode()
        elif kind == 15:
            fields["payload"] = value
        elif kind == 17:
            fields["correlation_id"] = value.decode()
        elif kind == 19:
            fields["node_name"] = value.decode()
        else:
            raise AssertionError(f"unexpected chunk type {kind:#06x}")
    assert offset == total
    assert len(seen) == len(set(seen)), f"a chunk type twice: {seen}"
    return fields


class EncodeTests(SynchronousTestCase):
    def test_ipv4_every_chunk(self):
        payload = b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: abc@host\r\n\r\n"
        packet = encode(
            payload, ("192.0.2.1", 5060), ("198.51.100.7", 5080), 1700000000.25, 2001, 17, "s3cret", b"abc@host", "pbx-1"
        )
        self.assertEqual(
            decode_hep3(packet),
            {
                "family": 2, "proto": 17, "src_ip": "192.0.2.1", "dst_ip": "198.51.100.7", "src_port": 5060,
                "dst_port": 5080, "sec": 1700000000, "usec": 250000, "proto_type": 1, "capture_id": 2001,
                "auth_key": "s3cret", "node_name": "pbx-1", "correlation_id": "abc@host", "payload": payload,
            },
        )

    def test_ipv6_tcp_minimal(self):
        """IPv6 uses the 16-byte address chunks; no password, node name or
        correlation id means no such chunk."""
        packet = encode(b"SIP/2.0 200 OK\r\n\r\n", ("2001:db8::1", 5061), ("2001:db8::2", 40000), 10.5, 7, 6)
        fields = decode_hep3(packet)
        self.assertEqual((fields["family"], fields["proto"], fields["src_ip"], fields["dst_ip"]), (10, 6, "2001:db8::1", "2001:db8::2"))
        self.assertEqual((fields["sec"], fields["usec"]), (10, 500000))
        self.assertNotIn("auth_key", fields)
        self.assertNotIn("correlation_id", fields)

    def test_microseconds_rounding(self):
        fields = decode_hep3(encode(b"x", ("10.0.0.1", 1), ("10.0.0.2", 2), 5.9999999, 1))
        self.assertEqual((fields["sec"], fields["usec"]), (6, 0))

    def test_refused(self):
        with self.assertRaises(ValueError):
            encode(b"x", ("10.0.0.1", 1), ("2001:db8::2", 2), 0, 1)
        with self.assertRaises(ValueError):
            encode(b"x" * 65500, ("10.0.0.1", 1), ("10.0.0.2", 2), 0, 1)

    def test_call_id_of(self):
        self.assertEqual(call_id_of(b"BYE sip:x SIP/2.0\r\nVia: a\r\nCall-ID:  xyz@h \r\n\r\nCall-ID: body"), b"xyz@h")
        self.assertEqual(call_id_of(b"SIP/2.0 200 OK\r\ni: compact\r\n\r\n"), b"compact")
        self.assertEqual(call_id_of(b"SIP/2.0 200 OK\r\nX-Call-ID: no\r\n\r\n"), None)
        self.assertEqual(call_id_of(b"garbage"), None)


class HepReactor:
    """The exporter's reactor: the test clock, a name resolver and an
    in-memory UDP socket keeping what the exporter sends."""

    def __init__(self, clock: task.Clock) -> None:
        self.clock = clock
        self.packets: List[Tuple[bytes, Tuple[str, int]]] = []
        self.closed = False

    def seconds(self) -> float:
        return self.clock.seconds()

    def __getattr__(self, name):
        return getattr(self.clock, name)  # callLater, ...

    def resolve(self, name: str):
        return defer.succeed({"homer.example": "203.0.113.9"}[name])

    def listenUDP(self, port, protocol, interface=""):
        reactor = self

        class Port(MemoryUDPSocket):
            def stopListening(self):
                reactor.closed = True

        return Port(("0.0.0.0", 40000), lambda data, addr: self.packets.append((data, addr)))


class ExportTests(SynchronousTestCase):
    """A PBX on a clock with HEP export on: every datagram it receives and
    sends is exported once, in order, with its addresses and Call-ID."""

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1_700_000_000.125)
        self.net = Network(self.clock, realms=["example.com"], user_backends=USERS)
        self.addCleanup(self.net.stop)
        self.wire: List[Tuple[str, bytes, Tuple[str, int]]] = []
        receive, write = self.net.udp.datagramReceived, self.net.socket._on_write

        def received(data, addr):
            self.wire.append(("in", data, addr))
            receive(data, addr)

        def written(data, addr):
            self.wire.append(("out", data, addr))
            write(data, addr)

        self.net.udp.datagramReceived = received
        self.net.socket._on_write = written
        self.reactor = HepReactor(self.clock)
        self.exporter = HepExporter(self.reactor, self.net.core, "homer.example", 9060, capture_id=2001, password="myHep", node_name="pbx-a")
        self.successResultOf(self.exporter.start())

    def test_call_traced(self):
        alice = Phone(self.net, "alice", "wonderland", ("203.0.113.10", 40000), ("10.0.0.10", 5060))
        bob = Phone(self.net, "bob", "builder", ("203.0.113.11", 40001), ("10.0.0.11", 5060))
        bob.register()
        alice.call("bob", 2)
        self.net.advance(5)
        self.assertIn(("INVITE", 200), alice.answers)
        self.assertIn(("BYE", 200), alice.answers)
        self.assertGreater(len(self.wire), 10)
        self.assertEqual(len(self.reactor.packets), len(self.wire))
        for (direction, data, peer), (packet, target) in zip(self.wire, self.reactor.packets):
            self.assertEqual(target, ("203.0.113.9", 9060))
            fields = decode_hep3(packet)
            ours = PBX_ADDRESS
            src, dst = (ours, peer) if direction == "out" else (peer, ours)
            self.assertEqual((fields["src_ip"], fields["src_port"]), src)
            self.assertEqual((fields["dst_ip"], fields["dst_port"]), dst)
            self.assertEqual((fields["family"], fields["proto"], fields["proto_type"]), (2, 17, 1))
            self.assertEqual((fields["capture_id"], fields["auth_key"], fields["node_name"]), (2001, "myHep", "pbx-a"))
            self.assertEqual(fields["payload"], data)
            call_id = [line.split(b":", 1)[1].strip() for line in data.split(b"\r\n") if line.lower().startswith(b"call-id:")]
            self.assertEqual(fields["correlation_id"].encode(), call_id[0])
        self.assertEqual(self.exporter.sent, len(self.wire))
        self.assertEqual(self.exporter.dropped, 0)
        invites = [decode_hep3(p) for p, _ in self.reactor.packets if decode_hep3(p)["payload"].startswith(b"INVITE")]
        self.assertEqual(len({i["correlation_id"] for i in invites}), 2, "the A leg and the B leg")

    def test_timestamp(self):
        """The time of the capture, to the microsecond."""
        alice = Phone(self.net, "alice", "wonderland", ("203.0.113.10", 40000))
        alice.options()
        fields = [decode_hep3(p) for p, _ in self.reactor.packets]
        self.assertEqual(len(fields), 2)
        for f in fields:
            self.assertEqual((f["sec"], f["usec"]), (1_700_000_000, 125000))

    def test_unparseable_exported(self):
        """A datagram the parser refuses is exported as it came."""
        self.net.send(b"INVITE sip:x SIP/2.0\r\nbroken line\r\n\r\n", ("203.0.113.20", 5060))
        first = decode_hep3(self.reactor.packets[0][0])
        self.assertEqual(first["payload"], b"INVITE sip:x SIP/2.0\r\nbroken line\r\n\r\n")
        self.assertNotIn("correlation_id", first)

    def test_stop(self):
        """Stopped, the core is untapped and the socket closed."""
        self.exporter.stop()
        self.assertIsNone(self.net.core.capture)
        self.assertIsNone(self.net.core.transactions.capture)
        self.assertTrue(self.reactor.closed)
        Phone(self.net, "alice", "wonderland", ("203.0.113.10", 40000)).options()
        self.assertEqual(self.reactor.packets, [])

    def test_unspecified_local_address(self):
        """A listener bound to 0.0.0.0 is shown with the address the
        kernel uses towards the peer."""

        class Flow:
            transport = "TCP"
            local = ("0.0.0.0", 5060)
            remote = ("127.0.0.1", 45000)

        self.exporter.capture(b"SIP/2.0 200 OK\r\nCall-ID: a\r\n\r\n", Flow(), True)
        fields = decode_hep3(self.reactor.packets[-1][0])
        self.assertEqual((fields["proto"], fields["src_ip"], fields["src_port"], fields["dst_ip"]), (6, "127.0.0.1", 5060, "127.0.0.1"))

    def test_ipv4_mapped_peer(self):
        class Flow:
            transport = "UDP"
            local = ("::ffff:192.0.2.1", 5060)
            remote = ("::ffff:198.51.100.1", 5070)

        self.exporter.capture(b"SIP/2.0 200 OK\r\n\r\n", Flow(), False)
        fields = decode_hep3(self.reactor.packets[-1][0])
        self.assertEqual((fields["family"], fields["src_ip"], fields["dst_ip"]), (2, "198.51.100.1", "192.0.2.1"))


class TcpExportTests(SynchronousTestCase):
    def test_tcp(self):
        """Over TCP the packets follow each other on one connection; none
        is sent (they are counted as dropped) while it is not up, and it
        is made again after it breaks."""
        clock = task.Clock()
        net = Network(clock)
        self.addCleanup(net.stop)
        reactor = MemoryReactorClock()
        exporter = HepExporter(reactor, net.core, "192.0.2.50", 9061, transport="tcp", capture_id=5)
        self.successResultOf(exporter.start())
        (host, port, factory, timeout, bind) = reactor.tcpClients[0]
        self.assertEqual((host, port), ("192.0.2.50", 9061))
        phone = Phone(net, "x", None, ("203.0.113.10", 40000))
        phone.options()
        self.assertEqual((exporter.sent, exporter.dropped), (0, 2))
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        phone.options()
        stream = transport.value()
        packets = []
        while stream:
            (length,) = struct.unpack("!H", stream[4:6])
            packets.append(decode_hep3(stream[:length]))
            stream = stream[length:]
        self.assertEqual([p["proto"] for p in packets], [17, 17])
        self.assertTrue(packets[0]["payload"].startswith(b"OPTIONS "))
        self.assertTrue(packets[1]["payload"].startswith(b"SIP/2.0 200"))
        self.assertEqual(exporter.sent, 2)
        protocol.connectionLost(None)
        phone.options()
        self.assertEqual(exporter.dropped, 4)
        exporter.stop()
        self.assertIsNone(net.core.capture)

    def test_slow_server_drops(self):
        """While the connection's buffer is full (the transport pauses its
        producer) packets are dropped and counted, not queued in memory;
        they flow again once it resumes."""
        net = Network(task.Clock())
        self.addCleanup(net.stop)
        reactor = MemoryReactorClock()
        exporter = HepExporter(reactor, net.core, "192.0.2.50", 9061, transport="tcp")
        self.successResultOf(exporter.start())
        protocol = reactor.tcpClients[0][2].buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.assertIs(transport.producer, protocol)
        self.assertTrue(transport.streaming)
        phone = Phone(net, "x", None, ("203.0.113.10", 40000))
        transport.producer.pauseProducing()
        phone.options()
        self.assertEqual((exporter.sent, exporter.dropped, transport.value()), (0, 2, b""))
        transport.producer.resumeProducing()
        phone.options()
        self.assertEqual((exporter.sent, exporter.dropped), (2, 2))
        exporter.stop()


class _HepCollector(Protocol):
    """A capture server's side of a HEP stream: whole packets, decoded."""

    def connectionMade(self) -> None:
        self.buffer = b""
        self.factory.connections.append(self)

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 6:
            (length,) = struct.unpack("!H", self.buffer[4:6])
            if len(self.buffer) < length:
                break
            self.factory.packets.append(decode_hep3(self.buffer[:length]))
            self.buffer = self.buffer[length:]


class TlsExportTests(TestCase):
    """HEP over TLS to a capture server on 127.0.0.1 (a real TLS listener)."""

    timeout = 30

    def server(self, cert: str, key: str):
        from twisted.internet import reactor
        from twisted.internet.protocol import Factory

        from rustpbx_py.protocols.tls import server_context_factory

        factory = Factory.forProtocol(_HepCollector)
        factory.packets, factory.connections = [], []
        port = reactor.listenSSL(0, factory, server_context_factory(cert, key), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return factory, port.getHost().port

    @defer.inlineCallbacks
    def test_tls(self):
        """With the server's certificate as hep_tls_ca the exporter
        connects over TLS and the server decodes the OPTIONS and its 200;
        with another CA the handshake fails and nothing is exported."""
        from twisted.internet import reactor

        from rustpbx_py.test.tls import self_signed_for

        cert, key = self_signed_for(self)
        factory, port = self.server(cert, key)
        net = Network(task.Clock())
        self.addCleanup(net.stop)
        exporter = HepExporter(reactor, net.core, "127.0.0.1", port, transport="tls", tls_ca=cert, capture_id=9)
        yield exporter.start()
        self.addCleanup(exporter.stop)
        yield exporter._connected
        phone = Phone(net, "x", None, ("203.0.113.10", 40000))
        phone.options()
        yield until(self, lambda: len(factory.packets) == 2, "two HEP packets over TLS")
        self.assertTrue(factory.packets[0]["payload"].startswith(b"OPTIONS "))
        self.assertTrue(factory.packets[1]["payload"].startswith(b"SIP/2.0 200"))
        self.assertEqual({p["capture_id"] for p in factory.packets}, {9})
        exporter.stop()

        other_cert, _ = self_signed_for(self)
        untrusted = HepExporter(reactor, net.core, "127.0.0.1", port, transport="tls", tls_ca=other_cert)
        yield untrusted.start()
        self.addCleanup(untrusted.stop)
        yield until(self, lambda: len(factory.connections) >= 2, "the second TLS attempt")
        yield task.deferLater(reactor, 0.3, lambda: None)
        phone.options()
        self.assertEqual(untrusted.sent, 0)
        self.assertGreaterEqual(untrusted.dropped, 2)
        self.assertEqual(len(factory.packets), 2)


class OffTests(SynchronousTestCase):
    def test_off_by_default(self):
        """Without an exporter the core has no tap."""
        net = Network(task.Clock())
        self.addCleanup(net.stop)
        self.assertIsNone(net.core.capture)
        self.assertIsNone(net.core.transactions.capture)


class SettingsTests(SynchronousTestCase):
    def test_parse_target(self):
        self.assertEqual(parse_target("homer.example:9060"), ("homer.example", 9060))
        self.assertEqual(parse_target("[2001:db8::5]:9061"), ("2001:db8::5", 9061))
        for bad in ("homer", "homer:", ":9060", "homer:0", "homer:70000", "2001:db8::5:9060", "homer:x"):
            self.assertRaises(ValueError, parse_target, bad)

    def test_from_settings(self):
        class Settings:
            hep_target = "192.0.2.7:9062"
            hep_transport = "tcp"
            hep_capture_id = 42
            hep_password = "pw"
            hep_node_name = "edge-1"

        exporter = exporter_from_settings(None, None, Settings())
        self.assertEqual(
            (exporter.host, exporter.port, exporter.transport, exporter.capture_id, exporter.password, exporter.node_name),
            ("192.0.2.7", 9062, "tcp", 42, "pw", "edge-1"),
        )
        Settings.hep_target = None
        self.assertIsNone(exporter_from_settings(None, None, Settings()))


class MonitorAddonTests(SynchronousTestCase):
    """[monitor] hep_* turn the export on in the monitor addon."""

    def start(self, toml):
        from rustpbx_py.addons.monitor.addon import MonitorAddon
        from rustpbx_py.config import parse_config_text

        clock = task.Clock()
        self.net = Network(clock)
        self.addCleanup(self.net.stop)
        context = self.net.context
        self.reactor = context.reactor = HepReactor(clock)
        context.config.addon_tables = dict(parse_config_text('[proxy]\naddons = ["monitor"]\n[monitor]\n' + toml).addon_tables)
        addon = MonitorAddon(context)
        d = addon.start()
        if d is not None:
            self.successResultOf(d)
        return addon

    def test_on(self):
        addon = self.start('hep_target = "homer.example:9060"\nhep_capture_id = 7\nhep_password = "pw"\nhep_node_name = "n1"\n')
        Phone(self.net, "x", None, ("203.0.113.10", 40000)).options()
        packets = [decode_hep3(p) for p, target in self.reactor.packets if target == ("203.0.113.9", 9060)]
        self.assertEqual(len(packets), 2)
        self.assertEqual({(p["capture_id"], p["auth_key"], p["node_name"]) for p in packets}, {(7, "pw", "n1")})
        addon.stop()
        self.assertIsNone(self.net.core.capture)
        self.assertTrue(self.reactor.closed)

    def test_tls_settings(self):
        """hep_transport = "tls" with hep_tls_ca reaches the exporter; a
        CA bundle without tls, or one that is not PEM, is refused at start
        naming the key."""
        from rustpbx_py.config import ConfigError, parse_config_text
        from rustpbx_py.test.tls import self_signed_for

        cert, _ = self_signed_for(self)
        config = parse_config_text(f'[proxy]\naddons = ["monitor"]\n[monitor]\nhep_target = "127.0.0.1:9061"\n'
                                   f'hep_transport = "tls"\nhep_tls_ca = "{cert}"\n')
        exporter = exporter_from_settings(None, None, config.addon_tables["monitor"])
        self.assertEqual((exporter.transport, exporter.tls_ca), ("tls", cert))
        for extra, expected in ((f'hep_tls_ca = "{cert}"\n', 'only with hep_transport = "tls"'),
                                (f'hep_transport = "tls"\nhep_tls_ca = "{cert}.missing"\n', "a readable PEM bundle")):
            with self.assertRaises(ConfigError) as caught:
                parse_config_text('[proxy]\naddons = ["monitor"]\n[monitor]\nhep_target = "127.0.0.1:9061"\n' + extra)
            self.assertIn("monitor.hep_tls_ca", str(caught.exception))
            self.assertIn(expected, str(caught.exception))

    def test_off(self):
        addon = self.start("")
        self.assertIsNone(addon.hep)
        self.assertIsNone(self.net.core.capture)
        addon.stop()
