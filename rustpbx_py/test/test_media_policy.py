"""
Tests for L{rustpbx_py.media.policy}: the anchoring decision table of each
C{media_proxy} mode, and the policy built from the configuration with the
route's and trunk's overrides.
"""

from __future__ import annotations

from twisted.trial import unittest

from rustpbx_py.config import parse_config_text
from rustpbx_py.media.policy import Party, decide, effective_mode, is_private, policy_for
from rustpbx_py.sip.sdp import SessionDescription


def sdp(address: str = "203.0.113.5", proto: str = "RTP/AVP", formats: str = "0 8 101", extra: str = "") -> SessionDescription:
    return SessionDescription.parse(
        (
            f"v=0\r\no=- 1 1 IN IP4 {address}\r\ns=-\r\nc=IN IP4 {address}\r\nt=0 0\r\n"
            f"m=audio 4000 {proto} {formats}\r\na=rtpmap:101 telephone-event/8000\r\n{extra}"
        ).encode()
    )


def config(proxy: str = "", top: str = ""):
    return parse_config_text(f"{top}\n[proxy]\n{proxy}\n", "<test>")


PUBLIC_CALLER = Party(sdp("203.0.113.5"), ("203.0.113.5", 5060))
PUBLIC_CALLEE = Party(None, ("198.51.100.7", 5060), "198.51.100.7")
#: SDP names a private address: the phone is behind NAT.
PRIVATE_SDP_CALLER = Party(sdp("192.168.1.20"), ("203.0.113.5", 5060))
#: SDP address public but not where signalling comes from (a NAT that
#: rewrote the source, or an SBC in front of the phone).
MOVED_CALLER = Party(sdp("203.0.113.99"), ("203.0.113.5", 5060))
NAT_BINDING_CALLEE = Party(None, ("198.51.100.7", 5060), "198.51.100.7", nat=True)
PRIVATE_CONTACT_CALLEE = Party(None, ("198.51.100.7", 5060), "10.1.2.3")
WEBRTC_CALLER = Party(sdp("203.0.113.5", "UDP/TLS/RTP/SAVPF"), ("203.0.113.5", 5060))
WS_CALLEE = Party(None, ("198.51.100.7", 443), "198.51.100.7", transport="WSS")
WEBRTC_USER_CALLEE = Party(None, ("198.51.100.7", 5060), "198.51.100.7", webrtc=True)
G722_CALLER = Party(sdp("203.0.113.5", formats="9 101"), ("203.0.113.5", 5060))
SRTP_CALLER = Party(sdp("203.0.113.5", "RTP/SAVP", extra="a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:x\r\n"), ("203.0.113.5", 5060))


class DecisionTableTests(unittest.TestCase):
    """One row per situation, one column per mode: anchored or not."""

    ROWS = [
        # (name, caller, callees, srtp_b, {mode: anchored})
        ("public both", PUBLIC_CALLER, [PUBLIC_CALLEE], None, dict(none=False, bypass=False, all=True, nat=False, auto=False)),
        ("caller SDP private", PRIVATE_SDP_CALLER, [PUBLIC_CALLEE], None, dict(none=False, bypass=False, all=True, nat=True, auto=True)),
        ("caller SDP != source", MOVED_CALLER, [PUBLIC_CALLEE], None, dict(none=False, bypass=False, all=True, nat=True, auto=True)),
        ("callee NAT binding", PUBLIC_CALLER, [NAT_BINDING_CALLEE], None, dict(none=False, bypass=False, all=True, nat=True, auto=True)),
        ("callee private contact", PUBLIC_CALLER, [PUBLIC_CALLEE, PRIVATE_CONTACT_CALLEE], None, dict(none=False, bypass=False, all=True, nat=True, auto=True)),
        ("transcoding needed", G722_CALLER, [PUBLIC_CALLEE], None, dict(none=False, bypass=False, all=True, nat=False, auto=True)),
        ("SRTP caller, plain trunk", SRTP_CALLER, [PUBLIC_CALLEE], False, dict(none=False, bypass=False, all=True, nat=False, auto=True)),
        ("plain caller, SRTP trunk", PUBLIC_CALLER, [PUBLIC_CALLEE], True, dict(none=False, bypass=False, all=True, nat=False, auto=True)),
        ("SRTP both", SRTP_CALLER, [PUBLIC_CALLEE], True, dict(none=False, bypass=False, all=True, nat=False, auto=False)),
        ("WebRTC caller", WEBRTC_CALLER, [PUBLIC_CALLEE], None, dict(none=False, bypass=False, all=False, nat=False, auto=False)),
        ("WebSocket callee", PRIVATE_SDP_CALLER, [WS_CALLEE], None, dict(none=False, bypass=False, all=False, nat=False, auto=False)),
        ("offerless INVITE", Party(None, ("203.0.113.5", 5060)), [PUBLIC_CALLEE], None, dict(none=False, bypass=False, all=True, nat=False, auto=False)),
    ]

    def test_table(self) -> None:
        for name, caller, callees, srtp_b, expected in self.ROWS:
            for mode, anchored in expected.items():
                policy = policy_for(config(f'media_proxy = "{mode}"'))
                policy.srtp_b = srtp_b
                decision = decide(policy, caller, callees)
                self.assertEqual(decision.anchor, anchored, f"{name}, mode {mode}: {decision.reason}")
                self.assertEqual(decision.mode, mode)
                self.assertTrue(decision.reason)

    def test_webrtc_with_a_capable_engine(self) -> None:
        """An engine that terminates WebRTC (rtpengine) anchors a browser
        facing a SIP phone under auto (and all), not two browsers under
        auto, and never looks for NAT on a WebRTC leg (ICE's business)."""
        rows = [
            ("WebRTC caller, SIP callee", WEBRTC_CALLER, [PUBLIC_CALLEE], dict(none=False, bypass=False, all=True, nat=False, auto=True)),
            ("SIP caller, WebSocket callee", PUBLIC_CALLER, [WS_CALLEE], dict(none=False, bypass=False, all=True, nat=False, auto=True)),
            ("browser to browser", WEBRTC_CALLER, [WS_CALLEE], dict(none=False, bypass=False, all=True, nat=False, auto=False)),
            ("NATed browser", Party(sdp("192.168.1.20", "UDP/TLS/RTP/SAVPF"), ("203.0.113.5", 443), transport="WSS"), [WS_CALLEE],
             dict(none=False, bypass=False, all=True, nat=False, auto=False)),
            # a binding known as WebRTC (user is_support_webrtc) over UDP
            ("SIP caller, is_support_webrtc callee", PUBLIC_CALLER, [WEBRTC_USER_CALLEE],
             dict(none=False, bypass=False, all=True, nat=False, auto=True)),
            ("browser to is_support_webrtc callee", WEBRTC_CALLER, [WEBRTC_USER_CALLEE],
             dict(none=False, bypass=False, all=True, nat=False, auto=False)),
        ]
        for name, caller, callees, expected in rows:
            for mode, anchored in expected.items():
                policy = policy_for(config(f'media_proxy = "{mode}"'))
                decision = decide(policy, caller, callees, webrtc=True)
                self.assertEqual(decision.anchor, anchored, f"{name}, mode {mode}: {decision.reason}")

    def test_reasons_name_the_cause(self) -> None:
        policy = policy_for(config('media_proxy = "nat"'))
        self.assertIn("192.168.1.20", decide(policy, PRIVATE_SDP_CALLER, [PUBLIC_CALLEE]).reason)
        self.assertIn("203.0.113.99", decide(policy, MOVED_CALLER, [PUBLIC_CALLEE]).reason)
        self.assertIn("10.1.2.3", decide(policy, PUBLIC_CALLER, [PRIVATE_CONTACT_CALLEE]).reason)
        self.assertIn("WebRTC", decide(policy, WEBRTC_CALLER, [PUBLIC_CALLEE]).reason)
        auto = policy_for(config('media_proxy = "auto"'))
        self.assertIn("g722", decide(auto, G722_CALLER, [PUBLIC_CALLEE]).reason)

    def test_codec_allow_list_of_the_route(self) -> None:
        """Transcoding is judged against the callee side's allow-list."""
        cfg = parse_config_text(
            '[proxy]\nmedia_proxy = "auto"\n[[proxy.routes]]\nname = "r"\ncodecs = ["g722"]\n', "<test>"
        )
        policy = policy_for(cfg, route=cfg.proxy.routes[0])
        self.assertFalse(decide(policy, G722_CALLER, [PUBLIC_CALLEE]).anchor)
        self.assertTrue(decide(policy, PUBLIC_CALLER, [PUBLIC_CALLEE]).anchor)

    def test_hold_address_is_not_nat(self) -> None:
        """c=0.0.0.0 (RFC 2543 hold) says nothing about NAT."""
        policy = policy_for(config('media_proxy = "nat"'))
        self.assertFalse(decide(policy, Party(sdp("0.0.0.0"), ("203.0.113.5", 5060)), [PUBLIC_CALLEE]).anchor)

    def test_loopback_is_not_nat(self) -> None:
        policy = policy_for(config('media_proxy = "nat"'))
        caller = Party(sdp("127.0.0.1"), ("127.0.0.1", 5080))
        self.assertFalse(decide(policy, caller, [Party(None, ("127.0.0.1", 5090), "127.0.0.1")]).anchor)


class PrivateAddressTests(unittest.TestCase):
    def test_blocks(self) -> None:
        for host in ("10.0.0.1", "172.16.5.4", "172.31.255.255", "192.168.0.1", "100.64.0.1", "169.254.1.1", "fd00::1", "fe80::1", "[fd00::2]"):
            self.assertTrue(is_private(host), host)
        for host in ("127.0.0.1", "::1", "8.8.8.8", "172.32.0.1", "192.0.2.1", "example.com", "", None):
            self.assertFalse(is_private(host), host)


class PolicyTests(unittest.TestCase):
    """The policy a call gets from the config, the route and the trunk."""

    def test_proxy_settings(self) -> None:
        cfg = config(
            'media_proxy = "all"\ncodecs = ["pcma", "pcmu"]\ncodec_strategy = "quality"\n'
            "enable_latching = false\nlatching_probation_max_packets = 9\n",
            'external_ip = "203.0.113.1"\nrtp_start_port = 20000\nrtp_end_port = 20100\n',
        )
        policy = policy_for(cfg, local_ip="192.0.2.1")
        self.assertEqual(policy.mode, "all")
        self.assertEqual(policy.codecs, ["pcma", "pcmu"])
        self.assertEqual(policy.strategy, "quality")
        self.assertFalse(policy.latching)
        self.assertEqual(policy.probation_packets, 9)
        self.assertEqual((policy.rtp_start_port, policy.rtp_end_port), (20000, 20100))
        self.assertEqual(policy.external_ip, "203.0.113.1")
        self.assertEqual(policy.local_ip, "192.0.2.1")
        self.assertEqual(policy.advertised_ip, "203.0.113.1")
        self.assertEqual(policy.rtp_timeout, 30.0)

    def test_defaults(self) -> None:
        policy = policy_for(config(), local_ip="192.0.2.1")
        self.assertEqual(policy.mode, "auto")
        self.assertEqual(policy.codecs, ["opus", "pcmu", "pcma", "g729"])
        self.assertEqual(policy.strategy, "performance")
        self.assertTrue(policy.latching)
        self.assertEqual(policy.probation_packets, 6)
        self.assertEqual(policy.advertised_ip, "192.0.2.1")
        self.assertIsNone(policy.srtp_b)

    def test_overrides(self) -> None:
        """route media_proxy > trunk media_mode > proxy.media_proxy; route
        codecs > trunk codec > proxy codecs; trunk external_ip wins."""
        cfg = parse_config_text(
            '[proxy]\nmedia_proxy = "none"\ncodecs = ["pcmu"]\n'
            '[proxy.trunks.t]\ndest = "sip:198.51.100.7"\nmedia_mode = "force_transcode"\ncodec = ["pcma"]\nexternal_ip = "100.64.10.1"\n'
            '[[proxy.routes]]\nname = "r"\nmedia_proxy = "bypass"\ncodecs = ["g722"]\n'
            '[[proxy.routes]]\nname = "plain"\n',
            "<test>",
        )
        trunk = cfg.proxy.trunks["t"]
        route, plain = cfg.proxy.routes
        self.assertEqual(policy_for(cfg).mode, "none")
        self.assertEqual(policy_for(cfg, plain, trunk).mode, "all")
        self.assertEqual(policy_for(cfg, plain, trunk).codecs, ["pcma"])
        self.assertEqual(policy_for(cfg, plain, trunk).advertised_ip, "100.64.10.1")
        self.assertEqual(policy_for(cfg, route, trunk).mode, "bypass")
        self.assertEqual(policy_for(cfg, route, trunk).codecs, ["g722"])
        self.assertEqual(policy_for(cfg, plain, None).codecs, ["pcmu"])

    def test_trunk_modes(self) -> None:
        proxy = config('media_proxy = "nat"').proxy
        for trunk_mode, mode in (("none", "none"), ("bypass", "bypass"), ("auto", "auto"), ("force_transcode", "all"), (None, "nat")):
            trunk = type("T", (), {"media_mode": trunk_mode})()
            self.assertEqual(effective_mode(proxy, None, trunk), mode)

    def test_route_key_validated(self) -> None:
        from rustpbx_py.config import ConfigError

        with self.assertRaises(ConfigError) as e:
            parse_config_text('[proxy]\n[[proxy.routes]]\nname = "r"\nmedia_proxy = "sometimes"\n', "<test>")
        self.assertIn("media_proxy", str(e.exception))
