# -*- test-case-name: rustpbx_py.test.test_media_policy -*-
"""
Whether a call's media is anchored on the PBX, and with which settings.

L{policy_for} reads the configuration (C{proxy.media_proxy}, C{codecs},
C{codec_strategy}, latching, C{external_ip}, the RTP port range and
C{rtp_timeout}) with the route's and the trunk's overrides; L{decide} is
the anchoring decision table of C{media_proxy}:

  - C{none}: never; the SDP is relayed byte for byte.
  - C{bypass}: never; the offer towards the callee keeps only the allowed
    codecs (addresses untouched, RTP flows phone to phone), as RustPBX's
    pass-through path rewrites its codec list.
  - C{all}: always.
  - C{nat}: when either party is behind NAT: the caller's SDP names a
    private address, or another address than the one its signalling comes
    from; a callee's registration was NAT-fixed (its binding sends to the
    packet source) or its contact address is private.
  - C{auto}: as C{nat}, and whenever the legs cannot talk directly: the
    offer has no audio codec the callee side allows (transcoding), or SRTP
    is offered on one side only (the callee side gets plain RTP when it is
    not reached over TLS: SDES keys never cross plain signalling, RFC 4568
    section 8.3).

WebRTC legs (C{UDP/TLS/RTP/SAVPF}, or signalling over WS/WSS) are only
anchored by an engine that can terminate them (ICE, DTLS-SRTP): rtpengine
(C{supports_webrtc} on the engine): rtpengine and the built-in relay
(L{rustpbx_py.media.webrtc}).  With an engine that cannot, a call with a
WebRTC leg is never anchored, in any mode: anchoring would break calls that
work phone to phone; the decision says so.  With a capable engine, C{auto}
anchors a WebRTC leg facing a plain RTP one (they cannot talk directly);
NAT is ICE's business on a WebRTC leg.

The route overrides the trunk, which overrides C{[proxy]}: route
C{media_proxy} (the name RustPBX's HTTP router answers with), trunk
C{media_mode} (C{force_transcode} is C{all}, as RustPBX maps it), then
C{proxy.media_proxy}.  The same order holds for the codec list.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

from rustpbx_py.config import KNOWN_CODECS

#: Modes of C{media_proxy} (route) and what a trunk's C{media_mode} means.
MODES = ("none", "bypass", "all", "nat", "auto")
TRUNK_MODES = {"none": "none", "bypass": "bypass", "auto": "auto", "force_transcode": "all"}
#: What RustPBX's default rtp_timeout is (seconds).
DEFAULT_RTP_TIMEOUT = 30.0

#: Address blocks a NAT hides phones in: RFC 1918, RFC 6598 (carrier-grade
#: NAT), link-local, IPv6 unique-local and link-local.  Loopback is not
#: NAT: it is this very host.
_PRIVATE = [
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16", "fc00::/7", "fe80::/10")
]
_WEBRTC_TRANSPORTS = ("WS", "WSS")


@dataclass
class MediaPolicy:
    """What one call's media plane works with (see MEDIA.md)."""

    mode: str
    codecs: List[str]
    strategy: str
    local_ip: str
    external_ip: Optional[str]
    rtp_start_port: int
    rtp_end_port: int
    latching: bool
    probation_packets: int
    rtp_timeout: float
    srtp_b: Optional[bool] = None
    #: The callee side is a browser (WS/WSS): the engine offers it WebRTC.
    webrtc_b: bool = False

    @property
    def advertised_ip(self) -> str:
        """The address anchored SDP names: external_ip, else the local one."""
        return self.external_ip or self.local_ip


@dataclass
class Party:
    """
    One side of a call as the decision sees it.

    @ivar sdp: its SDP (a L{rustpbx_py.sip.sdp.SessionDescription}) if
        known: the caller's offer; a callee's is not known when we decide.
    @ivar source: where its signalling comes from (caller) or goes to
        (callee), (host, port).
    @ivar contact: the host of its Contact / Request-URI, if any.
    @ivar nat: its registration was NAT-fixed (L{rustpbx_py.registrar.Binding.nat}).
    @ivar transport: the signalling transport (UDP, TCP, TLS, WS, WSS).
    @ivar webrtc: known to be a WebRTC endpoint whatever the transport
        (a callee's binding: L{rustpbx_py.registrar.Binding.webrtc}, e.g.
        its user has C{is_support_webrtc}).
    """

    sdp: object = None
    source: Optional[Tuple[str, int]] = None
    contact: Optional[str] = None
    nat: bool = False
    transport: str = "UDP"
    webrtc: bool = False


@dataclass
class Decision:
    """The outcome of L{decide}: anchor or not, and why (for the SIP flow)."""

    mode: str
    anchor: bool
    reason: str
    notes: List[str] = field(default_factory=list)


def is_private(host: Optional[str]) -> bool:
    """Whether C{host} is an address a NAT hides (not loopback, not a name)."""
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    return any(address in net for net in _PRIVATE if net.version == address.version)


def _is_unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


def audio_codecs(sdp) -> List[str]:
    """The config names (pcmu, opus, ...) of the audio codecs an SDP offers,
    telephone-event left out, in offer order."""
    names: List[str] = []
    for m in getattr(sdp, "media", ()):
        if m.media != "audio" or m.port == 0:
            continue
        for _pt, (encoding, _rate, _channels) in m.rtpmap().items():
            name = KNOWN_CODECS.get(encoding.lower())
            if name and name != "telephone-event" and name not in names:
                names.append(name)
    return names


def sdp_addresses(sdp) -> List[str]:
    """The addresses the active streams of an SDP receive on."""
    found = []
    for m in getattr(sdp, "media", ()):
        if m.port == 0:
            continue
        address = sdp.address(m)
        if address and not _is_unspecified(address) and address not in found:
            found.append(address)
    return found


def is_webrtc(party: Party) -> bool:
    """A WebRTC leg: known as one (L{Party.webrtc}), signalling over
    WebSocket, or a DTLS-SRTP profile."""
    if party.webrtc or party.transport.upper() in _WEBRTC_TRANSPORTS:
        return True
    return any("UDP/TLS/RTP" in m.proto.upper() for m in getattr(party.sdp, "media", ()))


def is_srtp(sdp) -> bool:
    """Whether an SDP's audio is SRTP (a SAVP profile or an a=crypto)."""
    for m in getattr(sdp, "media", ()):
        if m.media == "audio" and m.port != 0 and ("SAVP" in m.proto.upper() or m.attribute("crypto") is not None):
            return True
    return False


def caller_behind_nat(party: Party) -> Optional[str]:
    """Why the caller is behind NAT, or None."""
    for address in sdp_addresses(party.sdp):
        if is_private(address):
            return f"caller SDP names private address {address}"
        if party.source is not None and address != party.source[0]:
            return f"caller SDP names {address}, signalling comes from {party.source[0]}"
    return None


def callee_behind_nat(party: Party) -> Optional[str]:
    """Why a callee is behind NAT, or None."""
    if party.nat:
        return f"callee {party.contact or ''} registered from behind NAT".replace("  ", " ")
    if is_private(party.contact):
        return f"callee contact {party.contact} is private"
    return None


def decide(policy: MediaPolicy, caller: Party, callees: Sequence[Party], webrtc: bool = False) -> Decision:
    """
    Anchor this call or not (the table in the module docstring).  All the
    forks of a call share one offer, so one callee that needs the relay
    anchors the call.  C{webrtc}: the engine can terminate WebRTC legs.
    """
    mode = policy.mode
    browsers = [p for p in [caller, *callees] if is_webrtc(p)]
    if mode == "none":
        return Decision(mode, False, "media_proxy none: SDP relayed untouched")
    if mode == "bypass":
        return Decision(mode, False, "media_proxy bypass: codecs filtered, RTP direct")
    if browsers and not webrtc:
        return Decision(mode, False, "WebRTC leg: not anchored (the media engine has no WebRTC legs yet)")
    if mode == "all":
        return Decision(mode, True, "media_proxy all")
    why = None if is_webrtc(caller) else caller_behind_nat(caller)
    if why is None:
        for callee in callees:
            why = None if is_webrtc(callee) else callee_behind_nat(callee)
            if why is not None:
                break
    if why is not None:
        return Decision(mode, True, f"NAT: {why}")
    if mode == "auto":
        if browsers and any(is_webrtc(c) != is_webrtc(caller) for c in callees):
            return Decision(mode, True, "WebRTC on one side only")
        if caller.sdp is not None:
            offered = audio_codecs(caller.sdp)
            allowed = set(policy.codecs) if policy.codecs else None
            if offered and allowed is not None and not allowed.intersection(offered):
                return Decision(mode, True, f"transcoding: caller offers {', '.join(offered)}, callee side allows {', '.join(policy.codecs)}")
            if policy.srtp_b is not None and is_srtp(caller.sdp) != policy.srtp_b:
                return Decision(mode, True, "SRTP on one side only")
    return Decision(mode, False, f"media_proxy {mode}: no NAT{' or codec/SRTP mismatch' if mode == 'auto' else ''} seen")


def effective_mode(proxy, route=None, trunk=None) -> str:
    """route media_proxy > trunk media_mode > proxy.media_proxy."""
    mode = getattr(route, "media_proxy", None)
    if mode:
        return mode
    trunk_mode = getattr(trunk, "media_mode", None)
    if trunk_mode:
        return TRUNK_MODES.get(trunk_mode, trunk_mode)
    return proxy.media_proxy


def policy_for(config, route=None, trunk=None, local_ip: str = "127.0.0.1") -> MediaPolicy:
    """
    The policy of a call routed by C{route} (a RouteConfig or None) to
    C{trunk} (a TrunkConfig or None), from C{config} (a Config).
    C{local_ip} is the address our signalling uses towards the phones
    (never 0.0.0.0): anchored SDP names it when no external_ip is set.
    """
    proxy = config.proxy
    codecs = list(getattr(route, "codecs", None) or getattr(trunk, "codec", None) or proxy.codecs)
    external_ip = getattr(trunk, "external_ip", None) or config.external_ip
    rtp_timeout = getattr(proxy, "rtp_timeout", None)
    if rtp_timeout is None:
        rtp_timeout = getattr(config, "rtp_timeout", DEFAULT_RTP_TIMEOUT)
    srtp = getattr(trunk, "srtp", None)
    return MediaPolicy(
        mode=effective_mode(proxy, route, trunk),
        codecs=codecs,
        strategy=proxy.codec_strategy,
        local_ip=local_ip,
        external_ip=external_ip,
        rtp_start_port=config.rtp_start_port,
        rtp_end_port=config.rtp_end_port,
        latching=proxy.enable_latching,
        probation_packets=proxy.latching_probation_max_packets,
        rtp_timeout=float(rtp_timeout if rtp_timeout is not None else DEFAULT_RTP_TIMEOUT),
        srtp_b=srtp if isinstance(srtp, bool) else None,
    )
