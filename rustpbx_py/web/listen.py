# -*- test-case-name: rustpbx_py.test.test_web_server -*-
"""
Binding the web site: C{http_addr} always (as RustPBX does), C{https_addr}
with the TLS files, SIP over WebSocket mounted on both at
C{proxy.ws_handler}.

ALPN on the HTTPS listener offers C{http/1.1} only: Twisted would speak
HTTP/2 when C{h2} is installed and a browser offers it, and WebSocket over
HTTP/2 (RFC 8441) is something neither Autobahn nor we implement.
"""

from __future__ import annotations

from typing import List, Tuple

from autobahn.twisted.resource import WebSocketResource

from rustpbx_py.protocols.ws import SipWebSocketFactory


def split_addr(addr: str) -> Tuple[str, int]:
    """C{"host:port"} (host may be C{[v6]}) -> (interface for listenTCP, port)."""
    host, _, port = addr.rpartition(":")
    host = host.strip("[]")
    if host in ("0.0.0.0", "*"):
        host = ""
    return host, int(port)


class SipWebSocketResource(WebSocketResource):
    """
    SIP over WebSocket inside the HTTP site: the same protocol as the
    ws_port listener, the same origin rules and connection limits, Via
    transport C{WS} over HTTP and C{WSS} over HTTPS.  A connection over the
    limits is answered 503 instead of Autobahn's bare 500.
    """

    def __init__(self, ws: SipWebSocketFactory, wss: SipWebSocketFactory) -> None:
        WebSocketResource.__init__(self, ws)
        self.ws = ws
        self.wss = wss

    def render(self, request):
        factory = self.wss if request.isSecure() else self.ws
        limits = factory.limits
        host = getattr(request.getClientAddress(), "host", "") or "?"
        channel = getattr(request, "channel", None)
        # The HTTP connection is counted already; the WebSocket counts it
        # anew (buildProtocol), so the check leaves this one out.
        held = limits.counts.get(host, 0) - (1 if getattr(channel, "admitted", "") == host else 0)
        if held >= limits.per_ip or limits.open - (1 if getattr(channel, "admitted", "") else 0) >= limits.total:
            # Over the limits without this one, so over them with it too:
            # admit refuses, counts and logs the refusal.
            limits.admit(host, factory.transport_name, factory.clock)
            request.setResponseCode(503)
            request.setHeader(b"retry-after", b"10")
            request.setHeader(b"connection", b"close")
            return b"Too many connections\n"
        upgraded = getattr(channel, "upgraded", None)
        # render() is synchronous: the factory chosen is the one it uses.
        self._factory = factory
        if upgraded is not None:
            upgraded()  # before buildProtocol counts the WebSocket
        return WebSocketResource.render(self, request)


def ws_factory(core, config, transport_name: str, limits, reactor) -> SipWebSocketFactory:
    proxy = config.proxy
    factory = SipWebSocketFactory(
        core, proxy.ws_handler, transport_name, server=proxy.useragent,
        allowed_origins=proxy.ws_allowed_origins, limits=limits, clock=reactor,
    )
    # The TLS handshake (for WSS) was done by the HTTP server.
    factory.behind_http = True
    return factory


def listen_web(config, reactor, site, core, limits) -> List[Tuple[str, object]]:
    """
    Mount SIP over WebSocket on C{site} and bind it on http_addr and
    https_addr; returns (name, port) for each (C{"HTTP"}, C{"HTTPS"}).
    """
    from rustpbx_py.protocols.tls import WSS_ALPN, server_context_factory
    from rustpbx_py.web.site import mount

    ws = SipWebSocketResource(ws_factory(core, config, "WS", limits, reactor), ws_factory(core, config, "WSS", limits, reactor))
    mount(site.root, config.proxy.ws_handler, ws)
    site.limits = limits
    bound = []
    try:
        if config.http_addr is not None:
            interface, port = split_addr(config.http_addr)
            bound.append(("HTTP", reactor.listenTCP(port, site, interface=interface)))
        if config.https_addr is not None:
            proxy = config.proxy
            interface, port = split_addr(config.https_addr)
            context = server_context_factory(proxy.ssl_certificate, proxy.ssl_private_key, WSS_ALPN)
            bound.append(("HTTPS", reactor.listenSSL(port, site, context, interface=interface)))
    except Exception:
        for _name, port in bound:
            port.stopListening()
        raise
    return bound
