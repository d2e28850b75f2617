"""
Tests for L{rustpbx_py.protocols.tls}: the listeners' OpenSSL contexts
complete handshakes with clients that offer ALPN and with those that do
not (the handshake is driven in memory, no sockets), and TLS failures are
described for the log.
"""

from __future__ import annotations

import os

from OpenSSL import SSL
from twisted.logger import Logger, eventAsText
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from rustpbx_py.protocols.tls import (
    WSS_ALPN,
    log_tls_failure,
    select_alpn,
    server_context_factory,
    tls_failure,
)
from rustpbx_py.test.tls import write_self_signed


def handshake(server_context, offer=None):
    """Run a TLS handshake between C{server_context} and a client offering
    C{offer} over ALPN, through memory BIOs; the two connections."""
    client_context = SSL.Context(getattr(SSL, "TLS_CLIENT_METHOD", SSL.SSLv23_METHOD))
    client = SSL.Connection(client_context, None)
    if offer is not None:
        client.set_alpn_protos(offer)
    client.set_connect_state()
    server = SSL.Connection(server_context, None)
    server.set_accept_state()
    for _ in range(10):
        for conn in (client, server):
            try:
                conn.do_handshake()
            except SSL.WantReadError:
                pass
        moved = False
        for a, b in ((client, server), (server, client)):
            try:
                data = a.bio_read(65536)
            except SSL.WantReadError:
                continue
            b.bio_write(data)
            moved = True
        if not moved:
            break
    return client, server


class AlpnHandshakeTests(SynchronousTestCase):
    """The cause of alert 80: Twisted's own ALPN callback answers "no
    protocol" with an empty string; ours answers so OpenSSL goes on."""

    def setUp(self):
        base = self.mktemp()
        os.makedirs(base)
        self.cert, self.key = write_self_signed(base)

    def context(self, alpn=()):
        return server_context_factory(self.cert, self.key, alpn).getContext()

    def test_tls_without_alpn(self):
        """A client offering no ALPN completes the handshake."""
        client, server = handshake(self.context())
        self.assertTrue(client.get_peer_certificate() is not None)
        self.assertEqual(client.get_alpn_proto_negotiated(), b"")
        self.assertEqual(server.write(b"x"), 1)

    def test_tls_with_alpn(self):
        """A client offering http/1.1 (curl, browsers) to the SIP TLS
        listener completes the handshake without a protocol (RFC 7301 3.2)."""
        client, server = handshake(self.context(), [b"h2", b"http/1.1"])
        self.assertEqual(client.get_alpn_proto_negotiated(), b"")
        self.assertEqual(server.write(b"x"), 1)

    def test_wss_with_alpn(self):
        """The WSS listener picks http/1.1, what a WebSocket handshake is."""
        client, server = handshake(self.context(WSS_ALPN), [b"h2", b"http/1.1"])
        self.assertEqual(client.get_alpn_proto_negotiated(), b"http/1.1")
        self.assertEqual(server.write(b"x"), 1)

    def test_wss_with_other_alpn(self):
        """An offer without http/1.1 still completes the handshake."""
        client, server = handshake(self.context(WSS_ALPN), [b"h2"])
        self.assertEqual(client.get_alpn_proto_negotiated(), b"")
        self.assertEqual(server.write(b"x"), 1)

    def test_select(self):
        """Our first protocol the client offered; else "no overlap"."""
        self.assertEqual(select_alpn([b"http/1.1"], [b"h2", b"http/1.1"]), b"http/1.1")
        self.assertIs(select_alpn([], [b"h2"]), SSL.NO_OVERLAPPING_PROTOCOLS)

    def test_context_made_once(self):
        """Every connection of a listener shares one context."""
        factory = server_context_factory(self.cert, self.key)
        self.assertIs(factory.getContext(), factory.getContext())


class FailureLogTests(SynchronousTestCase):
    def test_described(self):
        """An OpenSSL error list becomes its reason strings."""
        error = SSL.Error([("SSL routines", "", "wrong version number")])
        self.assertEqual(tls_failure(Failure(error)), "wrong version number")

    def test_not_tls(self):
        """An ordinary close is not a TLS failure."""
        self.assertIsNone(tls_failure(Failure(ConnectionError("gone"))))
        self.assertIsNone(tls_failure(None))

    def test_logged_with_peer(self):
        """The warning names the transport, the stage and the peer."""
        events = []
        log = Logger(observer=events.append)
        error = SSL.Error([("SSL routines", "", "no shared cipher")])
        self.assertTrue(log_tls_failure(log, "WSS", ("192.0.2.7", 50412), Failure(error), False))
        self.assertEqual(eventAsText(events[0], includeTimestamp=False, includeSystem=False),
                         "WSS connection with 192.0.2.7:50412: TLS handshake failed: no shared cipher")
        self.assertFalse(log_tls_failure(log, "TLS", ("192.0.2.7", 1), None, True))
        self.assertEqual(len(events), 1)
