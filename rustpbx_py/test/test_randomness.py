"""L{rustpbx_py.randomness}: identifiers from a pool of os.urandom bytes."""

import os

from twisted.trial.unittest import SynchronousTestCase

from rustpbx_py.randomness import RandomPool


class RandomPoolTests(SynchronousTestCase):
    def test_never_repeats(self) -> None:
        """Slices are handed out once: 20,000 tags are all different, across refills."""
        pool = RandomPool()
        tags = {pool.hex(5) for _ in range(20000)}
        self.assertEqual(len(tags), 20000)

    def test_sizes(self) -> None:
        """take(n) gives n bytes, hex(n) 2n digits, even above the refill size."""
        pool = RandomPool()
        self.assertEqual(len(pool.take(8)), 8)
        self.assertEqual(len(pool.hex(5)), 10)
        self.assertEqual(len(pool.take(10000)), 10000)

    def test_reset_draws_again(self) -> None:
        """After reset (a forked child), the pool draws fresh bytes from os.urandom."""
        drawn = []
        real = os.urandom

        def counting(n: int) -> bytes:
            drawn.append(n)
            return real(n)

        self.patch(os, "urandom", counting)
        pool = RandomPool()
        first = pool.take(4)
        pool.reset()
        second = pool.take(4)
        self.assertEqual(len(drawn), 2)
        self.assertNotEqual(first, second)
