# -*- test-case-name: rustpbx_py.test.test_protocols -*-
"""
SIP over WebSocket (RFC 7118) with Autobahn: one SIP message per frame,
subprotocol C{sip} required, Via transport C{WS} (C{WSS} over TLS).
"""

from __future__ import annotations

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny

from rustpbx_py.protocols.flow import StreamFlow, peer_address
from rustpbx_py.sip.message import MAX_MESSAGE_SIZE, SipParseError, parse_message


class SipWebSocketProtocol(WebSocketServerProtocol):
    """One WebSocket connection carrying SIP."""

    flow: StreamFlow = None  # type: ignore[assignment]

    def onConnect(self, request):
        """Accept only the configured path and only the C{sip} subprotocol:
        Autobahn would otherwise accept a connection with no subprotocol."""
        factory = self.factory
        if request.path != factory.path:
            raise ConnectionDeny(ConnectionDeny.NOT_FOUND, "No SIP WebSocket service at this path")
        if "sip" not in [p.lower() for p in request.protocols]:
            raise ConnectionDeny(ConnectionDeny.BAD_REQUEST, "The sip subprotocol is required (RFC 7118)")
        return "sip"

    def onOpen(self) -> None:
        host = self.transport.getHost()
        self.flow = StreamFlow(
            self.factory.transport_name,
            peer_address(self.transport.getPeer()),
            (host.host, host.port),
            self._send_frame,
            self._close,
        )
        self.factory.controller.flow_opened(self.flow)

    def _send_frame(self, data: bytes) -> None:
        # Text frames for text messages, as browsers' SIP stacks expect.
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            self.sendMessage(data, isBinary=True)
        else:
            self.sendMessage(data, isBinary=False)

    def _close(self) -> None:
        self.sendClose()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if not payload.strip(b"\r\n"):
            return
        if len(payload) > MAX_MESSAGE_SIZE:
            self.factory.controller.parse_error(SipParseError("Message Too Large", 513), payload[:4096], self.flow)
            return
        try:
            message = parse_message(payload, stream=False)
        except SipParseError as e:
            self.factory.controller.parse_error(e, payload, self.flow)
            return
        self.factory.controller.message_received(message, self.flow)

    def onClose(self, wasClean, code, reason) -> None:
        if self.flow is not None:
            self.flow.connected = False
            self.factory.controller.flow_closed(self.flow)


class SipWebSocketFactory(WebSocketServerFactory):
    """Serves SIP over WebSocket at one path."""

    protocol = SipWebSocketProtocol

    def __init__(self, controller, path: str, transport_name: str = "WS", server: str = "") -> None:
        WebSocketServerFactory.__init__(self, server=server or None)
        self.controller = controller
        self.path = path
        self.transport_name = transport_name
        self.setProtocolOptions(maxMessagePayloadSize=MAX_MESSAGE_SIZE, autoPingInterval=0)
