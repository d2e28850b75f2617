# -*- test-case-name: rustpbx_py.test.test_webrtc -*-
"""
The WebRTC leg of the built-in relay: what a browser needs on the path
between itself and the PBX, so that the other leg stays plain RTP (or
SDES SRTP) and the relay in between sees RTP.

A browser speaks C{UDP/TLS/RTP/SAVPF}: ICE connectivity checks (STUN),
then a DTLS handshake, then SRTP and SRTCP, all on one port (BUNDLE,
rtcp-mux).  L{WebRtcTransport} plugs into a relay L{Leg}'s hooks
(L{rustpbx_py.media.relay}) and demultiplexes what arrives by its first
byte (RFC 7983): 0-3 STUN (answered by the ICE-lite responder, which also
picks where the leg's media goes), 20-63 DTLS (the handshake), 128-191
SRTP, or SRTCP when the second byte is an RTCP packet type (RFC 5761
section 4).  Until DTLS has produced keys nothing is relayed either way.

L{write_media} and L{write_session} write the browser-facing SDP:
C{a=ice-lite}, our ufrag/pwd, one host candidate (the PBX's advertised
address: C{external_ip} when set), C{a=fingerprint}, C{a=setup},
C{a=rtcp-mux}, C{a=mid}, C{a=group:BUNDLE} and C{a=ssrc:<n>
cname:<rtc_cname>}; L{strip_webrtc} removes all that from what the other
leg gets.
"""

from __future__ import annotations

import secrets
import struct
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from twisted.logger import Logger

from rustpbx_py.media import MediaError
from rustpbx_py.media.dtls import Certificate, DtlsError, DtlsSrtp, answer_setup, certificate, is_dtls
from rustpbx_py.media.stun import IceLiteResponder, is_stun
from rustpbx_py.media.relay import map_rtcp
from rustpbx_py.media.rtp import report_blocks
from rustpbx_py.sip.sdp import MediaDescription, SessionDescription

__all__ = ["WEBRTC_PROTO", "is_webrtc_media", "RemoteWebRtc", "remote_params", "WebRtcTransport",
           "write_media", "write_session", "strip_webrtc"]

log = Logger()

WEBRTC_PROTO = "UDP/TLS/RTP/SAVPF"
_WEBRTC_PROTOS = frozenset({"UDP/TLS/RTP/SAVPF", "UDP/TLS/RTP/SAVP"})

#: Media-level lines that concern only the browser <-> PBX path.
WEBRTC_MEDIA_ATTRIBUTES = ("candidate", "ice-ufrag", "ice-pwd", "ice-options", "ice-lite",
                           "end-of-candidates", "remote-candidates", "ice-mismatch",
                           "fingerprint", "setup", "connection", "tls-id", "mid", "ssrc",
                           "ssrc-group", "msid", "extmap", "extmap-allow-mixed", "rtcp-mux",
                           "rtcp-mux-only", "rtcp-rsize", "sctpmap", "sctp-port")
#: Session-level lines likewise.
WEBRTC_SESSION_ATTRIBUTES = ("ice-lite", "ice-ufrag", "ice-pwd", "ice-options", "fingerprint",
                             "setup", "group", "msid-semantic", "extmap-allow-mixed", "tls-id")


def is_webrtc_media(m: MediaDescription) -> bool:
    """Whether an m-line is DTLS-SRTP (RFC 5764): a WebRTC leg."""
    return m.proto.upper() in _WEBRTC_PROTOS


@dataclass
class RemoteWebRtc:
    """What a browser's SDP says about its end of one m-line."""

    ufrag: Optional[str]
    pwd: Optional[str]
    fingerprints: List[str]
    setup: Optional[str]
    mid: Optional[str]


def _value(sdp: SessionDescription, m: MediaDescription, name: str) -> Optional[str]:
    value = m.attribute(name)
    return value if value is not None else sdp.attribute(name)


def remote_params(sdp: SessionDescription, m: MediaDescription) -> RemoteWebRtc:
    """
    The browser's ICE credentials, fingerprints, setup and mid for C{m}
    (media level first, then session level, where Firefox puts some).
    No fingerprint -> MediaError(488): DTLS-SRTP cannot be keyed.
    """
    fingerprints = [v for v in m.attributes("fingerprint") if v] or \
        [v for v in sdp.attributes("fingerprint") if v]
    if not fingerprints:
        raise MediaError(488, f"{m.media} stream is {m.proto} without a=fingerprint (RFC 5763)")
    return RemoteWebRtc(_value(sdp, m, "ice-ufrag"), _value(sdp, m, "ice-pwd"), fingerprints,
                        _value(sdp, m, "setup"), m.attribute("mid"))


def _is_rtcp(data: bytes) -> bool:
    """RFC 5761 section 4: RTCP packet types 192-223 where RTP has M+PT."""
    return 191 < data[1] < 224


class WebRtcTransport:
    """
    ICE-lite + DTLS-SRTP on one relay leg (one component: rtcp-mux).

    @ivar ice: the STUN responder (our ufrag/pwd).
    @ivar dtls: the DTLS-SRTP association, once the browser's SDP is known.
    @ivar setup: our a=setup (C{actpass} in an offer until the answer decides).
    @ivar ssrc: the SSRC announced to the browser; what the relay sends it
        is rewritten to it (the other leg's SSRC is unknown when the SDP is
        written, and browsers demultiplex on the signalled one).
    @ivar dropped: datagrams refused, by reason.
    """

    def __init__(self, clock, cert: Optional[Certificate] = None) -> None:
        self.clock = clock
        self.cert = cert or certificate()
        self.ice = IceLiteResponder()
        self.dtls: Optional[DtlsSrtp] = None
        self.setup = "actpass"
        self.ssrc = secrets.randbits(32) or 1
        self.leg = None
        self.remote: Optional[RemoteWebRtc] = None
        self.dropped = {"unselected": 0, "not-connected": 0, "unknown": 0}

    def fingerprint(self) -> str:
        return self.cert.fingerprint()

    def configure(self, remote: RemoteWebRtc, browser_offered: bool) -> None:
        """
        The browser's SDP for this leg: its credentials, and (once its
        fingerprint and setup are known) the DTLS association.  When the
        browser offered, our setup answers its (L{answer_setup}); when it
        answered our actpass, its choice decides ours.  A re-offer with the
        same fingerprints keeps the association (and the SRTP state); one
        with a new ufrag/pwd is an ICE restart (L{IceLiteResponder.restart}:
        new credentials of ours, media kept on the selected pair until a
        new check nominates one).
        """
        if browser_offered:
            setup = answer_setup(remote.setup)
        else:
            theirs = (remote.setup or "active").strip().lower()
            if theirs not in ("active", "passive"):
                raise MediaError(488, f"a=setup:{theirs} in an answer: expected active or passive")
            setup = "passive" if theirs == "active" else "active"
        if browser_offered and self.remote is not None and remote.ufrag \
                and (remote.ufrag, remote.pwd) != (self.remote.ufrag, self.remote.pwd):
            # ICE restart: our answer must carry new credentials too
            self.ice.restart(remote.ufrag)
        elif remote.ufrag:
            self.ice.remote_ufrag = remote.ufrag
        same = (self.dtls is not None and self.remote is not None
                and self.remote.fingerprints == remote.fingerprints and setup == self.setup)
        self.remote = remote
        self.setup = setup
        if same:
            return
        if self.dtls is not None:
            self.dtls.close()
        try:
            self.dtls = DtlsSrtp("client" if setup == "active" else "server", remote.fingerprints,
                                 self._send_dtls, self.clock, cert=self.cert)
        except DtlsError as e:
            raise MediaError(488, str(e)) from None
        if self.dtls.role == "client" and self.ice.selected is not None:
            self.dtls.start()

    def install(self, leg) -> None:
        """Take over C{leg}'s hooks (relay.Leg): no latching, ICE decides; RTCP on the RTP port."""
        self.leg = leg
        leg.latch.enabled = False
        self._point(leg)
        leg.inbound = self.incoming
        leg.outbound = self.protect
        leg.outbound_rtcp = self.protect_rtcp
        leg.inbound_rtcp = None
        leg.sendto_rtcp = leg.sendto
        # what the relay sends this leg carries the SSRC its SDP announces
        leg.ssrc = struct.pack("!I", self.ssrc)

    def _point(self, leg) -> None:
        """Send the leg's RTP and RTCP to the ICE-selected address (shown
        as the leg's remote address in the stats: with latching off the
        latch only records it)."""
        selected = self.ice.selected
        leg.latch.target = leg.rtcp_latch.target = selected
        leg.latch.latched = selected

    def close(self) -> None:
        if self.dtls is not None:
            self.dtls.close()

    # -- packets -----------------------------------------------------------

    def incoming(self, data: bytes, source) -> Optional[bytes]:
        """Everything the browser sends on the leg's port -> RTP for the relay, or None."""
        first = data[0]
        if first < 4 and is_stun(data):
            response = self.ice.handle(data, source)
            if response is not None:
                self._sendto(response, source)
                if self.leg.latch.target != self.ice.selected:
                    self._point(self.leg)
                if self.dtls is not None and self.dtls.state == "new" and self.dtls.role == "client":
                    self.dtls.start()
            return None
        if source != self.ice.selected:
            self.dropped["unselected"] += 1
            return None
        if is_dtls(data):
            if self.dtls is not None:
                self.dtls.datagram_received(data)
            return None
        if 127 < first < 192:
            dtls = self.dtls
            if dtls is None or dtls.inbound is None:
                self.dropped["not-connected"] += 1
                return None
            if _is_rtcp(data):
                rtcp = dtls.inbound.unprotect_rtcp(data)
                if rtcp is not None:
                    self._relay_rtcp(rtcp)
                return None
            return dtls.inbound.unprotect(data)
        self.dropped["unknown"] += 1
        return None

    def protect(self, rtp: bytes) -> Optional[bytes]:
        """RTP for the browser -> SRTP with our SSRC (None before DTLS is connected)."""
        dtls = self.dtls
        if dtls is None or dtls.outbound is None or len(rtp) < 12:
            return None
        return dtls.outbound.protect(rtp[:8] + struct.pack("!I", self.ssrc) + rtp[12:])

    def protect_rtcp(self, rtcp: bytes) -> Optional[bytes]:
        """RTCP for the browser -> SRTCP (the first sender SSRC made ours, like the RTP)."""
        dtls = self.dtls
        if dtls is None or dtls.outbound is None or len(rtcp) < 8:
            return None
        if rtcp[1] in (200, 201):  # SR/RR: the sender is the stream we send
            rtcp = rtcp[:4] + struct.pack("!I", self.ssrc) + rtcp[8:]
        return dtls.outbound.protect_rtcp(rtcp)

    def _sendto(self, data: bytes, target) -> None:
        sendto = self.leg.sendto if self.leg is not None else None
        if sendto is None or target is None:
            return
        try:
            sendto(data, target)
        except OSError:
            self.leg.send_errors += 1

    def _send_dtls(self, data: bytes) -> None:
        self._sendto(data, self.ice.selected)

    def _relay_rtcp(self, rtcp: bytes) -> None:
        """Muxed RTCP from the browser, decrypted: read its reports and relay it as the RTCP socket would."""
        leg = self.leg
        leg.rtcp_in += 1
        try:
            for block in report_blocks(rtcp):
                leg.sent.report(block)
        except Exception:
            pass
        peer = leg.peer
        target = peer.rtcp_latch.target if peer is not None else None
        if target is None or not leg.rtcp_relayed:
            return
        if peer.ssrc is not None or leg.ssrc is not None:
            rtcp = map_rtcp(rtcp, leg, peer)
        if peer.outbound_rtcp is not None:
            rtcp = peer.outbound_rtcp(rtcp)
            if rtcp is None:
                return
        try:
            peer.sendto_rtcp(rtcp, target)
        except OSError:
            peer.send_errors += 1
            return
        peer.rtcp_out += 1


# -- SDP ---------------------------------------------------------------------


def strip_webrtc(m: MediaDescription) -> None:
    """Remove the browser-path lines from an m-line going to a non-WebRTC leg."""
    for name in WEBRTC_MEDIA_ATTRIBUTES:
        m.remove_attribute(name)


def strip_webrtc_session(sdp: SessionDescription) -> None:
    for name in WEBRTC_SESSION_ATTRIBUTES:
        sdp.remove_attribute(name)


def write_media(m: MediaDescription, transport: WebRtcTransport, address: str, port: int,
                mid: str, cname: str) -> None:
    """
    Make C{m} (already naming our C{port} and codecs) the browser-facing
    m-line: UDP/TLS/RTP/SAVPF with our ICE-lite credentials, one host
    candidate at C{address}:C{port}, our fingerprint and setup, rtcp-mux,
    C{mid} and the SSRC we send with and its CNAME.
    """
    strip_webrtc(m)
    m.remove_attribute("rtcp")
    m.remove_attribute("crypto")
    m.proto = WEBRTC_PROTO
    m.port = port
    family = "IP6" if ":" in address else "IP4"
    m.add_attribute("rtcp", f"{port} IN {family} {address}")
    m.add_attribute("ice-ufrag", transport.ice.ufrag)
    m.add_attribute("ice-pwd", transport.ice.pwd)
    m.add_attribute("fingerprint", transport.fingerprint())
    m.add_attribute("setup", transport.setup)
    m.add_attribute("mid", mid)
    m.add_attribute("rtcp-mux")
    # RFC 8445 5.1.2.1 priority for a host candidate, component 1
    m.add_attribute("candidate", f"1 1 udp 2130706431 {address} {port} typ host")
    m.add_attribute("end-of-candidates")
    m.add_attribute("ssrc", f"{transport.ssrc} cname:{cname}")


def write_session(sdp: SessionDescription, mids: List[str]) -> None:
    """Session level of a browser-facing SDP: ICE-lite and one BUNDLE group of the accepted mids."""
    strip_webrtc_session(sdp)
    sdp.add_attribute("ice-lite")
    if mids:
        sdp.add_attribute("group", "BUNDLE " + " ".join(mids))
