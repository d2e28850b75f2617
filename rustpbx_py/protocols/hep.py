# -*- test-case-name: rustpbx_py.test.test_hep -*-
"""
HEP version 3 export: a copy of every SIP message the PBX receives and
sends, wrapped in the Homer Encapsulation Protocol and sent to a capture
server (Homer's heplify-server, sngrep -L, captagent...), so that traffic
is traced with no packet capture on the PBX's host.

L{encode} builds one HEP3 packet (the "HEP3" magic, the total length, then
chunks of vendor 0x0000, each type/length/value, RFC-style big endian):
IP family and protocol, source and destination address and port, the
time in seconds and microseconds, protocol type 1 (SIP), the capture
agent id, the authentication key (the capture server's password), the
node name, the Call-ID as correlation id, and the message itself.

L{HepExporter} is the tap the SIP core calls
(L{rustpbx_py.proxy.SipCore.set_capture}): it sends each packet over UDP
(one datagram each, dropped when the socket cannot take it: capture must
never slow or stop SIP) or over a TCP or TLS connection it keeps open
(packets are dropped while it reconnects, and while the server does not
keep up, so a slow capture server cannot fill the PBX's memory).  Over
TLS the server's certificate is verified against the host name of
C{hep_target}, with the system's trust store or C{hep_tls_ca}.
"""

from __future__ import annotations

import re
import socket
import struct
from typing import Any, Optional, Tuple

from twisted.internet import defer
from twisted.internet.interfaces import IHandshakeListener, IPushProducer
from twisted.internet.protocol import DatagramProtocol, Protocol, ReconnectingClientFactory
from twisted.logger import Logger
from zope.interface import implementer

__all__ = [
    "CHUNK",
    "HepExporter",
    "call_id_of",
    "encode",
    "exporter_from_settings",
    "parse_target",
]

MAGIC = b"HEP3"

#: The generic (vendor 0) chunk types of HEP3 this module writes.
CHUNK = {
    "ip_family": 0x0001,
    "ip_proto": 0x0002,
    "src_ip4": 0x0003,
    "dst_ip4": 0x0004,
    "src_ip6": 0x0005,
    "dst_ip6": 0x0006,
    "src_port": 0x0007,
    "dst_port": 0x0008,
    "time_sec": 0x0009,
    "time_usec": 0x000A,
    "proto_type": 0x000B,
    "capture_id": 0x000C,
    "auth_key": 0x000E,
    "payload": 0x000F,
    "correlation_id": 0x0011,
    "node_name": 0x0013,
}

#: HEP's protocol type of a SIP payload.
PROTO_SIP = 0x01
#: IP families as HEP writes them (the BSD AF_ values).
AF_INET, AF_INET6 = 2, 10
IPPROTO_TCP, IPPROTO_UDP = 6, 17

#: The largest HEP packet: its length field has 16 bits.
MAX_PACKET = 0xFFFF

_CALL_ID = re.compile(rb"^(?:call-id|i)[ \t]*:[ \t]*([^\r\n]*?)[ \t]*\r?$", re.IGNORECASE | re.MULTILINE)

Address = Tuple[str, int]


def _chunk(kind: int, value: bytes) -> bytes:
    return struct.pack("!HHH", 0, kind, 6 + len(value)) + value


#: The fixed chunks after the addresses: ports, time, protocol type,
#: capture id (vendor, type, length, value each).
_FIXED = struct.Struct("!HHHH" "HHHH" "HHHI" "HHHI" "HHHB" "HHHI")
_FAMILY_PROTO = struct.Struct("!HHHB" "HHHB")

#: Address text -> (IP version, packed bytes); bounded.
_PACKED: dict = {}


def _packed(host: str) -> Tuple[int, bytes]:
    """The version and bytes of an IP address; an IPv4-mapped IPv6
    address (a dual-stack socket's peer) is its IPv4 address.

    @raise ValueError: not an IP address."""
    found = _PACKED.get(host)
    if found is not None:
        return found
    try:
        found = (4, socket.inet_pton(socket.AF_INET, host))
    except OSError:
        try:
            raw = socket.inet_pton(socket.AF_INET6, host.split("%", 1)[0])
        except OSError:
            raise ValueError(f"HEP: {host!r} is not an IP address")
        found = (4, raw[12:]) if raw[:12] == b"\0" * 10 + b"\xff\xff" else (6, raw)
    if len(_PACKED) >= 10000:
        _PACKED.clear()
    _PACKED[host] = found
    return found


def encode(
    payload: bytes,
    src: Address,
    dst: Address,
    timestamp: float,
    capture_id: int,
    ip_proto: int = IPPROTO_UDP,
    password: Optional[str] = None,
    correlation_id: Optional[bytes] = None,
    node_name: Optional[str] = None,
) -> bytes:
    """
    One HEP3 packet carrying SIP C{payload} sent from C{src} to C{dst}
    (IPv4 or IPv6 addresses, both of one family once IPv4-mapped ones are
    taken as IPv4) at C{timestamp} (seconds since the epoch).

    @raise ValueError: when an address is not an IP address, the two are of
        different families, or the packet would exceed 65535 bytes.
    """
    version, source = _packed(src[0])
    dest_version, dest = _packed(dst[0])
    if version != dest_version:
        raise ValueError(f"HEP: source {src[0]} and destination {dst[0]} are of different IP families")
    return _encode(payload, version, source, dest, src[1], dst[1], timestamp, capture_id, ip_proto, _extra(password, node_name), correlation_id)


def _extra(password: Optional[str], node_name: Optional[str]) -> bytes:
    """The authentication key and node name chunks (the same in every
    packet of an exporter)."""
    out = b""
    if password:
        out += _chunk(CHUNK["auth_key"], password.encode("utf-8"))
    if node_name:
        out += _chunk(CHUNK["node_name"], node_name.encode("utf-8"))
    return out


def _encode(
    payload: bytes,
    version: int,
    source: bytes,
    dest: bytes,
    sport: int,
    dport: int,
    timestamp: float,
    capture_id: int,
    ip_proto: int,
    extra: bytes,
    correlation_id: Optional[bytes],
) -> bytes:
    seconds = int(timestamp)
    micros = int(round((timestamp - seconds) * 1_000_000))
    if micros >= 1_000_000:
        seconds, micros = seconds + 1, micros - 1_000_000
    v4 = version == 4
    size = 10 if v4 else 22
    parts = [
        b"",  # the header, once the length is known
        _FAMILY_PROTO.pack(0, 0x0001, 7, AF_INET if v4 else AF_INET6, 0, 0x0002, 7, ip_proto),
        struct.pack("!HHH", 0, 0x0003 if v4 else 0x0005, size) + source,
        struct.pack("!HHH", 0, 0x0004 if v4 else 0x0006, size) + dest,
        _FIXED.pack(
            0, 0x0007, 8, sport, 0, 0x0008, 8, dport, 0, 0x0009, 10, seconds & 0xFFFFFFFF,
            0, 0x000A, 10, micros, 0, 0x000B, 7, PROTO_SIP, 0, 0x000C, 10, capture_id & 0xFFFFFFFF,
        ),
        extra,
    ]
    if correlation_id:
        parts.append(struct.pack("!HHH", 0, 0x0011, 6 + len(correlation_id)) + correlation_id)
    parts.append(struct.pack("!HHH", 0, 0x000F, 6 + len(payload)))
    parts.append(payload)
    total = 6 + sum(map(len, parts))
    if total > MAX_PACKET:
        raise ValueError(f"HEP: a {len(payload)}-byte message does not fit in a HEP packet")
    parts[0] = MAGIC + struct.pack("!H", total)
    return b"".join(parts)


def call_id_of(data: bytes) -> Optional[bytes]:
    """The Call-ID (or compact C{i}) header value of a SIP message's
    bytes, looked for in its header part only; None when it has none."""
    end = data.find(b"\r\n\r\n")
    start = data.find(b"\r\nCall-ID:")
    if 0 <= start < end:
        # The usual spelling (ours): no regex.
        stop = data.find(b"\r\n", start + 10)
        value = data[start + 10 : stop].strip()
        if value:
            return value
    head = data if end < 0 else data[:end]
    m = _CALL_ID.search(head)
    return m.group(1) if m is not None and m.group(1) else None


class _Udp(DatagramProtocol):
    noisy = False


@implementer(IPushProducer, IHandshakeListener)
class _TcpSender(Protocol):
    """
    The stream to the capture server.  It registers itself as the
    transport's producer so that it hears when the server does not keep
    up (the transport's buffer is full): packets are then dropped and
    counted instead of piling up in the PBX's memory.  Over TLS it is
    ready once the handshake is done (what would be written before it is
    buffered by the TLS layer, which then pauses its producer: older
    Twisted releases did so, and the messages in between were lost).
    """

    paused = False

    def connectionMade(self) -> None:
        self.transport.registerProducer(self, True)
        if self.factory.exporter.transport != "tls":
            self.factory.connected(self)

    def handshakeCompleted(self) -> None:
        """The TLS handshake is done (L{IHandshakeListener})."""
        self.factory.connected(self)

    def connectionLost(self, reason=None) -> None:
        self.factory.disconnected(self)

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        self.paused = True


class _TcpFactory(ReconnectingClientFactory):
    protocol = _TcpSender
    maxDelay = 10.0
    noisy = False

    def __init__(self, exporter: "HepExporter") -> None:
        self.exporter = exporter
        self.sender: Optional[_TcpSender] = None

    def buildProtocol(self, addr):
        self.resetDelay()
        return super().buildProtocol(addr)

    def connected(self, sender: _TcpSender) -> None:
        self.sender = sender
        first = self.exporter._connected
        if first is not None and not first.called:
            first.callback(None)

    def disconnected(self, sender: _TcpSender) -> None:
        if self.sender is sender:
            self.sender = None


class HepExporter:
    """
    Sends a HEP3 copy of each SIP message to C{host:port}.

    @param core: the L{rustpbx_py.proxy.SipCore} (for our own address when
        a listener is bound to 0.0.0.0 / ::).
    @param transport: C{udp} or C{tcp}.
    @ivar sent: packets handed to the socket.
    @ivar dropped: messages not exported (no connection, too big, an
        address HEP cannot carry, a socket error).
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        core: Any,
        host: str,
        port: int,
        transport: str = "udp",
        capture_id: int = 1,
        password: Optional[str] = None,
        node_name: Optional[str] = None,
        tls_ca: Optional[str] = None,
    ) -> None:
        self.reactor = reactor
        self.core = core
        self.host = host
        self.port = port
        self.transport = transport.lower()
        if self.transport not in ("udp", "tcp", "tls"):
            raise ValueError(f"HEP transport must be udp, tcp or tls, not {transport!r}")
        self.tls_ca = tls_ca
        self.capture_id = capture_id
        self.password = password
        self.node_name = node_name
        self._extra = _extra(password, node_name)
        self.target: Optional[Address] = None
        self.sent = 0
        self.dropped = 0
        self._udp: Any = None
        self._tcp: Optional[_TcpFactory] = None
        self._connector: Any = None
        self._connected: Optional[defer.Deferred] = None

    @defer.inlineCallbacks
    def start(self):
        """
        Resolve the capture server's name, open the socket (UDP) or start
        connecting (TCP), then tap the core.  Fires when capture is on; a
        TCP server that is down does not delay it (packets are dropped
        until it is up).
        """
        host = name = self.host
        try:
            _packed(host)
        except ValueError:
            host = yield self.reactor.resolve(host)
        self.target = (host, self.port)
        if self.transport == "udp":
            interface = "::" if ":" in host else ""
            self._udp = self.reactor.listenUDP(0, _Udp(), interface=interface)
        else:
            self._connected = defer.Deferred()
            self._tcp = _TcpFactory(self)
            if self.transport == "tls":
                from rustpbx_py.protocols.tls import client_options, load_trust_root

                # The certificate is checked against the name hep_target gave.
                trust = load_trust_root(self.tls_ca) if self.tls_ca else None
                self._connector = self.reactor.connectSSL(host, self.port, self._tcp, client_options(name, trust), timeout=10)
            else:
                self._connector = self.reactor.connectTCP(host, self.port, self._tcp, timeout=10)
        self.core.set_capture(self.capture)
        self.log.info(
            "HEP: exporting SIP to {transport}:{host}:{port} (capture id {id})",
            transport=self.transport,
            host=host,
            port=self.port,
            id=self.capture_id,
        )

    def stop(self):
        """Untap the core and close the socket or connection."""
        if self.core.capture == self.capture:
            self.core.set_capture(None)
        if self._tcp is not None:
            self._tcp.stopTrying()
            sender, self._tcp.sender = self._tcp.sender, None
            if self._connector is not None:
                self._connector.disconnect()
            if sender is not None and sender.transport is not None:
                sender.transport.loseConnection()
            self._tcp = None
        if self._udp is not None:
            port, self._udp = self._udp, None
            return port.stopListening()
        return None

    # -- the tap -------------------------------------------------------------------

    def capture(self, data: Any, flow: Any, outbound: bool) -> None:
        """L{rustpbx_py.proxy.SipCore.set_capture}'s callback."""
        try:
            if isinstance(data, bytes):
                call_id = call_id_of(data)
            else:
                call_id = (data.get("call-id") or "").strip().encode("utf-8", "surrogateescape") or None
                data = data.to_bytes()
            local_host, local_port = flow.local[0], flow.local[1]
            remote_host, remote_port = flow.remote[0], flow.remote[1]
            if local_host in ("0.0.0.0", "::", ""):
                # Bound to every address: the one the kernel uses towards the peer.
                local_host = self.core.transports._route_to(remote_host, v6=":" in remote_host)
            version, local = _packed(local_host)
            remote_version, remote = _packed(remote_host)
            if version != remote_version:
                raise ValueError(f"{local_host} and {remote_host} are of different IP families")
            if outbound:
                src, dst, sport, dport = local, remote, local_port, remote_port
            else:
                src, dst, sport, dport = remote, local, remote_port, local_port
            packet = _encode(
                data,
                version,
                src,
                dst,
                sport,
                dport,
                self.reactor.seconds(),
                self.capture_id,
                IPPROTO_UDP if flow.transport == "UDP" else IPPROTO_TCP,
                self._extra,
                call_id,
            )
        except Exception as e:
            self._drop(f"cannot encode: {e}")
            return
        self._send(packet)

    def _send(self, packet: bytes) -> None:
        if self._udp is not None:
            try:
                self._udp.write(packet, self.target)
            except Exception as e:
                self._drop(f"UDP send failed: {e}")
                return
            self.sent += 1
            return
        sender = self._tcp.sender if self._tcp is not None else None
        if sender is None or sender.transport is None:
            self._drop(f"no {self.transport.upper()} connection to the capture server")
            return
        if sender.paused:
            self._drop("the capture server is not keeping up")
            return
        sender.transport.write(packet)
        self.sent += 1

    def _drop(self, why: str) -> None:
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 1000 == 0:
            self.log.warn("HEP: a message was not exported ({why}; {count} so far)", why=why, count=self.dropped)


def parse_target(text: str) -> Address:
    """C{host:port} or C{[v6]:port} of a capture server.

    @raise ValueError: not that shape, or the port is not 1-65535."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected \"host:port\", found {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"expected \"[IPv6]:port\" for an IPv6 address, found {text!r}")
    return host, int(port)


def exporter_from_settings(reactor: Any, core: Any, settings: Any) -> Optional[HepExporter]:
    """
    The exporter the settings ask for (an object with C{hep_target},
    C{hep_transport}, C{hep_capture_id}, C{hep_password} and
    C{hep_node_name}, e.g. the monitor addon's C{[monitor]} table); None
    when C{hep_target} is unset.  Start it with L{HepExporter.start}.
    """
    target = getattr(settings, "hep_target", None)
    if not target:
        return None
    host, port = parse_target(target)
    return HepExporter(
        reactor,
        core,
        host,
        port,
        transport=getattr(settings, "hep_transport", None) or "udp",
        capture_id=getattr(settings, "hep_capture_id", None) or 1,
        password=getattr(settings, "hep_password", None),
        node_name=getattr(settings, "hep_node_name", None),
        tls_ca=getattr(settings, "hep_tls_ca", None),
    )
