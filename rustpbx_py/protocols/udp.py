# -*- test-case-name: rustpbx_py.test.test_protocols -*-
"""SIP over UDP: one datagram, one message (RFC 3261 section 18)."""

from __future__ import annotations

from twisted.internet.protocol import DatagramProtocol

from rustpbx_py.protocols.flow import DatagramFlow
from rustpbx_py.sip.message import SipParseError, parse_message


class SipDatagramProtocol(DatagramProtocol):
    """
    Frames nothing (a datagram is a message), parses, and hands each message
    with its flow to the controller; a datagram of only CRLFs is a keep-alive
    (RFC 5626 section 3.5.1) and is dropped.
    """

    def __init__(self, controller) -> None:
        self.controller = controller
        self.local = ("0.0.0.0", 0)
        self._flows: dict = {}

    def startProtocol(self) -> None:
        h = self.transport.getHost()
        self.local = (h.host, h.port)

    def write(self, data: bytes, addr) -> None:
        if self.transport is None:
            # The listener is closed (the service is stopping): a late
            # retransmission has nowhere to go.
            return
        try:
            self.transport.write(data, addr)
        except OSError as e:  # unreachable network, message too long, ...
            self.controller.send_failed(self, addr, e)

    def flow_for(self, addr) -> DatagramFlow:
        """The (cached) flow for a peer address; bounded so a scan cannot grow it."""
        flow = self._flows.get(addr)
        if flow is None:
            if len(self._flows) > 10000:
                self._flows.clear()
            flow = self._flows[addr] = DatagramFlow(self, addr)
        return flow

    def datagramReceived(self, data: bytes, addr) -> None:
        if not data.strip(b"\r\n"):
            return
        addr = (addr[0].split("%", 1)[0], addr[1])
        flow = self.flow_for(addr)
        try:
            message = parse_message(data)
        except SipParseError as e:
            self.controller.parse_error(e, data, flow)
            return
        self.controller.message_received(message, flow)
