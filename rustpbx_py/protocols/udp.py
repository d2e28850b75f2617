# -*- test-case-name: rustpbx_py.test.test_protocols -*-
"""SIP over UDP: one datagram, one message (RFC 3261 section 18)."""

from __future__ import annotations

import errno
import socket

from twisted.internet.protocol import DatagramProtocol

from rustpbx_py.protocols.flow import DatagramFlow
from rustpbx_py.sip.message import SipParseError, parse_message

#: Send errors Twisted's UDP write ignores: a full socket buffer drops the
#: datagram (UDP may), and an ICMP port unreachable from an earlier send.
_DROPPED = frozenset([errno.EAGAIN, errno.EWOULDBLOCK, errno.ECONNREFUSED])
_MAX_CHECKED_HOSTS = 10000

#: The largest datagram read whole: a UDP payload is at most 65,507 bytes
#: over IPv4 and 65,527 over IPv6; Twisted's default of 8,192 silently cut
#: bigger ones (an 8 KB REGISTER became "malformed Contact").  Anything
#: above L{MAX_MESSAGE_SIZE} is refused by the parser with 513.
MAX_DATAGRAM = 65536


#: The receive buffer asked for on the SIP UDP socket, bytes.  The kernel's
#: default (208 KiB on Linux) holds about 500 messages: under a burst, or
#: while the reactor is held up a moment (a busy machine, a full
#: collection), more arrive and the kernel drops them, the phones
#: retransmit and the extra load feeds itself (bench/soak.py counted tens of
#: thousands of drops and 9 % of calls failed on a loaded machine).  4 MiB
#: holds seconds of traffic.  Linux caps it at C{net.core.rmem_max} (208 KiB
#: on a stock system: raise that with sysctl for this to take effect), as
#: Kamailio's start-up probe of its receive buffer is capped by the same.
UDP_RECEIVE_BUFFER = 4 * 1024 * 1024


def listen_udp(reactor, port: int, protocol: "SipDatagramProtocol", interface: str = ""):
    """Listen for SIP over UDP, reading datagrams up to L{MAX_DATAGRAM},
    with a receive buffer of up to L{UDP_RECEIVE_BUFFER}."""
    listener = reactor.listenUDP(port, protocol, interface=interface, maxPacketSize=MAX_DATAGRAM)
    raise_receive_buffer(getattr(listener, "socket", None))
    return listener


def raise_receive_buffer(sock, size: int = UDP_RECEIVE_BUFFER) -> None:
    """Ask for a receive buffer of C{size} bytes on C{sock} unless it has
    one that big already (the kernel caps the request; an error leaves the
    default)."""
    if sock is None:
        return
    try:
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) < size:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    except OSError:
        pass


class SipDatagramProtocol(DatagramProtocol):
    """
    Frames nothing (a datagram is a message), parses, and hands each message
    with its flow to the controller; a datagram of only CRLFs is a keep-alive
    (RFC 5626 section 3.5.1) and is dropped.
    """

    #: No "Starting protocol <... at 0x...>" line: we log our listeners.
    noisy = False

    def __init__(self, controller) -> None:
        self.controller = controller
        self.local = ("0.0.0.0", 0)
        self._flows: dict = {}
        self._checked_hosts: set = set()

    def startProtocol(self) -> None:
        h = self.transport.getHost()
        self.local = (h.host, h.port)

    def write(self, data: bytes, addr) -> None:
        transport = self.transport
        if transport is None:
            # The listener is closed (the service is stopping): a late
            # retransmission has nowhere to go.
            return
        if addr[0] in self._checked_hosts:
            # A host Twisted's write already accepted (an address of this
            # socket's family, never a name to resolve): straight to the
            # socket, as Twisted would after its checks.
            try:
                transport.socket.sendto(data, addr)
                return
            except OSError as e:
                if e.errno in _DROPPED:
                    return
                if e.errno != errno.EINTR:
                    self.controller.send_failed(self, addr, e)
                    return
            except Exception as e:  # a port out of range (OverflowError), ...
                self.controller.send_failed(self, addr, e)
                return
        try:
            transport.write(data, addr)
        except Exception as e:
            # Unreachable network, message too long (OSError), a host name
            # or an address of the other family (InvalidAddressError), a
            # port out of range (OverflowError): nothing a caller can fix,
            # and none of it may stop the transaction that sent it.
            self.controller.send_failed(self, addr, e)
            return
        checked = self._checked_hosts
        if len(checked) >= _MAX_CHECKED_HOSTS:
            checked.clear()
        checked.add(addr[0])

    def flow_for(self, addr) -> DatagramFlow:
        """The (cached) flow for a peer address; bounded so a scan cannot grow it."""
        flow = self._flows.get(addr)
        if flow is None:
            if len(self._flows) > 10000:
                self._flows.clear()
            flow = self._flows[addr] = DatagramFlow(self, addr)
        return flow

    def datagramReceived(self, data: bytes, addr) -> None:
        if not data.strip(b"\r\n"):
            return
        addr = (addr[0].split("%", 1)[0], addr[1])
        flow = self.flow_for(addr)
        try:
            message = parse_message(data)
        except SipParseError as e:
            self.controller.parse_error(e, data, flow)
            return
        self.controller.message_received(message, flow)
