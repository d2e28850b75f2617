# -*- test-case-name: rustpbx_py.test.test_trunks -*-
"""
Tests for L{rustpbx_py.call.trunks}: trunks built from RustPBX-format TOML.
"""

from __future__ import annotations

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from rustpbx_py.call.trunks import TrunkError, TrunkSet, matches_user_prefix
from rustpbx_py.config import parse_config_text
from rustpbx_py.sip.headers import NameAddr
from rustpbx_py.test.fakes import make_request


def trunk_set(toml: str, clock: task.Clock = None) -> TrunkSet:
    """A TrunkSet from the [proxy.trunks.*] tables of a config text."""
    config = parse_config_text("[proxy]\n" + toml)
    return TrunkSet(config.proxy.trunks, clock if clock is not None else task.Clock())


class SourceTests(SynchronousTestCase):
    """L{TrunkSet.for_source}: which trunk a source address belongs to."""

    def setUp(self) -> None:
        self.trunks = trunk_set(
            """
[proxy.trunks.carrier]
dest = "sip:203.0.113.5:5060"
inbound_hosts = ["198.51.100.0/24", "2001:db8:100::/48", "192.0.2.7"]

[proxy.trunks.specific]
dest = "sip:sip.specific.example"
inbound_hosts = ["198.51.100.77", "2001:db8:100::77"]

[proxy.trunks.backup_only]
dest = "sip:sip.other.example:5080"
backup_dest = "[2001:db8:200::1]:5060"

[proxy.trunks.named]
dest = "sip:sip.named.example"
inbound_hosts = ["carrier.example.net"]

[proxy.trunks.outonly]
dest = "sip:192.0.2.50"
direction = "outbound"

[proxy.trunks.off]
dest = "sip:192.0.2.60"
disabled = true
"""
        )

    def test_ipv4_address(self) -> None:
        """An inbound host written as an IPv4 address identifies its trunk."""
        self.assertEqual(self.trunks.for_source("192.0.2.7"), "carrier")

    def test_ipv4_cidr(self) -> None:
        """Any address inside an inbound CIDR identifies its trunk."""
        self.assertEqual(self.trunks.for_source("198.51.100.1"), "carrier")
        self.assertEqual(self.trunks.for_source("198.51.100.254"), "carrier")
        self.assertIsNone(self.trunks.for_source("198.51.101.1"))

    def test_ipv6_cidr_and_address(self) -> None:
        """IPv6 networks and addresses match like IPv4 ones, brackets or not."""
        self.assertEqual(self.trunks.for_source("2001:db8:100::1"), "carrier")
        self.assertEqual(self.trunks.for_source("[2001:db8:100:0::2]"), "carrier")
        self.assertIsNone(self.trunks.for_source("2001:db8:101::1"))

    def test_most_specific_network_wins(self) -> None:
        """An address listed by one trunk beats a CIDR of another trunk."""
        self.assertEqual(self.trunks.for_source("198.51.100.77"), "specific")
        self.assertEqual(self.trunks.for_source("2001:db8:100::77"), "specific")

    def test_dest_and_backup_dest_addresses(self) -> None:
        """The IPs of dest and backup_dest count as inbound hosts (RustPBX
        indexes them so that a carrier's replies and calls are known)."""
        self.assertEqual(self.trunks.for_source("203.0.113.5"), "carrier")
        self.assertEqual(self.trunks.for_source("2001:db8:200::1"), "backup_only")

    def test_ipv4_mapped_ipv6(self) -> None:
        """A dual-stack socket's ::ffff:a.b.c.d address is its IPv4 address."""
        self.assertEqual(self.trunks.for_source("::ffff:192.0.2.7"), "carrier")

    def test_outbound_only_and_disabled_are_never_sources(self) -> None:
        """Traffic from an outbound-only or disabled trunk's address is not
        recognised as trunk traffic."""
        self.assertIsNone(self.trunks.for_source("192.0.2.50"))
        self.assertIsNone(self.trunks.for_source("192.0.2.60"))

    def test_host_names_are_reported_not_matched(self) -> None:
        """Host names in inbound_hosts match nothing until their addresses
        are given (see test_resolve); they are listed in ignored_hosts so
        the service can warn about them."""
        self.assertEqual(self.trunks.ignored_hosts, [("named", "carrier.example.net")])

    def test_garbage_address(self) -> None:
        """Something that is not an address belongs to no trunk."""
        self.assertIsNone(self.trunks.for_source("not-an-ip"))

    def test_user_prefix_filters(self) -> None:
        """Trunks sharing an address are told apart by their incoming
        From/To user prefixes, the longest caller prefix tried first; a
        trunk whose prefix does not fit is skipped."""
        trunks = trunk_set(
            """
[proxy.trunks.generic]
dest = "sip:192.0.2.80"

[proxy.trunks.premium]
dest = "sip:192.0.2.80"
incoming_from_user_prefix = "0049"

[proxy.trunks.regex]
dest = "sip:192.0.2.80"
incoming_to_user_prefix = "^8(00|88)"
"""
        )
        self.assertEqual(trunks.for_source("192.0.2.80", "00491234", "100"), "premium")
        self.assertEqual(trunks.for_source("192.0.2.80", "0033", "800555"), "regex")
        self.assertEqual(trunks.for_source("192.0.2.80", "0033", "100"), "generic")

    def test_matches_user_prefix(self) -> None:
        """RustPBX's prefix test: plain text is a prefix, text with regex
        characters a searched regex, an invalid regex never matches."""
        self.assertTrue(matches_user_prefix("", "anything"))
        self.assertTrue(matches_user_prefix("00", "0049"))
        self.assertFalse(matches_user_prefix("00", "4900"))
        self.assertTrue(matches_user_prefix("^\\+?49", "+4930"))
        self.assertFalse(matches_user_prefix("([", "("))


class DestinationTests(SynchronousTestCase):
    """L{TrunkSet.destination}: parsing dest and backup_dest."""

    def setUp(self) -> None:
        self.trunks = trunk_set(
            """
[proxy.trunks.full]
dest = "sip:sip.provider.com:5080;transport=tcp"
backup_dest = "sip:backup.provider.com"

[proxy.trunks.bare]
dest = "10.0.0.1:5070"

[proxy.trunks.secure]
dest = "sips:secure.provider.com"

[proxy.trunks.forced]
dest = "sip:gw.provider.com;transport=udp"
backup_dest = "sip:gw2.provider.com:5070"
transport = "tls"

[proxy.trunks.v6]
dest = "sip:[2001:db8::5]:5062"
"""
        )

    def test_uri_with_port_and_transport(self) -> None:
        """sip:host:port;transport=tcp gives that transport, host and port."""
        self.assertEqual(self.trunks.destination("full"), ("tcp", "sip.provider.com", 5080))

    def test_bare_host_port(self) -> None:
        """A bare host:port (RustPBX accepts it) is UDP to that address."""
        self.assertEqual(self.trunks.destination("bare"), ("udp", "10.0.0.1", 5070))

    def test_sips_defaults_to_tls_5061(self) -> None:
        """A sips: URI without port or transport is TLS on port 5061."""
        self.assertEqual(self.trunks.destination("secure"), ("tls", "secure.provider.com", 5061))

    def test_trunk_transport_overrides_uri(self) -> None:
        """The trunk's transport setting wins over the URI's parameter and
        applies to backup_dest too."""
        self.assertEqual(self.trunks.destination("forced"), ("tls", "gw.provider.com", 5061))
        self.assertEqual(self.trunks.backup_destination("forced"), ("tls", "gw2.provider.com", 5070))

    def test_ipv6_host_without_brackets(self) -> None:
        """An IPv6 dest gives the bare address, ready for a socket."""
        self.assertEqual(self.trunks.destination("v6"), ("udp", "2001:db8::5", 5062))

    def test_backup_dest(self) -> None:
        """backup_dest is parsed like dest, on its own: dest's transport
        parameter does not carry over to it; destinations() lists dest then
        backup."""
        self.assertEqual(self.trunks.backup_destination("full"), ("udp", "backup.provider.com", 5060))
        self.assertIsNone(self.trunks.backup_destination("bare"))
        self.assertEqual(
            self.trunks.destinations("full"),
            [("tcp", "sip.provider.com", 5080), ("udp", "backup.provider.com", 5060)],
        )

    def test_named_fields(self) -> None:
        """The destination is a named tuple, for readable callers."""
        dest = self.trunks.destination("full")
        self.assertEqual((dest.transport, dest.host, dest.port), ("tcp", "sip.provider.com", 5080))

    def test_unparseable_dest(self) -> None:
        """A dest that is no SIP URI is refused with the trunk's name."""

        class Bad:
            dest = "sip:"

        e = self.assertRaises(TrunkError, TrunkSet, {"broken": Bad()}, task.Clock())
        self.assertIn("broken", str(e))
        self.assertIn("dest", str(e))


class AdmissionTests(SynchronousTestCase):
    """L{TrunkSet.admit}: max_calls and max_cps."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(1000)
        self.trunks = trunk_set(
            """
[proxy.trunks.small]
dest = "sip:192.0.2.1"
max_calls = 2

[proxy.trunks.slow]
dest = "sip:192.0.2.2"
max_cps = 2

[proxy.trunks.free]
dest = "sip:192.0.2.3"
""",
            self.clock,
        )

    def test_max_calls(self) -> None:
        """Two calls in progress fill a max_calls = 2 trunk: the third is
        refused with 503 until one ends."""
        for _ in range(2):
            self.assertIsNone(self.trunks.admit("small"))
            self.trunks.call_started("small")
        self.assertEqual(self.trunks.admit("small"), (503, "Concurrent call limit exceeded (limit: 2)"))
        self.trunks.call_ended("small")
        self.assertIsNone(self.trunks.admit("small"))
        self.assertEqual(self.trunks.active_calls("small"), 1)

    def test_call_ended_never_goes_negative(self) -> None:
        """An extra call_ended cannot give a trunk more room than max_calls."""
        self.trunks.call_ended("small")
        for _ in range(2):
            self.trunks.call_started("small")
        self.assertIsNotNone(self.trunks.admit("small"))

    def test_max_cps_sliding_window(self) -> None:
        """max_cps = 2 admits two calls in any one second; the window
        slides, so a slot frees exactly one second after its call."""
        self.assertIsNone(self.trunks.admit("slow"))
        self.clock.advance(0.5)
        self.assertIsNone(self.trunks.admit("slow"))
        self.assertEqual(self.trunks.admit("slow"), (503, "CPS limit exceeded (limit: 2)"))
        self.clock.advance(0.4)
        self.assertIsNotNone(self.trunks.admit("slow"))
        self.clock.advance(0.1)
        self.assertIsNone(self.trunks.admit("slow"))
        self.assertIsNotNone(self.trunks.admit("slow"))

    def test_refused_attempts_do_not_count(self) -> None:
        """Attempts refused by max_cps use no slot: after the window,
        the trunk takes max_cps calls again."""
        self.trunks.admit("slow")
        self.trunks.admit("slow")
        for _ in range(10):
            self.assertIsNotNone(self.trunks.admit("slow"))
        self.clock.advance(1)
        self.assertIsNone(self.trunks.admit("slow"))
        self.assertIsNone(self.trunks.admit("slow"))

    def test_unlimited(self) -> None:
        """A trunk without limits admits every call."""
        for _ in range(100):
            self.assertIsNone(self.trunks.admit("free"))
            self.trunks.call_started("free")


class DirectionTests(SynchronousTestCase):
    """L{TrunkSet.allows} and L{TrunkSet.usable_outbound}."""

    def setUp(self) -> None:
        self.trunks = trunk_set(
            """
[proxy.trunks.both]
dest = "sip:192.0.2.1"

[proxy.trunks.in]
dest = "sip:192.0.2.2"
direction = "inbound"

[proxy.trunks.out]
dest = "sip:192.0.2.3"
direction = "outbound"

[proxy.trunks.off]
dest = "sip:192.0.2.4"
disabled = true
"""
        )

    def test_bidirectional(self) -> None:
        """A bidirectional trunk (the default) carries calls both ways."""
        self.assertTrue(self.trunks.allows("both", "inbound"))
        self.assertTrue(self.trunks.allows("both", "outbound"))

    def test_inbound_only(self) -> None:
        """An inbound-only trunk cannot be used to send calls out."""
        self.assertTrue(self.trunks.allows("in", "inbound"))
        self.assertFalse(self.trunks.allows("in", "outbound"))
        self.assertFalse(self.trunks.usable_outbound("in"))

    def test_outbound_only(self) -> None:
        """An outbound-only trunk cannot bring calls in."""
        self.assertFalse(self.trunks.allows("out", "inbound"))
        self.assertTrue(self.trunks.usable_outbound("out"))

    def test_disabled_and_unknown_not_usable(self) -> None:
        """Disabled and unknown trunks are not sent calls."""
        self.assertFalse(self.trunks.usable_outbound("off"))
        self.assertFalse(self.trunks.usable_outbound("nope"))


class DidAndCodecTests(SynchronousTestCase):
    """DID lookups, the number pool and the codec list."""

    def setUp(self) -> None:
        self.trunks = trunk_set(
            """
[proxy.trunks.de]
dest = "sip:192.0.2.1"
did_numbers = ["+49 30 1234567", "4930999"]
codec = ["PCMA", "alaw", "g722"]

[proxy.trunks.us]
dest = "sip:192.0.2.2"
did_numbers = ["15550100"]
"""
        )

    def test_trunk_for_did(self) -> None:
        """A DID finds its trunk, whatever punctuation either side uses."""
        self.assertEqual(self.trunks.trunk_for_did("4930999"), "de")
        self.assertEqual(self.trunks.trunk_for_did("+4930999"), "de")
        self.assertEqual(self.trunks.trunk_for_did("49301234567"), "de")
        self.assertEqual(self.trunks.trunk_for_did("+1-555-0100"), "us")
        self.assertIsNone(self.trunks.trunk_for_did("999"))

    def test_pick_did_least_used(self) -> None:
        """The number pool hands out the least-used DID, in turn."""
        picks = [self.trunks.pick_did("de") for _ in range(4)]
        self.assertEqual(picks, ["+49 30 1234567", "4930999", "+49 30 1234567", "4930999"])

    def test_codecs(self) -> None:
        """The codec list is exposed canonical and de-duplicated, in order."""
        self.assertEqual(self.trunks.codecs("de"), ["pcma", "g722"])
        self.assertEqual(self.trunks.codecs("us"), [])


class OutboundRequestTests(SynchronousTestCase):
    """L{TrunkSet.outbound_request}: rewrite_hostport and P-Asserted-Identity."""

    def test_rewrite_hostport(self) -> None:
        """By default the Request-URI, From and To take the dest's
        host:port, and the original request is left alone."""
        trunks = trunk_set(
            """
[proxy.trunks.t]
dest = "sip:gw.provider.com:5080"
"""
        )
        req = make_request(uri="sip:0301234@pbx.example.com", from_uri="sip:1001@pbx.example.com")
        out = trunks.outbound_request("t", req)
        self.assertEqual(out.uri, "sip:0301234@gw.provider.com:5080")
        self.assertEqual(str(NameAddr.parse(out.get("from")).uri), "sip:1001@gw.provider.com:5080")
        self.assertEqual(NameAddr.parse(out.get("from")).tag, "fromtag1")
        self.assertEqual(str(NameAddr.parse(out.get("to")).uri), "sip:0301234@gw.provider.com:5080")
        self.assertEqual(req.uri, "sip:0301234@pbx.example.com")
        self.assertIsNone(out.get("p-asserted-identity"))

    def test_keep_hostport_and_pai(self) -> None:
        """rewrite_hostport = false keeps the URIs; a trunk with a username
        gets a P-Asserted-Identity carrying the original From URI."""
        trunks = trunk_set(
            """
[proxy.trunks.t]
dest = "sip:gw.provider.com"
username = "acct"
password = "secret"
rewrite_hostport = false
"""
        )
        req = make_request(uri="sip:0301234@pbx.example.com", from_uri="sip:1001@pbx.example.com")
        out = trunks.outbound_request("t", req)
        self.assertEqual(out.uri, "sip:0301234@pbx.example.com")
        self.assertEqual(out.get("p-asserted-identity"), "<sip:1001@pbx.example.com>")
