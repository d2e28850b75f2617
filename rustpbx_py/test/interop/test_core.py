"""
The SIP core against real peers: sipsak over UDP and TCP, a TLS client
built on Python's C{ssl}, Autobahn WebSocket clients, and a SIPp scenario
that retransmits.
"""

from __future__ import annotations

import os
import re
import ssl
import textwrap

from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.trial.unittest import TestCase

from rustpbx_py.sip.message import parse_message
from rustpbx_py.test.interop.support import require_ipv6_loopback, require_tool, run_tool, start_pbx
from rustpbx_py.test.tls import self_signed_for


def options_request(transport: str, port: int, branch: str = "z9hG4bKinterop1") -> bytes:
    return (
        f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:5999;branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:probe@127.0.0.1>;tag=abc\r\n"
        f"To: <sip:127.0.0.1:{port}>\r\n"
        "Call-ID: interop-options-1\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "User-Agent: interop-test\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


class SipsakTests(TestCase):
    """sipsak's OPTIONS ping gets 200 with our User-Agent (Server) header."""

    timeout = 60

    @defer.inlineCallbacks
    def check(self, transport_flag: str, key: str):
        sipsak = require_tool("sipsak")
        pbx = yield start_pbx(self, useragent="InteropPBX/9", modules=[])
        port = pbx.ports[key]
        args = [sipsak, "-vv", "-s", f"sip:127.0.0.1:{port}"]
        if transport_flag:
            args += ["-E", transport_flag]
        out, err, code = yield run_tool(args, timeout=30)
        text = (out + err).decode("utf-8", "replace")
        self.assertEqual(code, 0, text)
        self.assertIn("SIP/2.0 200 OK", text)
        self.assertIn("Server: InteropPBX/9", text)
        self.assertRegex(text, re.compile(r"Allow: .*OPTIONS", re.I))

    def test_udp(self):
        """sipsak OPTIONS over UDP -> 200 with the configured useragent."""
        return self.check("", "UDP")

    def test_tcp(self):
        """sipsak OPTIONS over TCP -> 200 with the configured useragent."""
        return self.check("tcp", "TCP")


class SippRetransmissionTests(TestCase):
    """A SIPp UAC that sends the same request three times (same branch) gets
    exactly one answer per copy, all identical: absorbed by the transaction."""

    timeout = 60

    @defer.inlineCallbacks
    def test_retransmitted_options(self):
        sipp = require_tool("sipp")
        pbx = yield start_pbx(self, modules=[])
        port = pbx.ports["UDP"]
        scenario = os.path.abspath(self.mktemp()) + ".xml"
        request = textwrap.dedent(
            """\
              OPTIONS sip:[remote_ip]:[remote_port] SIP/2.0
              Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=z9hG4bK-fixed-[call_number]
              From: <sip:sipp@[local_ip]:[local_port]>;tag=[call_number]
              To: <sip:[remote_ip]:[remote_port]>
              Call-ID: [call_id]
              CSeq: 1 OPTIONS
              Max-Forwards: 70
              User-Agent: sipp-interop
              Content-Length: 0
            """
        )
        send = f"<send><![CDATA[\n{request}\n]]></send>"
        recv = '<recv response="200"/>'
        xml = (
            '<?xml version="1.0" encoding="ISO-8859-1" ?>\n'
            '<scenario name="retransmit">\n'
            + "\n".join([send, recv, send, recv, send, recv])
            # A fourth 200 during the pause would be an unexpected message
            # and fail the call.
            + '\n<pause milliseconds="1000"/>\n'
            "</scenario>\n"
        )
        with open(scenario, "w") as f:
            f.write(xml)
        args = [sipp, f"127.0.0.1:{port}", "-sf", scenario, "-m", "1", "-i", "127.0.0.1", "-p", "0",
                "-nostdin", "-nr", "-timeout", "20", "-trace_err",
                "-error_file", os.path.abspath(self.mktemp())]
        out, err, code = yield run_tool(args, timeout=40, cwd=os.path.dirname(os.path.abspath(scenario)))
        text = (out + err).decode("utf-8", "replace")
        # Exit 0: three 200s, each matched, and no fourth one arrived.
        self.assertEqual(code, 0, text[-3000:])
        self.assertEqual(pbx.core.counters["received"], 3)


class _OneShot(protocol.Protocol):
    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.data = b""
        self.done: defer.Deferred = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.payload)

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if b"\r\n\r\n" in self.data and not self.done.called:
            self.done.callback(self.data)
            self.transport.loseConnection()


class TlsTests(TestCase):
    """A TLS client built on Python's ssl module gets 200 for OPTIONS."""

    timeout = 30

    @defer.inlineCallbacks
    def test_tls_options(self):
        cert, key = self_signed_for(self)
        pbx = yield start_pbx(self, tls_port=0, ssl_certificate=cert, ssl_private_key=key, modules=[])
        port = pbx.ports["TLS"]
        payload = options_request("TLS", port)

        def client():
            ctx = ssl.create_default_context(cafile=cert)
            ctx.check_hostname = False
            import socket

            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                with ctx.wrap_socket(raw) as s:
                    s.sendall(payload)
                    data = b""
                    while b"\r\n\r\n" not in data:
                        chunk = s.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                    return data

        from twisted.internet.threads import deferToThread

        data = yield deferToThread(client)
        response = parse_message(data, stream=False)
        self.assertEqual(response.status, 200)
        self.assertEqual(response.cseq, (1, "OPTIONS"))


class WebSocketTests(TestCase):
    """SIP over WebSocket (RFC 7118) with an Autobahn client."""

    timeout = 30

    @defer.inlineCallbacks
    def connect(self, protocols):
        from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol

        from rustpbx_py.protocols.ws import _DirectTimer

        pbx = yield start_pbx(self, ws_port=0, modules=[])
        port = pbx.ports["WS"]
        result: defer.Deferred = defer.Deferred()
        payload = options_request("WS", port)

        class Client(WebSocketClientProtocol):
            def onOpen(self):
                self.sendMessage(payload, isBinary=False)

            def onMessage(self, data, isBinary):
                if not result.called:
                    result.callback(("message", data, self.websocket_protocol_in_use))
                self.sendClose()

            def onClose(self, wasClean, code, reason):
                if not result.called:
                    result.callback(("closed", code, reason))

        factory = WebSocketClientFactory(f"ws://127.0.0.1:{port}/ws", protocols=protocols)
        factory._batched_timer = _DirectTimer(reactor)  # no batched timer left in the reactor
        factory.protocol = Client
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        yield endpoint.connect(factory)
        outcome = yield result
        return outcome

    @defer.inlineCallbacks
    def test_sip_subprotocol(self):
        """An OPTIONS in one frame over the sip subprotocol gets 200."""
        kind, data, subprotocol = yield self.connect(["sip"])
        self.assertEqual(kind, "message")
        self.assertEqual(subprotocol, "sip")
        response = parse_message(data)
        self.assertEqual(response.status, 200)

    @defer.inlineCallbacks
    def test_chat_refused(self):
        """A client offering only the chat subprotocol is refused."""
        outcome = yield self.connect(["chat"])
        self.assertEqual(outcome[0], "closed")


class IPv6Tests(TestCase):
    """With an IPv6 addr the listeners bind IPv6 and answer over it."""

    timeout = 30

    @defer.inlineCallbacks
    def test_udp_and_tcp_over_ipv6(self):
        import socket

        require_ipv6_loopback()
        pbx = yield start_pbx(self, addr="::1", modules=[])

        def client():
            answers = []
            udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            udp.settimeout(5)
            udp.sendto(options_request("UDP", pbx.ports["UDP"]).replace(b"127.0.0.1:5999", b"[::1]:5999"), ("::1", pbx.ports["UDP"]))
            answers.append(udp.recv(65536))
            udp.close()
            with socket.create_connection(("::1", pbx.ports["TCP"]), timeout=5) as tcp:
                tcp.sendall(options_request("TCP", pbx.ports["TCP"], branch="z9hG4bKinterop2").replace(b"127.0.0.1:5999", b"[::1]:5999"))
                data = b""
                while b"\r\n\r\n" not in data:
                    data += tcp.recv(4096)
                answers.append(data)
            return answers

        from twisted.internet.threads import deferToThread

        answers = yield deferToThread(client)
        for data in answers:
            self.assertEqual(parse_message(data).status, 200)


class TlsOutboundTests(TestCase):
    """Outbound TLS (to a carrier over TLS) verifies the peer's certificate
    with service-identity: an untrusted one fails the request with 503, a
    trusted one for the right address carries it."""

    timeout = 30

    @defer.inlineCallbacks
    def exchange(self, trust: bool):
        from twisted.internet import ssl as tssl

        from rustpbx_py.sip.message import Request

        cert, key = self_signed_for(self)
        server = yield start_pbx(self, tls_port=0, ssl_certificate=cert, ssl_private_key=key, modules=[])
        client = yield start_pbx(self, modules=[])
        core = client.core
        if trust:
            with open(cert, "rb") as f:
                root = tssl.Certificate.loadPEM(f.read())
            core.transports.tls_trust_root = root
        flow = yield core.resolve("TLS", "127.0.0.1", server.ports["TLS"])
        request = Request("OPTIONS", f"sip:127.0.0.1:{server.ports['TLS']};transport=tls")
        request.add("Via", core.via_for(flow))
        request.add("Max-Forwards", "70")
        request.add("From", "<sip:probe@127.0.0.1>;tag=t1")
        request.add("To", f"<sip:127.0.0.1:{server.ports['TLS']}>")
        request.add("Call-ID", f"tls-out-{trust}")
        request.add("CSeq", "1 OPTIONS")
        answered: defer.Deferred = defer.Deferred()
        core.send_request(request, flow, lambda tx, response: answered.callback(response) if response.status >= 200 and not answered.called else None)
        response = yield answered
        return response.status

    @defer.inlineCallbacks
    def test_untrusted_refused(self):
        """A certificate the platform does not trust: the handshake fails and
        the request gets 503 (RFC 3261 17.1.4)."""
        status = yield self.exchange(trust=False)
        self.assertEqual(status, 503)

    @defer.inlineCallbacks
    def test_trusted_answered(self):
        """With the server's certificate as trust root the OPTIONS gets 200."""
        status = yield self.exchange(trust=True)
        self.assertEqual(status, 200)
