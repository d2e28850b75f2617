"""
Tests for L{rustpbx_py.sip.message} (parse and serialise) and
L{rustpbx_py.sip.multipart}.
"""

from twisted.trial.unittest import SynchronousTestCase

from rustpbx_py.sip import message as message_module
from rustpbx_py.sip.headers import HeaderError
from rustpbx_py.sip.message import (
    MAX_HEADERS,
    MAX_MESSAGE_SIZE,
    REASONS,
    Request,
    Response,
    SipParseError,
    canonical_name,
    header_key,
    parse_message,
    split_list,
)
from rustpbx_py.sip.multipart import MultipartError, Part, build_multipart, find_part, parse_multipart


def crlf(*lines: str) -> bytes:
    return ("\r\n".join(lines)).encode("utf-8")


INVITE = crlf(
    "INVITE sip:bob@biloxi.example.com SIP/2.0",
    "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds",
    "Max-Forwards: 70",
    "To: Bob <sip:bob@biloxi.example.com>",
    "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774",
    "Call-ID: a84b4c76e66710@pc33.atlanta.example.com",
    "CSeq: 314159 INVITE",
    "Contact: <sip:alice@pc33.atlanta.example.com>",
    "Content-Type: application/sdp",
    "Content-Length: 4",
    "",
    "v=0\n",
)


class ParseRequestTests(SynchronousTestCase):
    def test_request(self):
        """A plain INVITE parses into method, URI, headers in order and body."""
        m = parse_message(INVITE)
        self.assertIsInstance(m, Request)
        self.assertTrue(m.is_request)
        self.assertEqual(m.method, "INVITE")
        self.assertEqual(m.uri, "sip:bob@biloxi.example.com")
        self.assertEqual(m.version, "SIP/2.0")
        self.assertEqual(m.call_id, "a84b4c76e66710@pc33.atlanta.example.com")
        self.assertEqual(m.cseq, (314159, "INVITE"))
        self.assertEqual(m.max_forwards, 70)
        self.assertEqual(m.top_via, "SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds")
        self.assertEqual(m.body, b"v=0\n")
        self.assertEqual(
            [name for name, _ in m.header_items()],
            ["Via", "Max-Forwards", "To", "From", "Call-ID", "CSeq", "Contact", "Content-Type", "Content-Length"],
        )

    def test_roundtrip(self):
        """An ordinary message serialises back byte for byte."""
        self.assertEqual(parse_message(INVITE).to_bytes(), INVITE)

    def test_case_insensitive_and_compact(self):
        """Header names match case-insensitively and compact forms find their
        long names (RFC 3261 7.3.3)."""
        data = crlf(
            "OPTIONS sip:a@b SIP/2.0",
            "v: SIP/2.0/UDP h;branch=z9hG4bK1",
            "f: <sip:x@y>;tag=1",
            "t: <sip:a@b>",
            "i: abc",
            "m: <sip:x@h>",
            "c: text/plain",
            "k: timer",
            "s: hello",
            "e: identity",
            "o: presence",
            "CSEQ: 1 OPTIONS",
            "l: 2",
            "",
            "hi",
        )
        m = parse_message(data)
        for long, value in [
            ("Via", "SIP/2.0/UDP h;branch=z9hG4bK1"),
            ("From", "<sip:x@y>;tag=1"),
            ("to", "<sip:a@b>"),
            ("Call-ID", "abc"),
            ("contact", "<sip:x@h>"),
            ("Content-Type", "text/plain"),
            ("Supported", "timer"),
            ("Subject", "hello"),
            ("Content-Encoding", "identity"),
            ("Event", "presence"),
            ("cseq", "1 OPTIONS"),
            ("Content-Length", "2"),
        ]:
            self.assertEqual(m.get(long), value, long)
        self.assertEqual(m.get("v"), m.get("VIA"))
        # The compact spelling is kept on the wire.
        self.assertIn(b"\r\nf: <sip:x@y>;tag=1\r\n", m.to_bytes())

    def test_folding(self):
        """Folded lines join with one SP (RFC 3261 7.3.1)."""
        data = crlf(
            "OPTIONS sip:a@b SIP/2.0",
            "Via: SIP/2.0/UDP h;branch=z9hG4bK1",
            "Subject: one",
            "  two",
            "\tthree",
            "To:",
            " <sip:a@b>",
            "l: 0",
            "",
            "",
        )
        m = parse_message(data)
        self.assertEqual(m.get("subject"), "one two three")
        self.assertEqual(m.get("to"), "<sip:a@b>")

    def test_unknown_headers_byte_exact(self):
        """Unknown headers keep name spelling, value and even octets that
        are not UTF-8 through parse and serialise."""
        data = (
            b"MESSAGE sip:a@b SIP/2.0\r\n"
            b"Via: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
            b"X-WeIrD-Name: ;;,,;;,;\r\n"
            b"X-Bytes: \xff\xfe caf\xc3\xa9\r\n"
            b"Content-Length: 0\r\n\r\n"
        )
        m = parse_message(data)
        self.assertEqual(m.get("x-weird-name"), ";;,,;;,;")
        self.assertEqual(m.to_bytes(), data)

    def test_list_headers_split(self):
        """List headers split on commas outside quotes and <> (RFC 3261 7.3.1);
        other headers do not."""
        data = crlf(
            "REGISTER sip:r SIP/2.0",
            "Via: SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2",
            "Via: SIP/2.0/UDP c;branch=z9hG4bK3",
            'Contact: "Doe, John" <sip:j@h;x=a,b>;q=0.5, <sip:k@h>',
            "Date: Sat, 13 Nov 2010 23:29:00 GMT",
            "l: 0",
            "",
            "",
        )
        m = parse_message(data)
        self.assertEqual(
            m.get_all("via"),
            ["SIP/2.0/UDP a;branch=z9hG4bK1", "SIP/2.0/UDP b;branch=z9hG4bK2", "SIP/2.0/UDP c;branch=z9hG4bK3"],
        )
        self.assertEqual(m.get_all("contact"), ['"Doe, John" <sip:j@h;x=a,b>;q=0.5', "<sip:k@h>"])
        self.assertEqual(m.get_all("date"), ["Sat, 13 Nov 2010 23:29:00 GMT"])

    def test_split_list_quotes(self):
        """split_list honours escaped quotes inside quoted strings."""
        self.assertEqual(split_list('"a\\",b" <sip:x>, <sip:y>'), ['"a\\",b" <sip:x>', "<sip:y>"])
        self.assertEqual(split_list(" , ,"), [])

    def test_extra_octets_ignored(self):
        """Octets after Content-Length bytes of body are ignored (RFC 3261
        18.3; RFC 4475 dblreq)."""
        m = parse_message(INVITE + b"garbage")
        self.assertEqual(m.body, b"v=0\n")

    def test_no_content_length_datagram(self):
        """Without Content-Length a datagram's body runs to its end."""
        data = crlf("MESSAGE sip:a@b SIP/2.0", "Via: SIP/2.0/UDP h;branch=z9hG4bK1", "", "hello")
        self.assertEqual(parse_message(data).body, b"hello")

    def test_stream_needs_content_length(self):
        """On a stream transport a missing Content-Length is a 400."""
        data = crlf("MESSAGE sip:a@b SIP/2.0", "Via: SIP/2.0/UDP h;branch=z9hG4bK1", "", "")
        e = self.assertRaises(SipParseError, parse_message, data, True)
        self.assertEqual(e.status, 400)
        self.assertIn("Content-Length", e.reason)

    def test_keepalive_prefix(self):
        """CRLF keep-alives before a message are skipped."""
        m = parse_message(b"\r\n\r\n" + INVITE)
        self.assertEqual(m.method, "INVITE")

    def test_empty_dropped(self):
        """Nothing but CRLFs is dropped, never answered."""
        for data in [b"", b"\r\n", b"\r\n\r\n"]:
            self.assertIsNone(self.assertRaises(SipParseError, parse_message, data).status)

    def test_bare_lf_leniency(self):
        """Leniency: bare LF line ends (hand-written test tools, some ALGs)
        are accepted."""
        m = parse_message(INVITE.replace(b"\r\n", b"\n"))
        self.assertEqual(m.get("cseq"), "314159 INVITE")
        self.assertEqual(m.body, b"v=0\n")

    def test_bare_cr_refused(self):
        """A bare CR inside the head is refused: another parser could take
        it as a line end (header injection)."""
        data = INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards: 70\rX-Evil: 1")
        self.assertEqual(self.assertRaises(SipParseError, parse_message, data).status, 400)

    def test_missing_final_crlf_leniency(self):
        """Leniency: a datagram whose head lacks the final blank line parses
        (RFC 4475 baddn is sent that way)."""
        data = crlf("OPTIONS sip:a@b SIP/2.0", "Via: SIP/2.0/UDP h;branch=z9hG4bK1", "l: 0", "")
        self.assertEqual(parse_message(data).get("content-length"), "0")

    def test_ruri_cached(self):
        """Request.ruri parses the Request-URI once and again after uri changes."""
        m = parse_message(INVITE)
        first = m.ruri
        self.assertIs(m.ruri, first)
        self.assertEqual(first.user, "bob")
        m.uri = "sip:carol@chicago.example.com"
        self.assertEqual(m.ruri.user, "carol")
        m.uri = "<bad>"
        self.assertRaises(HeaderError, lambda: m.ruri)

    def test_parsed_header_cache(self):
        """via, from_addr and to_addr parse once, and parse again after the
        header is edited; absent headers give None, bad ones HeaderError."""
        m = parse_message(INVITE)
        via = m.via
        self.assertEqual(via.branch, "z9hG4bK776asdhds")
        self.assertIs(m.via, via)
        self.assertEqual(m.from_addr.tag, "1928301774")
        self.assertIs(m.from_addr, m.from_addr)
        self.assertIsNone(m.to_addr.tag)
        m.insert("Via", "SIP/2.0/TCP proxy.example.com;branch=z9hG4bKp, SIP/2.0/UDP x;branch=z9hG4bKq")
        self.assertEqual(m.via.host, "proxy.example.com")
        m.set("To", "Bob <sip:bob@biloxi.example.com>;tag=x")
        self.assertEqual(m.to_addr.tag, "x")
        m.remove("from")
        self.assertIsNone(m.from_addr)
        m.set("From", "<sip:a@b")
        self.assertRaises(HeaderError, lambda: m.from_addr)

    def test_cseq_and_max_forwards_guards(self):
        """Unusable or absurdly long CSeq / Max-Forwards give (0, "") / None
        instead of raising (Python refuses int() of huge digit strings)."""
        m = Request("OPTIONS", "sip:a@b", [], b"")
        self.assertEqual(m.cseq, (0, ""))
        self.assertIsNone(m.max_forwards)
        m.add("CSeq", "9" * 5000 + " OPTIONS")
        m.add("Max-Forwards", "9" * 5000)
        self.assertEqual(m.cseq, (0, ""))
        self.assertIsNone(m.max_forwards)


class ParseErrorTests(SynchronousTestCase):
    def parse_error(self, data, stream=False):
        return self.assertRaises(SipParseError, parse_message, data, stream)

    def test_bad_request_line(self):
        """Malformed Request-Lines are 400 and carry the parsed headers."""
        for line in [
            "INVITE  sip:a@b SIP/2.0",
            "INVITE sip:a@b SIP/2.0 ",
            "INVITE sip:a@b; lr SIP/2.0",
            "INVITE sip:a@b",
            "INV(ITE sip:a@b SIP/2.0",
            "INVITE sip:a@b SIP/X",
        ]:
            data = INVITE.replace(b"INVITE sip:bob@biloxi.example.com SIP/2.0", line.encode())
            e = self.parse_error(data)
            self.assertEqual(e.status, 400, line)
            self.assertEqual(e.message.call_id, "a84b4c76e66710@pc33.atlanta.example.com")

    def test_version(self):
        """Another SIP version is 505 (RFC 4475 badvers); version case does
        not matter."""
        e = self.parse_error(INVITE.replace(b"SIP/2.0\r\nVia", b"SIP/7.0\r\nVia", 1))
        self.assertEqual(e.status, 505)
        self.assertEqual(parse_message(INVITE.replace(b"SIP/2.0\r\nVia", b"sip/2.0\r\nVia", 1)).method, "INVITE")

    def test_no_via_drops(self):
        """A bad request without a usable Via cannot be answered: dropped."""
        data = crlf("INVITE  sip:a@b SIP/2.0", "Via: junk", "l: 0", "", "")
        self.assertIsNone(self.parse_error(data).status)
        data = crlf("INVITE  sip:a@b SIP/2.0", "l: 0", "", "")
        self.assertIsNone(self.parse_error(data).status)

    def test_bad_header_line(self):
        """A header line without a colon or with a non-token name is 400."""
        for line in [b"NoColonHere", b"Bad Name: x", b": empty"]:
            data = INVITE.replace(b"Max-Forwards: 70", line)
            self.assertEqual(self.parse_error(data).status, 400, line)

    def test_continuation_first(self):
        """A continuation line before any header is 400."""
        data = INVITE.replace(b"\r\nVia:", b"\r\n folded\r\nVia:", 1)
        self.assertEqual(self.parse_error(data).status, 400)

    def test_content_length_errors(self):
        """Negative, non-numeric, duplicated or too large Content-Length is
        400 (RFC 4475 ncl, mcl01, clerr)."""
        for value in [b"-4", b"four", b"4, 4", b"99999999999", b"5"]:
            data = INVITE.replace(b"Content-Length: 4", b"Content-Length: " + value)
            self.assertEqual(self.parse_error(data).status, 400, value)
        data = INVITE.replace(b"Content-Length: 4", b"Content-Length: 4\r\nl: 4")
        self.assertEqual(self.parse_error(data).status, 400)

    def test_too_large(self):
        """A message above MAX_MESSAGE_SIZE is 513 Message Too Large."""
        data = INVITE.replace(b"Content-Length: 4", b"Content-Length: %d" % MAX_MESSAGE_SIZE)
        data = data[: data.index(b"\r\n\r\n") + 4] + b"x" * MAX_MESSAGE_SIZE
        e = self.parse_error(data)
        self.assertEqual(e.status, 513)
        self.assertIn("Too Large", e.reason)

    def test_too_many_headers(self):
        """More than MAX_HEADERS header fields is a 400 that says so."""
        extra = b"".join(b"X-H%d: v\r\n" % i for i in range(MAX_HEADERS))
        data = INVITE.replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\n" + extra)
        e = self.parse_error(data)
        self.assertEqual(e.status, 400)
        self.assertIn(str(MAX_HEADERS), e.reason)

    def test_bad_responses_dropped(self):
        """Malformed responses are dropped, never answered."""
        for first in [b"SIP/2.0 4294967301 big", b"SIP/2.0 99 low", b"SIP/3.0 200 OK", b"SIP/2.0 2000 OK", b"SIP/2.0"]:
            data = first + b"\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nl: 0\r\n\r\n"
            self.assertIsNone(self.parse_error(data).status, first)
        data = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nl: -1\r\n\r\n"
        self.assertIsNone(self.parse_error(data).status)


class ParseResponseTests(SynchronousTestCase):
    def test_response(self):
        """A response gives status, reason, headers and body."""
        data = crlf(
            "SIP/2.0 180 Ringing",
            "Via: SIP/2.0/UDP h;branch=z9hG4bK1",
            "CSeq: 1 INVITE",
            "Content-Length: 0",
            "",
            "",
        )
        m = parse_message(data)
        self.assertIsInstance(m, Response)
        self.assertFalse(m.is_request)
        self.assertEqual((m.status, m.reason), (180, "Ringing"))
        self.assertEqual(m.to_bytes(), data)

    def test_empty_reason(self):
        """An empty reason phrase is fine, with or without its SP
        (RFC 4475 noreason; leniency for the missing SP)."""
        for first in [b"SIP/2.0 100 ", b"SIP/2.0 100"]:
            m = parse_message(first + b"\r\nl: 0\r\n\r\n")
            self.assertEqual((m.status, m.reason), (100, ""))


class BuildTests(SynchronousTestCase):
    def test_build_request(self):
        """A request built in code serialises with a Content-Length."""
        r = Request("OPTIONS", "sip:a@b")
        r.add("Via", "SIP/2.0/UDP h;branch=z9hG4bK1")
        r.add("i", "x")
        self.assertEqual(
            r.to_bytes(),
            b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCall-ID: x\r\nContent-Length: 0\r\n\r\n",
        )

    def test_content_length_follows_body(self):
        """to_bytes() makes Content-Length match the body and keeps one."""
        m = parse_message(INVITE)
        m.body = b"v=0\r\no=x\r\n"
        m.add("l", "99")
        out = m.to_bytes()
        self.assertIn(b"Content-Length: 10\r\n", out)
        self.assertEqual(out.count(b"Content-Length"), 1)
        self.assertNotIn(b"\r\nl:", out)

    def test_no_header_injection(self):
        """to_bytes() refuses a value or reason phrase holding CR or LF
        rather than send headers nobody meant to send."""
        m = parse_message(INVITE)
        m.add("Subject", "hi\r\nX-Injected: 1")
        self.assertRaises(ValueError, m.to_bytes)
        r = Response(400, "Bad\nRequest")
        self.assertRaises(ValueError, r.to_bytes)

    def test_response_default_reason(self):
        """A Response without reason takes the standard phrase."""
        self.assertEqual(Response(404).reason, "Not Found")
        self.assertEqual(REASONS[483], "Too Many Hops")
        self.assertTrue(Response(200).to_bytes().startswith(b"SIP/2.0 200 OK\r\n"))

    def test_insert_set_remove_pop(self):
        """insert goes above the first of its name; set replaces all with one
        where the first was; remove drops all; pop_first takes the first list
        element."""
        m = parse_message(INVITE)
        m.insert("Via", "SIP/2.0/UDP proxy;branch=z9hG4bKp")
        self.assertEqual(m.top_via, "SIP/2.0/UDP proxy;branch=z9hG4bKp")
        self.assertEqual(m.headers[0][1], "Via")
        m.insert("Record-Route", "<sip:p;lr>")
        self.assertEqual(m.headers[0][0], "record-route")
        m.set("Max-Forwards", "69")
        self.assertEqual(m.get_all("max-forwards"), ["69"])
        m.add("Route", "<sip:a;lr>, <sip:b;lr>")
        self.assertEqual(m.pop_first("route"), "<sip:a;lr>")
        self.assertEqual(m.get("route"), "<sip:b;lr>")
        self.assertEqual(m.pop_first("route"), "<sip:b;lr>")
        self.assertFalse(m.has("route"))
        self.assertIsNone(m.pop_first("route"))
        m.remove("via")
        self.assertIsNone(m.top_via)
        m.set("X-New", "1")
        self.assertEqual(m.headers[-1], ["x-new", "X-New", "1"])

    def test_copy_headers(self):
        """copy_headers() is independent of the original."""
        m = parse_message(INVITE)
        copy = m.copy_headers()
        copy[0][2] = "changed"
        self.assertNotEqual(m.headers[0][2], "changed")

    def test_names(self):
        """header_key expands compact forms; canonical_name spells ours."""
        self.assertEqual(header_key("V"), "via")
        self.assertEqual(header_key("X"), "session-expires")
        self.assertEqual(header_key("Z"), "z")
        self.assertEqual(canonical_name("call-id"), "Call-ID")
        self.assertEqual(canonical_name("www-authenticate"), "WWW-Authenticate")
        self.assertEqual(canonical_name("record-route"), "Record-Route")

    def test_name_cache_bounded(self):
        """The header-name cache stops growing at its limit (a peer sending
        random names cannot exhaust memory)."""
        cache = message_module._NAME_CACHE
        self.patch(message_module, "_NAME_CACHE_MAX", len(cache) + 2)
        for i in range(10):
            parse_message(INVITE.replace(b"Max-Forwards", b"X-Rand-%d" % i))
        self.assertLessEqual(len(cache), message_module._NAME_CACHE_MAX)


class MultipartTests(SynchronousTestCase):
    BODY = (
        b"--b1\r\n"
        b"Content-Type: application/sdp\r\n\r\n"
        b"v=0\r\n"
        b"\r\n--b1\r\n"
        b"Content-Type: application/isup;version=itu-t92+\r\n"
        b"Content-Disposition: signal;handling=optional\r\n\r\n"
        b"\x01\x00\r\n\x02"
        b"\r\n--b1--\r\n"
    )

    def test_parse(self):
        """A multipart body splits into parts with their headers and exact
        (binary) content."""
        parts = parse_multipart(self.BODY, "multipart/mixed;boundary=b1")
        self.assertEqual([p.content_type for p in parts], ["application/sdp", "application/isup"])
        self.assertEqual(parts[0].body, b"v=0\r\n")
        self.assertEqual(parts[1].body, b"\x01\x00\r\n\x02")
        self.assertEqual(parts[1].get("content-disposition"), "signal;handling=optional")

    def test_roundtrip(self):
        """build_multipart gives back the same bytes."""
        parts = parse_multipart(self.BODY, 'multipart/mixed; boundary="b1"')
        ctype, body = build_multipart(parts, boundary="b1")
        self.assertEqual(body, self.BODY)
        self.assertEqual(ctype, "multipart/mixed;boundary=b1")

    def test_preamble_and_default_type(self):
        """A preamble is skipped; a part without Content-Type is text/plain."""
        body = b"preamble\r\n--x\r\n\r\nhello\r\n--x--"
        parts = parse_multipart(body, "multipart/alternative;boundary=x")
        self.assertEqual(len(parts), 1)
        self.assertEqual(parts[0].content_type, "text/plain")
        self.assertEqual(parts[0].body, b"hello")

    def test_find_nested(self):
        """find_part looks inside nested multiparts."""
        inner_type, inner = build_multipart([Part([("Content-Type", "application/sdp")], b"v=0")], boundary="in")
        outer_type, outer = build_multipart(
            [Part([("Content-Type", "text/plain")], b"x"), Part([("Content-Type", inner_type)], inner)],
            boundary="out",
        )
        parts = parse_multipart(outer, outer_type)
        self.assertEqual(find_part(parts, "application/sdp").body, b"v=0")
        self.assertIsNone(find_part(parts, "image/png"))

    def test_errors(self):
        """Non-multipart types, missing boundaries and unterminated bodies
        raise MultipartError (a HeaderError)."""
        self.assertRaises(MultipartError, parse_multipart, self.BODY, "application/sdp")
        self.assertRaises(MultipartError, parse_multipart, self.BODY, "multipart/mixed")
        self.assertRaises(MultipartError, parse_multipart, b"--b1\r\nx", "multipart/mixed;boundary=b1")
        self.assertRaises(MultipartError, parse_multipart, b"nothing", "multipart/mixed;boundary=b1")
        self.assertTrue(issubclass(MultipartError, HeaderError))
        self.assertRaises(MultipartError, build_multipart, [Part([], b"--b1")], "mixed", "b1")
