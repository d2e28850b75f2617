# -*- test-case-name: rustpbx_py.test.test_media_poller -*-
"""
One reactor reader for every RTP/RTCP socket of the relay (Linux epoll).

With one Twisted reader per socket, each packet pays the reactor's
per-event path (the log context wrappers around C{doRead}) and a second
C{recvfrom} that ends in an C{EAGAIN} exception, for a socket that holds
one 20 ms packet at a time: in the relay benchmark that was about as much
CPU as the relaying itself.  Here the relay's sockets are registered in an
epoll set of their own, and only that epoll's descriptor is registered
with the reactor (an epoll descriptor is readable while any of its
sockets is): one reactor event serves every socket ready at that moment,
one C{recvfrom} each.  A socket holding several packets stays ready
(level-triggered) and is served again on the next turn.

Binding, closing and every other part of the sockets' life stay with
Twisted's C{udp.Port}; the poller only takes over the reading.  Where
there is no epoll (other systems) or the reactor has no file descriptors
(test doubles), L{RtpPoller.available} says so and the relay keeps
Twisted's reading.
"""

from __future__ import annotations

import select
import socket

from twisted.internet.interfaces import IReactorFDSet, IReadDescriptor
from twisted.internet.posixbase import PosixReactorBase
from twisted.logger import Logger
from zope.interface import implementer

log = Logger()

_EPOLLIN = getattr(select, "EPOLLIN", 1)


def _two_tuple(received):
    """IPv6 C{recvfrom} gives (host, port, flowinfo, scope): hand the
    protocol (host, port), as Twisted does."""
    def datagram_received(data: bytes, addr) -> None:
        received(data, addr[:2])
    return datagram_received


@implementer(IReadDescriptor)
class RtpPoller:
    """The reader of the relay's sockets; see the module docstring."""

    def __init__(self, reactor, batch: int = 512) -> None:
        self.reactor = reactor
        self.batch = batch
        self.epoll = select.epoll()
        self.handlers: dict[int, tuple] = {}
        self.running = False
        self.failures = 0

    @staticmethod
    def available(reactor) -> bool:
        """Whether C{reactor} can carry a poller: epoll exists and the
        reactor watches file descriptors."""
        return (hasattr(select, "epoll") and IReactorFDSet.providedBy(reactor)
                and isinstance(reactor, PosixReactorBase))

    def add(self, port) -> None:
        """Read the listening C{udp.Port} C{port} here instead of in the
        reactor."""
        fd = port.fileno()
        self.reactor.removeReader(port)
        received = port.protocol.datagramReceived
        if port.socket.family == socket.AF_INET6:
            received = _two_tuple(received)
        self.handlers[fd] = (port.socket.recvfrom, received, port.maxPacketSize)
        self.epoll.register(fd, _EPOLLIN)
        if not self.running:
            self.running = True
            self.reactor.addReader(self)

    def remove(self, port) -> None:
        """Stop reading C{port} (before it is closed)."""
        fd = port.fileno()
        if self.handlers.pop(fd, None) is not None:
            try:
                self.epoll.unregister(fd)
            except OSError:
                pass
        if not self.handlers and self.running:
            self.running = False
            self.reactor.removeReader(self)

    def fileno(self) -> int:
        return self.epoll.fileno()

    def doRead(self) -> None:
        handlers = self.handlers
        for fd, _ in self.epoll.poll(0, self.batch):
            handler = handlers.get(fd)
            if handler is None:
                continue
            recvfrom, received, size = handler
            try:
                data, addr = recvfrom(size)
            except OSError:
                # EAGAIN (raced), ECONNREFUSED (an ICMP error for an
                # earlier sendto): nothing to read this time
                continue
            try:
                received(data, addr)
            except Exception:
                # a bug a stream of packets keeps hitting: the first one and
                # every 10,000th in the log, not one line a packet
                self.failures += 1
                if self.failures % 10000 == 1:
                    log.failure("RTP packet from {addr} ({failures} failures so far)",
                                addr=addr, failures=self.failures)

    def connectionLost(self, reason) -> None:
        """The reactor dropped us (shutdown): nothing to give back, the
        ports close themselves."""
        self.running = False

    def logPrefix(self) -> str:
        return "RtpPoller"

    def close(self) -> None:
        if self.running:
            self.running = False
            self.reactor.removeReader(self)
        self.epoll.close()
