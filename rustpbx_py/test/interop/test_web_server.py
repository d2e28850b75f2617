"""
The PBX's web server as twistd runs it: http_addr and https_addr bound by
PbxService, ALPN on HTTPS answering http/1.1 to clients that offer h2
first (Python's ssl module and openssl s_client), the session cookie
Secure over HTTPS, and SIP over WebSocket at ws_handler on the web ports:
JsSIP in node registers and calls through https_addr (wss://) and
http_addr (ws://) with no ws_port or wss_port configured.
"""

from __future__ import annotations

import json
import os
import socket
import ssl

from twisted.internet import defer, reactor
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from rustpbx_py.test.interop.jssip import JS_DIR, require_js
from rustpbx_py.test.interop.support import require_tool, run_tool, start_pbx_toml
from rustpbx_py.test.interop import test_jssip_node
from rustpbx_py.test.tls import self_signed_for
from rustpbx_py.test.web_support import CONSOLE_TOML, TOKEN, WebTestMixin

PBX = """
ssl_certificate = "{cert}"
ssl_private_key = "{key}"
http_addr = "127.0.0.1:0"
https_addr = "127.0.0.1:0"
""" + CONSOLE_TOML + """
[proxy]
addr = "127.0.0.1"
udp_port = 0
""" + test_jssip_node.USERS


@implementer(IPolicyForHTTPS)
class _TrustCertificate:
    """HTTPS to 127.0.0.1 verified against the test certificate."""

    def __init__(self, path: str) -> None:
        with open(path, "rb") as f:
            self.root = Certificate.loadPEM(f.read())

    def creatorForNetloc(self, hostname, port):
        return optionsForClientTLS(hostname.decode("ascii"), trustRoot=self.root)


class WebServerTests(WebTestMixin, TestCase):
    timeout = 90

    @defer.inlineCallbacks
    def setUp(self):
        self.cert, key = self_signed_for(self)
        self.pbx = yield start_pbx_toml(self, PBX.format(cert=self.cert, key=key))
        self.context = self.pbx.context
        self.site = self.pbx.web
        self.assertIs(self.context.web, self.site)
        self.assertNotIn("WS", self.pbx.ports)
        self.use_port(self.pbx.ports["HTTPS"], "https")

    def agent(self):
        return Agent(reactor, contextFactory=_TrustCertificate(self.cert))

    def python_tls(self, alpn):
        """Connect with Python's ssl module offering C{alpn}; the protocol
        chosen and the answer to an API request."""
        context = ssl.create_default_context(cafile=self.cert)
        context.set_alpn_protocols(alpn)
        with socket.create_connection(("127.0.0.1", self.pbx.ports["HTTPS"]), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                chosen = tls.selected_alpn_protocol()
                tls.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
                            + TOKEN.encode() + b"\r\nConnection: close\r\n\r\n")
                answer = b""
                while True:
                    data = tls.recv(65536)
                    if not data:
                        break
                    answer += data
        return chosen, answer

    @defer.inlineCallbacks
    def test_alpn_python(self):
        """A client offering h2 then http/1.1 gets http/1.1 and an HTTP/1.1
        answer; one offering only h2 gets no protocol and is still served
        over HTTP/1.1."""
        chosen, answer = yield deferToThread(self.python_tls, ["h2", "http/1.1"])
        self.assertEqual(chosen, "http/1.1")
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer[:200])
        self.assertIn(b'"status":"ok"', answer)
        chosen, answer = yield deferToThread(self.python_tls, ["h2"])
        self.assertIsNone(chosen)
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer[:200])

    @defer.inlineCallbacks
    def test_alpn_openssl(self):
        """openssl s_client -alpn h2,http/1.1 negotiates http/1.1 and verifies
        the certificate."""
        openssl = require_tool("openssl")
        out, err, code = yield run_tool(
            [openssl, "s_client", "-connect", f"127.0.0.1:{self.pbx.ports['HTTPS']}", "-alpn", "h2,http/1.1",
             "-CAfile", self.cert, "-verify_return_error"],
            timeout=30, stdin=b"",
        )
        text = (out + err).decode("utf-8", "replace")
        self.assertIn("ALPN protocol: http/1.1", text)
        self.assertIn("Verify return code: 0 (ok)", text)

    @defer.inlineCallbacks
    def test_secure_cookie_and_api_over_https(self):
        """Over HTTPS the session cookie is Secure (and HttpOnly,
        SameSite=Strict); the API answers there too; plain HTTP serves the
        same console."""
        response = yield self.login()
        self.assertEqual(response.code, 303)
        cookie = [c for c in response.headers.getRawHeaders("set-cookie") if c.startswith("rustpbx_session=")][0]
        for part in ("Secure", "HttpOnly", "SameSite=Strict"):
            self.assertIn(part, cookie)
        page = yield self.get("/console/audit")
        self.assertEqual(page.code, 200)
        health = yield self.api("GET", "/api/v1/health")
        self.assertEqual(health.code, 200)
        self.use_port(self.pbx.ports["HTTP"])
        login = yield self.get("/console/login")
        self.assertEqual(login.code, 200)

    @defer.inlineCallbacks
    def run_jssip(self, url):
        node = require_js()
        options = {
            "url": url, "domain": "127.0.0.1", "caller": ["alice", "alice-secret"], "callee": ["bob", "bob-secret"],
            "call": True, "timeout_ms": 30000,
        }
        args = ["/usr/bin/env", f"NODE_EXTRA_CA_CERTS={self.cert}", node, os.path.join(JS_DIR, "jssip_call.js"), json.dumps(options)]
        out, err, code = yield run_tool(args, timeout=60, cwd=JS_DIR)
        text = (out + err).decode("utf-8", "replace")
        lines = [line for line in out.decode("utf-8", "replace").splitlines() if line.startswith("{")]
        self.assertTrue(lines, text[-3000:])
        self.assertEqual(code, 0, text[-3000:])
        return json.loads(lines[-1])

    @defer.inlineCallbacks
    def test_jssip_over_https(self):
        """JsSIP registers both users and places, answers and hangs up a call
        over wss://127.0.0.1:<https_addr>/ws: the browser phone needs only
        the web port."""
        result = yield self.run_jssip(f"wss://127.0.0.1:{self.pbx.ports['HTTPS']}/ws")
        test_jssip_node.JsSipNodeTests.assertCall(self, result)

    @defer.inlineCallbacks
    def test_jssip_over_http(self):
        """The same over ws://127.0.0.1:<http_addr>/ws."""
        result = yield self.run_jssip(f"ws://127.0.0.1:{self.pbx.ports['HTTP']}/ws")
        test_jssip_node.JsSipNodeTests.assertCall(self, result)

    @defer.inlineCallbacks
    def test_ws_path_and_origin(self):
        """The WebSocket mount keeps the SIP rules: without the sip
        subprotocol, or from a foreign page's Origin, the upgrade is
        refused."""
        self.use_port(self.pbx.ports["HTTP"])
        upgrade = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                   "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
        response = yield self.get("/ws", headers=upgrade)
        self.assertEqual(response.code, 400)
        response = yield self.get("/ws", headers={**upgrade, "Sec-WebSocket-Protocol": "sip", "Origin": "https://evil.example"})
        self.assertEqual(response.code, 403)
