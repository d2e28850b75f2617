# -*- test-case-name: rustpbx_py.test.test_resolve -*-
"""
An in-memory DNS zone for tests: a real C{twisted.names} authority (the
same code a name server runs), usable directly as the C{IResolver} of a
L{rustpbx_py.protocols.resolve.SipResolver}, or served over UDP on
loopback by L{serve_zone} for tests that go through the DNS client.
"""

from __future__ import annotations

from typing import Dict, List

from twisted.names import authority, dns, server


class MemoryAuthority(authority.FileAuthority):
    """The zone C{domain} with C{records} (owner name -> record list)."""

    def __init__(self, domain: str, records: Dict[str, List[object]]) -> None:
        self._domain = domain
        self._given = records
        authority.FileAuthority.__init__(self, None)

    def loadFile(self, filename) -> None:
        domain = self._domain.encode("ascii")
        soa = dns.Record_SOA(mname=b"ns." + domain, rname=b"root." + domain, serial=1, refresh=60, minimum=5, expire=600, retry=5, ttl=5)
        self.soa = (domain, soa)
        self.records = {domain: [soa]}
        for name, records in self._given.items():
            self.records.setdefault(name.lower().encode("ascii"), []).extend(records)


def serve_zone(zone: MemoryAuthority, reactor=None):
    """
    Serve C{zone} on 127.0.0.1, an ephemeral UDP port.  Returns the
    listening port (its C{getHost().port}; stop it with C{stopListening}).
    """
    if reactor is None:
        from twisted.internet import reactor
    factory = server.DNSServerFactory(authorities=[zone])
    factory.noisy = False
    protocol = dns.DNSDatagramProtocol(factory)
    protocol.noisy = False
    return reactor.listenUDP(0, protocol, interface="127.0.0.1")
