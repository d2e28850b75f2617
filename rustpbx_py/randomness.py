# -*- test-case-name: rustpbx_py.test.test_randomness -*-
"""
Random bytes for identifiers (tags, branches, Call-IDs, nonces), drawn from
the operating system's generator a few kilobytes at a time.

Every call makes several of these; one C{getrandom} system call per
identifier cost more than the rest of building it.  The bytes are still
C{os.urandom}'s, each handed out once; a child process made by C{fork}
starts with an empty pool, so parent and child never share identifiers.
"""

from __future__ import annotations

import os

_REFILL = 4096


class RandomPool:
    """A buffer of C{os.urandom} bytes, handed out in slices, never twice."""

    __slots__ = ("_buffer", "_position")

    def __init__(self) -> None:
        self._buffer = b""
        self._position = 0

    def take(self, n: int) -> bytes:
        """C{n} fresh random bytes."""
        position = self._position
        end = position + n
        if end > len(self._buffer):
            self._buffer = os.urandom(max(_REFILL, n))
            position, end = 0, n
        self._position = end
        return self._buffer[position:end]

    def hex(self, n: int) -> str:
        """C{n} fresh random bytes as 2 * C{n} hex digits."""
        return self.take(n).hex()

    def reset(self) -> None:
        """Forget the buffered bytes (after C{fork}, in the child)."""
        self._buffer = b""
        self._position = 0


#: The process's pool (used from the reactor thread).
pool = RandomPool()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=pool.reset)

random_bytes = pool.take
random_hex = pool.hex
