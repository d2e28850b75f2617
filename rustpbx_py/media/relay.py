# -*- test-case-name: rustpbx_py.test.test_media_relay -*-
"""
The RTP/RTCP relay of the built-in media engine: the hot path.

A relayed stream has two L{Leg}s, one facing each party, each with an RTP
and an RTCP socket (a L{rustpbx_py.media.ports.PortPair}) and one
L{RtpProtocol} / L{RtcpProtocol} per socket.  A packet that arrives on a
leg's socket is checked against the leg's latch, counted, passed through
the leg's hooks, and written on the other leg's socket to the other
leg's target address.

What a leg does to packets is data, not subclassing: optional hooks, all
C{None} for plain RTP so the per-packet path costs a few attribute reads,
one C{struct} unpack (statistics) and the C{sendto}:

  - C{inbound(data, source) -> bytes | None}: what arrives on this leg's
    RTP socket after the latch (SDES: SRTP unprotect; a future WebRTC leg:
    STUN answers, DTLS records and SRTP, with latching off and the ICE
    pair setting L{Latch.target});
  - C{outbound(data) -> bytes | None}: what is sent on this leg's RTP
    socket (SRTP protect; None drops the packet);
  - C{inbound_rtcp} / C{outbound_rtcp}: the same for RTCP;
  - C{translate(data) -> iterable of packets}: packets that came in on
    this leg, turned into what the other leg negotiated (transcoding,
    payload type mapping).

Packets are sent with the socket's C{sendto} rather than
C{IListeningPort.write}: C{write} re-validates the address as an IP
literal on every packet (several microseconds) and lets C{EAGAIN} escape
into the reactor's logger, once per packet, when a socket buffer is full.
Targets here are IP literals by construction (SDP addresses are checked
when set, latched addresses come from C{recvfrom}); send errors are
counted in L{Leg.send_errors}.
"""

from __future__ import annotations

from time import monotonic
from typing import Callable, Iterable, Optional

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from rustpbx_py.media.latching import Address, Latch, RtcpLatch
from rustpbx_py.media.rtp import ReceiveStats, SendStats, report_blocks

log = Logger()


class Leg:
    """
    One side of one relayed stream: the sockets facing one party, where
    that party is sent to (L{latch}), what came from it (L{received}) and
    what was sent to it (L{sent}).

    @ivar peer: the leg facing the other party.
    @ivar pair: the bound ports, set by L{bind}.
    """

    __slots__ = ("name", "latch", "rtcp_latch", "received", "sent", "peer", "pair",
                 "sendto", "sendto_rtcp", "inbound", "outbound", "inbound_rtcp",
                 "outbound_rtcp", "translate", "send_errors", "rtcp_in", "rtcp_out",
                 "rtcp_relayed", "clock", "local_address")

    def __init__(self, name: str, latching: bool = True, probation: int = 6,
                 clock: Callable[[], float] = monotonic) -> None:
        self.name = name
        self.latch = Latch(latching, probation)
        self.rtcp_latch = RtcpLatch(self.latch)
        self.received = ReceiveStats()
        self.sent = SendStats()
        self.peer: Optional[Leg] = None
        self.pair = None
        self.sendto = None
        self.sendto_rtcp = None
        self.inbound: Optional[Callable[[bytes, Address], Optional[bytes]]] = None
        self.outbound: Optional[Callable[[bytes], Optional[bytes]]] = None
        self.inbound_rtcp: Optional[Callable[[bytes, Address], Optional[bytes]]] = None
        self.outbound_rtcp: Optional[Callable[[bytes], Optional[bytes]]] = None
        self.translate: Optional[Callable[[bytes], Iterable[bytes]]] = None
        self.send_errors = 0
        self.rtcp_in = 0
        self.rtcp_out = 0
        self.rtcp_relayed = True
        self.clock = clock
        self.local_address: Optional[Address] = None

    def protocols(self) -> tuple["RtpProtocol", "RtcpProtocol"]:
        """The two protocols to bind (RTP, RTCP) for this leg."""
        return RtpProtocol(self), RtcpProtocol(self)

    def bind(self, pair, address: Address) -> None:
        """
        Take the bound C{pair} (its protocols are this leg's); C{address}
        is the (ip, port) the SDP advertises for it.
        """
        self.pair = pair
        self.sendto = _sender(pair.rtp)
        self.sendto_rtcp = _sender(pair.rtcp)
        self.local_address = address

    def send(self, data: bytes) -> None:
        """
        Send the RTP packet C{data} to this leg's party (not the hot path:
        the relay inlines this; used for generated packets).
        """
        target = self.latch.target
        if target is None or self.sendto is None:
            return
        if self.outbound is not None:
            data = self.outbound(data)
            if data is None:
                return
        try:
            self.sendto(data, target)
        except OSError:
            self.send_errors += 1
            return
        sent = self.sent
        sent.packets += 1
        sent.bytes += len(data)

    def figures(self) -> dict:
        """This leg's part of L{IMediaSession.stats}."""
        return {"local": self.local_address, "remote": self.latch.remote,
                "in": self.received.figures(), "out": self.sent.figures()}


class RtpProtocol(DatagramProtocol):
    """The RTP socket of a leg: everything it receives goes to the peer."""

    noisy = False

    def __init__(self, leg: Leg) -> None:
        self.leg = leg

    def datagramReceived(self, data: bytes, addr: Address) -> None:
        leg = self.leg
        latch = leg.latch
        if addr != latch.latched and not latch.admit(data, addr):
            return
        if len(data) < 12:                  # not RTP: nothing downstream has to guess
            latch.dropped += 1
            return
        if leg.inbound is not None:
            data = leg.inbound(data, addr)
            if data is None:
                return
        leg.received.update(data, leg.clock())
        peer = leg.peer
        target = peer.latch.target
        if target is None:
            return
        if leg.translate is not None:
            for packet in leg.translate(data):
                peer.send(packet)
            return
        if peer.outbound is not None:
            data = peer.outbound(data)
            if data is None:
                return
        try:
            peer.sendto(data, target)
        except OSError:
            peer.send_errors += 1
            return
        sent = peer.sent
        sent.packets += 1
        sent.bytes += len(data)


class RtcpProtocol(DatagramProtocol):
    """
    The RTCP socket of a leg: reception reports are read (they are the
    loss and jitter of what we send to this leg) and the packet is relayed
    to the peer, unless the stream is transcoded (then the two sides'
    sequence numbers and SSRCs differ and end-to-end RTCP would lie).
    """

    noisy = False

    def __init__(self, leg: Leg) -> None:
        self.leg = leg

    def datagramReceived(self, data: bytes, addr: Address) -> None:
        leg = self.leg
        latch = leg.rtcp_latch
        if addr != latch.latched and not latch.admit(data, addr):
            return
        if leg.inbound_rtcp is not None:
            data = leg.inbound_rtcp(data, addr)
            if data is None:
                return
        leg.rtcp_in += 1
        try:
            for block in report_blocks(data):
                leg.sent.report(block)
        except Exception:
            log.failure("reading RTCP from {addr}", addr=addr)
        peer = leg.peer
        target = peer.rtcp_latch.target
        if target is None or not leg.rtcp_relayed:
            return
        if peer.outbound_rtcp is not None:
            data = peer.outbound_rtcp(data)
            if data is None:
                return
        try:
            peer.sendto_rtcp(data, target)
        except OSError:
            peer.send_errors += 1
            return
        peer.rtcp_out += 1


def _sender(port) -> Callable[[bytes, Address], object]:
    """The socket's own C{sendto} (see the module docstring), or the
    port's C{write} for ports without a socket (test doubles)."""
    sock = getattr(port, "socket", None)
    return sock.sendto if sock is not None else getattr(port, "write", None)


def pair_legs(a: Leg, b: Leg) -> None:
    """Make C{a} and C{b} each other's peer (one relayed stream)."""
    a.peer = b
    b.peer = a
