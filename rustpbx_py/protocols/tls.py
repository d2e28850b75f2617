# -*- test-case-name: rustpbx_py.test.test_tls -*-
"""
TLS for the SIP listeners (TLS, WSS) and for outbound connections.

Why this module exists: Twisted 24 and later install an ALPN selection
callback on every server context, even when the application names no
protocol, and that callback answers "no protocol" with an empty string,
which OpenSSL turns into alert 80 (internal error).  So every client that
offers ALPN -- every browser, curl, C{openssl s_client -alpn} -- failed
the handshake.  L{server_context_factory} puts our own callback on the
context: it picks a protocol we speak (C{http/1.1} for WSS) and otherwise
tells OpenSSL to go on without ALPN, as RFC 7301 section 3.2 allows.
"""

from __future__ import annotations

import re
from typing import List, Optional, Sequence, Tuple

from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLContextFactory
from twisted.logger import Logger
from zope.interface import implementer

log = Logger()

#: ALPN protocol identifiers the WSS listener speaks (RFC 7301; a
#: WebSocket handshake is an HTTP/1.1 request, RFC 6455).
WSS_ALPN = (b"http/1.1",)


def _pem_blocks(data: bytes, kind: bytes) -> List[bytes]:
    return re.findall(b"-----BEGIN " + kind + b"-----.+?-----END " + kind + b"-----", data, re.S)


def load_certificate_options(certificate_path: str, key_path: str):
    """C{CertificateOptions} from a PEM certificate (chain) and key file."""
    from OpenSSL import crypto
    from twisted.internet import ssl

    with open(certificate_path, "rb") as f:
        chain = f.read()
    with open(key_path, "rb") as f:
        key_pem = f.read()
    certs = _pem_blocks(chain, b"CERTIFICATE")
    if not certs:
        raise ValueError(f"{certificate_path}: no PEM certificate found")
    key = ssl.KeyPair.load(key_pem, crypto.FILETYPE_PEM)
    cert = ssl.Certificate.loadPEM(certs[0])
    extra = [ssl.Certificate.loadPEM(c).original for c in certs[1:]]
    return ssl.CertificateOptions(
        privateKey=key.original,
        certificate=cert.original,
        extraCertChain=extra or None,
    )


def select_alpn(ours: Sequence[bytes], offered: Sequence[bytes]):
    """
    The ALPN answer to a client's offer: the first of C{ours} it offered,
    else pyOpenSSL's "no overlap" marker, with which the handshake goes on
    without a protocol (RFC 7301 3.2 lets a server that does not support
    the offered protocols continue).
    """
    for protocol in ours:
        if protocol in offered:
            return protocol
    return SSL.NO_OVERLAPPING_PROTOCOLS


@implementer(IOpenSSLContextFactory)
class ServerContextFactory:
    """
    One OpenSSL context for a listener: the certificate's
    C{CertificateOptions} with our ALPN callback put over Twisted's.
    C{options} must not be shared with another listener: its context is
    cached, and pyOpenSSL refuses to change a context once a connection
    used it.
    """

    def __init__(self, options, alpn: Sequence[bytes] = ()) -> None:
        self.options = options
        self.alpn = tuple(alpn)
        self._context = None

    def _select(self, connection, offered: List[bytes]):
        return select_alpn(self.alpn, offered)

    def getContext(self):
        if self._context is None:
            context = self.options.getContext()
            context.set_alpn_select_callback(self._select)
            self._context = context
        return self._context


def server_context_factory(certificate_path: str, key_path: str, alpn: Sequence[bytes] = ()) -> ServerContextFactory:
    """The context factory of a TLS (C{alpn=()}) or WSS (C{WSS_ALPN}) listener."""
    return ServerContextFactory(load_certificate_options(certificate_path, key_path), alpn)


def tls_failure(reason) -> Optional[str]:
    """
    What went wrong, when a connection was lost because of TLS (a failed
    handshake, a bad record); C{None} for an ordinary close.
    """
    if reason is None:
        return None
    error = reason.value if hasattr(reason, "value") else reason
    if not isinstance(error, SSL.Error):
        return None
    parts = []
    for item in error.args[0] if error.args and isinstance(error.args[0], list) else []:
        if isinstance(item, tuple) and item:
            parts.append(str(item[-1]))
    return ", ".join(parts) or str(error) or error.__class__.__name__


def log_tls_failure(logger: Logger, transport_name: str, peer: Tuple[str, int], reason, handshake_done: bool) -> bool:
    """
    One warning line for a TLS connection lost to a TLS error, naming the
    peer (so an admin sees which phone cannot connect and why; fail2ban
    can read it too).  True when it was logged.
    """
    what = tls_failure(reason)
    if what is None:
        return False
    logger.warn(
        "{transport} connection with {host}:{port}: {stage} failed: {error}",
        transport=transport_name,
        stage="TLS handshake" if not handshake_done else "TLS",
        host=peer[0],
        port=peer[1],
        error=what,
    )
    return True


def client_options(server_name: str, trust_root=None):
    """
    Options for an outbound TLS connection to C{server_name}: SNI carries
    the name and the certificate is verified against it (a host name, or
    an IP address when the target was given as one), with the platform's
    trust store unless C{trust_root} is given.
    """
    from twisted.internet import ssl

    if trust_root is None:
        return ssl.optionsForClientTLS(server_name)
    return ssl.optionsForClientTLS(server_name, trustRoot=trust_root)


def load_trust_root(bundle_path: str):
    """
    The trust root of a PEM bundle (C{proxy.tls_ca_certificates}): outbound
    TLS peers must chain to one of its certificates.
    """
    from twisted.internet import ssl

    with open(bundle_path, "rb") as f:
        blocks = _pem_blocks(f.read(), b"CERTIFICATE")
    if not blocks:
        raise ValueError(f"{bundle_path}: no PEM certificate found")
    return ssl.trustRootFromCertificates([ssl.Certificate.loadPEM(b) for b in blocks])
