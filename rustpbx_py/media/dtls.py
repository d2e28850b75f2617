# -*- test-case-name: rustpbx_py.test.test_dtls -*-
"""
DTLS-SRTP (RFC 5763/5764): how a WebRTC leg gets its SRTP keys.

Browsers never put keys in the SDP; they put the SHA-256 fingerprint of a
self-signed certificate there (C{a=fingerprint}) and who starts the
handshake (C{a=setup}: the offerer says C{actpass}, the answerer picks
C{active} = DTLS client or C{passive} = DTLS server).  A DTLS handshake then
runs on the media port itself, each side checks the peer's certificate
against the fingerprint from the SDP, and both export the SRTP master keys
from the DTLS master secret (RFC 5764 section 4.2, label
C{EXTRACTOR-dtls_srtp}).

The handshake is pyOpenSSL on memory BIOs (C{SSL.Connection(ctx, None)}):
the relay hands received DTLS records to L{DtlsSrtp.datagram_received} and
sends what L{DtlsSrtp} asks it to through the C{send} callable, on the same
socket as RTP (RFC 7983 demultiplexing is done by the caller).  Lost
handshake flights are retransmitted on a timer run by the injected clock
(see L{DtlsSrtp._arm_timer} for why not OpenSSL's).

One certificate (ECDSA P-256, like browsers) serves the whole process:
L{certificate} makes it on first use.
"""

from __future__ import annotations

import datetime
import secrets
from typing import Callable, Dict, List, Optional, Tuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto
from twisted.logger import Logger

from rustpbx_py.media.srtp import SdesKeys, SrtpSession, srtp_session

__all__ = ["Certificate", "certificate", "DtlsSrtp", "DtlsError", "parse_fingerprint",
           "answer_setup", "SRTP_PROFILE", "is_dtls"]

log = Logger()

#: The one protection profile offered (RFC 5764 section 4.1.2); every browser has it.
SRTP_PROFILE = b"SRTP_AES128_CM_SHA1_80"
_SUITE = "AES_CM_128_HMAC_SHA1_80"
_KEY, _SALT = 16, 14

#: RFC 6347 section 4.2.4.1: 1 s initial retransmission timer, doubled up to 60 s.
_INITIAL_TIMEOUT = 1.0
_MAX_TIMEOUT = 60.0


class DtlsError(ValueError):
    """An unusable a=fingerprint / a=setup (the message says why)."""


def is_dtls(data: bytes) -> bool:
    """RFC 7983 section 7: a first byte in 20..63 is DTLS."""
    return bool(data) and 19 < data[0] < 64


class Certificate:
    """
    A self-signed ECDSA certificate and its key, and the SDP fingerprint
    (C{"sha-256 AB:CD:..."}) browsers check it against.
    """

    def __init__(self, cert: crypto.X509, key: crypto.PKey) -> None:
        self.cert = cert
        self.key = key

    @classmethod
    def generate(cls, name: str = "rustpbx_py") -> "Certificate":
        """A fresh P-256 key and a certificate valid from a day ago for 30 days."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder()
                .subject_name(subject).issuer_name(subject)
                .public_key(key.public_key())
                .serial_number(secrets.randbits(63) + 1)
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=30))
                .sign(key, hashes.SHA256()))
        return cls(crypto.X509.from_cryptography(cert), crypto.PKey.from_cryptography_key(key))

    def fingerprint(self, algorithm: str = "sha-256") -> str:
        """The C{a=fingerprint} value: C{"sha-256 AB:CD:..."} (RFC 8122)."""
        return f"{algorithm} {_digest(self.cert, algorithm)}"


_certificate: Optional[Certificate] = None


def certificate() -> Certificate:
    """The process's DTLS certificate (made on first use)."""
    global _certificate
    if _certificate is None:
        _certificate = Certificate.generate()
    return _certificate


def _digest(cert: crypto.X509, algorithm: str) -> str:
    name = algorithm.lower().replace("-", "")
    return cert.digest(name).decode("ascii").upper()


def parse_fingerprint(value: str) -> Tuple[str, str]:
    """
    An C{a=fingerprint} value -> C{(algorithm, "AB:CD:...")}, lower-case
    algorithm, upper-case hex (RFC 8122 says compare case-insensitively).
    """
    parts = (value or "").split()
    if len(parts) != 2 or parts[0].lower() not in ("sha-1", "sha-224", "sha-256", "sha-384", "sha-512"):
        raise DtlsError(f"a=fingerprint {value!r}: expected '<hash> <hex:hex:...>' with sha-1/224/256/384/512")
    return parts[0].lower(), parts[1].upper()


def answer_setup(offered: Optional[str]) -> str:
    """
    Our C{a=setup} in an answer to C{offered} (RFC 5763 section 5):
    C{actpass} (or absent, RFC 4145 default) -> C{passive}: the browser,
    which controls ICE, starts the handshake once its checks succeed, so we
    need not know its address first; C{active} -> C{passive};
    C{passive} -> C{active}.
    """
    offered = (offered or "actpass").strip().lower()
    if offered == "passive":
        return "active"
    if offered in ("active", "actpass"):
        return "passive"
    raise DtlsError(f"a=setup:{offered}: expected active, passive or actpass")


def _selected_srtp_profile(conn: SSL.Connection) -> Optional[bytes]:
    """
    The negotiated DTLS-SRTP profile.  pyOpenSSL has the method from 23.1;
    Debian's 23.0 has only the binding underneath, which is what the method
    calls.
    """
    method = getattr(conn, "get_selected_srtp_profile", None)
    if method is not None:
        return method()
    from OpenSSL._util import ffi, lib

    profile = lib.SSL_get_selected_srtp_profile(conn._ssl)
    return ffi.string(profile.name) if profile != ffi.NULL else b""


class DtlsSrtp:
    """
    One DTLS-SRTP association on one leg.

    @param role: C{"client"} (our a=setup is active) or C{"server"} (passive).
    @param fingerprints: the peer's C{a=fingerprint} values; its certificate
        must match one of them.
    @param send: called with each datagram to send to the peer.
    @param clock: runs the retransmission timer (the reactor, a task.Clock in tests).
    @param on_connected: called with no argument once the keys are ready.
    @ivar state: C{"new"}, C{"connecting"}, C{"connected"}, C{"failed"}.
    @ivar inbound, outbound: the SRTP sessions once connected (unprotect what
        the peer sends / protect what we send).
    """

    def __init__(self, role: str, fingerprints: List[str], send: Callable[[bytes], None],
                 clock, cert: Optional[Certificate] = None,
                 on_connected: Optional[Callable[[], None]] = None) -> None:
        if role not in ("client", "server"):
            raise ValueError(f"DTLS role {role!r}: expected 'client' or 'server'")
        self.role = role
        self.fingerprints = [parse_fingerprint(value) for value in fingerprints]
        if not self.fingerprints:
            raise DtlsError("no a=fingerprint for a DTLS-SRTP leg (RFC 5763 section 5)")
        self.send = send
        self.clock = clock
        self.cert = cert or certificate()
        self.on_connected = on_connected
        self.state = "new"
        self.failure: Optional[str] = None
        self.inbound: Optional[SrtpSession] = None
        self.outbound: Optional[SrtpSession] = None
        self.counters: Dict[str, int] = {"records_in": 0, "records_out": 0, "retransmits": 0}
        self._timer = None
        self._backoff = _INITIAL_TIMEOUT
        self._last_flight: List[bytes] = []
        context = SSL.Context(SSL.DTLS_METHOD)
        context.use_certificate(self.cert.cert)
        context.use_privatekey(self.cert.key)
        context.set_tlsext_use_srtp(SRTP_PROFILE)
        # Self-signed certificates are the norm: the check is the fingerprint, after the handshake.
        context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *_: True)
        context.set_cipher_list(b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                                b"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                                b"ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA")
        self._conn = SSL.Connection(context, None)
        if role == "client":
            self._conn.set_connect_state()
        else:
            self._conn.set_accept_state()

    def start(self) -> None:
        """Begin: a client sends its ClientHello now; a server waits for one."""
        if self.state != "new":
            return
        self.state = "connecting"
        if self.role == "client":
            self._handshake()

    def datagram_received(self, data: bytes) -> None:
        """A DTLS datagram from the peer (first byte 20-63)."""
        if self.state in ("failed", "closed"):
            return
        if self.state == "new":
            self.state = "connecting"
        self.counters["records_in"] += 1
        try:
            self._conn.bio_write(bytes(data))
        except SSL.Error:
            return
        if self.state == "connecting":
            self._handshake()
        else:  # connected: retransmitted Finished, close_notify, alerts
            try:
                self._conn.recv(65535)
            except SSL.ZeroReturnError:
                self.state = "closed"
                self._stop_timer()
            except (SSL.WantReadError, SSL.Error):
                pass
            self._flush()

    def close(self) -> None:
        """Stop the timer; the association is forgotten (no close_notify: the port closes too)."""
        self._stop_timer()
        if self.state != "failed":
            self.state = "closed"

    def _handshake(self) -> None:
        try:
            self._conn.do_handshake()
        except SSL.WantReadError:
            self._flush()
            self._arm_timer()
            return
        except SSL.Error as e:
            self._flush()  # the alert, if any
            self._fail(f"DTLS handshake failed: {e}")
            return
        self._flush()
        self._stop_timer()
        self._connected()

    def _connected(self) -> None:
        peer = self._conn.get_peer_certificate()
        if peer is None:
            self._fail("DTLS peer sent no certificate")
            return
        if not any(_digest(peer, algorithm) == value for algorithm, value in self.fingerprints):
            self._fail("DTLS peer certificate does not match the SDP a=fingerprint")
            return
        profile = _selected_srtp_profile(self._conn)
        if profile != SRTP_PROFILE:
            self._fail(f"DTLS-SRTP profile {profile!r} not negotiated")
            return
        material = self._conn.export_keying_material(b"EXTRACTOR-dtls_srtp", 2 * (_KEY + _SALT))
        client_key, server_key = material[:_KEY], material[_KEY:2 * _KEY]
        client_salt = material[2 * _KEY:2 * _KEY + _SALT]
        server_salt = material[2 * _KEY + _SALT:]
        client = SdesKeys(suite=_SUITE, key=client_key + client_salt)
        server = SdesKeys(suite=_SUITE, key=server_key + server_salt)
        ours, theirs = (client, server) if self.role == "client" else (server, client)
        self.outbound = srtp_session(ours, outbound=True)
        self.inbound = srtp_session(theirs, outbound=False)
        self.state = "connected"
        if self.on_connected is not None:
            self.on_connected()

    def _fail(self, reason: str) -> None:
        self._stop_timer()
        self.state = "failed"
        self.failure = reason
        log.info("webrtc: {reason}", reason=reason)

    def _flush(self) -> None:
        flight = []
        while True:
            try:
                data = self._conn.bio_read(65535)
            except SSL.WantReadError:
                break
            if not data:
                break
            flight.append(data)
        for data in flight:
            self.counters["records_out"] += 1
            self.send(data)
        if flight:
            self._last_flight = flight
            self._backoff = _INITIAL_TIMEOUT

    # Retransmission (RFC 6347 section 4.2.4) on the injected clock: the last
    # flight is resent as sent, 1 s then doubling up to 60 s.  OpenSSL's own
    # timer (DTLSv1_get_timeout/handle_timeout, pyOpenSSL 23.1+) reads the
    # wall clock, so it could not be driven by a task.Clock nor by a reactor
    # other than the real one; a resent identical flight is what OpenSSL
    # would send anyway (the peer drops duplicates).

    def _arm_timer(self) -> None:
        self._stop_timer()
        if self._last_flight:
            self._timer = self.clock.callLater(self._backoff, self._timed_out)

    def _stop_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if self.state != "connecting":
            return
        self.counters["retransmits"] += 1
        for data in self._last_flight:
            self.send(data)
        self._backoff = min(self._backoff * 2, _MAX_TIMEOUT)
        self._arm_timer()
