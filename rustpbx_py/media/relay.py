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

A leg may also have an C{ssrc} (4 bytes): the SSRC the SDP written for
its party announces (C{a=ssrc:<n> cname:<rtc_cname>}); RTP sent to it is
stamped with it, and relayed RTCP is mapped to match (L{map_rtcp}).

Packets are sent with the socket's C{sendto} rather than
C{IListeningPort.write}: C{write} re-validates the address as an IP
literal on every packet (several microseconds) and lets C{EAGAIN} escape
into the reactor's logger, once per packet, when a socket buffer is full.
Targets here are IP literals by construction (SDP addresses are checked
when set, latched addresses come from C{recvfrom}); send errors are
counted in L{Leg.send_errors}.
"""

from __future__ import annotations

import struct
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
                 "rtcp_relayed", "clock", "local_address", "ssrc")

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
        #: the SSRC (4 bytes, network order) of what this leg's party is
        #: sent, or None to pass the other party's through
        self.ssrc: Optional[bytes] = None

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
        if self.ssrc is not None:
            data = data[:8] + self.ssrc + data[12:]
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
        ssrc = peer.ssrc
        if ssrc is not None:
            data = data[:8] + ssrc + data[12:]
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
        if peer.ssrc is not None or leg.ssrc is not None:
            data = map_rtcp(data, leg, peer)
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


_SSRC = struct.Struct("!I")


def map_rtcp(data: bytes, leg: Leg, peer: Leg) -> bytes:
    """
    RTCP from C{leg}'s party, for C{peer}'s party, when either leg's RTP
    is stamped with its own SSRC (L{Leg.ssrc}): the sender's SSRC becomes
    the one C{peer}'s party knows the stream by, and report blocks (and
    feedback) about what C{leg}'s party receives name the SSRC C{peer}'s
    party sends.  SR, RR, SDES, BYE and RTP/PS feedback of a compound
    packet are mapped; anything malformed is left as it is (the relay
    never drops RTCP for its shape).  RTCP is a few packets a second: not
    the hot path.
    """
    mapping = {}
    if peer.ssrc is not None and leg.received.ssrc != -1:
        mapping[leg.received.ssrc] = _SSRC.unpack(peer.ssrc)[0]
    if leg.ssrc is not None and peer.received.ssrc != -1:
        mapping[_SSRC.unpack(leg.ssrc)[0]] = peer.received.ssrc
    if not mapping:
        return data
    out = bytearray(data)

    def remap(at: int) -> None:
        if at + 4 <= len(out):
            new = mapping.get(_SSRC.unpack_from(out, at)[0])
            if new is not None:
                _SSRC.pack_into(out, at, new)

    at = 0
    while at + 8 <= len(out):
        first, kind, words = struct.unpack_from("!BBH", out, at)
        end = at + 4 * (words + 1)
        if first >> 6 != 2 or end > len(out):
            break
        count = first & 0x1F
        if kind in (200, 201):                  # SR, RR: sender, then report blocks
            remap(at + 4)
            blocks = at + (28 if kind == 200 else 8)
            for i in range(count):
                if blocks + 24 * (i + 1) <= end:
                    remap(blocks + 24 * i)
        elif kind == 202:                       # SDES: chunks of SSRC + items
            pos = at + 4
            for _ in range(count):
                if pos + 4 > end:
                    break
                remap(pos)
                pos += 4
                while pos < end and out[pos] != 0:
                    pos += 2 + (out[pos + 1] if pos + 1 < end else 0)
                pos = (pos + 4) & ~3            # the null item, padded to 32 bits
        elif kind == 203:                       # BYE
            for i in range(count):
                if at + 8 + 4 * i <= end:
                    remap(at + 4 + 4 * i)
        elif kind in (205, 206):                # RTPFB, PSFB: sender, media source
            remap(at + 4)
            remap(at + 8)
        at = end
    return bytes(out)


def pair_legs(a: Leg, b: Leg) -> None:
    """Make C{a} and C{b} each other's peer (one relayed stream)."""
    a.peer = b
    b.peer = a
