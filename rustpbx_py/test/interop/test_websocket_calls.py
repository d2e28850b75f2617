"""
A browser-style user agent over SIP-over-WebSocket (RFC 7118), as JsSIP or
SIP.js behave: it registers with digest and a C{.invalid} Contact host, and
a SIPp caller on UDP reaches it through the B2BUA over its own WebSocket
connection.
"""

from __future__ import annotations


from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.trial.unittest import TestCase

from rustpbx_py.call.credentials import build_authorization
from rustpbx_py.sip.message import Request, Response, parse_message
from rustpbx_py.test.interop.support import SippMixin, call_pbx_toml, free_udp_port, require_tool, start_pbx_toml

SDP = (
    b"v=0\r\no=ws 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\na=rtpmap:111 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\n"
    # what a browser's answer carries for DTLS-SRTP (the PBX anchors WebRTC legs)
    b"a=ice-ufrag:wsan\r\na=ice-pwd:websocketanswerpassword1\r\na=setup:active\r\na=mid:0\r\n"
    b"a=fingerprint:sha-256 " + b":".join([b"AB"] * 32) + b"\r\na=rtcp-mux\r\n"
)


class BrowserUA:
    """
    Just enough of a WebSocket SIP user agent: REGISTER (answering 401),
    then answer one INVITE with 200, take the ACK and the BYE.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.protocol = None
        self.inbox: defer.DeferredQueue = defer.DeferredQueue()
        self.seen: list = []

    @defer.inlineCallbacks
    def connect(self):
        from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol

        from rustpbx_py.protocols.ws import _DirectTimer

        ua = self
        opened: defer.Deferred = defer.Deferred()

        class Client(WebSocketClientProtocol):
            def onOpen(self):
                ua.protocol = self
                opened.callback(None)

            def onMessage(self, payload, isBinary):
                message = parse_message(payload)
                ua.seen.append(message)
                ua.inbox.put(message)

        factory = WebSocketClientFactory(f"ws://127.0.0.1:{self.port}/ws", protocols=["sip"])
        # Autobahn's batched timers leave a reactor call behind after the
        # close handshake (trial's dirty reactor): one timer per call instead.
        factory._batched_timer = _DirectTimer(reactor)
        factory.protocol = Client
        yield TCP4ClientEndpoint(reactor, "127.0.0.1", self.port).connect(factory)
        yield opened

    def send(self, message) -> None:
        self.protocol.sendMessage(message.to_bytes(), isBinary=False)

    def close(self) -> None:
        if self.protocol is not None:
            self.protocol.sendClose()

    def register(self, cseq: int, authorization: str = "") -> Request:
        r = Request("REGISTER", "sip:127.0.0.1")
        r.add("Via", "SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKws%d" % cseq)
        r.add("Max-Forwards", "69")
        r.add("To", "<sip:1002@127.0.0.1>")
        r.add("From", "<sip:1002@127.0.0.1>;tag=wsreg")
        r.add("Call-ID", "ws-register-1")
        r.add("CSeq", f"{cseq} REGISTER")
        r.add("Contact", '<sip:k3pq8v2b@df7jal23ls0d.invalid;transport=ws>;+sip.ice;reg-id=1;+sip.instance="<urn:uuid:4b1d5f0e-4c3a-4e2b-9d6a-1f2e3d4c5b6a>";expires=600')
        r.add("Expires", "600")
        r.add("Allow", "INVITE,ACK,CANCEL,BYE,UPDATE,MESSAGE,OPTIONS,REFER,INFO,NOTIFY")
        r.add("Supported", "path,gruu,outbound")
        r.add("User-Agent", "JsSIP-like test UA")
        if authorization:
            r.add("Authorization", authorization)
        return r

    @defer.inlineCallbacks
    def next_of(self, kind):
        while True:
            message = yield self.inbox.get()
            if kind == "response" and isinstance(message, Response):
                return message
            if isinstance(message, Request) and message.method == kind:
                return message


def reply(request: Request, status: int, tag: str, body: bytes = b"", contact: str = "") -> Response:
    response = Response(status)
    for h in request.headers:
        if h[0] in ("via", "from", "call-id", "cseq"):
            response.headers.append(list(h))
    to = request.get("to")
    response.add("To", to if "tag=" in to else f"{to};tag={tag}")
    if contact:
        response.add("Contact", contact)
    if body:
        response.add("Content-Type", "application/sdp")
    response.body = body
    return response


class WebSocketCallTests(SippMixin, TestCase):
    """REGISTER over WebSocket, then a call from UDP to the WebSocket phone."""

    timeout = 60

    @defer.inlineCallbacks
    def test_call_to_websocket_phone(self):
        """The WebSocket UA registers with digest (401, then 200 listing its
        contact); a SIPp caller's INVITE reaches it over the same WebSocket
        connection with a Via of transport WS; it answers, and the ACK and
        the BYE reach it too; the SIPp caller exits 0."""
        self.sipp = require_tool("sipp")
        self.pbx = yield start_pbx_toml(self, call_pbx_toml("ws_port = 0\n"))
        self.port = self.pbx.ports["UDP"]
        ua = BrowserUA(self.pbx.ports["WS"])
        yield ua.connect()
        self.addCleanup(ua.close)

        ua.send(ua.register(1))
        challenge = yield ua.next_of("response")
        self.assertEqual(challenge.status, 401)
        authorization = build_authorization(
            challenge.get("www-authenticate"), "REGISTER", "sip:127.0.0.1", "1002", "callee-secret"
        )
        ua.send(ua.register(2, authorization))
        ok = yield ua.next_of("response")
        self.assertEqual(ok.status, 200)
        self.assertIn("df7jal23ls0d.invalid", ok.get("contact"))

        caller = self.sipp_run(
            "call_uac.xml", free_udp_port(), ["-s", "1002", "-au", "caller", "-ap", "caller-secret", "-m", "1"], timeout=50
        )
        invite = yield ua.next_of("INVITE")
        self.assertTrue(invite.top_via.startswith("SIP/2.0/WS "), invite.top_via)
        self.assertEqual(invite.uri.split(";")[0], "sip:k3pq8v2b@df7jal23ls0d.invalid")
        ua.send(reply(invite, 180, "wsans"))
        ua.send(reply(invite, 200, "wsans", SDP, "<sip:k3pq8v2b@df7jal23ls0d.invalid;transport=ws>"))
        ack = yield ua.next_of("ACK")
        self.assertEqual(ack.call_id, invite.call_id)
        bye = yield ua.next_of("BYE")
        ua.send(reply(bye, 200, "wsans"))
        out, err, code = yield caller
        self.assertEqual(code, 0, (out + err).decode("utf-8", "replace")[-3000:])
        rows = yield self.pbx.context.store.run_query("SELECT status_code, hangup_reason FROM call_records")
        self.assertEqual(list(rows), [(200, "byCaller")])
