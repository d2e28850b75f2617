"""
TLS and WSS listeners against the clients that found alert 80: OpenSSL's
C{s_client} with and without C{-alpn}, and Python's C{ssl} module offering
ALPN as browsers do; the handshake succeeds and SIP (or the WebSocket
upgrade) works over it.  A client that fails the handshake is logged with
its address.
"""

from __future__ import annotations

import socket
import ssl

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.threads import deferToThread
from twisted.logger import eventAsText, globalLogPublisher
from twisted.trial.unittest import TestCase

from rustpbx_py.sip.message import parse_message
from rustpbx_py.test.interop.support import require_tool, run_tool, start_pbx
from rustpbx_py.test.interop.test_core import options_request
from rustpbx_py.test.tls import self_signed_for


class AlpnTests(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        self.cert, key = self_signed_for(self)
        self.pbx = yield start_pbx(
            self, tls_port=0, wss_port=0, ssl_certificate=self.cert, ssl_private_key=key, modules=[]
        )

    @defer.inlineCallbacks
    def s_client(self, transport, alpn=None):
        openssl = require_tool("openssl")
        args = [openssl, "s_client", "-connect", f"127.0.0.1:{self.pbx.ports[transport]}", "-CAfile", self.cert]
        if alpn:
            args += ["-alpn", alpn]
        out, err, code = yield run_tool(args, timeout=20, stdin=b"")
        return (out + err).decode("utf-8", "replace"), code

    @defer.inlineCallbacks
    def test_s_client_tls(self):
        """openssl s_client, without and with -alpn http/1.1, completes the
        handshake with the SIP TLS listener (no protocol is chosen)."""
        for alpn in (None, "http/1.1"):
            text, code = yield self.s_client("TLS", alpn)
            self.assertEqual(code, 0, text)
            self.assertRegex(text, r"New, TLSv1\.[23], Cipher is")
            self.assertIn("Verify return code: 0 (ok)", text)
            self.assertIn("No ALPN negotiated", text)
            self.assertNotIn("alert", text)

    @defer.inlineCallbacks
    def test_both_listeners(self):
        """TLS then WSS, then TLS again, on one PBX: each listener has its
        own context (a shared one was changed after use and every WSS
        handshake after a TLS one failed)."""
        for transport, alpn in (("TLS", "http/1.1"), ("WSS", "h2,http/1.1"), ("TLS", None), ("WSS", None)):
            text, code = yield self.s_client(transport, alpn)
            self.assertEqual(code, 0, (transport, text))
            self.assertIn("Verify return code: 0 (ok)", text)
        self.assertIn("No ALPN negotiated", (yield self.s_client("TLS", "http/1.1"))[0])
        self.assertIn("ALPN protocol: http/1.1", (yield self.s_client("WSS", "http/1.1"))[0])

    @defer.inlineCallbacks
    def test_s_client_wss(self):
        """openssl s_client completes the handshake with the WSS listener;
        with -alpn h2,http/1.1 (what browsers offer) http/1.1 is chosen."""
        text, code = yield self.s_client("WSS")
        self.assertEqual(code, 0, text)
        self.assertIn("Verify return code: 0 (ok)", text)
        text, code = yield self.s_client("WSS", "h2,http/1.1")
        self.assertEqual(code, 0, text)
        self.assertIn("ALPN protocol: http/1.1", text)

    def python_client(self, port, request, alpn):
        ctx = ssl.create_default_context(cafile=self.cert)
        ctx.set_alpn_protocols(alpn)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                chosen = s.selected_alpn_protocol()
                s.sendall(request)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                return chosen, data

    @defer.inlineCallbacks
    def test_python_ssl_tls(self):
        """Python's ssl offering ALPN gets through to the SIP core over TLS:
        OPTIONS is answered 200."""
        port = self.pbx.ports["TLS"]
        chosen, data = yield deferToThread(self.python_client, port, options_request("TLS", port), ["h2", "http/1.1"])
        self.assertIsNone(chosen)
        self.assertEqual(parse_message(data, stream=False).status, 200)

    @defer.inlineCallbacks
    def test_python_ssl_wss(self):
        """Python's ssl offering ALPN as a browser does gets http/1.1 and a
        WebSocket upgrade to the sip subprotocol over WSS."""
        port = self.pbx.ports["WSS"]
        upgrade = (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Protocol: sip\r\nOrigin: http://127.0.0.1:8000\r\n\r\n"
        ).encode()
        chosen, data = yield deferToThread(self.python_client, port, upgrade, ["h2", "http/1.1"])
        self.assertEqual(chosen, "http/1.1")
        self.assertTrue(data.startswith(b"HTTP/1.1 101"), data)
        self.assertIn(b"sec-websocket-protocol: sip", data.lower())

    @defer.inlineCallbacks
    def test_failed_handshake_logged(self):
        """A client that speaks plain SIP to the TLS port fails the
        handshake; one warning names the peer's address and port."""
        events = []

        def observe(event):
            text = eventAsText(event, includeTimestamp=False, includeSystem=False)
            if "TLS handshake failed" in text:
                events.append(text)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        closed = defer.Deferred()

        class Plain(Protocol):
            def connectionMade(self):
                self.transport.write(options_request("TLS", 5061))

            def connectionLost(self, reason):
                closed.callback(None)

        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.pbx.ports["TLS"])
        proto = yield connectProtocol(endpoint, Plain())
        local = proto.transport.getHost()
        yield closed
        for _ in range(50):
            if events:
                break
            d = defer.Deferred()
            reactor.callLater(0.02, d.callback, None)
            yield d
        self.assertEqual(len(events), 1, events)
        self.assertIn(f"TLS connection with 127.0.0.1:{local.port}: TLS handshake failed", events[0])
