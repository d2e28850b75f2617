"""L{rustpbx_py.media.ports}: RTP/RTCP port pairs from the configured range."""

import socket

from twisted.internet import reactor as global_reactor
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol
from twisted.trial.unittest import SynchronousTestCase, TestCase

from rustpbx_py.media import MediaError
from rustpbx_py.media.ports import PortAllocator


def two_protocols():
    return DatagramProtocol(), DatagramProtocol()


class FakePort:
    def __init__(self, reactor: "RefusingReactor", port: int, protocol) -> None:
        self.reactor = reactor
        self.port = port
        protocol.makeConnection(self)     # asserts the protocol was never connected

    def stopListening(self) -> None:
        self.reactor.bound.remove(self.port)


class RefusingReactor:
    """listenUDP that refuses some ports (held by another program) and tracks bound ones."""

    def __init__(self, refused=()) -> None:
        self.refused = set(refused)
        self.bound: list[int] = []
        self.interfaces: list[str] = []

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        if port in self.refused or port in self.bound:
            raise CannotListenError(interface, port, OSError(98, "Address already in use"))
        self.bound.append(port)
        self.interfaces.append(interface)
        return FakePort(self, port, protocol)


class AllocatorTests(SynchronousTestCase):
    def allocate(self, allocator: PortAllocator):
        return allocator.allocate(two_protocols, "10.0.0.1")

    def test_even_rtp_odd_rtcp(self) -> None:
        """Pairs start on even ports (an odd range start is rounded up), RTCP = RTP + 1."""
        reactor = RefusingReactor()
        allocator = PortAllocator(reactor, 12001, 12010)
        pair = self.allocate(allocator)
        self.assertEqual((pair.rtp_port, pair.rtcp_port), (12002, 12003))
        self.assertEqual(reactor.bound, [12002, 12003])
        self.assertEqual(reactor.interfaces, ["10.0.0.1", "10.0.0.1"])

    def test_range_sizes(self) -> None:
        """The last pair must fit below rtp_end_port: 12000-12005 holds 3 pairs, 12000-12004 two."""
        self.assertEqual(PortAllocator(RefusingReactor(), 12000, 12005).pairs, 3)
        self.assertEqual(PortAllocator(RefusingReactor(), 12000, 12004).pairs, 2)
        self.assertRaises(ValueError, PortAllocator, RefusingReactor(), 12001, 12002)

    def test_full_range_is_503(self) -> None:
        """When every pair is taken, MediaError(503) and nothing more is bound."""
        reactor = RefusingReactor()
        allocator = PortAllocator(reactor, 12000, 12005)
        pairs = [self.allocate(allocator) for _ in range(3)]
        error = self.assertRaises(MediaError, self.allocate, allocator)
        self.assertEqual(error.status, 503)
        self.assertEqual(len(reactor.bound), 6)
        self.assertEqual(allocator.free, 0)
        pairs[1].release()
        self.assertEqual(self.allocate(allocator).rtp_port, pairs[1].rtp_port)

    def test_refused_ports_skipped_without_leak(self) -> None:
        """An RTP port the OS refuses is skipped; when only the RTCP port is refused, the RTP
        socket already bound is closed again: no socket and no in-use entry leaks."""
        reactor = RefusingReactor(refused={12000, 12003})
        allocator = PortAllocator(reactor, 12000, 12007)
        pair = self.allocate(allocator)
        self.assertEqual(pair.rtp_port, 12004)
        self.assertEqual(sorted(reactor.bound), [12004, 12005])
        self.assertEqual(allocator.in_use, {12004})

    def test_all_refused_is_503_without_leak(self) -> None:
        """Every pair refused by the OS: 503, and every socket opened on the way is closed."""
        reactor = RefusingReactor(refused={12001, 12003})
        allocator = PortAllocator(reactor, 12000, 12003)
        error = self.assertRaises(MediaError, self.allocate, allocator)
        self.assertEqual(error.status, 503)
        self.assertEqual((reactor.bound, allocator.in_use), ([], set()))

    def test_release_idempotent(self) -> None:
        """release closes both sockets once and returns the pair; a second release does nothing."""
        reactor = RefusingReactor()
        allocator = PortAllocator(reactor, 12000, 12010)
        pair = self.allocate(allocator)
        pair.release()
        pair.release()
        self.assertEqual((reactor.bound, allocator.in_use, allocator.free), ([], set(), 5))

    def test_round_robin(self) -> None:
        """A pair freed a moment ago is not the next one handed out."""
        allocator = PortAllocator(RefusingReactor(), 12000, 12010)
        first = self.allocate(allocator)
        first.release()
        self.assertEqual(self.allocate(allocator).rtp_port, 12002)


class RealSocketTests(TestCase):
    def test_port_held_by_another_program(self) -> None:
        """With the real reactor: a pair whose port another socket holds is skipped and
        the next pair is really bound."""
        holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", 0))
        held = holder.getsockname()[1]
        start = held - (held & 1)
        allocator = PortAllocator(global_reactor, start, start + 3)

        try:
            pair = allocator.allocate(two_protocols, "127.0.0.1")
        except MediaError:
            self.skipTest("the next port pair is busy on this machine too")
        self.addCleanup(pair.release)
        self.assertEqual(pair.rtp_port, start + 2)
        self.assertEqual(pair.rtp.getHost().port, start + 2)
        self.assertEqual(allocator.in_use, {start + 2})
