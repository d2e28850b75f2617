# -*- test-case-name: rustpbx_py.test.test_media_ports -*-
"""
RTP/RTCP port pairs from the configured range (C{rtp_start_port} -
C{rtp_end_port}): RTP on an even port, RTCP on the next one (RFC 3550
section 11), both bound with C{reactor.listenUDP}.

Pairs are handed out round-robin from where the last one was taken, so a
pair freed a moment ago is the last to be reused (late packets of the old
call do not land in a new one).  A port the OS refuses (another program
holds it) is skipped; a range with no free pair left raises
L{MediaError}(503), which the caller gets as 503 Service Unavailable.
"""

from __future__ import annotations

from typing import Callable, Optional

from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from rustpbx_py.media import MediaError

log = Logger()


class PortPair:
    """
    A bound RTP/RTCP pair.  L{release} (or the allocator's
    L{PortAllocator.release}) closes both sockets and returns the pair.
    """

    __slots__ = ("allocator", "rtp_port", "rtp", "rtcp", "released")

    def __init__(self, allocator: "PortAllocator", rtp_port: int,
                 rtp: IListeningPort, rtcp: IListeningPort) -> None:
        self.allocator = allocator
        self.rtp_port = rtp_port
        self.rtp = rtp
        self.rtcp = rtcp
        self.released = False

    @property
    def rtcp_port(self) -> int:
        return self.rtp_port + 1

    def release(self) -> None:
        """Close both sockets and give the pair back; idempotent."""
        self.allocator.release(self)

    def __repr__(self) -> str:
        return f"<PortPair {self.rtp_port}/{self.rtcp_port}{' released' if self.released else ''}>"


class PortAllocator:
    """
    The RTP/RTCP pairs of one port range.

    @ivar poller: an L{rustpbx_py.media.poller.RtpPoller} that reads the
        sockets, or None (Twisted reads them).
    @ivar in_use: the even RTP ports currently handed out.
    """

    def __init__(self, reactor, start: int, end: int, poller=None) -> None:
        first = start + (start & 1)
        # the last pair must fit: RTCP = RTP + 1 <= end
        last = end - 1 if end & 1 else end - 2
        if last < first:
            raise ValueError(f"RTP port range {start}-{end} holds no even/odd port pair")
        self.reactor = reactor
        self.poller = poller
        self.start = start
        self.end = end
        self.first = first
        self.pairs = (last - first) // 2 + 1
        self.in_use: set[int] = set()
        self._next = 0

    def allocate(self, protocols: Callable[[], tuple[DatagramProtocol, DatagramProtocol]],
                 interface: str = "") -> PortPair:
        """
        Bind an RTP protocol on the next free even port and an RTCP
        protocol on the port above it, on C{interface}.  C{protocols}
        makes a fresh (RTP, RTCP) pair of protocols for each attempt: a
        protocol once connected to a port that had to be closed again (its
        RTCP neighbour was refused) cannot be connected to another one.

        @raise MediaError: 503, every pair of the range is in use or
            refused by the OS.
        """
        for _ in range(self.pairs):
            index = self._next
            self._next = (index + 1) % self.pairs
            port = self.first + 2 * index
            if port in self.in_use:
                continue
            rtp_protocol, rtcp_protocol = protocols()
            rtp = self._listen(port, rtp_protocol, interface)
            if rtp is None:
                continue
            rtcp = self._listen(port + 1, rtcp_protocol, interface)
            if rtcp is None:
                rtp.stopListening()
                continue
            self.in_use.add(port)
            if self.poller is not None:
                self.poller.add(rtp)
                self.poller.add(rtcp)
            return PortPair(self, port, rtp, rtcp)
        raise MediaError(503, f"no free RTP port pair in {self.start}-{self.end}"
                              f" ({len(self.in_use)} pairs in use)")

    def _listen(self, port: int, protocol, interface: str) -> Optional[IListeningPort]:
        try:
            return self.reactor.listenUDP(port, protocol, interface=interface)
        except CannotListenError as e:
            log.debug("RTP port {port} refused by the OS: {error}", port=port, error=e.socketError)
            return None

    def release(self, pair: PortPair) -> None:
        """Close C{pair}'s sockets and make its ports available again;
        idempotent."""
        if pair.released:
            return
        pair.released = True
        self.in_use.discard(pair.rtp_port)
        for listening in (pair.rtp, pair.rtcp):
            try:
                if self.poller is not None:
                    self.poller.remove(listening)
                listening.stopListening()
            except Exception:
                log.failure("closing RTP port {port}", port=pair.rtp_port)

    @property
    def free(self) -> int:
        """Pairs not handed out (some may still be refused by the OS)."""
        return self.pairs - len(self.in_use)
