# -*- test-case-name: rustpbx_py.test.test_protocols -*-
"""
SIP over TCP and TLS: Content-Length framing (RFC 3261 section 18.3),
CRLF keep-alive ping/pong (RFC 5626 section 4.4.1), and the limits of
L{rustpbx_py.protocols.limits}: connections per source and in all, TLS
handshake, first valid message and idle timeouts.
"""

from __future__ import annotations

import re

from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from zope.interface import implementer

from rustpbx_py.protocols.flow import StreamFlow, peer_address, strip_ipv6_scope
from rustpbx_py.protocols.limits import ConnectionTimers, StreamLimits
from rustpbx_py.protocols.tls import log_tls_failure
from rustpbx_py.sip.message import MAX_MESSAGE_SIZE, SipParseError, parse_message

# Each header line but the last ends in CR LF: the CR is allowed before the
# line end, or Content-Length would only be found as the last header.
_CONTENT_LENGTH_RE = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*(\d+)[ \t]*\r?$", re.I | re.M)


def _length(digits: bytes) -> int:
    """
    A Content-Length's value, or one past L{MAX_MESSAGE_SIZE} for anything
    longer than nine digits (after leading zeros): C{int()} of 5,000 digits
    raises ValueError, and no such length can be framed anyway.
    """
    digits = digits.lstrip(b"0")
    if len(digits) > 9:
        return MAX_MESSAGE_SIZE + 1
    return int(digits or b"0")


def _addressed(head: bytes, error: SipParseError) -> SipParseError:
    """
    C{error} with the request parsed from C{head} (what arrived of a
    message that cannot be framed), so the core can address its answer
    (513 Message Too Large); C{error} itself when no answer is possible
    (a response, or a request without a usable Via).
    """
    try:
        message = parse_message(head)
    except SipParseError as e:
        if e.status is None or e.message is None:
            return error
        message = e.message
    if not message.is_request:
        return error
    return SipParseError(error.reason, error.status, message)


@implementer(IHandshakeListener)
class SipStreamProtocol(Protocol):
    """One SIP connection: frames messages and hands them to the controller."""

    log = Logger()
    handshake_done = False

    def __init__(self, controller, transport_name: str, limits: StreamLimits, clock, admitted: str = "") -> None:
        self.controller = controller
        self.transport_name = transport_name
        self.limits = limits
        self.clock = clock
        #: The source address counted against the limits (inbound only).
        self.admitted = admitted
        self.buffer = b""
        self.flow: StreamFlow = None  # type: ignore[assignment]
        self.timers: ConnectionTimers = None  # type: ignore[assignment]

    def connectionMade(self) -> None:
        host = self.transport.getHost()
        self.flow = StreamFlow(
            self.transport_name,
            peer_address(self.transport.getPeer()),
            (host.host, host.port),
            self.transport.write,
            self.transport.loseConnection,
        )
        self.controller.flow_opened(self.flow)
        self.timers = ConnectionTimers(
            self.limits, self.clock, self._expired, tls=self.transport_name == "TLS", inbound=bool(self.admitted)
        )

    def _expired(self, what: str) -> None:
        self.log.debug("closing {flow}: {what} timeout", flow=self.flow, what=what)
        if what == "idle":
            self.transport.loseConnection()
        else:
            # A peer that never did its part gets no graceful close.
            self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        self.timers.touch()
        self.buffer += data
        while self.buffer:
            buf = self.buffer
            if buf[:1] in (b"\r", b"\n"):
                # Keep-alives between messages: a double CRLF is a ping that
                # is answered with a single CRLF pong; a lone CRLF is a pong.
                if buf.startswith(b"\r\n\r\n"):
                    self.transport.write(b"\r\n")
                    self.buffer = buf[4:]
                    continue
                if buf in (b"\r", b"\r\n", b"\r\n\r"):
                    return  # wait: this may be the start of a ping
                self.buffer = buf.lstrip(b"\r\n")
                continue
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_MESSAGE_SIZE:
                    self._fatal(buf, SipParseError("Message Too Large", 513))
                return
            head = buf[:end]
            m = _CONTENT_LENGTH_RE.search(head)
            # RFC 3261 18.3 makes Content-Length mandatory on streams, but
            # some tools (sipsak) omit it on body-less requests: read a
            # missing one as 0, which is the only framing that can work.
            total = end + 4 + (_length(m.group(1)) if m is not None else 0)
            if total > MAX_MESSAGE_SIZE:
                self._fatal(buf[: end + 4], SipParseError("Message Too Large", 513))
                return
            if len(buf) < total:
                return
            self.buffer = buf[total:]
            raw = buf[:total]
            try:
                message = parse_message(raw, stream=m is not None)
            except SipParseError as e:
                self.controller.parse_error(e, raw, self.flow)
                continue
            self.timers.message()
            self.controller.message_received(message, self.flow)

    def _fatal(self, data: bytes, error: SipParseError) -> None:
        """Framing is lost: answer if we can, then close (RFC 3261 18.3)."""
        if error.message is None:
            error = _addressed(data, error)
        self.controller.parse_error(error, data, self.flow)
        self.buffer = b""
        self.transport.loseConnection()

    def handshakeCompleted(self) -> None:
        """The TLS handshake is done (L{IHandshakeListener}; TLS only)."""
        self.handshake_done = True
        if self.timers is not None:
            self.timers.handshake_done()

    def connectionLost(self, reason=None) -> None:
        if self.transport_name == "TLS" and self.flow is not None:
            log_tls_failure(self.log, "TLS", self.flow.remote, reason, self.handshake_done)
        if self.timers is not None:
            self.timers.cancel()
        if self.admitted:
            self.limits.release(self.admitted)
            self.admitted = ""
        if self.flow is not None:
            self.flow.connected = False
            self.controller.flow_closed(self.flow)


class SipStreamFactory(Factory):
    """
    Makes a L{SipStreamProtocol} per connection, inbound (C{addr} given by
    the listening port) or outbound (C{addr} None).  An inbound connection
    over the limits gets no protocol, so Twisted closes its socket at once.
    """

    #: No "Starting factory <... at 0x...>" lines: we log our listeners.
    noisy = False

    def __init__(self, controller, transport_name: str, idle_timeout: float, clock, limits: StreamLimits = None) -> None:
        self.controller = controller
        self.transport_name = transport_name
        self.clock = clock
        if limits is None:
            limits = StreamLimits(per_ip=2**31, total=2**31, first_message_timeout=0, handshake_timeout=0, idle_timeout=idle_timeout)
        self.limits = limits

    def buildProtocol(self, addr):
        admitted = ""
        if addr is not None:
            admitted = strip_ipv6_scope(getattr(addr, "host", "")) or "?"
            if not self.limits.admit(admitted, self.transport_name, self.clock):
                return None
        p = SipStreamProtocol(self.controller, self.transport_name, self.limits, self.clock, admitted)
        p.factory = self
        return p
