# -*- test-case-name: rustpbx_py.test.test_rtpengine -*-
"""
The ng codec and client of L{rustpbx_py.media.rtpengine} against scripted
daemons on a memory socket, with L{task.Clock} for timeouts and failover.
The real daemon is exercised in L{rustpbx_py.test.interop.test_rtpengine}.
"""


from twisted.internet import task
from twisted.internet.testing import FakeDatagramTransport
from twisted.trial.unittest import SynchronousTestCase

from rustpbx_py.interfaces import IMediaEngine, IMediaSession
from rustpbx_py.media import MediaError, bencode
from rustpbx_py.media import rtpengine
from rustpbx_py.media.rtpengine import (
    NgClient, NgError, NgTimeout, RtpengineEngine, codec_flags, offered_codecs,
    parse_server, parse_stats,
)
from rustpbx_py.test.media_wire import media_policy

OFFER = (b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
         b"m=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n")
ANSWER = OFFER.replace(b"192.0.2.10", b"192.0.2.20").replace(b"4000", b"5000")
REWRITTEN = OFFER.replace(b"192.0.2.10", b"203.0.113.5").replace(b"4000", b"30000")


def wait(clock, seconds: float) -> None:
    """Advance C{clock} by C{seconds}, one due timer at a time, so timers
    set by timers run too (Clock.advance runs only those due at its
    start)."""
    end = clock.seconds() + seconds
    while True:
        due = [c.getTime() for c in clock.getDelayedCalls()]
        nxt = min(due) if due else None
        if nxt is None or nxt > end + 1e-9:
            break
        clock.advance(max(0.0, nxt - clock.seconds()))
    clock.advance(max(0.0, end - clock.seconds()))


class Daemons:
    """The control socket on memory: what the client sent, and answers."""

    def __init__(self) -> None:
        self.clock = task.Clock()
        self.transport = FakeDatagramTransport()
        self.protocol = None
        self.listened = []

    def listen(self, protocol, interface):
        self.listened.append(interface)
        self.protocol = protocol
        protocol.makeConnection(self.transport)
        return None

    def sent(self):
        """(cookie, dict, addr) of every datagram written."""
        out = []
        for data, addr in self.transport.written:
            cookie, _, body = data.partition(b" ")
            out.append((cookie, bencode.decode(body), addr))
        return out

    def reply(self, index: int, reply: dict, addr=None) -> None:
        cookie, _, addr0 = self.sent()[index]
        self.protocol.datagramReceived(cookie + b" " + bencode.encode(reply), addr or addr0)

    def last(self):
        return self.sent()[-1]


class BencodeTests(SynchronousTestCase):
    def test_round_trip(self):
        """Every ng value type survives encode/decode; dictionary keys are
        written sorted (rtpengine's parser does not need it, BEP 3 does)."""
        value = {"sdp": b"v=0\r\n", "flags": [b"trust-address", b"asymmetric"], "n": -12,
                 "nested": {"z": [], "a": {}}, "big": 2 ** 40}
        data = bencode.encode(value)
        self.assertTrue(data.startswith(b"d3:bigi1099511627776e5:flagsl"))
        self.assertEqual(bencode.decode(data), value)

    def test_str_is_utf8(self):
        """Python strings are sent as UTF-8 byte strings."""
        self.assertEqual(bencode.encode("é"), b"2:\xc3\xa9")
        self.assertEqual(bencode.encode(b"\xff".decode("utf-8", "surrogateescape")), b"1:\xff")

    def test_encode_rejects_unknown_types(self):
        """No booleans or floats in ng: a programming error, said at once."""
        self.assertRaises(TypeError, bencode.encode, True)
        self.assertRaises(TypeError, bencode.encode, 1.5)
        self.assertRaises(TypeError, bencode.encode, {1: 2})

    def test_malformed(self):
        """Truncated, trailing, leading-zero and deeply nested inputs raise
        BencodeError (a ValueError), never another exception."""
        bad = [b"", b"i", b"i12", b"ie", b"i-e", b"i01e", b"i-0e", b"5:abc", b"l", b"d", b"d3:abce",
               b"di1ei2ee", b"x", b"i1ei2e", b"-1:a", b"99999999999:a", b"l" * 100 + b"e" * 100,
               b"d1:a", b"4:", b"1:ab"]
        for data in bad:
            self.assertRaises(bencode.BencodeError, bencode.decode, data)

    def test_fuzz_never_crashes(self):
        """Every truncation and every one-byte corruption of a real reply
        either decodes or raises BencodeError."""
        reply = bencode.encode({"result": "ok", "sdp": REWRITTEN, "tags": {"x": {"medias": [{"index": 1}]}}})
        for i in range(len(reply)):
            for data in (reply[:i], reply[:i] + b"\xff" + reply[i + 1:], reply[:i] + b"e" + reply[i + 1:]):
                try:
                    bencode.decode(data)
                except bencode.BencodeError:
                    pass


class ServerSpecTests(SynchronousTestCase):
    def test_forms(self):
        """Kamailio's rtpengine_sock forms: udp:IP:PORT, udp:[IPv6]:PORT."""
        self.assertEqual(parse_server("udp:127.0.0.1:2223"), ("127.0.0.1", 2223))
        self.assertEqual(parse_server("udp:[::1]:2223"), ("::1", 2223))
        self.assertEqual(parse_server("udp6:[2001:db8::1]:22222"), ("2001:db8::1", 22222))
        self.assertEqual(parse_server("udp:[2001:DB8:0::1]:22222"), ("2001:db8::1", 22222))

    def test_bad(self):
        """Host names, missing ports, TCP and bad ports are refused with
        what was expected."""
        for text in ("127.0.0.1:2223", "udp:rtp.example.com:2223", "tcp:127.0.0.1:2223",
                     "udp:127.0.0.1", "udp:127.0.0.1:0", "udp:127.0.0.1:70000", "udp:999.1.1.1:2223"):
            self.assertRaises(ValueError, parse_server, text)


class ClientTests(SynchronousTestCase):
    def setUp(self):
        self.net = Daemons()
        self.client = NgClient(self.net.clock, ["udp:127.0.0.1:2223", "udp:127.0.0.2:2223"],
                               timeout=1.0, disable_time=60, listen=self.net.listen)

    def test_request_reply(self):
        """A request is COOKIE SP BENCODE to the daemon; the answer with the
        same cookie fires the Deferred with the decoded dictionary."""
        d = self.client.ping(self.client.daemons[0])
        cookie, body, addr = self.net.last()
        self.assertEqual(body, {"command": b"ping"})
        self.assertEqual(addr, ("127.0.0.1", 2223))
        self.assertEqual(self.net.listened, ["0.0.0.0"])
        self.net.reply(0, {"result": "pong"})
        self.assertEqual(self.successResultOf(d), {"result": b"pong"})
        self.assertEqual(self.net.clock.getDelayedCalls(), [])

    def test_unique_cookies(self):
        """Cookies differ per request and between clients (rtpengine caches
        answers per cookie, so a restarted PBX must not reuse them)."""
        self.client.ping(self.client.daemons[0])
        self.client.ping(self.client.daemons[0])
        other = NgClient(self.net.clock, ["udp:127.0.0.1:2223"], listen=self.net.listen)
        other.ping(other.daemons[0])
        cookies = [c for c, _, _ in self.net.sent()]
        self.assertEqual(len(set(cookies)), 3)

    def test_retransmission_then_timeout(self):
        """Unanswered, the same datagram is resent within the timeout; at
        the timeout the request fails and the daemon is marked down for
        disable_time."""
        d = self.client.ping(self.client.daemons[0])
        for _ in range(10):
            self.net.clock.advance(0.25)
        self.assertEqual(len(self.net.transport.written), rtpengine.SENDS)
        self.assertEqual(len({data for data, _ in self.net.transport.written}), 1)
        self.failureResultOf(d, NgTimeout)
        self.assertFalse(self.client.daemons[0].up(self.net.clock.seconds()))
        self.net.clock.advance(60)
        self.assertTrue(self.client.daemons[0].up(self.net.clock.seconds()))

    def test_late_answer_after_retransmission(self):
        """An answer to the first send arriving after a retransmission
        fires once; duplicates are ignored."""
        d = self.client.ping(self.client.daemons[0])
        self.net.clock.advance(0.3)
        self.net.reply(0, {"result": "pong"})
        self.net.reply(1, {"result": "pong"})
        self.successResultOf(d)

    def test_error_result(self):
        """result=error fails with NgError carrying error-reason."""
        d = self.client.request(self.client.daemons[0], {"command": "query", "call-id": "x"})
        self.net.reply(0, {"result": "error", "error-reason": "Unknown call-id"})
        f = self.failureResultOf(d, NgError)
        self.assertEqual(f.value.reason, "Unknown call-id")

    def test_malformed_answers_ignored(self):
        """Garbage, answers without result, wrong cookies and answers from
        another address are ignored (the request stays pending), never
        raised."""
        d = self.client.ping(self.client.daemons[0])
        cookie, _, addr = self.net.last()
        for data in (b"", b"nospace", cookie + b" ", cookie + b" d6:result", cookie + b" i1e",
                     cookie + b" d3:fooi1ee", cookie + b" d6:resulti1ee", b"other d6:result4:ponge",
                     b"\xff\xfe d"):
            self.net.protocol.datagramReceived(data, addr)
        self.net.protocol.datagramReceived(cookie + b" d6:result4:ponge", ("127.0.0.9", 2223))
        self.assertNoResult(d)
        self.net.reply(0, {"result": "pong"})
        self.successResultOf(d)

    def test_failover(self):
        """request_any tries the next daemon when one times out; the dead
        one is skipped (tried last) for new calls afterwards."""
        key = "call-1"
        first, second = self.client.candidates(key)
        d = self.client.request_any(key, {"command": "ping"})
        wait(self.net.clock, 1.0)
        _, _, addr = self.net.last()
        self.assertEqual(addr, (second.host, second.port))
        self.net.reply(-1, {"result": "pong"})
        daemon, reply = self.successResultOf(d)
        self.assertIs(daemon, second)
        self.assertEqual(self.client.candidates(key), [second, first])

    def test_all_down(self):
        """When every daemon times out the last timeout is the failure."""
        d = self.client.request_any("k", {"command": "ping"})
        wait(self.net.clock, 2.0)
        self.failureResultOf(d, NgTimeout)

    def test_stop(self):
        """stop() fails pending requests and cancels their timers."""
        d = self.client.ping(self.client.daemons[0])
        self.client.stop()
        self.failureResultOf(d, NgTimeout)
        self.assertEqual(self.net.clock.getDelayedCalls(), [])


class CodecFlagTests(SynchronousTestCase):
    def test_offered(self):
        """Static and dynamic payload types map to the config's names."""
        sdp = OFFER.replace(b"0 8 101", b"96 0 18 9 101") + b"a=rtpmap:96 opus/48000/2\r\n"
        self.assertEqual(offered_codecs(sdp), ["opus", "pcmu", "g729", "g722", "telephone-event"])

    def test_performance(self):
        """performance: the caller's codecs that are allowed, in the
        preference order, telephone-event kept."""
        flags = codec_flags(media_policy(codecs=["pcma", "pcmu", "opus"]), ["pcmu", "pcma", "telephone-event"])
        self.assertEqual(flags, {"strip": ["all"], "offer": ["PCMA", "PCMU", "telephone-event"]})

    def test_performance_nothing_common(self):
        """No allowed codec offered → 488 (rtpengine would keep them all)."""
        e = self.assertRaises(MediaError, codec_flags, media_policy(codecs=["opus"]), ["pcmu"])
        self.assertEqual(e.status, 488)

    def test_quality(self):
        """quality: Opus > G.729 > G.722 > G.711 among the allowed, added by
        transcoding; G.729 only when the caller offered it."""
        p = media_policy(codecs=["pcmu", "g729", "opus", "pcma", "g722"], strategy="quality")
        self.assertEqual(codec_flags(p, ["pcma"])["transcode"],
                         ["opus", "G722", "PCMU", "PCMA", "telephone-event"])
        self.assertEqual(codec_flags(p, ["g729", "pcma"])["transcode"],
                         ["opus", "G729", "G722", "PCMU", "PCMA", "telephone-event"])

    def test_no_codecs_no_flags(self):
        """An empty allow-list means the offer goes through unfiltered."""
        self.assertEqual(codec_flags(media_policy(codecs=[]), ["pcmu"]), {})


class Sdp:
    """A stand-in SessionDescription: bytes() and parse() are all the
    engine uses."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __bytes__(self) -> bytes:
        return self.data

    @classmethod
    def parse(cls, data: bytes) -> "Sdp":
        if not data.startswith(b"v=0"):
            raise ValueError("not SDP")
        return cls(data)


def query_reply(tags, a_packets=10, b_packets=12):
    ta, tb = tags["a"], tags["b"]

    def tag(name, port, remote, packets, ssrc):
        return {"tag": name, "medias": [{"index": 1, "type": "audio", "codec": "PCMU/8000", "streams": [
            {"local port": port, "local address": "127.0.0.1", "SSRC": ssrc,
             "endpoint": {"family": "IPv4", "address": "127.0.0.1", "port": remote},
             "flags": ["RTP", "filled"], "stats": {"packets": packets, "bytes": packets * 172, "errors": 0}},
            {"local port": port + 1, "local address": "127.0.0.1", "flags": ["RTCP"],
             "stats": {"packets": 1, "bytes": 80, "errors": 0}},
        ]}]}

    return {"result": "ok", "tags": {ta: tag(ta, 30010, 4000, a_packets, 1111), tb: tag(tb, 30000, 5000, b_packets, 2222)},
            "SSRC": {"1111": {"cumulative loss": 3, "average MOS": {"jitter": 7, "MOS": 43}}},
            "totals": {"RTP": {"packets": a_packets + b_packets, "bytes": 0, "errors": 0}}}


class SessionTests(SynchronousTestCase):
    def setUp(self):
        self.net = Daemons()
        self.engine = RtpengineEngine(self.net.clock, ["udp:127.0.0.1:2223"], timeout=1.0, listen=self.net.listen)
        self.policy = media_policy()
        self.session = self.engine.session("cid@host", self.policy)
        self.assertTrue(IMediaEngine.providedBy(self.engine))
        self.assertTrue(IMediaSession.providedBy(self.session))

    def establish(self):
        d = self.session.offer("a", Sdp(OFFER), ("192.0.2.10", 5060))
        self.net.reply(-1, {"result": "ok", "sdp": REWRITTEN})
        self.successResultOf(d)
        d = self.session.answer("b", Sdp(ANSWER), ("192.0.2.20", 5060))
        self.net.reply(-1, {"result": "ok", "sdp": REWRITTEN})
        self.successResultOf(d)

    def test_offer_command(self):
        """An offer from leg a: from-tag = a's tag, no to-tag yet, the
        codec filter, ICE removed, DTLS off, origin and session c= replaced,
        the SDP address trusted (public, equal to the source); the reply's
        SDP is parsed into the caller's SDP type."""
        d = self.session.offer("a", Sdp(OFFER), ("192.0.2.10", 5060))
        _, cmd, _ = self.net.last()
        self.assertEqual(cmd[
            "command"], b"offer")
        self.assertEqual(cmd["call-id"], b"cid@host")
        self.assertEqual(cmd["from-tag"], b"cid@host-a")
        self.assertNotIn("to-tag", cmd)
        self.assertEqual(cmd["sdp"], OFFER)
        self.assertEqual(cmd["ICE"], b"remove")
        self.assertEqual(cmd["DTLS"], b"off")
        self.assertEqual(cmd["replace"], [b"origin", b"session-connection"])
        self.assertEqual(cmd["flags"], [b"trust-address"])
        self.assertEqual(cmd["codec"], {"strip": [b"all"], "offer": [b"PCMU", b"PCMA", b"telephone-event"]})
        self.assertNotIn("transport-protocol", cmd)
        self.net.reply(0, {"result": "ok", "sdp": REWRITTEN})
        out = self.successResultOf(d)
        self.assertIsInstance(out, Sdp)
        self.assertEqual(bytes(out), REWRITTEN)

    def test_session_description(self):
        """With the real SDP type, the body sent is bytes(sdp) and the
        result is the parsed rewritten SDP."""
        from rustpbx_py.sip.sdp import SessionDescription

        d = self.session.offer("a", SessionDescription.parse(OFFER), ("192.0.2.10", 5060))
        self.assertEqual(self.net.last()[1]["sdp"], OFFER)
        self.net.reply(0, {"result": "ok", "sdp": REWRITTEN})
        out = self.successResultOf(d)
        self.assertIsInstance(out, SessionDescription)
        self.assertEqual(bytes(out), REWRITTEN)
        self.assertEqual(out.media[0].port, 30000)

    def test_bytes_in_bytes_out(self):
        """Given bytes, the session answers bytes."""
        d = self.session.offer("a", OFFER, ("192.0.2.10", 5060))
        self.net.reply(0, {"result": "ok", "sdp": REWRITTEN})
        self.assertEqual(self.successResultOf(d), REWRITTEN)

    def test_nat_source(self):
        """A private SDP address that differs from the signalling source:
        SIP-source-address with received-from (latching starts from the
        NAT's public address)."""
        self.session.offer("a", OFFER.replace(b"192.0.2.10", b"10.0.0.5"), ("198.51.100.7", 5060))
        _, cmd, _ = self.net.last()
        self.assertEqual(cmd["flags"], [b"SIP-source-address"])
        self.assertEqual(cmd["received-from"], [b"IP4", b"198.51.100.7"])

    def test_no_latching(self):
        """latching off: the SDP address is trusted and never re-learnt."""
        self.policy.latching = False
        self.session.offer("a", OFFER, ("198.51.100.7", 5060))
        self.assertEqual(self.net.last()[1]["flags"], [b"trust-address", b"asymmetric"])

    def test_srtp_b(self):
        """srtp_b forces the transport towards b (SDES generated by
        rtpengine); offers from b towards a restore a's transport."""
        self.policy.srtp_b = True
        self.session.offer("a", OFFER, ("192.0.2.10", 5060))
        self.assertEqual(self.net.last()[1]["transport-protocol"], b"RTP/SAVP")
        self.assertIn(b"no-NULL_HMAC_SHA1_80", self.net.last()[1]["SDES"])   # never null encryption
        self.net.reply(-1, {"result": "ok", "sdp": REWRITTEN})
        self.session.answer("b", ANSWER, ("192.0.2.20", 5060))
        self.net.reply(-1, {"result": "ok", "sdp": REWRITTEN})
        self.session.offer("b", ANSWER, ("192.0.2.20", 5060))
        cmd = self.net.last()[1]
        self.assertEqual(cmd["transport-protocol"], b"RTP/AVP")
        self.assertNotIn("codec", cmd)

    def test_answer_and_reoffer_tags(self):
        """The answer from b names a's tag as from-tag and b's as to-tag; a
        re-offer from b (re-INVITE by the callee) swaps them."""
        self.establish()
        answer = self.net.sent()[1][1]
        self.assertEqual((answer["command"], answer["from-tag"], answer["to-tag"]),
                         (b"answer", b"cid@host-a", b"cid@host-b"))
        self.session.offer("b", Sdp(ANSWER), ("192.0.2.20", 5060))
        reoffer = self.net.last()[1]
        self.assertEqual((reoffer["from-tag"], reoffer["to-tag"]), (b"cid@host-b", b"cid@host-a"))
        self.net.reply(-1, {"result": "ok", "sdp": REWRITTEN})
        self.session.answer("a", Sdp(OFFER), ("192.0.2.10", 5060))
        answer = self.net.last()[1]
        self.assertEqual((answer["from-tag"], answer["to-tag"]), (b"cid@host-b", b"cid@host-a"))

    def test_answer_without_offer(self):
        """An answer with no offer pending (or from the offering leg) is 488."""
        f = self.failureResultOf(self.session.answer("b", OFFER, None), MediaError)
        self.assertEqual(f.value.status, 488)
        self.session.offer("a", OFFER, None)
        self.net.reply(-1, {"result": "ok", "sdp": REWRITTEN})
        f = self.failureResultOf(self.session.answer("a", OFFER, None), MediaError)
        self.assertEqual(f.value.status, 488)

    def test_repeated_answer(self):
        """The 2xx's answer after an 18x's (same leg, no new offer) is sent
        to rtpengine again with the same tags; the other leg cannot answer
        its own offer."""
        self.establish()
        d = self.session.answer("b", ANSWER.replace(b"5000", b"5002"), ("192.0.2.20", 5060))
        cmd = self.net.last()[1]
        self.assertEqual((cmd["command"], cmd["from-tag"], cmd["to-tag"]), (b"answer", b"cid@host-a", b"cid@host-b"))
        self.net.reply(-1, {"result": "ok", "sdp": REWRITTEN})
        self.successResultOf(d)
        self.failureResultOf(self.session.answer("a", OFFER, None), MediaError)

    def test_errors(self):
        """result=error → 488 (SDP refused) or 503 (ports, load); no daemon
        answering → 503; an unparsable SDP from rtpengine → 503."""
        for reply, status in (({"result": "error", "error-reason": "Failed to parse SDP"}, 488),
                              ({"result": "error", "error-reason": "Ran out of ports"}, 503),
                              ({"result": "load limit", "message": "x"}, 503),
                              ({"result": "ok"}, 503),
                              ({"result": "ok", "sdp": "garbage"}, 503)):
            d = self.engine.session("c%d" % status, self.policy).offer("a", Sdp(OFFER), None)
            self.net.reply(-1, reply)
            self.assertEqual(self.failureResultOf(d, MediaError).value.status, status, reply)
        d = self.engine.session("dead", self.policy).offer("a", Sdp(OFFER), None)
        wait(self.net.clock, 1.0)
        self.assertEqual(self.failureResultOf(d, MediaError).value.status, 503)

    def test_pinned_daemon(self):
        """After the offer, the call's answer, query and delete go to the
        daemon that took the offer; a re-offer fails over when it died."""
        engine = RtpengineEngine(self.net.clock, ["udp:127.0.0.1:2223", "udp:127.0.0.2:2223"],
                                 listen=self.net.listen)
        s = engine.session("pin", self.policy)
        first, second = engine.client.candidates("pin")
        s.offer("a", OFFER, None)
        self.net.reply(-1, {"result": "ok", "sdp": REWRITTEN})
        s.answer("b", ANSWER, None)
        self.assertEqual(self.net.last()[2], (first.host, first.port))
        self.net.reply(-1, {"result": "ok", "sdp": REWRITTEN})
        d = s.offer("a", OFFER, None)
        wait(self.net.clock, 1.0)
        self.assertEqual(self.net.last()[2], (second.host, second.port))
        self.net.reply(-1, {"result": "ok", "sdp": REWRITTEN})
        self.successResultOf(d)
        self.assertIs(s.daemon, second)
        s.close()
        self.assertEqual(self.net.last()[2], (second.host, second.port))

    def test_stats_from_query(self):
        """query's tags map to the legs: in = what the leg sent rtpengine,
        out = what rtpengine relayed to it; loss/jitter from the SSRC
        section; RTCP streams left out."""
        stats = parse_stats(query_reply(self.session.tags), self.session.tags)
        self.assertEqual(stats["a"]["codec"], "pcmu")
        self.assertEqual(stats["a"]["local"], ("127.0.0.1", 30010))
        self.assertEqual(stats["a"]["remote"], ("127.0.0.1", 4000))
        self.assertEqual(stats["a"]["in"], {"packets": 10, "bytes": 1720, "lost": 3, "jitter_ms": 7.0})
        self.assertEqual(stats["b"]["out"], stats["a"]["in"])
        self.assertEqual(stats["a"]["out"]["packets"], 12)

    def test_stats_rtcp_mux(self):
        """A WebRTC leg's stream carries RTP and RTCP (rtcp-mux): it is
        counted (flags RTP and RTCP), a pure RTCP stream is not."""
        reply = query_reply(self.session.tags)
        streams = reply["tags"][self.session.tags["a"]]["medias"][0]["streams"]
        streams[0]["flags"] = ["RTP", "RTCP", "filled", "ICE", "DTLS"]
        del streams[1]
        stats = parse_stats(reply, self.session.tags)
        self.assertEqual(stats["a"]["in"]["packets"], 10)
        self.assertEqual(stats["a"]["local"], ("127.0.0.1", 30010))

    def test_stats_malformed(self):
        """Whatever a query answer holds, parse_stats returns the shape
        with zeros, never raises."""
        for reply in ({}, {"tags": []}, {"tags": {"cid@host-a": {"medias": "x"}}},
                      {"tags": {"cid@host-a": {"medias": [{"type": "audio", "streams": [1, {"stats": []}]}]}}},
                      {"tags": {"cid@host-a": {"medias": [{"type": "audio", "streams": [
                          {"SSRC": "x", "endpoint": {"address": 5}, "local port": "x"}]}]}}, "SSRC": []}):
            stats = parse_stats(reply, self.session.tags)
            self.assertEqual(stats["a"]["in"]["packets"], 0)

    def test_close_is_delete(self):
        """close() queries the final figures, deletes the call, fires with
        the stats; a second close() sends nothing and gives the same."""
        self.establish()
        d = self.session.close()
        self.assertEqual(self.net.last()[1]["command"], b"query")
        self.net.reply(-1, query_reply(self.session.tags))
        self.assertEqual(self.net.last()[1]["command"], b"delete")
        self.net.reply(-1, {"result": "ok"})
        stats = self.successResultOf(d)
        self.assertEqual(stats["a"]["in"]["packets"], 10)
        sent = len(self.net.sent())
        self.assertEqual(self.successResultOf(self.session.close()), stats)
        self.assertEqual(len(self.net.sent()), sent)
        self.assertNotIn("cid@host", self.engine.sessions)

    def test_close_before_offer(self):
        """Nothing allocated: close() sends nothing."""
        self.assertEqual(self.successResultOf(self.session.close())["a"]["in"]["packets"], 0)
        self.assertEqual(self.net.sent(), [])

    def test_close_during_first_offer(self):
        """Closed while the first offer is in flight: the offer fails and
        the call rtpengine created is deleted (no leak)."""
        d = self.session.offer("a", OFFER, None)
        self.session.close()
        self.net.reply(0, {"result": "ok", "sdp": REWRITTEN})
        self.failureResultOf(d, MediaError)
        self.assertEqual(self.net.last()[1]["command"], b"delete")

    def test_rtp_timeout(self):
        """From the answer on, query is polled every rtp_timeout/3; when the
        packet counters stay still for rtp_timeout, on_timeout is called
        once and polling stops."""
        self.policy.rtp_timeout = 30
        fired = []
        self.session.on_timeout = lambda: fired.append(1)
        self.establish()
        n = len(self.net.sent())
        self.net.clock.advance(10)
        self.assertEqual(self.net.last()[1]["command"], b"query")
        self.net.reply(-1, query_reply(self.session.tags, 10, 10))
        self.net.clock.advance(10)
        self.net.reply(-1, query_reply(self.session.tags, 20, 20))   # media flowing
        for _ in range(2):
            self.net.clock.advance(10)
            self.net.reply(-1, query_reply(self.session.tags, 20, 20))
        self.assertEqual(fired, [])
        self.net.clock.advance(10)
        self.net.reply(-1, query_reply(self.session.tags, 20, 20))   # 30 s without a packet
        self.assertEqual(fired, [1])
        self.assertEqual(len(self.net.sent()), n + 5)
        self.assertEqual(self.net.clock.getDelayedCalls(), [])
        self.assertEqual(self.session.stats()["a"]["in"]["packets"], 20)

    def test_rtp_timeout_per_leg(self):
        """Per leg, as RustPBX: leg a keeps sending but leg b sends nothing
        after the answer; the call times out at rtp_timeout all the same."""
        self.policy.rtp_timeout = 30
        fired = []
        self.session.on_timeout = lambda: fired.append(self.net.clock.seconds())
        self.establish()
        for n in range(1, 4):
            self.net.clock.advance(10)
            self.net.reply(-1, query_reply(self.session.tags, 500 * n, 0))
        self.assertEqual(fired, [30.0])

    def test_rtp_timeout_no_media_at_all(self):
        """No packet ever after the answer: the timeout counts from the
        answer (fires at the poll at rtp_timeout, not one poll later)."""
        self.policy.rtp_timeout = 30
        fired = []
        self.session.on_timeout = lambda: fired.append(self.net.clock.seconds())
        self.establish()
        for _ in range(3):
            self.net.clock.advance(10)
            self.net.reply(-1, query_reply(self.session.tags, 0, 0))
        self.assertEqual(fired, [30.0])

    def test_rtp_timeout_paused_on_hold(self):
        """A re-offer putting the call on hold (sendonly) pauses the
        timeout; resuming (sendrecv) starts it again."""
        self.policy.rtp_timeout = 30
        fired = []
        self.session.on_timeout = lambda: fired.append(self.net.clock.seconds())
        self.establish()
        self.session.offer("a", OFFER.replace(b"a=sendrecv", b"a=sendonly"), None)
        self.net.reply(-1, {"result": "ok", "sdp": REWRITTEN})
        self.session.answer("b", ANSWER.replace(b"a=sendrecv", b"a=recvonly"), None)
        self.net.reply(-1, {"result": "ok", "sdp": REWRITTEN})
        for _ in range(6):
            self.net.clock.advance(10)
            self.net.reply(-1, query_reply(self.session.tags, 0, 0))
        self.assertEqual(fired, [])
        self.session.offer("a", OFFER, None)
        self.net.reply(-1, {"result": "ok", "sdp": REWRITTEN})
        self.session.answer("b", ANSWER, None)
        self.net.reply(-1, {"result": "ok", "sdp": REWRITTEN})
        for _ in range(3):
            self.net.clock.advance(10)
            self.net.reply(-1, query_reply(self.session.tags, 0, 0))
        self.assertEqual(fired, [90.0])

    def test_on_hold(self):
        """Hold as RFC 3264 (media or session direction) and RFC 2543
        (c=0.0.0.0) say it; sendrecv at media level wins over the session."""
        self.assertFalse(rtpengine.on_hold(OFFER))
        self.assertTrue(rtpengine.on_hold(OFFER.replace(b"a=sendrecv", b"a=inactive")))
        self.assertTrue(rtpengine.on_hold(OFFER.replace(b"c=IN IP4 192.0.2.10", b"c=IN IP4 0.0.0.0")))
        session_hold = OFFER.replace(b"t=0 0\r\n", b"t=0 0\r\na=sendonly\r\n").replace(b"a=sendrecv\r\n", b"")
        self.assertTrue(rtpengine.on_hold(session_hold))
        self.assertFalse(rtpengine.on_hold(OFFER.replace(b"t=0 0\r\n", b"t=0 0\r\na=sendonly\r\n")))

    def test_daemon_dropped_call(self):
        """rtpengine's own timeout deleted the call: the next poll's
        "Unknown call-id" is a timeout too."""
        self.policy.rtp_timeout = 3
        fired = []
        self.session.on_timeout = lambda: fired.append(1)
        self.establish()
        self.net.clock.advance(1)
        self.net.reply(-1, {"result": "error", "error-reason": "Unknown call-id"})
        self.assertEqual(fired, [1])

    def test_query_timeout_keeps_polling(self):
        """A poll that gets no answer is not a media timeout."""
        self.policy.rtp_timeout = 3
        fired = []
        self.session.on_timeout = lambda: fired.append(1)
        self.establish()
        self.net.clock.advance(1)
        wait(self.net.clock, 1.0)   # query times out
        self.assertEqual(fired, [])
        self.assertTrue(self.net.clock.getDelayedCalls())

    def test_no_polling_when_off(self):
        """rtp_timeout = 0: no periodic query."""
        self.establish()
        self.assertEqual(self.net.clock.getDelayedCalls(), [])

    def test_engine_stop(self):
        """stop() deletes the calls still anchored."""
        self.establish()
        d = self.engine.stop()
        self.net.reply(-1, query_reply(self.session.tags))
        self.net.reply(-1, {"result": "ok"})
        self.successResultOf(d)
        self.assertEqual(self.net.sent()[-1][1]["command"], b"delete")


class FactoryTests(SynchronousTestCase):
    def test_rtpengine_from_config(self):
        """media_engine = "rtpengine" builds an RtpengineEngine on the
        configured daemons with the configured timeout; nothing is opened
        before the first request."""
        from rustpbx_py.config import parse_config_text
        from rustpbx_py.media.engines import engine_from_config  # noqa

        config = parse_config_text('[proxy]\nmedia_engine = "rtpengine"\n'
                                   'rtpengine_servers = ["udp:127.0.0.1:2223", "udp:[::1]:2224"]\n'
                                   'rtpengine_timeout = 0.5\n')
        reactor = task.Clock()
        engine = engine_from_config(reactor, config.proxy)
        self.assertIsInstance(engine, RtpengineEngine)
        self.assertEqual([str(d) for d in engine.client.daemons], ["udp:127.0.0.1:2223", "udp:[::1]:2224"])
        self.assertEqual(engine.client.timeout, 0.5)
        from rustpbx_py import media

        self.assertIsInstance(media.engine_from_config(reactor, config), RtpengineEngine)


    def test_builtin_by_default(self):
        """Without media_engine (or with "builtin") the built-in relay's
        engine comes back, built on the same configuration."""
        from rustpbx_py.config import parse_config_text
        from rustpbx_py.media import engine_from_config
        from rustpbx_py.media.session import BuiltinEngine

        for text in ("", '[proxy]\nmedia_engine = "builtin"\n'):
            engine = engine_from_config(task.Clock(), parse_config_text(text))
            self.assertIsInstance(engine, BuiltinEngine)
            self.assertTrue(IMediaEngine.providedBy(engine))


class ConfigTests(SynchronousTestCase):
    def problems(self, text: str) -> str:
        from rustpbx_py.config import ConfigError, parse_config_text

        try:
            parse_config_text(text)
        except ConfigError as e:
            return str(e)
        self.fail("no problem reported")

    def test_servers_required(self):
        """media_engine = "rtpengine" without daemons names the key."""
        message = self.problems('[proxy]\nmedia_engine = "rtpengine"\n')
        self.assertIn("proxy.rtpengine_servers", message)
        self.assertIn('media_engine = "rtpengine"', message)

    def test_bad_server(self):
        """A daemon address that is not udp:IP:PORT names the item and the
        expected form."""
        message = self.problems('[proxy]\nrtpengine_servers = ["udp:127.0.0.1:2223", "rtp.example.com:2223"]\n')
        self.assertIn("proxy.rtpengine_servers[1]", message)
        self.assertIn("udp:IP:PORT", message)

    def test_bad_engine(self):
        """An unknown engine lists the known ones."""
        message = self.problems('[proxy]\nmedia_engine = "kernel"\n')
        self.assertIn("proxy.media_engine", message)
        self.assertIn('"builtin", "rtpengine"', message)

    def test_timeout(self):
        """rtpengine_timeout must be positive."""
        self.assertIn("proxy.rtpengine_timeout", self.problems("[proxy]\nrtpengine_timeout = 0\n"))
