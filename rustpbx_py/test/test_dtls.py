"""
Tests for L{rustpbx_py.media.dtls}: a DTLS-SRTP handshake against a second,
independent pyOpenSSL DTLS endpoint written here (memory BIOs, no sockets,
task.Clock for the retransmission timer), in both roles; RFC 5764 key
export checked against that endpoint's own export; fingerprint mismatch
refused; SRTP both ways with the exported keys (the peer side protecting
and unprotecting with plain pylibsrtp); lost flights retransmitted.
"""

from __future__ import annotations

import struct

import pylibsrtp
from OpenSSL import SSL
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from rustpbx_py.media import dtls
from rustpbx_py.media.dtls import Certificate, DtlsError, DtlsSrtp, answer_setup, is_dtls, parse_fingerprint


class Peer:
    """A browser-like DTLS-SRTP endpoint made directly of pyOpenSSL calls."""

    def __init__(self, client: bool) -> None:
        self.cert = Certificate.generate("peer")
        context = SSL.Context(SSL.DTLS_METHOD)
        context.use_certificate(self.cert.cert)
        context.use_privatekey(self.cert.key)
        context.set_tlsext_use_srtp(b"SRTP_AES128_CM_SHA1_80")
        context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *_: True)
        self.conn = SSL.Connection(context, None)
        self.client = client
        if client:
            self.conn.set_connect_state()
        else:
            self.conn.set_accept_state()
        self.done = False
        self.outbox: list = []

    def step(self, incoming=()) -> None:
        for data in incoming:
            self.conn.bio_write(data)
        if not self.done:
            try:
                self.conn.do_handshake()
                self.done = True
            except SSL.WantReadError:
                pass
        else:
            try:
                self.conn.recv(65535)
            except SSL.Error:
                pass
        while True:
            try:
                self.outbox.append(self.conn.bio_read(65535))
            except SSL.WantReadError:
                break

    def srtp(self):
        """(protecting, unprotecting) pylibsrtp sessions from this side's RFC 5764 export."""
        m = self.conn.export_keying_material(b"EXTRACTOR-dtls_srtp", 60)
        client = m[0:16] + m[32:46]
        server = m[16:32] + m[46:60]
        mine, theirs = (client, server) if self.client else (server, client)
        out = pylibsrtp.Session(pylibsrtp.Policy(key=mine, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND))
        inn = pylibsrtp.Session(pylibsrtp.Policy(key=theirs, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND))
        return out, inn


def rtp(seq: int, payload: bytes = b"\xd5" * 160) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 0x1234ABCD) + payload


class HandshakeTests(SynchronousTestCase):
    """DtlsSrtp against the pyOpenSSL peer."""

    def _pair(self, our_role: str, fingerprint=None, drop=0):
        clock = Clock()
        peer = Peer(client=(our_role == "server"))
        sent: list = []
        ours = DtlsSrtp(our_role, [fingerprint or peer.cert.fingerprint()], sent.append, clock)
        ours.start()
        if peer.client:
            peer.step()
        for _ in range(20):
            if drop and sent:  # lose our first flight(s)
                del sent[:]
                drop -= 1
                for _ in range(40):  # until the timer (1 s, then doubled) resends
                    clock.advance(0.25)
                    if sent:
                        break
            to_peer, sent[:] = list(sent), []
            peer.step(to_peer)
            to_us, peer.outbox[:] = list(peer.outbox), []
            for data in to_us:
                self.assertTrue(is_dtls(data))
                ours.datagram_received(data)
            if ours.state in ("connected", "failed") and peer.done and not sent and not peer.outbox:
                break
        return ours, peer, clock, sent

    def _check_srtp(self, ours: DtlsSrtp, peer: Peer) -> None:
        peer_out, peer_in = peer.srtp()
        for seq in range(1, 4):
            # ours -> peer
            protected = ours.outbound.protect(rtp(seq))
            self.assertNotEqual(protected, rtp(seq))
            self.assertEqual(peer_in.unprotect(protected), rtp(seq))
            # peer -> ours
            from_peer = peer_out.protect(rtp(100 + seq, b"\xff" * 160))
            self.assertEqual(ours.inbound.unprotect(from_peer), rtp(100 + seq, b"\xff" * 160))
        forged = bytearray(peer_out.protect(rtp(200)))
        forged[20] ^= 1
        self.assertIsNone(ours.inbound.unprotect(bytes(forged)))
        self.assertEqual(ours.inbound.dropped["auth"], 1)

    def test_server_role(self) -> None:
        """
        As DTLS server (a=setup:passive, the usual answer to a browser's
        actpass) the handshake completes, the peer's certificate matches its
        fingerprint, SRTP_AES128_CM_SHA1_80 is selected and SRTP flows both
        ways with the exported keys.
        """
        ours, peer, clock, _ = self._pair("server")
        self.assertEqual(ours.state, "connected", ours.failure)
        self.assertTrue(peer.done)
        self.assertEqual(dtls._selected_srtp_profile(peer.conn), b"SRTP_AES128_CM_SHA1_80")
        self._check_srtp(ours, peer)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_client_role(self) -> None:
        """As DTLS client (a=setup:active) the same holds, keys in the other order."""
        ours, peer, clock, _ = self._pair("client")
        self.assertEqual(ours.state, "connected", ours.failure)
        self._check_srtp(ours, peer)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_key_export(self) -> None:
        """Both ends export the same 60 bytes; our outbound key is the server half as server."""
        ours, peer, _, _ = self._pair("server")
        m = peer.conn.export_keying_material(b"EXTRACTOR-dtls_srtp", 60)
        self.assertEqual(ours.outbound.keys.key, m[16:32] + m[46:60])
        self.assertEqual(ours.inbound.keys.key, m[0:16] + m[32:46])

    def test_fingerprint_mismatch(self) -> None:
        """A peer whose certificate is not the one in the SDP is refused: no SRTP keys."""
        other = Certificate.generate("someone else")
        connected = []
        ours, peer, _, _ = self._pair("server", fingerprint=other.fingerprint())
        self.assertEqual(ours.state, "failed")
        self.assertIn("fingerprint", ours.failure)
        self.assertIsNone(ours.inbound)
        self.assertIsNone(ours.outbound)
        self.assertEqual(connected, [])
        # A later record is ignored, not raised on.
        ours.datagram_received(b"\x17\xfe\xfd" + bytes(20))

    def test_retransmission(self) -> None:
        """Our first flight lost twice (as client): the timer resends it and the handshake completes."""
        ours, peer, clock, _ = self._pair("client", drop=2)
        self.assertEqual(ours.state, "connected", ours.failure)
        self.assertGreaterEqual(ours.counters["retransmits"], 2)
        self._check_srtp(ours, peer)

    def test_own_fingerprint(self) -> None:
        """Our a=fingerprint is the SHA-256 of our certificate as the peer sees it; one per process."""
        ours, peer, _, _ = self._pair("server")
        seen = peer.conn.get_peer_certificate().digest("sha256").decode()
        self.assertEqual(ours.cert.fingerprint(), "sha-256 " + seen)
        self.assertIs(dtls.certificate(), dtls.certificate())


class SdpValueTests(SynchronousTestCase):
    """a=setup and a=fingerprint values."""

    def test_answer_setup(self) -> None:
        """RFC 5763: we answer actpass (or nothing) and active with passive, passive with active."""
        self.assertEqual(answer_setup("actpass"), "passive")
        self.assertEqual(answer_setup(None), "passive")
        self.assertEqual(answer_setup("active"), "passive")
        self.assertEqual(answer_setup("passive"), "active")
        self.assertRaises(DtlsError, answer_setup, "holdconn")

    def test_parse_fingerprint(self) -> None:
        """Algorithm lower-cased, hex upper-cased; garbage refused with a reason."""
        self.assertEqual(parse_fingerprint("SHA-256 ab:CD"), ("sha-256", "AB:CD"))
        for bad in ("", "sha-256", "md5 AB:CD", "sha-256 AB CD"):
            self.assertRaises(DtlsError, parse_fingerprint, bad)
        self.assertRaises(DtlsError, DtlsSrtp, "server", [], lambda data: None, Clock())
        self.assertRaises(ValueError, DtlsSrtp, "both", ["sha-256 AB"], lambda data: None, Clock())
