"""
SDES SRTP (L{rustpbx_py.media.srtp}) against another implementation:
baresip's C{srtp} module (libre's own SRTP code, not libsrtp).

baresip (C{mediaenc=srtp-mand}: RTP/SAVP with a=crypto) calls a scripted
UAS in the test, which parses baresip's real a=crypto lines, answers one
suite with a key of its own, and then exchanges G.711 audio with it over
SRTP: the test unprotects what baresip sends (baresip's key) and must
find baresip's tone in it, and baresip must decode the test's tone from
what the test protected (the test's key); SRTCP is checked both ways.
"""

from __future__ import annotations

import os
import re
import socket
import struct
from typing import Dict, List, Optional

import av
from twisted.internet import defer, protocol, reactor, task
from twisted.trial.unittest import SkipTest, TestCase

from rustpbx_py.media.srtp import AVAILABLE, SdesKeys, parse_crypto, srtp_session
from rustpbx_py.test.interop.baresip import BaresipPhone, module_path
from rustpbx_py.test.interop.phones import TONES, ChildProcess, dominant_tone, until
from rustpbx_py.test.interop.support import require_tool
from rustpbx_py.test.tones import strongest, tone_pcm

#: The tone the test side sends (baresip, as alice, sends TONES["alice"]).
OUR_TONE = TONES["bob"]


class SrtpBaresip(BaresipPhone):
    """A baresip phone with the srtp module, not registered anywhere: it dials URIs directly."""

    def __init__(self, testcase, mediaenc: str = "srtp-mand") -> None:
        super().__init__(testcase, None, "alice")
        self.mediaenc = mediaenc
        self.sip_port = free_sip_port()

    extra_modules = ("srtp",)

    def account_line(self) -> str:
        return f"<sip:alice@127.0.0.1>;regint=0;mediaenc={self.mediaenc};answermode=auto"

    @defer.inlineCallbacks
    def start(self):
        """
        Start baresip and connect to its control socket (no registration).
        Its SIP port is chosen free beforehand; if another process took it
        meanwhile, baresip exits at once and is started again on another.
        """
        self.testcase.addCleanup(self.stop)
        for _ in range(3):
            self.write_config()
            self.process.spawn([self.binary, "-s", "-f", self.dir], cwd=self.dir,
                               env={**os.environ, "HOME": self.dir})
            try:
                yield self.process.wait_output(r"ua: init failed|Populated \d+ account", timeout=10)
            except AssertionError:
                pass
            if "init failed" not in self.process.output:
                break
            yield self.process.ended
            self.sip_port = free_sip_port()
            self.process = ChildProcess(os.path.join(self.dir, "output.log"))
        yield self.connect_control()
        return self


def free_sip_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (baresip listens on both)."""
    for _ in range(50):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            tcp.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            udp.close()
            tcp.close()
    raise AssertionError("no port free for both UDP and TCP")


def pcmu_frames(hz: int, seconds: float) -> List[bytes]:
    """A tone as 20 ms PCMU payloads (FFmpeg's G.711 encoder)."""
    ctx = av.CodecContext.create("pcm_mulaw", "w")
    ctx.sample_rate, ctx.format, ctx.layout = 8000, "s16", "mono"
    ctx.open()
    pcm = tone_pcm(hz, seconds, 8000)
    frames = []
    for i in range(0, len(pcm) // 2 - 159, 160):
        frame = av.AudioFrame(format="s16", layout="mono", samples=160)
        frame.sample_rate, frame.pts = 8000, i
        frame.planes[0].update(pcm[2 * i:2 * i + 320])
        frames.append(b"".join(bytes(p) for p in ctx.encode(frame)))
    return frames


def pcmu_samples(payloads: List[bytes]) -> List[int]:
    """PCMU payloads decoded to 16-bit samples."""
    ctx = av.CodecContext.create("pcm_mulaw", "r")
    ctx.sample_rate, ctx.layout = 8000, "mono"
    ctx.open()
    samples: List[int] = []
    for payload in payloads:
        for frame in ctx.decode(av.Packet(payload)):
            samples.extend(struct.unpack(f"<{frame.samples}h", bytes(frame.planes[0])[: 2 * frame.samples]))
    return samples


class Media(protocol.DatagramProtocol):
    """
    The test's RTP or RTCP socket: each packet that arrives goes through
    C{unprotect} once (a second time would be a replay) and what comes
    out (None when dropped) is kept.
    """

    noisy = False

    def __init__(self) -> None:
        self.unprotect = None
        self.received: List[Optional[bytes]] = []
        self.sizes: List[int] = []  # of the packets as they arrived, for failure messages

    def datagramReceived(self, data: bytes, addr) -> None:
        if self.unprotect is not None:
            self.sizes.append(len(data))
            self.received.append(self.unprotect(data))


class Uas(protocol.DatagramProtocol):
    """
    A scripted SIP UAS: answers the first INVITE 200 with the SDP that
    C{answer(offer_body)} returns, answers BYE 200, and records the offer.
    """

    noisy = False

    def __init__(self, answer) -> None:
        self.answer = answer
        self.offer: defer.Deferred = defer.Deferred()
        self.acked: defer.Deferred = defer.Deferred()
        self.bye: defer.Deferred = defer.Deferred()

    def datagramReceived(self, data: bytes, addr) -> None:
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("utf-8", "replace").split("\r\n")
        method = lines[0].split(" ", 1)[0]
        if method == "ACK":
            if not self.acked.called:
                self.acked.callback(None)
            return
        if method not in ("INVITE", "BYE"):
            return
        keep = [line for line in lines[1:] if re.match(r"(?i)(via|from|call-id|cseq|to)\s*:", line)]
        keep = [line + ";tag=uas1" if line.lower().startswith("to") and "tag=" not in line else line for line in keep]
        response_body = b""
        extra = []
        if method == "INVITE":
            response_body = self.answer(body.decode())
            extra = [f"Contact: <sip:bob@127.0.0.1:{self.transport.getHost().port}>", "Content-Type: application/sdp"]
            if not self.offer.called:
                self.offer.callback(body.decode())
        elif not self.bye.called:
            self.bye.callback(None)
        response = "\r\n".join(["SIP/2.0 200 OK", *keep, *extra, f"Content-Length: {len(response_body)}", "", ""])
        self.transport.write(response.encode() + response_body, addr)


class Uac(protocol.DatagramProtocol):
    """A scripted SIP UAC: one INVITE with C{sdp} to C{target}, ACK to its 200 (and to retransmissions)."""

    noisy = False

    def __init__(self, target, sdp: bytes) -> None:
        self.target = target
        self.sdp = sdp
        self.answered: defer.Deferred = defer.Deferred()

    def startProtocol(self) -> None:
        port = self.transport.getHost().port
        host, peer = "127.0.0.1", self.target[1]
        head = (f"INVITE sip:alice@{host}:{peer} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK-srtp-1;rport\r\n"
                "Max-Forwards: 70\r\nFrom: <sip:bob@127.0.0.1>;tag=uac1\r\nTo: <sip:alice@127.0.0.1>\r\n"
                "Call-ID: srtp-interop@127.0.0.1\r\nCSeq: 1 INVITE\r\n"
                f"Contact: <sip:bob@{host}:{port}>\r\nContent-Type: application/sdp\r\n"
                f"Content-Length: {len(self.sdp)}\r\n\r\n")
        self.transport.write(head.encode() + self.sdp, self.target)

    def datagramReceived(self, data: bytes, addr) -> None:
        head, _, body = data.partition(b"\r\n\r\n")
        text = head.decode("utf-8", "replace")
        if text.startswith("BYE "):
            keep = [line for line in text.split("\r\n")[1:] if re.match(r"(?i)(via|from|to|call-id|cseq)\s*:", line)]
            self.transport.write("\r\n".join(["SIP/2.0 200 OK", *keep, "Content-Length: 0", "", ""]).encode(), addr)
            return
        if not text.startswith("SIP/2.0 200") or "INVITE" not in re.search(r"(?im)^cseq:.*$", text).group(0):
            return
        to = re.search(r"(?im)^to:.*$", text).group(0)
        port = self.transport.getHost().port
        ack = (f"ACK sip:alice@127.0.0.1:{self.target[1]} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-srtp-ack;rport\r\n"
               f"Max-Forwards: 70\r\nFrom: <sip:bob@127.0.0.1>;tag=uac1\r\n{to}\r\n"
               "Call-ID: srtp-interop@127.0.0.1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n")
        self.transport.write(ack.encode(), addr)
        if not self.answered.called:
            self.answered.callback(body.decode())


class SrtpBaresipTests(TestCase):
    """baresip's SRTP and ours agree on keys, suites, SRTP and SRTCP."""

    timeout = 60

    def setUp(self) -> None:
        require_tool("baresip")
        path = module_path()
        if not os.path.exists(os.path.join(path, "srtp.so")):
            raise SkipTest(f"baresip's srtp module is not in {path}")

    def listen_pair(self):
        """RTP and RTCP (port + 1) sockets on 127.0.0.1."""
        for _ in range(20):
            rtp = Media()
            port = reactor.listenUDP(0, rtp, interface="127.0.0.1")
            try:
                rtcp = Media()
                port2 = reactor.listenUDP(port.getHost().port + 1, rtcp, interface="127.0.0.1")
            except Exception:
                port.stopListening()
                continue
            self.addCleanup(port.stopListening)
            self.addCleanup(port2.stopListening)
            return rtp, rtcp, port.getHost().port
        raise AssertionError("no free RTP/RTCP port pair")

    def our_sdp(self, rtp_port: int, keys: SdesKeys) -> bytes:
        return ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                f"m=audio {rtp_port} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
                f"a=crypto:{keys.attribute()}\r\na=sendrecv\r\n").encode()

    @defer.inlineCallbacks
    def baresip_calls(self):
        """
        baresip (its offer) calls the scripted UAS, which answers the first
        offered line; both sides' audio and SRTCP are checked.  Returns
        baresip's a=crypto lines.
        """
        rtp, rtcp, rtp_port = self.listen_pair()
        state: Dict[str, object] = {}

        def answer(offer: str) -> bytes:
            lines = re.findall(r"^a=crypto:(.*?)\r?$", offer, re.M)
            theirs = parse_crypto(lines[0])
            ours = SdesKeys.generate(theirs.suite, theirs.tag)
            state.update(lines=lines, theirs=theirs, ours=ours, port=int(re.search(r"^m=audio (\d+)", offer, re.M).group(1)))
            return self.our_sdp(rtp_port, ours)

        uas = Uas(answer)
        sip_port = reactor.listenUDP(0, uas, interface="127.0.0.1")
        self.addCleanup(sip_port.stopListening)
        phone = SrtpBaresip(self)
        yield phone.start()
        mark = phone.mark()
        yield phone.command("dial", f"sip:bob@127.0.0.1:{sip_port.getHost().port}")
        offer = yield uas.offer
        self.assertIn("RTP/SAVP", offer)
        yield phone.wait_event("CALL_ESTABLISHED", since=mark)
        yield self.exchange(phone, state["ours"], state["theirs"], state["port"], rtp, rtcp)
        return state["lines"]

    @defer.inlineCallbacks
    def baresip_answers(self, suite: str, srtcp: bool = True):
        """
        The scripted UAC offers C{suite} with its own key; baresip
        answers (its a=crypto line parsed); audio and SRTCP are checked.
        Returns baresip's answer line.
        """
        rtp, rtcp, rtp_port = self.listen_pair()
        phone = SrtpBaresip(self)
        yield phone.start()
        mark = phone.mark()
        ours = SdesKeys.generate(suite, tag=7)
        uac = Uac(("127.0.0.1", phone.sip_port), self.our_sdp(rtp_port, ours))
        sip_port = reactor.listenUDP(0, uac, interface="127.0.0.1")
        self.addCleanup(sip_port.stopListening)
        answer = yield uac.answered
        lines = re.findall(r"^a=crypto:(.*?)\r?$", answer, re.M)
        self.assertEqual(len(lines), 1, answer)
        theirs = parse_crypto(lines[0])
        self.assertEqual((theirs.tag, theirs.suite), (7, suite))
        yield phone.wait_event("CALL_ESTABLISHED", since=mark)
        port = int(re.search(r"^m=audio (\d+)", answer, re.M).group(1))
        yield self.exchange(phone, ours, theirs, port, rtp, rtcp, srtcp)
        return lines[0]

    @defer.inlineCallbacks
    def exchange(self, phone, ours: SdesKeys, theirs: SdesKeys, remote_port: int, rtp: Media, rtcp: Media,
                 srtcp: bool = True):
        """
        Send our tone protected with C{ours} to baresip's RTP port (and an
        SRTCP report every 2 s), unprotect what it sends with C{theirs}:
        each side must decode the other's tone, nothing is dropped on
        either side, and (C{srtcp}) baresip's SRTCP authenticates.
        """
        outbound = srtp_session(ours, outbound=True)
        inbound = srtp_session(theirs, outbound=False)
        rtp.unprotect, rtcp.unprotect = inbound.unprotect, inbound.unprotect_rtcp
        remote = ("127.0.0.1", remote_port)
        frames = pcmu_frames(OUR_TONE, 1.0)
        sent = {"n": 0}

        def send() -> None:
            n = sent["n"]
            sent["n"] += 1
            packet = struct.pack("!BBHII", 0x80, 0x80 if n == 0 else 0, n & 0xFFFF, n * 160 & 0xFFFFFFFF,
                                 0x5EC0DE) + frames[n % len(frames)]
            rtp.transport.write(outbound.protect(packet), remote)
            if n % 100 == 0:  # a receiver report every 2 s
                report = struct.pack("!BBHI", 0x80, 201, 1, 0x5EC0DE)
                rtcp.transport.write(outbound.protect_rtcp(report), (remote[0], remote[1] + 1))

        sender = task.LoopingCall(send)
        sender.start(0.02)
        self.addCleanup(lambda: sender.running and sender.stop())
        candidates = sorted(set(TONES.values()))

        def heard() -> bool:
            payloads = [p[12:] for p in rtp.received[-60:] if p]
            return len(payloads) >= 50 and strongest(pcmu_samples(payloads[-50:]), 8000, candidates)[0] == phone.tone

        yield until(heard, 15, "the test decoding baresip's SRTP tone")
        yield until(lambda: bool(phone.recordings()) and dominant_tone(phone.recordings()[-1], candidates)[0] == OUR_TONE,
                    15, "baresip decoding the test's SRTP tone")
        if srtcp:
            try:
                yield until(lambda: any(rtcp.received), 15, "baresip's SRTCP")
            except AssertionError as e:
                raise AssertionError(f"{e}: {len(rtcp.sizes)} packets {rtcp.sizes[:5]}, dropped {inbound.dropped}")
            self.assertEqual(inbound.dropped, {"auth": 0, "replay": 0, "invalid": 0})
            self.assertNotIn(None, rtcp.received)
            self.assertNotIn("failed to decrypt", phone.process.output)
        self.assertNotIn(None, rtp.received)
        self.assertNotIn("failed to decrypt RTP", phone.process.output)
        sender.stop()
        yield phone.command("hangup")

    @defer.inlineCallbacks
    def test_baresip_offers(self):
        """
        baresip's offer (a=crypto lines as it writes them) parses and
        writes back the same; answered, SRTP and SRTCP flow both ways.
        """
        lines = yield self.baresip_calls()
        self.assertTrue(lines)
        for line in lines:
            keys = parse_crypto(line)
            self.assertEqual(parse_crypto(keys.attribute()), keys)

    @defer.inlineCallbacks
    def test_sha1_80(self):
        """We offer AES_CM_128_HMAC_SHA1_80 (tag 7): baresip answers it, media flows."""
        yield self.baresip_answers("AES_CM_128_HMAC_SHA1_80")

    @defer.inlineCallbacks
    def test_sha1_32(self):
        """
        AES_CM_128_HMAC_SHA1_32 (4-byte SRTP tag) with baresip: audio both
        ways.  SRTCP is not compared: libsrtp keeps the 80-bit SRTCP tag
        for this suite (RFC 3711 section 7.5, as RFC 5764 4.1.2 spells
        out; Asterisk and FreeSWITCH do the same) while libre (baresip)
        uses its 32-bit tag for SRTCP too, so each side drops the other's
        RTCP (only RTCP statistics are lost, never audio).
        """
        yield self.baresip_answers("AES_CM_128_HMAC_SHA1_32", srtcp=False)

    @defer.inlineCallbacks
    def test_aead_gcm(self):
        """AEAD_AES_128_GCM (RFC 7714) with baresip."""
        if "AEAD_AES_128_GCM" not in AVAILABLE:
            raise SkipTest("this libsrtp has no AES-GCM")
        yield self.baresip_answers("AEAD_AES_128_GCM")
