"""
Test helpers for the built-in relay on real UDP sockets (127.0.0.1): a
scripted RTP endpoint ("phone") that sends packets and collects what it
receives, firing Deferreds when enough has arrived.
"""

from __future__ import annotations

import socket

from twisted.internet import defer, reactor
from twisted.internet.protocol import DatagramProtocol

from rustpbx_py.media.policy import MediaPolicy
from rustpbx_py.media.rtp import build_packet, parse_header


class UdpPhone(DatagramProtocol):
    """
    One UDP socket on 127.0.0.1 that records every datagram it receives
    (data, source).  L{wait_for}(n) fires when n have arrived in all.
    """

    noisy = False

    def __init__(self) -> None:
        self.received: list[tuple[bytes, tuple[str, int]]] = []
        self._waiters: list[tuple[int, defer.Deferred]] = []
        self.port = None
        self.seq = 1000
        self.ts = 0

    @classmethod
    def listen(cls, testcase, interface: str = "127.0.0.1") -> "UdpPhone":
        phone = cls()
        phone.port = reactor.listenUDP(0, phone, interface=interface)
        testcase.addCleanup(phone.port.stopListening)
        return phone

    @property
    def address(self) -> tuple[str, int]:
        host = self.port.getHost()
        return (host.host, host.port)

    def datagramReceived(self, data: bytes, addr) -> None:
        self.received.append((data, addr))
        ready = [d for n, d in self._waiters if len(self.received) >= n]
        self._waiters = [(n, d) for n, d in self._waiters if len(self.received) < n]
        for d in ready:
            d.callback(self.received)

    def wait_for(self, count: int, timeout: float = 5.0) -> defer.Deferred:
        """Fires with the received list once C{count} datagrams arrived
        (fails after C{timeout} seconds of real time)."""
        d: defer.Deferred = defer.Deferred()
        if len(self.received) >= count:
            d.callback(self.received)
            return d
        self._waiters.append((count, d))
        d.addTimeout(timeout, reactor)
        return d

    def send_rtp(self, to: tuple[str, int], count: int = 1, pt: int = 0, ssrc: int = 0x5151,
                 marker_first: bool = False, payload: bytes = b"\xd5" * 160,
                 skip: tuple[int, ...] = ()) -> None:
        """C{count} RTP packets of 20 ms; sequence numbers in C{skip}
        (offsets from the first) are consumed but not sent (loss)."""
        for i in range(count):
            packet = build_packet(pt, self.seq, self.ts, ssrc, payload, marker_first and i == 0)
            if i not in skip:
                self.port.write(packet, to)
            self.seq = (self.seq + 1) & 0xFFFF
            self.ts += 160

    def sequences(self) -> list[int]:
        return [parse_header(data).sequence for data, _ in self.received]


def settle(delay: float = 0.05) -> defer.Deferred:
    """Let the reactor deliver what is in flight on loopback."""
    d: defer.Deferred = defer.Deferred()
    reactor.callLater(delay, d.callback, None)
    return d


def phone_pair(testcase) -> tuple[UdpPhone, UdpPhone]:
    return UdpPhone.listen(testcase), UdpPhone.listen(testcase)


def free_range(size: int = 40) -> tuple[int, int]:
    """A port range starting at a port the OS just gave us and took back
    (the allocator skips ports busy anyway, but tests that count pairs
    want a quiet range)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    start = max(10000, min(port, 65535 - size)) & ~1
    return start, start + size - 1


def media_policy(**changes) -> MediaPolicy:
    """
    A real L{MediaPolicy} for engine tests: every call anchored ("all") on
    127.0.0.1, PCMU then PCMA, the "performance" strategy, latching, ports
    20000-20100 and no rtp_timeout, with C{changes} over those.
    """
    fields = dict(mode="all", codecs=["pcmu", "pcma"], strategy="performance", local_ip="127.0.0.1",
                  external_ip=None, rtp_start_port=20000, rtp_end_port=20100, latching=True,
                  probation_packets=6, rtp_timeout=0)
    fields.update(changes)
    return MediaPolicy(**fields)
