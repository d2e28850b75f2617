"""
Tests for L{rustpbx_py.media.webrtc}: a WebRTC leg on two real relay
L{Leg}s (memory senders, task.Clock), driven by a browser-like peer made
of aioice STUN messages, a pyOpenSSL DTLS client and pylibsrtp: ICE check
answered and the pair selected, DTLS keyed, SRTP in -> RTP out of the
hook and RTP -> SRTP back with the announced SSRC, muxed SRTCP relayed to
the other leg's RTCP, strangers dropped; and the browser-facing SDP
written for the real Chromium and Firefox offers.
"""

from __future__ import annotations

import os
import struct

from aioice import stun
from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from rustpbx_py.media import MediaError
from rustpbx_py.media.codecs import entries
from rustpbx_py.media.relay import Leg, pair_legs
from rustpbx_py.media.session import BuiltinEngine
from rustpbx_py.media.stun import IceLiteResponder, verified_message
from rustpbx_py.media.webrtc import (WebRtcTransport, is_webrtc_media, remote_params, strip_webrtc,
                                     write_media, write_session)
from rustpbx_py.sip.sdp import SessionDescription
from rustpbx_py.test.media_wire import UdpPhone, free_range, settle
from rustpbx_py.test.test_dtls import Peer, rtp
from rustpbx_py.test.media_wire import media_policy
from rustpbx_py.test.test_media_session import sdp, stamped

DATA = os.path.join(os.path.dirname(__file__), "data", "sdp")
BROWSER = ("127.0.0.1", 40000)
PHONE = ("127.0.0.1", 50000)


def _sdp(name: str) -> SessionDescription:
    with open(os.path.join(DATA, name), "rb") as f:
        return SessionDescription.parse(f.read())


def _check(ice, use_candidate=True) -> bytes:
    request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    request.attributes["USERNAME"] = f"{ice.ufrag}:brws"
    request.attributes["PRIORITY"] = 1
    request.attributes["ICE-CONTROLLING"] = 7
    if use_candidate:
        request.attributes["USE-CANDIDATE"] = None
    request.add_message_integrity(ice.pwd.encode())
    if "FINGERPRINT" not in request.attributes:
        request.add_fingerprint()
    return bytes(request)


class LegTests(SynchronousTestCase):
    """The transport on relay legs, against a browser-like peer."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.wire = []          # (leg name, socket, data, target)
        self.web = Leg("a", latching=True)
        self.phone = Leg("b", latching=False)
        for leg in (self.web, self.phone):
            leg.sendto = (lambda name: lambda data, target: self.wire.append((name, "rtp", data, target)))(leg.name)
            leg.sendto_rtcp = (lambda name: lambda data, target: self.wire.append((name, "rtcp", data, target)))(leg.name)
        pair_legs(self.web, self.phone)
        self.phone.latch.reopen(PHONE)
        self.phone.rtcp_latch.reopen((PHONE[0], PHONE[1] + 1))
        self.transport = WebRtcTransport(self.clock)
        self.peer = Peer(client=True)
        self.transport.configure(remote_params(*self._browser_sdp()), browser_offered=True)
        self.transport.install(self.web)

    def _browser_sdp(self):
        sdp = SessionDescription.parse(
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
            "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\n"
            "a=ice-ufrag:brws\r\na=ice-pwd:browserpasswordbrowserpw\r\n"
            f"a=fingerprint:{self.peer.cert.fingerprint()}\r\na=setup:actpass\r\na=mid:0\r\n"
            "a=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n".encode())
        return sdp, sdp.media[0]

    def _to_web(self, data: bytes, source=BROWSER):
        return self.web.inbound(data, source)

    def _sent(self, name="a"):
        out = [(socket, data, target) for leg, socket, data, target in self.wire if leg == name]
        self.wire[:] = [item for item in self.wire if item[0] != name]
        return out

    def _connect(self):
        self.assertIsNone(self._to_web(_check(self.transport.ice)))
        [(socket, response, target)] = self._sent()
        self.assertEqual(target, BROWSER)
        self.assertEqual(verified_message(response, self.transport.ice.pwd.encode())
                         .attributes["XOR-MAPPED-ADDRESS"], BROWSER)
        self.assertEqual(self.web.latch.target, BROWSER)
        self.peer.step()
        for _ in range(10):
            for data in self.peer.outbox:
                self.assertIsNone(self._to_web(data))
            self.peer.outbox[:] = []
            self.peer.step([data for _, data, target in self._sent()])
            if self.transport.dtls.state == "connected" and self.peer.done and not self.peer.outbox:
                break
        self.assertEqual(self.transport.dtls.state, "connected")
        return self.peer.srtp()

    def test_media_both_ways(self) -> None:
        """
        After ICE and DTLS, the browser's SRTP comes out of the hook as the
        original RTP; RTP for the browser is protected with the exported
        key and carries the SSRC announced in the SDP.
        """
        peer_out, peer_in = self._connect()
        packet = rtp(7, b"\x01" * 80)
        self.assertEqual(self._to_web(peer_out.protect(packet)), packet)
        protected = self.web.outbound(rtp(9))
        clear = peer_in.unprotect(protected)
        self.assertEqual(struct.unpack("!I", clear[8:12])[0], self.transport.ssrc)
        self.assertEqual(clear[12:], rtp(9)[12:])

    def test_nothing_before_keys(self) -> None:
        """Before DTLS completes, nothing is relayed or sent (no cleartext to a browser)."""
        self._to_web(_check(self.transport.ice))
        self.assertIsNone(self._to_web(rtp(1)))
        self.assertIsNone(self.web.outbound(rtp(1)))
        self.assertEqual(self.transport.dropped["not-connected"], 1)

    def test_strangers(self) -> None:
        """Media or DTLS from an address ICE did not select is dropped; a bad check gets no answer."""
        peer_out, _ = self._connect()
        self.assertIsNone(self._to_web(peer_out.protect(rtp(3)), ("127.0.0.1", 1)))
        self.assertEqual(self.transport.dropped["unselected"], 1)
        self.wire[:] = []
        stranger = WebRtcTransport(self.clock)
        self.assertIsNone(self._to_web(_check(stranger.ice), ("127.0.0.1", 2)))
        self.assertEqual(self._sent(), [])
        self.assertEqual(self.web.latch.target, BROWSER)

    def test_rtcp_mux(self) -> None:
        """Muxed SRTCP from the browser reaches the phone leg's RTCP address, decrypted."""
        peer_out, peer_in = self._connect()
        rr = struct.pack("!BBHI", 0x80, 201, 1, 0xCAFE)
        self.assertIsNone(self._to_web(peer_out.protect_rtcp(rr)))
        [(socket, data, target)] = self._sent("b")
        self.assertEqual((socket, data, target), ("rtcp", rr, (PHONE[0], PHONE[1] + 1)))
        self.assertEqual(self.web.rtcp_in, 1)
        self.assertIs(self.web.sendto_rtcp, self.web.sendto)
        sr = struct.pack("!BBHI", 0x80, 200, 6, 0xBEEF) + bytes(20)
        clear = peer_in.unprotect_rtcp(self.web.outbound_rtcp(sr))
        self.assertEqual(struct.unpack("!I", clear[4:8])[0], self.transport.ssrc)

    def test_we_are_client(self) -> None:
        """Browser answered setup:passive: we start DTLS towards the ICE-selected address."""
        transport = WebRtcTransport(self.clock)
        remote = remote_params(*self._browser_sdp())
        remote.setup = "passive"
        transport.configure(remote, browser_offered=False)
        self.assertEqual(transport.setup, "active")
        leg = Leg("a")
        sent = []
        leg.sendto = lambda data, target: sent.append((data, target))
        transport.install(leg)
        leg.inbound(_check(transport.ice), BROWSER)
        self.assertEqual(len(sent), 2)  # STUN response, then ClientHello
        self.assertEqual(sent[1][1], BROWSER)
        self.assertEqual(sent[1][0][0], 22)


class SdpTests(SynchronousTestCase):
    """The browser-facing SDP, for the collected Chromium and Firefox offers."""

    def test_remote_params(self) -> None:
        """Chromium puts credentials per m-line, Firefox its fingerprint at session level: both read."""
        for name in ("chromium-audio.sdp", "firefox-audio.sdp", "chromium-audio-video.sdp",
                     "firefox-audio-video.sdp"):
            sdp = _sdp(name)
            m = sdp.media[0]
            self.assertTrue(is_webrtc_media(m), name)
            remote = remote_params(sdp, m)
            self.assertTrue(remote.ufrag and remote.pwd and remote.fingerprints, name)
            self.assertEqual(remote.setup, "actpass", name)
            self.assertIsNotNone(remote.mid, name)
        plain = _sdp("baresip-g711.sdp")
        self.assertFalse(is_webrtc_media(plain.media[0]))
        self.assertRaises(MediaError, remote_params, plain, plain.media[0])

    def test_answer_written(self) -> None:
        """
        The answer to a Chromium offer: UDP/TLS/RTP/SAVPF, ice-lite, our
        ufrag/pwd, one host candidate at the advertised address and port,
        fingerprint, setup:passive, rtcp-mux, the offer's mid, BUNDLE of it,
        a=ssrc with the configured cname; nothing of the browser's own.
        """
        offer = _sdp("chromium-audio.sdp")
        transport = WebRtcTransport(Clock())
        transport.configure(remote_params(offer, offer.media[0]), browser_offered=True)
        answer = offer.copy()
        m = answer.media[0]
        write_media(m, transport, "203.0.113.5", 30000, offer.media[0].attribute("mid"), "pbxcname")
        write_session(answer, [m.attribute("mid")])
        text = bytes(answer).decode()
        again = SessionDescription.parse(bytes(answer))
        am = again.media[0]
        self.assertEqual((am.proto, am.port), ("UDP/TLS/RTP/SAVPF", 30000))
        self.assertEqual(again.attribute("ice-lite"), "")
        self.assertEqual(again.attribute("group"), "BUNDLE " + offer.media[0].attribute("mid"))
        self.assertEqual(am.attributes("ice-ufrag"), [transport.ice.ufrag])
        self.assertEqual(am.attributes("candidate"), ["1 1 udp 2130706431 203.0.113.5 30000 typ host"])
        self.assertEqual(am.attributes("fingerprint"), [transport.fingerprint()])
        self.assertEqual(am.attributes("setup"), ["passive"])
        self.assertEqual(am.attribute("rtcp-mux"), "")
        self.assertEqual(am.attributes("ssrc"), [f"{transport.ssrc} cname:pbxcname"])
        self.assertNotIn(offer.media[0].attribute("ice-ufrag"), text)
        self.assertNotIn("msid", text)

    def test_strip(self) -> None:
        """What goes to a desk phone keeps codecs but no ICE/DTLS/BUNDLE lines."""
        offer = _sdp("chromium-audio.sdp")
        m = offer.copy().media[0]
        strip_webrtc(m)
        for name in ("candidate", "ice-ufrag", "fingerprint", "setup", "mid", "ssrc", "rtcp-mux", "extmap"):
            self.assertIsNone(m.attribute(name), name)
        self.assertEqual(m.rtpmap(), offer.media[0].rtpmap())


class SessionTests(TestCase):
    """
    The built-in engine with a browser leg, on real loopback sockets: a
    browser-like peer (aioice STUN, pyOpenSSL DTLS client, pylibsrtp) calls
    a plain RTP phone through a RelaySession.
    """

    def setUp(self) -> None:
        start, end = free_range(40)
        self.engine = BuiltinEngine(reactor, clock=reactor)
        self.engine.rtc_cname = "cname-from-config"
        self.policy = media_policy(rtp_start_port=start, rtp_end_port=end, codecs=("pcmu", "pcma"), rtp_timeout=30)
        self.addCleanup(self.engine.stop)

    def _browser_offer(self, browser, peer) -> SessionDescription:
        host, port = browser.address
        return SessionDescription.parse(
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
            f"a=msid-semantic: WMS\r\nm=audio {port} UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 {host}\r\n"
            f"a=candidate:1 1 udp 2122260223 {host} {port} typ host\r\n"
            "a=ice-ufrag:brws\r\na=ice-pwd:browserpasswordbrowserpw\r\n"
            f"a=fingerprint:{peer.cert.fingerprint()}\r\na=setup:actpass\r\na=mid:0\r\n"
            "a=sendrecv\r\na=rtcp-mux\r\na=rtpmap:0 PCMU/8000\r\na=ssrc:777 cname:browser\r\n".encode())

    @defer.inlineCallbacks
    def test_browser_calls_phone(self):
        """
        The phone gets a plain RTP/AVP offer naming the PBX (no ICE, DTLS or
        BUNDLE lines); the browser gets a WebRTC answer (ice-lite, candidate,
        fingerprint, setup:passive, mid 0, BUNDLE 0, a=ssrc with the
        configured cname); then ICE + DTLS complete over the relay port and
        audio flows both ways: SRTP from the browser reaches the phone as the
        original RTP, the phone's RTP reaches the browser as SRTP.
        """
        browser, phone = UdpPhone.listen(self), UdpPhone.listen(self)
        peer = Peer(client=True)
        session = self.engine.session("webrtc-call", self.policy)
        self.addCleanup(session.close)
        to_phone = yield session.offer("a", self._browser_offer(browser, peer), None)
        pm = to_phone.media[0]
        self.assertEqual(pm.proto, "RTP/AVP")
        text = bytes(to_phone).decode()
        for absent in ("candidate", "fingerprint", "ice-", "BUNDLE", "setup", "rtcp-mux", "cname:browser"):
            self.assertNotIn(absent, text)
        # the phone's SDP announces the SSRC the relay sends it, with our CNAME
        self.assertEqual(pm.attribute("ssrc").split()[1], "cname:cname-from-config")
        to_browser = yield session.answer("b", sdp(*phone.address), None)
        bm = to_browser.media[0]
        self.assertEqual(bm.proto, "UDP/TLS/RTP/SAVPF")
        self.assertEqual(to_browser.attribute("group"), "BUNDLE 0")
        self.assertEqual(to_browser.attribute("ice-lite"), "")
        self.assertEqual((bm.attribute("setup"), bm.attribute("mid")), ("passive", "0"))
        ssrc, cname = bm.attribute("ssrc").split()
        self.assertEqual(cname, "cname:cname-from-config")
        pbx = ("127.0.0.1", bm.port)
        self.assertEqual(bm.attribute("candidate"), f"1 1 udp 2130706431 127.0.0.1 {bm.port} typ host")
        ice = IceLiteResponder(bm.attribute("ice-ufrag"), bm.attribute("ice-pwd"))

        browser.port.write(_check(ice), pbx)
        yield browser.wait_for(1)
        self.assertIsNotNone(verified_message(browser.received[0][0], ice.pwd.encode()))
        peer.step()
        seen = 1
        for _ in range(50):
            for data in peer.outbox:
                browser.port.write(data, pbx)
            peer.outbox[:] = []
            yield settle(0.02)
            fresh = [data for data, _ in browser.received[seen:]]
            seen = len(browser.received)
            peer.step(fresh)
            if peer.done and not peer.outbox:
                break
        self.assertTrue(peer.done)
        peer_out, peer_in = peer.srtp()
        yield settle(0.05)
        for seq in range(3):  # browser -> phone
            browser.port.write(peer_out.protect(rtp(seq, b"\x11" * 160)), pbx)
        yield phone.wait_for(3)
        self.assertEqual([data for data, _ in phone.received], [stamped(rtp(seq, b"\x11" * 160), pm) for seq in range(3)])
        phone_side = to_phone.media[0].port
        seen = len(browser.received)
        phone.send_rtp(("127.0.0.1", phone_side), count=3, marker_first=True)
        yield browser.wait_for(seen + 3)
        clear = [peer_in.unprotect(data) for data, _ in browser.received[seen:]]
        self.assertEqual({c[8:12] for c in clear}, {struct.pack("!I", int(ssrc))})
        self.assertEqual([c[12:] for c in clear], [b"\xd5" * 160] * 3)
        stats = session.stats()
        self.assertEqual((stats["a"]["in"]["packets"], stats["b"]["in"]["packets"]), (3, 3))

    @defer.inlineCallbacks
    def test_phone_calls_browser(self):
        """
        With policy.webrtc_b (the callee is a browser), a plain offer from
        the phone reaches leg b as WebRTC (setup:actpass, BUNDLE, ice-lite);
        the browser's answer (setup:active) comes back to the phone as plain
        RTP; then the browser's ClientHello is answered over the relay port.
        """
        self.policy.webrtc_b = True
        browser, phone = UdpPhone.listen(self), UdpPhone.listen(self)
        peer = Peer(client=True)
        session = self.engine.session("to-browser", self.policy)
        self.addCleanup(session.close)
        to_browser = yield session.offer("a", sdp(*phone.address), None)
        bm = to_browser.media[0]
        self.assertEqual((bm.proto, bm.attribute("setup"), bm.attribute("mid")),
                         ("UDP/TLS/RTP/SAVPF", "actpass", "0"))
        self.assertEqual(to_browser.attribute("group"), "BUNDLE 0")
        answer = self._browser_offer(browser, peer)
        answer.media[0].set_attribute("setup", "active")
        to_phone = yield session.answer("b", answer, None)
        self.assertEqual(to_phone.media[0].proto, "RTP/AVP")
        self.assertNotIn(b"fingerprint", bytes(to_phone))
        pbx = ("127.0.0.1", bm.port)
        ice = IceLiteResponder(bm.attribute("ice-ufrag"), bm.attribute("ice-pwd"))
        browser.port.write(_check(ice), pbx)
        peer.step()
        for data in peer.outbox:
            browser.port.write(data, pbx)
        yield browser.wait_for(2)  # the STUN answer, then our ServerHello flight
        self.assertEqual(browser.received[1][0][0], 22)

    @defer.inlineCallbacks
    def test_ice_restart(self):
        """
        The browser re-offers with a new ufrag/pwd (an ICE restart): the
        answer carries new credentials of ours on the same port with the
        same fingerprint; checks with the old credentials are refused from
        then on and checks with the new ones answered, the nominated source
        becoming where media goes.  A re-offer with the same credentials
        keeps ours.
        """
        browser, phone = UdpPhone.listen(self), UdpPhone.listen(self)
        peer = Peer(client=True)
        session = self.engine.session("restart", self.policy)
        self.addCleanup(session.close)
        self.successResultOf(session.offer("a", self._browser_offer(browser, peer), None))
        first = self.successResultOf(session.answer("b", sdp(*phone.address), None)).media[0]
        old = IceLiteResponder(first.attribute("ice-ufrag"), first.attribute("ice-pwd"))
        pbx = ("127.0.0.1", first.port)
        browser.port.write(_check(old), pbx)
        yield browser.wait_for(1)

        reoffer = self._browser_offer(browser, peer)
        reoffer.origin.sess_version = "3"
        self.successResultOf(session.offer("a", reoffer, None))
        same = self.successResultOf(session.answer("b", sdp(*phone.address), None)).media[0]
        self.assertEqual((same.attribute("ice-ufrag"), same.attribute("ice-pwd")), (old.ufrag, old.pwd))

        restart = self._browser_offer(browser, peer)
        restart.origin.sess_version = "4"
        restart.media[0].set_attribute("ice-ufrag", "rst2")
        restart.media[0].set_attribute("ice-pwd", "restartedpasswordrestart")
        self.successResultOf(session.offer("a", restart, None))
        answer = self.successResultOf(session.answer("b", sdp(*phone.address), None)).media[0]
        new = IceLiteResponder(answer.attribute("ice-ufrag"), answer.attribute("ice-pwd"))
        self.assertNotEqual(new.ufrag, old.ufrag)
        self.assertNotEqual(new.pwd, old.pwd)
        self.assertEqual((answer.port, answer.attribute("fingerprint")), (first.port, first.attribute("fingerprint")))
        transport = session.streams[0].webrtc["a"]
        self.assertEqual(transport.ice.selected, browser.address)   # media not interrupted

        other = UdpPhone.listen(self)                                # the browser's new network
        other.port.write(_check(old), pbx)
        yield settle(0.1)
        self.assertEqual(other.received, [])
        self.assertEqual(transport.ice.dropped["username"], 1)

        def check(ice):
            request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
            request.attributes["USERNAME"] = f"{ice.ufrag}:rst2"
            request.attributes["ICE-CONTROLLING"] = 7
            request.attributes["USE-CANDIDATE"] = None
            request.add_message_integrity(ice.pwd.encode())
            if "FINGERPRINT" not in request.attributes:
                request.add_fingerprint()
            return bytes(request)

        other.port.write(check(new), pbx)
        yield other.wait_for(1)
        self.assertIsNotNone(verified_message(other.received[0][0], new.pwd.encode()))
        self.assertEqual(transport.ice.selected, other.address)
        self.assertEqual(session.streams[0].sides["a"].latch.target, other.address)

    def test_external_ip(self):
        """
        With external_ip set, everything the browser is told names it: the
        host candidate, c= and a=rtcp of the answer (the relay still
        listens on the local address); the phone's offer names it too.
        """
        browser, phone = UdpPhone.listen(self), UdpPhone.listen(self)
        self.policy.external_ip = "203.0.113.7"
        session = self.engine.session("external", self.policy)
        self.addCleanup(session.close)
        to_phone = self.successResultOf(session.offer("a", self._browser_offer(browser, Peer(client=True)), None))
        self.assertEqual(to_phone.address(to_phone.media[0]), "203.0.113.7")
        to_browser = self.successResultOf(session.answer("b", sdp(*phone.address), None))
        bm = to_browser.media[0]
        self.assertEqual(bm.attributes("candidate"), [f"1 1 udp 2130706431 203.0.113.7 {bm.port} typ host"])
        self.assertEqual(to_browser.address(bm), "203.0.113.7")
        self.assertEqual(bm.attribute("rtcp"), f"{bm.port} IN IP4 203.0.113.7")
        self.assertEqual(to_browser.origin.address, "203.0.113.7")
        self.assertNotIn(b"127.0.0.1", bytes(to_browser))

    @defer.inlineCallbacks
    def test_audio_video_offer(self):
        """
        Chromium's audio+video offer: the relay carries the audio only; the
        phone's offer has the video refused as plain RTP/AVP without browser
        lines, and the browser's answer refuses it in its own proto with its
        a=mid, BUNDLE naming the audio mid alone.
        """
        offer = _sdp("chromium-audio-video.sdp")
        session = self.engine.session("av", self.policy)
        self.addCleanup(session.close)
        to_phone = yield session.offer("a", offer, None)
        video = to_phone.media[1]
        self.assertEqual((video.port, video.proto), (0, "RTP/AVP"))
        for name in ("fingerprint", "candidate", "ice-ufrag", "mid", "extmap", "setup", "msid"):
            self.assertEqual(bytes(to_phone).count(f"a={name}".encode()), 0, name)
        # one a=ssrc: the relay's, on the audio (Chromium's own are gone)
        self.assertEqual(bytes(to_phone).count(b"a=ssrc"), 1)
        self.assertIn(" cname:cname-from-config", to_phone.media[0].attribute("ssrc"))
        answer = sdp("127.0.0.1", 40000)
        answer.media.append(SessionDescription.parse(
            b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\n").media[0])
        to_browser = yield session.answer("b", answer, None)
        audio, video = to_browser.media
        self.assertEqual((video.port, video.proto, video.attribute("mid")),
                         (0, "UDP/TLS/RTP/SAVPF", offer.media[1].attribute("mid")))
        self.assertEqual(audio.attribute("mid"), offer.media[0].attribute("mid"))
        self.assertEqual(to_browser.attribute("group"), "BUNDLE " + offer.media[0].attribute("mid"))


class CodecStrategyTests(TestCase):
    """
    codec_strategy for WebRTC endpoints, as the seed says: "performance"
    keeps the caller's codecs (no transcoding when both sides share one),
    "quality" prefers Opus and transcodes; both directions, Chromium's
    real offer on the browser side and a G.711 desk phone on the other.
    """

    def setUp(self) -> None:
        start, end = free_range(20)
        self.engine = BuiltinEngine(reactor, clock=reactor)
        self.addCleanup(self.engine.stop)
        self.policy = media_policy(rtp_start_port=start, rtp_end_port=end,
                                   codecs=("opus", "g722", "pcmu", "pcma"))

    def session(self, strategy: str, webrtc_b: bool = False):
        self.policy.strategy = strategy
        self.policy.webrtc_b = webrtc_b
        session = self.engine.session(f"{strategy}-{webrtc_b}", self.policy)
        self.addCleanup(session.close)
        return session

    @staticmethod
    def opus_answer(port: int) -> SessionDescription:
        """A browser's answer choosing Opus (setup:active)."""
        peer = Peer(client=True)
        return SessionDescription.parse(
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
            f"m=audio {port} UDP/TLS/RTP/SAVPF 111 126\r\nc=IN IP4 127.0.0.1\r\n"
            "a=ice-ufrag:brws\r\na=ice-pwd:browserpasswordbrowserpw\r\n"
            f"a=fingerprint:{peer.cert.fingerprint()}\r\na=setup:active\r\na=mid:0\r\n"
            "a=sendrecv\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 useinbandfec=1\r\n"
            "a=rtpmap:126 telephone-event/8000\r\n".encode())

    @staticmethod
    def transcoding(session) -> bool:
        """Whether the legs settled on different codecs (payload type or
        telephone-event mapping alone is not transcoding)."""
        return session.streams[0].answer_plan.transcoding

    def test_browser_calls_phone_performance(self):
        """performance: the phone is offered only what Chromium offered and
        the list allows; it answers PCMU, and so is Chromium: nothing is
        transcoded."""
        session = self.session("performance")
        to_phone = self.successResultOf(session.offer("a", _sdp("chromium-audio.sdp"), None))
        names = [e.codec.name for e in entries(to_phone.media[0])]
        self.assertEqual(names[:4], ["opus", "g722", "pcmu", "pcma"])
        to_browser = self.successResultOf(session.answer("b", sdp("127.0.0.1", 40000), None))
        self.assertEqual(entries(to_browser.media[0])[0].codec.name, "pcmu")
        self.assertFalse(self.transcoding(session))

    def test_browser_calls_phone_quality(self):
        """quality: the phone answers PCMU but Chromium is answered with
        Opus, the relay transcoding both ways."""
        session = self.session("quality")
        self.successResultOf(session.offer("a", _sdp("chromium-audio.sdp"), None))
        to_browser = self.successResultOf(session.answer("b", sdp("127.0.0.1", 40000), None))
        self.assertEqual(entries(to_browser.media[0])[0].codec.name, "opus")
        self.assertEqual(session.stats()["a"]["codec"], "opus")
        self.assertEqual(session.stats()["b"]["codec"], "pcmu")
        self.assertTrue(self.transcoding(session))
        self.assertTrue(all(side.translate is not None for side in session.streams[0].sides.values()))

    def test_phone_calls_browser_performance(self):
        """performance: a G.711 phone calling a browser: the browser is
        offered the phone's codecs only (no Opus added), nothing transcoded."""
        session = self.session("performance", webrtc_b=True)
        to_browser = self.successResultOf(session.offer("a", sdp("127.0.0.1", 40000), None))
        m = to_browser.media[0]
        self.assertEqual(m.proto, "UDP/TLS/RTP/SAVPF")
        self.assertEqual({e.codec.name for e in entries(m)}, {"pcmu", "pcma", "telephone-event"})
        answer = self.opus_answer(m.port)
        answer.media[0].formats = ["0"]
        answer.media[0].remove_attribute("rtpmap")
        answer.media[0].remove_attribute("fmtp")
        to_phone = self.successResultOf(session.answer("b", answer, None))
        self.assertEqual(entries(to_phone.media[0])[0].codec.name, "pcmu")
        self.assertFalse(self.transcoding(session))

    def test_phone_calls_browser_quality(self):
        """quality: the browser is offered Opus first (added by the PBX),
        answers Opus, and the relay transcodes to the phone's PCMU."""
        session = self.session("quality", webrtc_b=True)
        to_browser = self.successResultOf(session.offer("a", sdp("127.0.0.1", 40000), None))
        self.assertEqual(entries(to_browser.media[0])[0].codec.name, "opus")
        to_phone = self.successResultOf(session.answer("b", self.opus_answer(to_browser.media[0].port), None))
        self.assertEqual(entries(to_phone.media[0])[0].codec.name, "pcmu")
        self.assertTrue(self.transcoding(session))
        self.assertTrue(all(side.translate is not None for side in session.streams[0].sides.values()))
