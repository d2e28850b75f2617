"""
TLS trunks configured by host name: the PBX sends the name in SNI and
verifies the peer's certificate against the name, not the address it
resolved to (RFC 5922 section 4), trusting the bundle given in
C{proxy.tls_ca_certificates}.
"""

from __future__ import annotations


from twisted.internet import defer, reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase

from rustpbx_py.protocols.tls import load_certificate_options, load_trust_root
from rustpbx_py.test.interop.support import start_pbx, start_pbx_toml
from rustpbx_py.test.tls import self_signed_for

REGISTRAR = """
[proxy]
addr = "127.0.0.1"
udp_port = 0
tls_port = 0
ssl_certificate = "{cert}"
ssl_private_key = "{key}"

[[proxy.user_backends]]
type = "memory"

[[proxy.user_backends.users]]
username = "carrier"
password = "carrier-secret"
"""

CLIENT = """
[proxy]
addr = "127.0.0.1"
udp_port = 0
tls_ca_certificates = "{ca}"

[proxy.trunks.carrier]
dest = "sip:{host}:{port};transport=tls"
username = "carrier"
password = "carrier-secret"
register_enabled = true
"""


class TlsTrunkByNameTests(TestCase):
    timeout = 60

    def certificate(self, name):
        return self_signed_for(self, name)

    @defer.inlineCallbacks
    def register_over_tls(self, cert_name, trunk_host):
        """Start a registrar PBX on TLS with a certificate for C{cert_name}
        and a PBX whose trunk names C{trunk_host}; the first outcome of the
        trunk's registration."""
        cert, key = self.certificate(cert_name)
        registrar = yield start_pbx_toml(self, REGISTRAR.format(cert=cert, key=key))
        outcome: defer.Deferred = defer.Deferred()
        client = yield start_pbx_toml(self, CLIENT.format(ca=cert, host=trunk_host, port=registrar.ports["TLS"]))
        registrar_of_trunks = next(m.trunk_registrar for m in client.modules if getattr(m, "trunk_registrar", None) is not None)

        def watch(reg):
            if reg.state in ("registered", "failed") and not outcome.called:
                outcome.callback((reg.state, reg.error))

        registrar_of_trunks.observers.append(watch)
        for reg in registrar_of_trunks.registrations.values():
            watch(reg)
        result = yield outcome
        return result

    @defer.inlineCallbacks
    def test_registers_by_name(self):
        """A trunk "sip:localhost:PORT;transport=tls" whose registrar holds a
        certificate for "localhost" (and not for 127.0.0.1) registers: the
        certificate is checked against the name."""
        state, error = yield self.register_over_tls("localhost", "localhost")
        self.assertEqual(state, "registered", error)

    @defer.inlineCallbacks
    def test_address_certificate_refused_for_name(self):
        """A certificate for 127.0.0.1 does not do for a trunk named
        "localhost", although the name resolves to that address (before,
        the resolved address was verified and this registered)."""
        state, error = yield self.register_over_tls("127.0.0.1", "localhost")
        self.assertEqual(state, "failed")

    @defer.inlineCallbacks
    def test_sni(self):
        """The TLS ClientHello to a peer given by name carries that name
        (SNI), so a server hosting several domains can pick the certificate;
        a peer given by address gets none (RFC 6066 3)."""
        cert, key = self.certificate("localhost")
        names = []
        received: defer.Deferred = defer.Deferred()
        options = load_certificate_options(cert, key)
        options.getContext().set_tlsext_servername_callback(lambda conn: names.append(conn.get_servername()))

        class Sink(Protocol):
            def dataReceived(self, data):
                if not received.called:
                    received.callback(data)

        port = reactor.listenSSL(0, Factory.forProtocol(Sink), options, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        number = port.getHost().port
        pbx = yield start_pbx(self, modules=[])
        pbx.core.transports.tls_trust_root = load_trust_root(cert)
        flow = yield pbx.core.resolve("TLS", "localhost", number)
        flow.send(b"\r\n\r\n")
        data = yield received
        self.assertEqual(data, b"\r\n\r\n")
        self.assertEqual(names, [b"localhost"])
        self.assertEqual(flow.remote, ("127.0.0.1", number))
        flow.close()
