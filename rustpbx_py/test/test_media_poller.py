"""L{rustpbx_py.media.poller}: one reactor reader for the relay's sockets."""

from twisted.internet import defer, reactor
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import TestCase

from rustpbx_py.media.poller import RtpPoller
from rustpbx_py.media.ports import PortAllocator
from rustpbx_py.media.relay import Leg, pair_legs
from rustpbx_py.test.media_wire import UdpPhone, free_range, settle


class PollerTests(TestCase):
    def setUp(self) -> None:
        if not RtpPoller.available(reactor):
            raise self.skipTest("no epoll on this system")
        self.poller = RtpPoller(reactor)
        self.addCleanup(self.poller.close)
        start, end = free_range()
        self.allocator = PortAllocator(reactor, start, end, self.poller)

    def stream(self):
        legs = []
        for name in ("a", "b"):
            leg = Leg(name)
            pair = self.allocator.allocate(leg.protocols, "127.0.0.1")
            self.addCleanup(pair.release)
            leg.bind(pair, ("127.0.0.1", pair.rtp_port))
            legs.append(leg)
        pair_legs(*legs)
        return legs

    @defer.inlineCallbacks
    def test_relays_through_poller(self):
        """The sockets are read by the poller (the reactor watches the poller, not them),
        and packets flow both ways."""
        a, b = self.stream()
        readers = reactor.getReaders()
        self.assertIn(self.poller, readers)
        self.assertNotIn(a.pair.rtp, readers)
        self.assertEqual(len(self.poller.handlers), 4)
        alice, bob = UdpPhone.listen(self), UdpPhone.listen(self)
        a.latch.reopen(alice.address)
        b.latch.reopen(bob.address)
        alice.send_rtp(("127.0.0.1", a.pair.rtp_port), 30)
        bob.send_rtp(("127.0.0.1", b.pair.rtp_port), 30)
        yield bob.wait_for(30)
        yield alice.wait_for(30)
        self.assertEqual((a.received.lost, b.received.lost), (0, 0))

    def test_release_unregisters(self):
        """Released pairs leave the poller; with none left, the poller leaves the reactor."""
        a, b = self.stream()
        a.pair.release()
        self.assertEqual(len(self.poller.handlers), 2)
        b.pair.release()
        self.assertEqual(self.poller.handlers, {})
        self.assertNotIn(self.poller, reactor.getReaders())

    def test_unavailable_without_fds(self):
        """A reactor that watches no file descriptors cannot carry a poller."""
        self.assertFalse(RtpPoller.available(MemoryReactor()))

    @defer.inlineCallbacks
    def test_failure_logged_once(self):
        """A handler that raises on every packet is logged once, not once a packet, and the
        poller keeps serving."""
        a, b = self.stream()
        alice = UdpPhone.listen(self)
        a.latch.reopen(alice.address)
        b.latch.reopen(alice.address)

        def broken(data):
            raise RuntimeError("bug")
        a.translate = broken
        alice.send_rtp(("127.0.0.1", a.pair.rtp_port), 5)
        for _ in range(500):
            if self.poller.failures == 5:
                break
            yield settle(0.01)
        self.assertEqual(self.poller.failures, 5)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
