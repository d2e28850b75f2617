# -*- test-case-name: rustpbx_py.test.test_protocols -*-
"""
SIP over WebSocket (RFC 7118) with Autobahn: one SIP message per frame,
subprotocol C{sip} required, Via transport C{WS} (C{WSS} over TLS).

Browsers send the page's Origin with the handshake.  A page from another
site must not be able to use a visitor's browser as a SIP client from the
visitor's address (guessing passwords from many addresses, riding an ACL
that trusts the office LAN), so only pages from the host the browser
connected to, from the local machine, or listed in C{ws_allowed_origins}
may connect.  Clients that send no Origin (SIP stacks outside a browser)
are not browsers carrying someone else's page and are accepted.
"""

from __future__ import annotations

from typing import Sequence
from urllib.parse import urlsplit

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny

from twisted.internet.interfaces import IHandshakeListener
from twisted.logger import Logger
from zope.interface import implementer

from rustpbx_py.protocols.flow import StreamFlow, peer_address, strip_ipv6_scope
from rustpbx_py.protocols.limits import ConnectionTimers, StreamLimits
from rustpbx_py.protocols.tls import log_tls_failure
from rustpbx_py.sip.message import MAX_MESSAGE_SIZE, SipParseError, parse_message


#: Page hosts on the local machine: always allowed (a softphone page
#: opened from the PBX host itself or a developer's http://127.0.0.1).
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def origin_allowed(origin: str, host: str, allowed: Sequence[str]) -> bool:
    """
    May a page of C{origin} open a SIP WebSocket to C{host} (the Host
    header's host)?  Yes when no Origin was sent (not a browser), when
    C{allowed} holds it or C{"*"}, when the page's host is C{host} (the
    PBX serves its own page) or a local host name.  The opaque origin
    C{"null"} (a file: page, a sandboxed frame) only with C{"*"}.
    """
    if not origin:
        return True
    if "*" in allowed:
        return True
    origin = origin.strip().lower().rstrip("/")
    if origin in allowed:
        return True
    try:
        parts = urlsplit(origin)
        page_host = parts.hostname
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not page_host:
        return False
    return page_host in LOCAL_HOSTS or page_host == host.strip().lower().strip("[]")


@implementer(IHandshakeListener)
class SipWebSocketProtocol(WebSocketServerProtocol):
    """One WebSocket connection carrying SIP."""

    flow: StreamFlow = None  # type: ignore[assignment]
    handshake_done = False
    #: The source address counted against the factory's limits.
    admitted = ""
    timers: ConnectionTimers = None  # type: ignore[assignment]
    _log = Logger()

    def connectionMade(self) -> None:
        WebSocketServerProtocol.connectionMade(self)
        factory = self.factory
        if factory.behind_http:
            # Mounted in the HTTP(S) site: its server did the TLS handshake.
            self.handshake_done = True
        self.timers = ConnectionTimers(
            factory.limits, factory.clock, self._expired, tls=factory.transport_name == "WSS" and not factory.behind_http,
            inbound=bool(self.admitted),
        )

    def _expired(self, what: str) -> None:
        """A timeout of L{ConnectionTimers}: an idle WebSocket is closed
        with a close frame; one that never finished TLS, the HTTP upgrade
        or sent a valid SIP message is dropped."""
        self._log.debug("closing {transport} connection from {peer}: {what} timeout",
                        transport=self.factory.transport_name, peer=self.peer, what=what)
        if what == "idle" and self.flow is not None and self.flow.connected:
            self.sendClose(code=1000, reason="idle")
        else:
            self.transport.abortConnection()

    def handshakeCompleted(self) -> None:
        """The TLS handshake of a WSS connection is done (L{IHandshakeListener})."""
        self.handshake_done = True
        if self.timers is not None:
            self.timers.handshake_done()

    def connectionLost(self, reason) -> None:
        if self.factory.transport_name == "WSS" and self.transport is not None:
            log_tls_failure(self._log, "WSS", peer_address(self.transport.getPeer()), reason, self.handshake_done)
        if self.timers is not None:
            self.timers.cancel()
        if self.admitted:
            self.factory.limits.release(self.admitted)
            self.admitted = ""
        WebSocketServerProtocol.connectionLost(self, reason)

    def onConnect(self, request):
        """Accept only the configured path, only pages allowed to reach us
        (the module docstring says which) and only the C{sip} subprotocol:
        Autobahn would otherwise accept a connection with no subprotocol."""
        factory = self.factory
        if request.path != factory.path:
            raise ConnectionDeny(ConnectionDeny.NOT_FOUND, "No SIP WebSocket service at this path")
        if not origin_allowed(request.origin, request.host, factory.allowed_origins):
            self._log.info(
                "{transport} from {peer}: page origin {origin!r} not allowed (proxy.ws_allowed_origins)",
                transport=factory.transport_name,
                peer=request.peer,
                origin=request.origin,
            )
            raise ConnectionDeny(ConnectionDeny.FORBIDDEN, "Origin not allowed")
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
        self.timers.touch()
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
        self.timers.message()
        self.factory.controller.message_received(message, self.flow)

    def onClose(self, wasClean, code, reason) -> None:
        if self.flow is not None:
            self.flow.connected = False
            self.factory.controller.flow_closed(self.flow)


class _TimerCall:
    """A timer Autobahn can cancel twice, or after it ran."""

    __slots__ = ("call",)

    def __init__(self, call) -> None:
        self.call = call

    def cancel(self) -> None:
        if self.call.active():
            self.call.cancel()


class _DirectTimer:
    """
    Autobahn's handshake timers on the clock itself, one call each.
    Autobahn batches them into 200 ms buckets of the global reactor
    whose calls outlive the connection that was cancelled from them: a
    stopped PBX left such calls behind (trial's "dirty reactor"), and a
    test clock could not drive them.  We hold far fewer WebSockets than
    the thousands batching is for.
    """

    def __init__(self, clock) -> None:
        self.clock = clock

    def call_later(self, delay, func, *args, **kwargs):
        return _TimerCall(self.clock.callLater(delay, func, *args, **kwargs))


class SipWebSocketFactory(WebSocketServerFactory):
    """
    Serves SIP over WebSocket at one path.  An inbound connection over the
    limits gets no protocol, so Twisted closes its socket at once.
    """

    protocol = SipWebSocketProtocol
    #: True when served inside the HTTP(S) site (L{rustpbx_py.web.listen}),
    #: which already did the TLS handshake.
    behind_http = False
    #: No "Starting factory <... at 0x...>" lines: we log our listeners.
    noisy = False

    def __init__(
        self,
        controller,
        path: str,
        transport_name: str = "WS",
        server: str = "",
        allowed_origins: Sequence[str] = (),
        limits: StreamLimits = None,
        clock=None,
    ) -> None:
        WebSocketServerFactory.__init__(self, server=server or None)
        self.controller = controller
        self.path = path
        self.transport_name = transport_name
        self.allowed_origins = tuple(o.lower() for o in allowed_origins)
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock = clock
        if limits is None:
            limits = StreamLimits(per_ip=2**31, total=2**31, first_message_timeout=0, handshake_timeout=0, idle_timeout=0)
        self.limits = limits
        self._batched_timer = _DirectTimer(clock)

    def buildProtocol(self, addr):
        admitted = ""
        if addr is not None:
            admitted = strip_ipv6_scope(getattr(addr, "host", "")) or "?"
            if not self.limits.admit(admitted, self.transport_name, self.clock):
                return None
        protocol = WebSocketServerFactory.buildProtocol(self, addr)
        protocol.admitted = admitted
        return protocol
        self.setProtocolOptions(maxMessagePayloadSize=MAX_MESSAGE_SIZE, autoPingInterval=0)
