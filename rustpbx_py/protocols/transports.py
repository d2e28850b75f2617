# -*- test-case-name: rustpbx_py.test.test_protocols -*-
"""
The transport layer: the listeners, the table of live flows, and how to
reach a peer (reuse its connection, or open one).
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Dict, List, Optional, Tuple

from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, connectProtocol
from twisted.logger import Logger

from rustpbx_py.protocols.flow import StreamFlow

Address = Tuple[str, int]


class TransportError(Exception):
    """A peer cannot be reached over the transport asked for."""


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class TransportLayer:
    """Listeners and flows of one SIP core."""

    log = Logger()

    def __init__(self, reactor, external_ip: Optional[str] = None, tls_trust_root=None) -> None:
        self.reactor = reactor
        self.external_ip = external_ip
        #: Certificates outbound TLS peers are verified against (an
        #: C{IOpenSSLTrustRoot}); C{None} = the platform's trust store.
        self.tls_trust_root = tls_trust_root
        self.udp: List = []  # SipDatagramProtocol listeners
        self.listening: Dict[str, Address] = {}  # transport -> bound (host, port)
        self.flows: Dict[str, StreamFlow] = {}
        self.by_remote: Dict[Tuple[str, str, int], StreamFlow] = {}
        self._route_cache: Dict[str, str] = {}
        self.stream_factory = {}  # transport name -> factory (for outbound)
        self._closing: Dict[str, defer.Deferred] = {}

    # -- flow table ----------------------------------------------------------

    def flow_opened(self, flow: StreamFlow) -> None:
        self.flows[flow.id] = flow
        self.by_remote[(flow.transport, flow.remote[0], flow.remote[1])] = flow

    def flow_closed(self, flow: StreamFlow) -> None:
        self.flows.pop(flow.id, None)
        waiting = self._closing.pop(flow.id, None)
        if waiting is not None:
            waiting.callback(None)
        key = (flow.transport, flow.remote[0], flow.remote[1])
        if self.by_remote.get(key) is flow:
            del self.by_remote[key]

    def close_all(self) -> defer.Deferred:
        """Close every connection (the service is stopping); fires once all
        of them are gone."""
        waits = []
        for flow_id, flow in list(self.flows.items()):
            d = self._closing[flow_id] = defer.Deferred()
            waits.append(d)
            flow.close()
        return defer.DeferredList(waits)

    def flow_by_id(self, flow_id: str):
        """A live flow by its id; UDP flows are made up again from the id."""
        flow = self.flows.get(flow_id)
        if flow is not None:
            return flow
        if flow_id.startswith("udp:"):
            try:
                local, remote = flow_id[4:].split("/", 1)
                lhost, lport = local.rsplit(":", 1)
                rhost, rport = remote.rsplit(":", 1)
            except ValueError:
                return None
            for listener in self.udp:
                if listener.local == (lhost, int(lport)):
                    return listener.flow_for((rhost, int(rport)))
        return None

    # -- outbound ------------------------------------------------------------

    def udp_listener_for(self, host: str):
        """The UDP listener of the address family of C{host}."""
        v6 = ":" in host
        for listener in self.udp:
            if (":" in listener.local[0]) == v6:
                return listener
        if self.udp:
            return self.udp[0]
        return None

    @defer.inlineCallbacks
    def resolve(self, transport: str, host: str, port: Optional[int]):
        """
        A flow to C{host:port} over C{transport}: for UDP through our
        listener; for TCP/TLS an existing connection to that peer, or a new
        one.  WebSocket peers can only be reached over their own connection.
        """
        transport = transport.upper()
        if host.startswith("["):
            host = host[1:-1]
        if port is None:
            port = 5061 if transport in ("TLS", "WSS") else 5060
        # A TLS peer is verified against the name it was asked for (and that
        # name goes in SNI), never against the address it resolved to
        # (RFC 5922 section 4).
        server_name = host
        if not is_ip(host):
            try:
                host = yield self.reactor.resolve(host)
            except Exception as e:
                raise TransportError(f"cannot resolve {host}: {e}")
        if transport == "UDP":
            listener = self.udp_listener_for(host)
            if listener is None:
                raise TransportError("no UDP listener")
            return listener.flow_for((host, port))
        existing = self.by_remote.get((transport, host, port))
        if existing is not None and existing.connected:
            return existing
        if transport in ("WS", "WSS"):
            raise TransportError(f"no open WebSocket connection to {host}:{port}")
        factory = self.stream_factory.get(transport)
        if factory is None:
            raise TransportError(f"no {transport} transport configured")
        proto = factory.buildProtocol(None)
        if transport == "TLS":
            from twisted.internet.endpoints import wrapClientTLS

            from rustpbx_py.protocols.tls import client_options

            options = client_options(server_name, self.tls_trust_root)
            base = (TCP6ClientEndpoint if ":" in host else TCP4ClientEndpoint)(self.reactor, host, port, timeout=10)
            endpoint = wrapClientTLS(options, base)
        else:
            endpoint = (TCP6ClientEndpoint if ":" in host else TCP4ClientEndpoint)(self.reactor, host, port, timeout=10)
        try:
            yield connectProtocol(endpoint, proto)
        except Exception as e:
            raise TransportError(f"cannot connect to {transport} {host}:{port}: {e}")
        return proto.flow

    def advertised(self, transport: str, toward: Optional[str] = None) -> Address:
        """
        The host and port to put in our Via, Contact and Record-Route for
        C{transport}: C{external_ip} if set, the bound address, or the local
        address the kernel picks to reach C{toward}.
        """
        transport = transport.upper()
        bound = self.listening.get(transport) or self.listening.get("UDP") or ("127.0.0.1", 5060)
        host, port = bound
        if self.external_ip:
            return self.external_ip, port
        if host in ("0.0.0.0", "::", ""):
            host = self._route_to(toward or "127.0.0.1", v6=(host == "::"))
        return host, port

    def _route_to(self, dest: str, v6: bool = False) -> str:
        cached = self._route_cache.get(dest)
        if cached is not None:
            return cached
        family = socket.AF_INET6 if (":" in dest or v6) else socket.AF_INET
        s = socket.socket(family, socket.SOCK_DGRAM)
        try:
            s.connect((dest, 9))
            local = s.getsockname()[0]
        except OSError:
            local = "127.0.0.1" if family == socket.AF_INET else "::1"
        finally:
            s.close()
        if len(self._route_cache) > 4096:
            self._route_cache.clear()
        self._route_cache[dest] = local
        return local
