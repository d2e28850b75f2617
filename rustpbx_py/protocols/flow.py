# -*- test-case-name: rustpbx_py.test.test_protocols -*-
"""
Flows: one peer over one transport.

A UDP flow is a listener socket plus an address; a stream flow (TCP, TLS,
WS, WSS) is one connection.  Everything above the transports sends through
a flow, so a reply to a phone behind NAT goes back the way its request came.
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

from zope.interface import implementer

from rustpbx_py.interfaces import IFlow

Address = Tuple[str, int]


@implementer(IFlow)
class DatagramFlow:
    """A peer reached through one UDP listener."""

    __slots__ = ("listener", "remote", "local", "id")

    transport = "UDP"
    reliable = False
    connected = True

    def __init__(self, listener, remote: Address) -> None:
        self.listener = listener
        self.remote = remote
        self.local = listener.local
        self.id = f"udp:{listener.local[0]}:{listener.local[1]}/{remote[0]}:{remote[1]}"

    def send(self, data: bytes) -> None:
        self.listener.write(data, self.remote)

    def to(self, remote: Address) -> "DatagramFlow":
        """The same listener towards another address (RFC 3261 18.2.2)."""
        if remote == self.remote:
            return self
        return DatagramFlow(self.listener, remote)

    def __repr__(self) -> str:
        return f"<DatagramFlow {self.id}>"


@implementer(IFlow)
class StreamFlow:
    """One TCP, TLS or WebSocket connection."""

    reliable = True

    def __init__(
        self,
        transport: str,
        remote: Address,
        local: Address,
        write: Callable[[bytes], None],
        close: Callable[[], None],
    ) -> None:
        self.transport = transport
        self.remote = remote
        self.local = local
        self._write = write
        self._close = close
        self.connected = True
        self.id = f"{transport.lower()}:{local[0]}:{local[1]}/{remote[0]}:{remote[1]}"

    def send(self, data: bytes) -> None:
        if self.connected:
            self._write(data)

    def to(self, remote: Address) -> "StreamFlow":
        """A connection only reaches its own peer."""
        return self

    def close(self) -> None:
        self._close()

    def __repr__(self) -> str:
        return f"<StreamFlow {self.id}{'' if self.connected else ' closed'}>"


def peer_address(addr) -> Address:
    """(host, port) of a Twisted address object."""
    return (addr.host, addr.port)


def strip_ipv6_scope(host: Optional[str]) -> str:
    return (host or "").split("%", 1)[0]
