# -*- test-case-name: rustpbx_py.test.test_media_session -*-
"""
The built-in media engine: L{BuiltinEngine} hands out one L{RelaySession}
per anchored call, and the session turns every SDP crossing the B2BUA
into the SDP the other leg gets (RFC 3264 offer/answer, the model of
rtpengine's offer/answer/delete).

On an offer from leg X, each m-line of the offer gets two port pairs, one
facing X and one facing Y (the other leg); the offer sent to Y names the
PBX address and the Y-facing ports, and X's own address becomes where
the X-facing side sends (its latch's SDP address).  The answer from Y is
rewritten the same way for X.  Re-offers from either leg reuse the pairs
of the streams already there (and re-open latching); a stream offered
with port 0, or with a transport the relay cannot carry, stays at port 0
on both sides.  Direction attributes (hold) pass through unchanged.

Nothing here imports L{rustpbx_py.call}: the B2BUA drives the session
through L{IMediaSession}.
"""

from __future__ import annotations

import ipaddress
import secrets
from typing import Callable, Optional

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from rustpbx_py.interfaces import IMediaEngine, IMediaSession
from rustpbx_py.media import MediaError
from rustpbx_py.media.codecs import AnswerPlan, OfferPlan, choose_answer, codec_by_name, plan_offer, set_codecs
from rustpbx_py.media.latching import Address
from rustpbx_py.media.poller import RtpPoller
from rustpbx_py.media.ports import PortAllocator
from rustpbx_py.media.relay import Leg, pair_legs
from rustpbx_py.media.srtp import DEFAULT_SUITE, SdesKeys, select_crypto, srtp_session
from rustpbx_py.media.translate import Translation
from rustpbx_py.media.webrtc import (WEBRTC_PROTO, WebRtcTransport, is_webrtc_media, remote_params,
                                     strip_webrtc, strip_webrtc_session, write_media, write_session)
from rustpbx_py.sip.sdp import Connection, MediaDescription, Origin, SessionDescription

log = Logger()

LEGS = ("a", "b")
OTHER = {"a": "b", "b": "a"}

# Transports the relay carries: RTP profiles, SRTP ones keyed by SDES
# (a=crypto); DTLS-SRTP (UDP/TLS/RTP/SAVPF, audio) gets a WebRTC leg
# (rustpbx_py.media.webrtc).
RTP_PROTOS = frozenset({"RTP/AVP", "RTP/AVPF", "RTP/SAVP", "RTP/SAVPF"})
SECURE_PROTOS = frozenset({"RTP/SAVP", "RTP/SAVPF"})

# ICE and RTCP multiplexing concern the path between a phone and the PBX:
# the PBX answers without them (the relay uses plain RTP/RTCP port pairs),
# and what one leg offered must not reach the other leg.
ICE_ATTRIBUTES = ("candidate", "ice-ufrag", "ice-pwd", "ice-options", "ice-lite",
                  "end-of-candidates", "remote-candidates", "ice-mismatch",
                  "rtcp-mux", "rtcp-mux-only", "rtcp-rsize")

UNSPECIFIED = frozenset({"0.0.0.0", "::"})


def _ip_literal(address: Optional[str]) -> Optional[str]:
    """C{address} when it is an IP literal a relay can send to, else None
    (absent, C{0.0.0.0} hold, a host name)."""
    if not address or address in UNSPECIFIED:
        return None
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return None
    return address


def _held(sdp: SessionDescription, m: MediaDescription) -> bool:
    """Whether C{m}'s address is the RFC 2543 hold address (0.0.0.0 / ::)."""
    return sdp.address(m) in UNSPECIFIED


def _rtcp_address(sdp: SessionDescription, m: MediaDescription, rtp: Optional[Address]) -> Optional[Address]:
    """Where the party wants RTCP: C{a=rtcp} (RFC 3605) else RTP port + 1."""
    value = m.attribute("rtcp")
    if value:
        parts = value.split()
        try:
            port = int(parts[0])
        except ValueError:
            port = None
        if port is not None:
            host = _ip_literal(parts[3]) if len(parts) >= 4 else (rtp[0] if rtp else None)
            return (host, port) if host else None
    if rtp is None:
        return None
    return (rtp[0], rtp[1] + 1)


class Stream:
    """
    One m-line of the call: the relay leg facing each party, or nothing
    when the stream is refused (port 0).
    """

    __slots__ = ("index", "media", "sides", "refused", "codec", "direction", "proto",
                 "secure", "remote_keys", "local_keys", "installed", "plan", "offerer",
                 "answer_plan", "webrtc", "mid")

    def __init__(self, index: int, media: str) -> None:
        self.index = index
        self.media = media
        self.sides: dict[str, Leg] = {}
        self.refused = True
        self.codec: dict[str, Optional[str]] = {"a": None, "b": None}
        self.direction: dict[str, str] = {"a": "sendrecv", "b": "sendrecv"}
        # per leg: the transport it uses, and its SDES keys (its own, which
        # we unprotect with; ours, which we protect what we send it with)
        self.proto: dict[str, Optional[str]] = {"a": None, "b": None}
        self.secure: dict[str, Optional[bool]] = {"a": None, "b": None}
        self.remote_keys: dict[str, Optional[SdesKeys]] = {"a": None, "b": None}
        self.local_keys: dict[str, Optional[SdesKeys]] = {"a": None, "b": None}
        self.installed: dict[str, tuple] = {"a": (None, None), "b": (None, None)}
        # codecs (audio streams): the last offer's plan, who made it, and
        # what the answer settled
        self.plan: Optional[OfferPlan] = None
        self.offerer: Optional[str] = None
        self.answer_plan: Optional[AnswerPlan] = None
        # per leg: its ICE-lite/DTLS-SRTP transport when it is a browser,
        # and the a=mid the browser-facing SDP uses
        self.webrtc: dict[str, Optional[WebRtcTransport]] = {"a": None, "b": None}
        self.mid: Optional[str] = None

    @property
    def allocated(self) -> bool:
        return bool(self.sides)


@implementer(IMediaSession)
class RelaySession:
    """
    One anchored call on the built-in relay.

    @ivar on_timeout: set by the B2BUA; called once when a leg expected to
        send RTP (the call not on hold) has sent none for the policy's
        C{rtp_timeout}.
    @ivar timed_out: which leg went silent (C{"a"}/C{"b"}), once it did.
    """

    def __init__(self, engine: "BuiltinEngine", call_id: str, policy) -> None:
        self.engine = engine
        self.call_id = call_id
        self.policy = policy
        self.address = policy.external_ip or policy.local_ip
        self.addrtype = "IP6" if ":" in self.address else "IP4"
        self.streams: list[Stream] = []
        self.pending: Optional[str] = None          # the leg whose offer awaits an answer
        self.origins: dict[str, Origin] = {}
        self.sent_bodies: dict[str, bytes] = {}
        # per leg, when its last offer was a browser's: each m-line's (proto, mid)
        self.browser_lines: dict[str, list] = {}
        self.on_timeout: Optional[Callable[[], None]] = None
        self.timed_out: Optional[str] = None
        self.closed = False
        self._final: Optional[dict] = None
        self._watch = None
        self._interval = 1.0
        self._last = {"a": 0, "b": 0}
        self._active = {"a": 0.0, "b": 0.0}

    # -- IMediaSession -------------------------------------------------

    def offer(self, leg: str, sdp: SessionDescription, source) -> defer.Deferred:
        return self._call(self._offer, leg, sdp)

    def answer(self, leg: str, sdp: SessionDescription, source) -> defer.Deferred:
        return self._call(self._answer, leg, sdp)

    def _call(self, method, leg: str, sdp: SessionDescription) -> defer.Deferred:
        if leg not in OTHER:
            return defer.fail(ValueError(f"leg must be 'a' or 'b', not {leg!r}"))
        if self.closed:
            return defer.fail(MediaError(503, "media session already closed"))
        try:
            return defer.succeed(method(leg, sdp))
        except MediaError as e:
            return defer.fail(e)

    def _offer(self, leg: str, sdp: SessionDescription) -> SessionDescription:
        """
        Three passes, so that an offer that fails (488, 503) leaves the
        session as it was and keeps no new port: decide what each stream
        needs (what can be refused is found here), bind the ports of the
        streams new in this offer, then apply.
        """
        other = OTHER[leg]
        decisions: list = []
        for index, m in enumerate(sdp.media):
            webrtc = is_webrtc_media(m) and m.media == "audio"
            if m.port == 0 or (m.proto not in RTP_PROTOS and not webrtc):
                decisions.append(None)
                continue
            remote = remote_params(sdp, m) if webrtc else None   # 488 without a=fingerprint
            keys = None
            if m.proto in SECURE_PROTOS:
                keys = select_crypto(m.attributes("crypto"))
                if keys is None:
                    raise MediaError(488, f"{m.media} stream {index} is {m.proto} without an a=crypto "
                                          "line the relay can use (SDES; DTLS-SRTP needs WebRTC)")
            plan = None
            if m.media == "audio":
                plan = plan_offer(m, list(self.policy.codecs), self.policy.strategy, _transcodable())
            decisions.append((keys, plan, remote))
        if not any(decisions):
            raise MediaError(488, "no RTP stream the relay can carry in the offer")
        bound: dict[int, dict[str, Leg]] = {}
        try:
            for index, decision in enumerate(decisions):
                if decision is not None and not (index < len(self.streams)
                                                 and self.streams[index].allocated):
                    bound[index] = self._bind()
        except MediaError:
            for sides in bound.values():
                for side in sides.values():
                    side.pair.release()
            raise
        out = sdp.copy()
        if any(is_webrtc_media(m) for m in sdp.media):
            self.browser_lines[leg] = [(m.proto, m.attribute("mid")) for m in sdp.media]
        else:
            self.browser_lines.pop(leg, None)
        for index, m in enumerate(sdp.media):
            if index == len(self.streams):
                self.streams.append(Stream(index, m.media))
            stream = self.streams[index]
            target = out.media[index]
            decision = decisions[index]
            if decision is None:
                stream.refused = True
                target.port = 0
                if leg in self.browser_lines:   # a browser's refused line, to a phone
                    strip_webrtc(target)
                    if is_webrtc_media(target):
                        target.proto = "RTP/AVP"
                continue
            if index in bound:
                stream.sides = bound[index]
            keys, plan, remote = decision
            self._webrtc_offer(stream, leg, other, remote, index)
            self._srtp_offer(stream, leg, m, target, keys)
            if plan is not None:
                set_codecs(target, plan.offer)
                stream.plan = plan
                stream.offerer = leg
            stream.refused = False
            self._take_remote(stream, leg, sdp, m)
            self._write_stream(stream, leg, other, target, sdp, m)
        self._rewrite_session(out, sdp, other)
        self.pending = leg
        return out

    def _answer(self, leg: str, sdp: SessionDescription) -> SessionDescription:
        other = OTHER[leg]
        out = sdp.copy()
        for index, m in enumerate(sdp.media):
            target = out.media[index]
            if index >= len(self.streams):
                # more m-lines in the answer than were offered: refuse them
                target.port = 0
                continue
            stream = self.streams[index]
            if m.port == 0 or stream.refused or not stream.allocated:
                stream.refused = True
                target.port = 0
                self._browser_refused(target, other, index)
                continue
            self._webrtc_answer(stream, leg, sdp, m)
            self._srtp_answer(stream, leg, m, target)
            self._take_remote(stream, leg, sdp, m)
            self._answer_codecs(stream, leg, m, target)
            self._write_stream(stream, leg, other, target, sdp, m)
        self._rewrite_session(out, sdp, other)
        self.pending = None
        self._start_watch()
        return out

    def stats(self) -> dict:
        if self._final is not None:
            return self._final
        figures = {}
        stream = self._main_stream()
        for name in LEGS:
            if stream is None:
                figures[name] = {"codec": None, "local": None, "remote": None,
                                 "in": _zero(), "out": _zero(), "dropped": 0}
                continue
            side = stream.sides[name]
            leg_figures = side.figures()
            leg_figures["codec"] = stream.codec[name]
            leg_figures["dropped"] = side.latch.dropped
            figures[name] = leg_figures
        if self.timed_out is not None:
            figures["timeout"] = self.timed_out
        return figures

    def close(self) -> defer.Deferred:
        if not self.closed:
            self._final = self.stats()
            self.closed = True
            if self._watch is not None and self._watch.active():
                self._watch.cancel()
            self._watch = None
            for stream in self.streams:
                for transport in stream.webrtc.values():
                    if transport is not None:
                        transport.close()
                for side in stream.sides.values():
                    if side.pair is not None:
                        side.pair.release()
            self.engine.sessions.discard(self)
        return defer.succeed(self._final)

    # -- the streams ---------------------------------------------------

    def _bind(self) -> dict[str, Leg]:
        """A relay leg facing each party, each on a port pair of the
        policy's range; on a full range, nothing stays bound."""
        policy = self.policy
        allocator = self.engine.allocator(policy.rtp_start_port, policy.rtp_end_port)
        interface = self.engine.bind_address or policy.local_ip
        sides = {name: Leg(name, policy.latching, policy.probation_packets) for name in LEGS}
        bound = []
        try:
            for name in LEGS:
                pair = allocator.allocate(sides[name].protocols, interface)
                bound.append(pair)
                sides[name].bind(pair, (self.address, pair.rtp_port))
        except MediaError:
            for pair in bound:
                pair.release()
            raise
        for side in sides.values():
            side.ssrc = (secrets.randbits(32) or 1).to_bytes(4, "big")
        pair_legs(sides["a"], sides["b"])
        return sides

    def _take_remote(self, stream: Stream, leg: str, sdp: SessionDescription,
                     m: MediaDescription) -> None:
        """C{leg} described its end of C{stream} in C{m}: where to send
        it, re-opening the latch (a re-INVITE may come from elsewhere)."""
        side = stream.sides[leg]
        host = _ip_literal(sdp.address(m))
        rtp = (host, m.port) if host else None
        side.latch.reopen(rtp)
        side.rtcp_latch.reopen(_rtcp_address(sdp, m, rtp))
        # RFC 2543 hold (c=0.0.0.0) says inactive without the attribute
        stream.direction[leg] = sdp.direction_of(m) if rtp is not None or not _held(sdp, m) \
            else "inactive"
        rtpmap = m.rtpmap()
        rates = {pt: rate for pt, (encoding, rate, _) in rtpmap.items()
                 if encoding.lower() not in ("telephone-event", "cn")}
        side.received.rates = rates
        first = next((pt for pt in m.payload_types() if pt in rates), None)
        if first is not None:
            stream.codec[leg] = rtpmap[first][0].lower()
            side.received.jitter_rate = rates[first]
            side.sent.jitter_rate = rates[first]

    def _write_stream(self, stream: Stream, leg: str, other: str, target: MediaDescription,
                      sdp: SessionDescription, m: MediaDescription) -> None:
        """
        What an offer and an answer both end a stream with, once its
        remote and codecs are taken: C{target} (what C{other} gets) names
        the relay's side for C{other}, carries the WebRTC attributes that
        leg needs, and the stream's SRTP contexts follow the keys now known.
        """
        self._rewrite(target, stream.sides[other])
        self._webrtc_write(stream, leg, other, target, sdp, m)
        if stream.webrtc[other] is None:
            self._write_ssrc(target, stream.sides[other])
        self._install_srtp(stream)

    def _write_ssrc(self, m: MediaDescription, side: Leg) -> None:
        """
        C{m} (what C{side}'s party gets) announces the SSRC the relay sends
        it with and the PBX's CNAME (C{proxy.rtc_cname}), in place of the
        other party's a=ssrc lines: the relay stamps what it sends that
        party with it (L{Leg.ssrc}), so the line stays true across
        transcoding and a change of the other party's source.  (A
        browser's m-line gets the same from L{write_media}.)
        """
        for name in ("ssrc", "ssrc-group", "msid"):
            m.remove_attribute(name)
        m.add_attribute("ssrc", f"{int.from_bytes(side.ssrc, 'big')} cname:{self.engine.rtc_cname}")

    def _rewrite(self, m: MediaDescription, side: Leg) -> None:
        """Make C{m} name the PBX's C{side} port pair."""
        port = side.pair.rtp_port
        m.port = port
        # c= lines are replaced where they are (here, or at session level
        # in _rewrite_session), except a c=0.0.0.0 hold (RFC 2543 style)
        if m.connection is not None and m.connection.address not in UNSPECIFIED:
            m.connection = Connection("IN", self.addrtype, self.address)
        if m.attribute("rtcp") is not None:
            m.set_attribute("rtcp", f"{port + 1} IN {self.addrtype} {self.address}")
        for name in ICE_ATTRIBUTES:
            m.remove_attribute(name)

    def _rewrite_session(self, out: SessionDescription, original: SessionDescription,
                         to_leg: str) -> None:
        """The session-level lines of what goes to C{to_leg}: the PBX's
        origin (one session id per leg, the version bumped when the body
        changes) and connection, without ICE attributes."""
        if out.connection is not None and out.connection.address not in UNSPECIFIED:
            out.connection = Connection("IN", self.addrtype, self.address)
        for name in ICE_ATTRIBUTES:
            out.remove_attribute(name)
        browser = [s for s in self.streams if s.webrtc[to_leg] is not None]
        if browser:
            write_session(out, [s.mid for s in browser if not s.refused and s.allocated])
        elif any(s.webrtc[OTHER[to_leg]] is not None for s in self.streams):
            strip_webrtc_session(out)
            if out.connection is not None:
                out.connection = Connection("IN", self.addrtype, self.address)
        previous = self.origins.get(to_leg)
        if previous is None:
            origin = Origin(original.origin.username, original.origin.sess_id,
                            original.origin.sess_version, "IN", self.addrtype, self.address)
        else:
            origin = Origin(previous.username, previous.sess_id, previous.sess_version,
                            "IN", self.addrtype, self.address)
        out.origin = origin
        body = bytes(out)
        if previous is not None and body != self.sent_bodies.get(to_leg):
            origin.sess_version = str(int(previous.sess_version) + 1) \
                if previous.sess_version.isdigit() else "1"
            out.origin = origin
            body = bytes(out)
        self.origins[to_leg] = origin
        self.sent_bodies[to_leg] = body

    # -- codecs -----------------------------------------------------------

    def _answer_codecs(self, stream: Stream, leg: str, m: MediaDescription,
                       target: MediaDescription) -> None:
        """The answer from C{leg}: the codec of each leg (L{choose_answer}),
        the answer to the offerer written with its own codec, and the
        translation hooks where the legs differ (transcoding, payload
        types)."""
        plan = stream.plan
        if plan is None or m.media != "audio" or stream.offerer != OTHER[leg]:
            return
        settled = choose_answer(plan, m)
        offerer = stream.offerer
        set_codecs(target, settled.a_entries)
        stream.codec[offerer] = settled.a.codec.name
        stream.codec[leg] = settled.b.codec.name
        for name, entry in ((offerer, settled.a), (leg, settled.b)):
            side = stream.sides[name]
            side.received.rates = {entry.pt: entry.codec.clock_rate}
            side.received.jitter_rate = side.sent.jitter_rate = entry.codec.clock_rate
        if settled == stream.answer_plan:
            return
        stream.answer_plan = settled
        directions = ((offerer, settled.a, settled.b, settled.a_dtmf, settled.b_dtmf),
                      (leg, settled.b, settled.a, settled.b_dtmf, settled.a_dtmf))
        for name, src, dst, src_dtmf, dst_dtmf in directions:
            side = stream.sides[name]
            if Translation.needed(src, dst, src_dtmf, dst_dtmf):
                try:
                    side.translate = Translation(src, dst, src_dtmf, dst_dtmf)
                except ValueError as e:       # TranscodeError: this FFmpeg cannot
                    raise MediaError(488, f"cannot transcode {src.codec.name} to "
                                          f"{dst.codec.name}: {e}") from None
            else:
                side.translate = None
            # end-to-end RTCP describes the other side's stream only when
            # the packets are the same ones
            side.rtcp_relayed = not settled.transcoding

    # -- WebRTC legs (ICE-lite + DTLS-SRTP, rustpbx_py.media.webrtc) -------

    def _webrtc_offer(self, stream: Stream, leg: str, other: str, remote, index: int) -> None:
        """
        Before an offer from C{leg} is applied: a browser's offer (C{remote}
        set) makes C{leg} a WebRTC leg; the other leg is offered WebRTC
        when it is one already or is leg b and the policy says the callee
        is a browser (C{webrtc_b}).
        """
        if remote is not None:
            transport = stream.webrtc[leg] or WebRtcTransport(self.engine.clock)
            transport.configure(remote, browser_offered=True)
            stream.webrtc[leg] = transport
            stream.mid = remote.mid if remote.mid is not None else str(index)
        elif stream.webrtc[leg] is not None:    # a browser leg re-offered plain RTP
            stream.webrtc[leg].close()
            stream.webrtc[leg] = None
        if stream.webrtc[other] is None and other == "b" and getattr(self.policy, "webrtc_b", False) \
                and stream.media == "audio":
            stream.webrtc[other] = WebRtcTransport(self.engine.clock)
        if stream.webrtc[other] is not None:
            stream.webrtc[other].setup = "actpass"
            if stream.mid is None:
                stream.mid = str(index)

    def _browser_refused(self, target: MediaDescription, to_leg: str, index: int) -> None:
        """A refused line of the answer to a browser's offer: its proto and
        a=mid as offered (JSEP matches answer lines to offer lines by mid)."""
        lines = self.browser_lines.get(to_leg)
        if not lines or index >= len(lines):
            return
        proto, mid = lines[index]
        strip_webrtc(target)
        target.proto = proto
        if mid is not None:
            target.add_attribute("mid", mid)

    def _webrtc_answer(self, stream: Stream, leg: str, sdp: SessionDescription,
                       m: MediaDescription) -> None:
        """A browser answers our WebRTC offer: its credentials, fingerprint and setup."""
        transport = stream.webrtc[leg]
        if transport is None:
            return
        if not is_webrtc_media(m):
            raise MediaError(488, f"{m.media} stream {stream.index}: WebRTC was offered, "
                                  f"the answer is {m.proto}")
        transport.configure(remote_params(sdp, m), browser_offered=False)

    def _webrtc_write(self, stream: Stream, leg: str, other: str, target: MediaDescription,
                      sdp: SessionDescription, m: MediaDescription) -> None:
        """
        After C{target} (what C{other} gets) names our ports: write it as
        WebRTC when C{other} is a browser, strip the browser's lines when
        C{leg} is one; hook the transports into their relay legs (again
        after every SDP: taking a leg's SDP re-opens its latch).
        """
        transport = stream.webrtc[other]
        if transport is not None:
            side = stream.sides[other]
            write_media(target, transport, self.address, side.pair.rtp_port, stream.mid,
                        self.engine.rtc_cname)
            # JSEP (RFC 8829 5.3.1) writes the direction in every m-section;
            # some stacks (aiortc) take a missing one for inactive
            target.direction = sdp.direction_of(m)
            stream.proto[other] = WEBRTC_PROTO
        elif stream.webrtc[leg] is not None:
            strip_webrtc(target)
        if stream.webrtc[leg] is not None:
            # a browser's c=0.0.0.0 / port 9 means "see the candidates"
            # (RFC 8839 section 4.2.1), not an RFC 2543 hold
            stream.direction[leg] = sdp.direction_of(m)
            if target.connection is not None and target.connection.address in UNSPECIFIED:
                target.connection = Connection("IN", self.addrtype, self.address)
        for name, transport in stream.webrtc.items():
            if transport is not None:
                transport.install(stream.sides[name])

    # -- SRTP (SDES), each leg on its own --------------------------------

    def _srtp_offer(self, stream: Stream, leg: str, m: MediaDescription,
                    target: MediaDescription, keys: Optional[SdesKeys]) -> None:
        """
        C{leg} offers C{m} (with C{keys}, its usable a=crypto, when it is
        SRTP): note its transport and key, and make the offer to the other
        leg SRTP or plain RTP: leg b as the policy's C{srtp_b} says (None:
        as leg a offered), leg a as it has been (as offered, the first
        time).
        """
        other = OTHER[leg]
        secure = m.proto in SECURE_PROTOS
        if secure:
            stream.remote_keys[leg] = keys
            local = stream.local_keys[leg]
            if local is None or local.suite != keys.suite:
                stream.local_keys[leg] = SdesKeys.generate(keys.suite, tag=keys.tag)
        stream.secure[leg] = secure
        stream.proto[leg] = m.proto
        if other == "b" and self.policy.srtp_b is not None:
            other_secure = bool(self.policy.srtp_b)
        elif other == "a" and stream.secure["a"] is not None:
            other_secure = stream.secure["a"]
        else:
            other_secure = secure
        profile = "AVPF" if m.proto.endswith("AVPF") and not is_webrtc_media(m) else "AVP"
        target.proto = ("RTP/S" if other_secure else "RTP/") + profile
        target.remove_attribute("crypto")
        if other_secure:
            local = stream.local_keys[other]
            if local is None:
                suite = stream.remote_keys[leg].suite if secure else DEFAULT_SUITE
                local = stream.local_keys[other] = SdesKeys.generate(suite, tag=1)
            target.add_attribute("crypto", local.attribute())
        else:
            stream.remote_keys[other] = None
        stream.secure[other] = other_secure
        stream.proto[other] = target.proto

    def _srtp_answer(self, stream: Stream, leg: str, m: MediaDescription,
                     target: MediaDescription) -> None:
        """C{leg} answers: take its key (if we offered it SRTP), and answer
        the offerer in the transport it offered, with our key for it under
        the tag it chose."""
        other = OTHER[leg]
        if stream.secure[leg]:
            keys = select_crypto(m.attributes("crypto")) if m.proto in SECURE_PROTOS else None
            if keys is None and m.proto in SECURE_PROTOS:
                raise MediaError(488, f"{m.media} stream {stream.index}: the {m.proto} answer has no "
                                      "usable a=crypto line")
            stream.remote_keys[leg] = keys
            stream.secure[leg] = keys is not None
            if keys is not None and stream.local_keys[leg] is not None \
                    and stream.local_keys[leg].suite != keys.suite:
                raise MediaError(488, f"{m.media} stream {stream.index}: the answer chose suite "
                                      f"{keys.suite}, not the one offered")
        stream.proto[leg] = m.proto
        target.proto = stream.proto[other] or target.proto
        target.remove_attribute("crypto")
        if stream.secure[other]:
            theirs = stream.remote_keys[other]
            target.add_attribute("crypto", stream.local_keys[other].attribute(tag=theirs.tag))

    def _install_srtp(self, stream: Stream) -> None:
        """Give each side the SRTP hooks its keys call for (kept when the
        keys did not change: libsrtp's replay and rollover state survives a
        re-INVITE)."""
        for name in LEGS:
            side = stream.sides[name]
            remote = stream.remote_keys[name] if stream.secure[name] else None
            local = stream.local_keys[name] if stream.secure[name] else None
            installed_remote, installed_local = stream.installed[name]
            stream.installed[name] = (remote, local)
            if remote != installed_remote:
                if remote is not None:
                    inbound = srtp_session(remote, outbound=False)
                    side.inbound = _drop_source(inbound.unprotect)
                    side.inbound_rtcp = _drop_source(inbound.unprotect_rtcp)
                else:
                    side.inbound = side.inbound_rtcp = None
            if local != installed_local:
                if local is not None:
                    outbound = srtp_session(local, outbound=True)
                    side.outbound = outbound.protect
                    side.outbound_rtcp = outbound.protect_rtcp
                else:
                    side.outbound = side.outbound_rtcp = None

    def _main_stream(self) -> Optional[Stream]:
        """The stream the stats describe: the first audio one allocated."""
        allocated = [s for s in self.streams if s.allocated]
        for stream in allocated:
            if stream.media == "audio":
                return stream
        return allocated[0] if allocated else None

    # -- rtp_timeout ---------------------------------------------------

    def _start_watch(self) -> None:
        timeout = self.policy.rtp_timeout
        if not timeout or self._watch is not None or self.closed:
            return
        self._interval = min(1.0, float(timeout))
        now = self.engine.clock.seconds()
        self._last = {name: self._received(name) for name in LEGS}
        self._active = {name: now for name in LEGS}
        self._watch = self.engine.clock.callLater(self._interval, self._check)

    def _received(self, leg: str) -> int:
        return sum(s.sides[leg].received.packets for s in self.streams if s.allocated)

    def _sending(self, leg: str) -> bool:
        """Whether C{leg} should be sending RTP: some stream is sendrecv
        on both sides.  While a call is on hold (sendonly/recvonly,
        inactive, c=0.0.0.0) the watch pauses, as RustPBX's does: a held
        phone playing no music sends nothing."""
        other = OTHER[leg]
        return any(not s.refused and s.allocated and s.direction[leg] == "sendrecv"
                   and s.direction[other] == "sendrecv" for s in self.streams)

    def _check(self) -> None:
        """
        Every second: a leg that should send and has sent nothing for
        C{rtp_timeout} ends the call (RustPBX: RTP inactivity per leg); a
        held leg's silence does not count.  Activity is sampled from the
        packet counters, so the hot path does not read the clock for it.
        """
        self._watch = None
        if self.closed:
            return
        timeout = self.policy.rtp_timeout
        now = self.engine.clock.seconds()
        for name in LEGS:
            count = self._received(name)
            if count != self._last[name] or not self._sending(name):
                self._active[name] = now
            self._last[name] = count
            if now - self._active[name] >= timeout and self.timed_out is None:
                self.timed_out = name
                log.info("media {call_id}: no RTP from leg {leg} for {timeout} s (rtp_timeout)",
                         call_id=self.call_id, leg=name, timeout=timeout)
                if self.on_timeout is not None:
                    self.on_timeout()
                return
        self._watch = self.engine.clock.callLater(self._interval, self._check)


_TRANSCODABLE: Optional[frozenset] = None


def _transcodable() -> frozenset:
    """The codec names this machine's FFmpeg transcodes (asked once)."""
    global _TRANSCODABLE
    if _TRANSCODABLE is None:
        try:
            from rustpbx_py.media.transcode import can_transcode
        except ImportError:                 # PyAV missing: "quality" only reorders
            _TRANSCODABLE = frozenset()
        else:
            _TRANSCODABLE = frozenset(name for name in ("opus", "g722", "pcmu", "pcma")
                                      if can_transcode(codec_by_name(name)))
    return _TRANSCODABLE


def _drop_source(method: Callable[[bytes], Optional[bytes]]) -> Callable:
    """An C{inbound(data, source)} hook from a one-argument unprotect."""
    def inbound(data: bytes, source) -> Optional[bytes]:
        return method(data)
    return inbound


def _zero() -> dict:
    return {"packets": 0, "bytes": 0, "lost": 0, "jitter_ms": 0.0}


@implementer(IMediaEngine)
class BuiltinEngine:
    """
    The built-in relay: RTP anchored on this process's sockets, nothing to
    install.  Sessions of every policy with the same port range share one
    L{PortAllocator}.

    @param config: the L{rustpbx_py.config.Config} (or its C{proxy}
        section); when the SIP listeners are bound to one address
        (C{proxy.addr} not a wildcard) RTP is bound there too, else on each
        call's C{policy.local_ip}.
    @param clock: what rtp_timeout is measured on (default: C{reactor}).
    @param poller: read the RTP sockets through one L{RtpPoller} (default:
        where the reactor and the system allow it) rather than one reactor
        reader per socket.
    """

    #: Browser legs (ICE-lite, DTLS-SRTP, rtcp-mux, BUNDLE) are terminated
    #: here (rustpbx_py.media.webrtc), so the call side anchors them.
    supports_webrtc = True

    def __init__(self, reactor=None, config=None, clock=None, poller: Optional[bool] = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        if poller is None:
            poller = RtpPoller.available(reactor)
        self.poller: Optional[RtpPoller] = RtpPoller(reactor) if poller else None
        self.clock = clock if clock is not None else reactor
        proxy = getattr(config, "proxy", config)
        addr = getattr(proxy, "addr", None)
        self.bind_address: Optional[str] = addr if addr and addr not in UNSPECIFIED else None
        #: the CNAME of a=ssrc lines written to browsers (proxy.rtc_cname)
        self.rtc_cname: str = getattr(proxy, "rtc_cname", None) or "rustpbx"
        self.allocators: dict[tuple[int, int], PortAllocator] = {}
        self.sessions: set[RelaySession] = set()

    def allocator(self, start: int, end: int) -> PortAllocator:
        key = (start, end)
        allocator = self.allocators.get(key)
        if allocator is None:
            allocator = self.allocators[key] = PortAllocator(self.reactor, start, end, self.poller)
        return allocator

    def session(self, call_id: str, policy) -> RelaySession:
        session = RelaySession(self, call_id, policy)
        self.sessions.add(session)
        return session

    def stop(self) -> defer.Deferred:
        for session in list(self.sessions):
            session.close()
        return defer.succeed(None)
