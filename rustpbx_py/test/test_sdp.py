"""
Tests for L{rustpbx_py.sip.sdp}: byte-exact round trips of real offers
(rustpbx_py/test/data/sdp, where they came from is in SOURCES.md), the
fields the media plane reads and rewrites, the leniencies, and that a
malformed body raises L{SdpError} and nothing else (fuzzed).
"""

import os
import random

from twisted.trial.unittest import SynchronousTestCase

from rustpbx_py.sip.sdp import (
    Connection,
    MediaDescription,
    Origin,
    SdpError,
    SessionDescription,
    answer_direction,
    parse,
)

try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - make test installs it
    given = None

DATA = os.path.join(os.path.dirname(__file__), "data", "sdp")
EXAMPLES = int(os.environ.get("RUSTPBX_FUZZ_EXAMPLES", "0"))


def corpus():
    """(name, bytes) of every collected SDP file."""
    out = []
    for name in sorted(os.listdir(DATA)):
        if name.endswith(".sdp"):
            with open(os.path.join(DATA, name), "rb") as f:
                out.append((name, f.read()))
    return out


BASIC = (
    b"v=0\r\n"
    b"o=- 1 2 IN IP4 192.0.2.10\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.10\r\n"
    b"t=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
    b"a=ptime:20\r\n"
)


class CorpusTests(SynchronousTestCase):
    def test_files_present(self):
        """The collected offers are there, from every kind of client the
        issue names (see SOURCES.md); a glob that matched nothing would
        make the round-trip test pass vacuously."""
        names = [name for name, _ in corpus()]
        self.assertGreaterEqual(len(names), 29, names)
        for prefix in ("baresip", "linphone", "chromium", "firefox", "pjsua2", "sipp", "zoiper", "yealink", "asterisk", "carrier"):
            self.assertTrue(any(n.startswith(prefix) for n in names), f"no {prefix}*.sdp in {names}")

    def test_round_trip(self):
        """Every collected offer is CRLF-terminated and written back byte
        for byte after parsing, and again after a deep copy."""
        for name, data in corpus():
            self.assertTrue(data.endswith(b"\r\n"), name)
            sdp = parse(data)
            self.assertEqual(bytes(sdp), data, name)
            self.assertEqual(bytes(sdp.copy()), data, name)

    def test_lf_only(self):
        """Each offer with its CRLFs turned into LFs parses to the same
        description and is written with CRLF."""
        for name, data in corpus():
            self.assertEqual(bytes(parse(data.replace(b"\r\n", b"\n"))), data, name)

    def test_every_audio_line_has_codecs(self):
        """Every audio m-line of the corpus maps each of its payload types
        to an encoding (static or rtpmap), except G.729's 18 without rtpmap,
        which the static table covers too."""
        for name, data in corpus():
            sdp = parse(data)
            audio = [m for m in sdp.media if m.media == "audio"]
            self.assertTrue(audio, name)
            for m in audio:
                maps = m.rtpmap()
                for pt in m.payload_types():
                    self.assertIn(pt, maps, f"{name}: pt {pt}")
                self.assertIsNotNone(sdp.address(m), name)

    def test_rewrite_keeps_the_rest(self):
        """Rewriting address, port and direction of each offer changes only
        the c=, m= and direction lines: every other line is still there in
        the same order."""
        for name, data in corpus():
            sdp = parse(data)
            for m in sdp.media:
                m.port = 40000
                m.connection = Connection("IN", "IP4", "203.0.113.5")
                m.direction = "sendonly"
            if sdp.connection is not None:
                sdp.connection.address = "203.0.113.5"
            out = bytes(sdp).decode()
            before = [l for l in data.decode().split("\r\n") if not l.startswith(("c=", "m=", "a=send", "a=recv", "a=inactive"))]
            after = [l for l in out.split("\r\n") if not l.startswith(("c=", "m=", "a=send", "a=recv", "a=inactive"))]
            self.assertEqual(after, before, name)
            again = parse(bytes(sdp))
            for m in again.media:
                self.assertEqual(m.port, 40000)
                self.assertEqual(again.address(m), "203.0.113.5")
                self.assertEqual(m.direction, "sendonly")


    def test_device_quirks(self):
        """What the collected offers do that a strict reader would trip on:
        Firefox's session-level a=sendrecv and G722/8000/1, Cisco's c=
        after m= (no session c=), Yealink's fmtp before its rtpmap, Zoiper
        listing telephone-event before the audio codecs."""
        def load(name):
            with open(os.path.join(DATA, name), "rb") as f:
                return parse(f.read())

        firefox = load("firefox-audio.sdp")
        self.assertEqual(firefox.attribute("sendrecv"), "")
        self.assertEqual(firefox.direction_of(firefox.media[0]), "sendrecv")
        self.assertEqual(firefox.media[0].rtpmap()[9], ("G722", 8000, 1))
        cisco = load("cisco-7960-c-after-m.sdp")
        self.assertIsNone(cisco.connection)
        self.assertEqual(cisco.address(cisco.media[0]), "192.0.2.10")
        yealink = load("yealink-t22p.sdp")
        self.assertEqual(yealink.media[0].rtpmap()[101], ("telephone-event", 8000, 1))
        self.assertEqual(yealink.media[0].fmtp(101), "0-15")
        zoiper = load("zoiper-2.10.sdp")
        self.assertEqual(zoiper.media[0].formats[:2], ["3", "101"])
        self.assertEqual(zoiper.media[0].rtpmap()[3], ("GSM", 8000, 1))


class ParseTests(SynchronousTestCase):
    def test_fields(self):
        """The modelled lines land in their fields; the others in C{lines}."""
        sdp = parse(BASIC)
        self.assertEqual(sdp.version, 0)
        self.assertEqual(sdp.origin, Origin("-", "1", "2", "IN", "IP4", "192.0.2.10"))
        self.assertEqual(sdp.session_name, "-")
        self.assertEqual(sdp.connection, Connection("IN", "IP4", "192.0.2.10"))
        self.assertEqual(sdp.lines, [("t", "0 0")])
        (m,) = sdp.media
        self.assertEqual((m.media, m.port, m.port_count, m.proto), ("audio", 4000, None, "RTP/AVP"))
        self.assertEqual(m.formats, ["0", "8", "101"])
        self.assertIsNone(m.connection)
        self.assertEqual(m.lines, [("a", "rtpmap:101 telephone-event/8000"), ("a", "fmtp:101 0-16"), ("a", "ptime:20")])
        self.assertEqual(sdp.address(m), "192.0.2.10")

    def test_rtpmap_static_and_dynamic(self):
        """Static payload types without rtpmap come from RFC 3551 (G.722 at
        clock 8000, as that RFC says); rtpmap gives encoding, clock and
        channels (1 when absent)."""
        sdp = parse(
            BASIC.replace(b"RTP/AVP 0 8 101", b"RTP/AVP 96 9 18 0 8 101")
            + b"a=rtpmap:96 opus/48000/2\r\na=fmtp:96 useinbandfec=1\r\n"
        )
        maps = sdp.media[0].rtpmap()
        self.assertEqual(list(maps), [96, 9, 18, 0, 8, 101])
        self.assertEqual(maps[96], ("opus", 48000, 2))
        self.assertEqual(maps[9], ("G722", 8000, 1))
        self.assertEqual(maps[18], ("G729", 8000, 1))
        self.assertEqual(maps[0], ("PCMU", 8000, 1))
        self.assertEqual(maps[8], ("PCMA", 8000, 1))
        self.assertEqual(maps[101], ("telephone-event", 8000, 1))
        self.assertEqual(sdp.media[0].fmtp(96), "useinbandfec=1")
        self.assertEqual(sdp.media[0].fmtp(101), "0-16")
        self.assertIsNone(sdp.media[0].fmtp(0))

    def test_rtpmap_overrides_static(self):
        """An rtpmap for a static number wins over the table (RFC 3264
        allows remapping; some gateways send a=rtpmap:0 PCMU/8000 anyway)."""
        sdp = parse(BASIC.replace(b"101 telephone-event", b"0 pcmu").replace(b"a=fmtp:101 0-16\r\n", b""))
        self.assertEqual(sdp.media[0].rtpmap()[0], ("pcmu", 8000, 1))

    def test_media_connection_and_port_count(self):
        """A media-level c= wins over the session's; m= with port/count."""
        data = BASIC.replace(b"m=audio 4000 RTP/AVP", b"m=audio 4000/2 RTP/AVP").replace(
            b"a=rtpmap", b"c=IN IP4 198.51.100.7/127\r\na=rtpmap"
        )
        sdp = parse(data)
        m = sdp.media[0]
        self.assertEqual(m.port_count, 2)
        self.assertEqual(m.connection.address, "198.51.100.7/127")
        self.assertEqual(sdp.address(m), "198.51.100.7")
        self.assertEqual(bytes(sdp), data)

    def test_no_connection(self):
        """Without any c=, address() is None (the caller decides: 488)."""
        sdp = parse(BASIC.replace(b"c=IN IP4 192.0.2.10\r\n", b""))
        self.assertIsNone(sdp.connection)
        self.assertIsNone(sdp.address(sdp.media[0]))

    def test_unknown_lines_kept_in_order(self):
        """Lines of unknown type (RFC 8866 says ignore them) and unknown
        attributes stay where they were, at both levels."""
        data = (
            b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=call\r\ni=info\r\ny=unknown\r\n"
            b"c=IN IP4 192.0.2.1\r\nb=AS:128\r\nt=0 0\r\na=x-vendor:1\r\n"
            b"m=audio 5000 RTP/AVP 0\r\ni=media info\r\nb=TIAS:64000\r\nq=odd\r\na=x-media\r\n"
        )
        sdp = parse(data)
        self.assertEqual(sdp.lines, [("i", "info"), ("y", "unknown"), ("b", "AS:128"), ("t", "0 0"), ("a", "x-vendor:1")])
        self.assertEqual(sdp.media[0].lines, [("i", "media info"), ("b", "TIAS:64000"), ("q", "odd"), ("a", "x-media")])
        self.assertEqual(bytes(sdp), data)

    def test_lines_out_of_rfc_order(self):
        """Devices that put c= after t= or a media c= after its attributes
        get them back where they were (byte-exact), and a changed c= stays
        in that place."""
        data = (
            b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\nc=IN IP4 192.0.2.1\r\n"
            b"m=audio 5000 RTP/AVP 0\r\na=sendrecv\r\nc=IN IP4 192.0.2.2\r\n"
        )
        sdp = parse(data)
        self.assertEqual(bytes(sdp), data)
        sdp.connection.address = "203.0.113.1"
        sdp.media[0].connection.address = "203.0.113.2"
        self.assertEqual(bytes(sdp), data.replace(b"192.0.2.1\r\nm", b"203.0.113.1\r\nm").replace(b"192.0.2.2", b"203.0.113.2"))

    def test_spacing_kept_until_changed(self):
        """Odd spacing in o=, c= and m= survives the round trip; changing a
        field rewrites that line alone in canonical form."""
        data = (
            b"v=0\r\no=user  1 1 IN IP4 192.0.2.1\r\ns= \r\nc=IN  IP4 192.0.2.1 \r\nt=0 0\r\n"
            b"m=audio  5000 RTP/AVP 0  8\r\n"
        )
        sdp = parse(data)
        self.assertEqual(bytes(sdp), data)
        self.assertEqual(sdp.session_name, " ")
        self.assertEqual(sdp.media[0].formats, ["0", "8"])
        sdp.media[0].formats = ["8"]
        sdp.origin.sess_version = "2"
        self.assertEqual(
            bytes(sdp),
            data.replace(b"m=audio  5000 RTP/AVP 0  8", b"m=audio 5000 RTP/AVP 8").replace(
                b"o=user  1 1", b"o=user 1 2"
            ),
        )

    def test_added_connection_goes_in_rfc_place(self):
        """A c= the B2BUA adds goes where RFC 8866 puts it: after i/u/e/p at
        session level, after i= in a media section."""
        sdp = parse(BASIC.replace(b"c=IN IP4 192.0.2.10\r\n", b"").replace(b"s=-\r\n", b"s=-\r\ni=x\r\n"))
        sdp.connection = Connection(address="203.0.113.9")
        sdp.media[0].connection = Connection(address="203.0.113.8")
        text = bytes(sdp).decode()
        self.assertIn("s=-\r\ni=x\r\nc=IN IP4 203.0.113.9\r\nt=0 0\r\n", text)
        self.assertIn("m=audio 4000 RTP/AVP 0 8 101\r\nc=IN IP4 203.0.113.8\r\na=rtpmap", text)

    def test_leniency_line_ends(self):
        """LF-only (hand-written SDP, some SIP stacks), a missing final line
        end (some gateways) and blank lines at the end (an extra CRLF after
        the body) are read; the written form ends each line with CRLF."""
        self.assertEqual(bytes(parse(BASIC.replace(b"\r\n", b"\n"))), BASIC)
        self.assertEqual(bytes(parse(BASIC[:-2])), BASIC)
        self.assertEqual(bytes(parse(BASIC + b"\r\n\r\n")), BASIC)
        self.assertEqual(bytes(parse(BASIC.replace(b"\r\n", b"\n", 3))), BASIC)

    def test_leniency_no_t_line(self):
        """t= is required by RFC 8866 but some embedded stacks leave it out;
        nothing here needs it."""
        data = BASIC.replace(b"t=0 0\r\n", b"")
        self.assertEqual(bytes(parse(data)), data)

    def test_leniency_no_formats(self):
        """An m-line without formats (seen in rejected streams: m=video 0
        RTP/AVP) is read and written back."""
        data = BASIC + b"m=video 0 RTP/AVP\r\n"
        sdp = parse(data)
        self.assertEqual(sdp.media[1].formats, [])
        self.assertEqual(bytes(sdp), data)

    def test_non_rtp_formats(self):
        """Formats of non-RTP protocols are tokens (WebRTC data channels)."""
        data = BASIC + b"m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=sctp-port:5000\r\n"
        sdp = parse(data)
        self.assertEqual(sdp.media[1].formats, ["webrtc-datachannel"])
        self.assertEqual(sdp.media[1].rtpmap(), {})
        self.assertEqual(bytes(sdp), data)

    def test_non_utf8_kept(self):
        """Octets that are not UTF-8 (a Latin-1 session name with
        a=charset) round-trip unchanged."""
        data = BASIC.replace(b"s=-", b"s=Caf\xe9")
        self.assertEqual(bytes(parse(data)), data)

    def test_accepts_str(self):
        """A str body parses like its UTF-8 bytes."""
        self.assertEqual(bytes(parse(BASIC.decode())), BASIC)

    def test_malformed(self):
        """Each grammar violation raises SdpError with a message naming
        the line."""
        bad = {
            "empty": b"",
            "blank": b"\r\n\r\n",
            "no v": BASIC[len(b"v=0\r\n"):],
            "v not number": BASIC.replace(b"v=0", b"v=x"),
            "second v": BASIC + b"v=0\r\n",
            "no o": BASIC.replace(b"o=- 1 2 IN IP4 192.0.2.10\r\n", b""),
            "short o": BASIC.replace(b"o=- 1 2 IN IP4 192.0.2.10", b"o=- 1 2 IN IP4"),
            "second o": BASIC.replace(b"s=-", b"o=- 1 2 IN IP4 192.0.2.10\r\ns=-"),
            "no s": BASIC.replace(b"s=-\r\n", b""),
            "second s": BASIC.replace(b"s=-", b"s=-\r\ns=x"),
            "o in media": BASIC + b"o=- 1 2 IN IP4 192.0.2.10\r\n",
            "short c": BASIC.replace(b"c=IN IP4 192.0.2.10", b"c=IN IP4"),
            "second session c": BASIC.replace(b"t=0 0", b"c=IN IP4 192.0.2.1\r\nt=0 0"),
            "bad media c": BASIC + b"c=IN\r\n",
            "no equals": BASIC + b"a\r\n",
            "space before equals": BASIC + b"a =sendrecv\r\n",
            "long type": BASIC + b"ab=1\r\n",
            "digit type": BASIC + b"1=1\r\n",
            "blank middle": BASIC.replace(b"t=0 0\r\n", b"t=0 0\r\n\r\n"),
            "short m": BASIC.replace(b"m=audio 4000 RTP/AVP 0 8 101", b"m=audio 4000"),
            "port": BASIC.replace(b"4000", b"x"),
            "port range": BASIC.replace(b"4000", b"70000"),
            "port count": BASIC.replace(b"4000", b"4000/0"),
            "negative port": BASIC.replace(b"4000", b"-1"),
            "pt": BASIC.replace(b"0 8 101", b"0 8 PCMU"),
            "pt range": BASIC.replace(b"0 8 101", b"0 8 128"),
            "rtpmap no clock": BASIC.replace(b"telephone-event/8000", b"telephone-event"),
            "rtpmap clock": BASIC.replace(b"telephone-event/8000", b"telephone-event/x"),
            "rtpmap pt": BASIC.replace(b"rtpmap:101", b"rtpmap:x"),
            "rtpmap channels": BASIC.replace(b"telephone-event/8000", b"telephone-event/8000/"),
            "fmtp": BASIC.replace(b"fmtp:101 0-16", b"fmtp:"),
            "empty attribute": BASIC + b"a=\r\n",
            "nul": BASIC + b"a=x\x00y\r\n",
            "cr inside": BASIC + b"a=x\ry\r\n",
        }
        for what, data in bad.items():
            try:
                parse(data)
            except SdpError as e:
                self.assertTrue(str(e), what)
            else:
                self.fail(f"{what}: no SdpError for {data!r}")

    def test_random_mutations(self):
        """Seeded random byte mutations of every corpus file raise SdpError
        or parse to something that writes and re-parses to the same text
        (the parser never raises anything else)."""
        rng = random.Random(8866)
        files = [data for _, data in corpus()]
        tokens = [b"\r\n", b"\n", b"\r", b"=", b":", b" ", b"/", b"\x00", b"\xff", b"m=", b"c=", b"v=0", b"a=rtpmap:", b"99999999999999999999999"]
        for _ in range(1500):
            data = bytearray(rng.choice(files))
            for _ in range(rng.randint(1, 4)):
                pos = rng.randrange(len(data) + 1)
                op = rng.random()
                if op < 0.3 and data:
                    del data[pos : pos + rng.randint(1, 20)]
                elif op < 0.6:
                    data[pos:pos] = rng.choice(tokens)
                elif data:
                    data[min(pos, len(data) - 1)] = rng.randrange(256)
            check_stable(self, bytes(data))


def check_stable(case, data: bytes) -> None:
    """parse() raises SdpError only; what it accepts writes back to an SDP
    that parses to the same bytes again."""
    try:
        sdp = parse(data)
    except SdpError:
        return
    out = bytes(sdp)
    case.assertEqual(bytes(parse(out)), out)


if given is not None:

    class FuzzTests(SynchronousTestCase):
        @settings(
            max_examples=EXAMPLES or 500,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(
            st.sampled_from([data for _, data in corpus()]),
            st.lists(st.tuples(st.integers(0, 6000), st.integers(0, 30), st.binary(max_size=12)), max_size=6),
        )
        def test_mutated_corpus(self, base, edits):
            """Hypothesis splices random bytes into the corpus: SdpError or
            a stable round trip, never another exception."""
            data = bytearray(base)
            for pos, cut, insert in edits:
                pos = pos % (len(data) + 1)
                data[pos : pos + cut] = insert
            check_stable(self, bytes(data))

        @settings(max_examples=EXAMPLES or 500, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(
            st.lists(
                st.tuples(
                    st.sampled_from("vosictmabkzxAq1 ="),
                    st.text(alphabet=st.sampled_from(" 0123456789/:=-IPNabcdefmortuvwxyz\r\n\u00e9"), max_size=30),
                ),
                max_size=15,
            )
        )
        def test_random_lines(self, lines):
            """Line soup built from SDP's own alphabet: SdpError or a
            stable round trip."""
            body = "v=0\r\n" + "".join(f"{kind}={value}\r\n" for kind, value in lines)
            check_stable(self, body.encode())


class ModelTests(SynchronousTestCase):
    def test_direction(self):
        """direction reads the media attribute (sendrecv by default, RFC
        3264), setting it replaces the existing one in place or appends;
        direction_of falls back to the session level."""
        sdp = parse(BASIC)
        m = sdp.media[0]
        self.assertEqual(m.direction, "sendrecv")
        self.assertEqual(sdp.direction_of(m), "sendrecv")
        sdp.add_attribute("recvonly")
        self.assertEqual(m.direction, "sendrecv")
        self.assertEqual(sdp.direction_of(m), "recvonly")
        m.direction = "sendonly"
        self.assertEqual(m.lines[-1], ("a", "sendonly"))
        self.assertEqual(sdp.direction_of(m), "sendonly")
        m.lines.insert(0, ("a", "inactive"))
        m.direction = "recvonly"
        self.assertEqual(m.lines[0], ("a", "recvonly"))
        self.assertNotIn(("a", "sendonly"), m.lines)
        self.assertRaises(ValueError, setattr, m, "direction", "hold")

    def test_hold(self):
        """Hold is sendonly or inactive (RFC 3264), or c=0.0.0.0 (RFC 2543,
        still sent by old phones); recvonly is not hold."""
        for extra, held in [(b"", False), (b"a=sendonly\r\n", True), (b"a=inactive\r\n", True), (b"a=recvonly\r\n", False)]:
            sdp = parse(BASIC + extra)
            self.assertEqual(sdp.is_hold(sdp.media[0]), held, extra)
        sdp = parse(BASIC.replace(b"c=IN IP4 192.0.2.10", b"c=IN IP4 0.0.0.0"))
        self.assertTrue(sdp.is_hold(sdp.media[0]))

    def test_answer_direction(self):
        """RFC 3264 section 6.1's table, and an answerer's own wish."""
        table = {
            ("sendrecv", "sendrecv"): "sendrecv",
            ("sendonly", "sendrecv"): "recvonly",
            ("recvonly", "sendrecv"): "sendonly",
            ("inactive", "sendrecv"): "inactive",
            ("sendrecv", "sendonly"): "sendonly",
            ("sendrecv", "inactive"): "inactive",
            ("sendonly", "sendonly"): "inactive",
            ("recvonly", "recvonly"): "inactive",
        }
        for (offered, wanted), expected in table.items():
            self.assertEqual(answer_direction(offered, wanted), expected, (offered, wanted))
        self.assertRaises(ValueError, answer_direction, "hold")

    def test_reject(self):
        """A refused stream: port 0 (and no port count), formats kept."""
        sdp = parse(BASIC.replace(b"4000", b"4000/2"))
        m = sdp.media[0]
        self.assertFalse(m.rejected)
        m.reject()
        self.assertTrue(m.rejected)
        self.assertIn(b"m=audio 0 RTP/AVP 0 8 101\r\n", bytes(sdp))

    def test_attributes(self):
        """attribute/attributes read a=name[:value]; flags give ''."""
        m = parse(BASIC + b"a=sendrecv\r\na=rtpmap:0 PCMU/8000\r\n").media[0]
        self.assertEqual(m.attributes("rtpmap"), ["101 telephone-event/8000", "0 PCMU/8000"])
        self.assertEqual(m.attribute("rtpmap"), "101 telephone-event/8000")
        self.assertEqual(m.attribute("sendrecv"), "")
        self.assertIsNone(m.attribute("crypto"))
        self.assertFalse(m.has_attribute("crypto"))
        m.set_attribute("ptime", "30")
        self.assertEqual(m.attributes("ptime"), ["30"])
        m.set_attribute("rtpmap", "8 PCMA/8000")
        self.assertEqual(m.attributes("rtpmap"), ["8 PCMA/8000"])
        self.assertEqual(m.lines[0], ("a", "rtpmap:8 PCMA/8000"))
        m.set_attribute("rtcp-mux")
        self.assertEqual(m.lines[-1], ("a", "rtcp-mux"))
        m.add_attribute("crypto", "1 AES_CM_128_HMAC_SHA1_80 inline:x")
        m.remove_attribute("ptime")
        self.assertIsNone(m.attribute("ptime"))
        self.assertEqual(m.attribute("crypto"), "1 AES_CM_128_HMAC_SHA1_80 inline:x")

    def test_copy_is_deep(self):
        """Changing a copy leaves the original and its bytes alone."""
        sdp = parse(BASIC)
        other = sdp.copy()
        other.media[0].port = 1
        other.media[0].lines.append(("a", "x"))
        other.connection.address = "203.0.113.1"
        other.lines.append(("a", "y"))
        self.assertEqual(bytes(sdp), BASIC)
        self.assertNotEqual(bytes(other), BASIC)

    def test_build_from_scratch(self):
        """A description built from the dataclasses writes in RFC order."""
        sdp = SessionDescription(
            origin=Origin("rustpbx", "1", "1", "IN", "IP4", "192.0.2.1"),
            connection=Connection(address="192.0.2.1"),
            media=[MediaDescription(port=4000, formats=["0"], lines=[("a", "rtpmap:0 PCMU/8000")])],
        )
        self.assertEqual(
            bytes(sdp),
            b"v=0\r\no=rustpbx 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
            b"m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
        )
        self.assertEqual(bytes(parse(bytes(sdp))), bytes(sdp))
