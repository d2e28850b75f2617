"""
Tests for L{rustpbx_py.sip.validate} beyond the RFC 4475 corpus (which is
in L{rustpbx_py.test.test_sip_torture}).
"""

from twisted.trial.unittest import SynchronousTestCase

from rustpbx_py.sip.message import parse_message
from rustpbx_py.sip.validate import (
    DEFAULT_SUPPORTED,
    MAX_CSEQ,
    Rejection,
    check_message,
    check_request,
    check_response,
)

BASE = [
    "INVITE sip:bob@biloxi.example.com SIP/2.0",
    "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds",
    "Max-Forwards: 70",
    "To: Bob <sip:bob@biloxi.example.com>",
    "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774",
    "Call-ID: a84b4c76e66710@pc33.atlanta.example.com",
    "CSeq: 314159 INVITE",
    "Contact: <sip:alice@pc33.atlanta.example.com>",
    "Content-Type: application/sdp",
]
SDP = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"


def request(*, replace=(), drop=(), add=(), body=SDP, first=None):
    """An INVITE with some lines replaced ((prefix, line)), dropped
    (prefixes) or added, parsed."""
    lines = list(BASE)
    if first is not None:
        lines[0] = first
    for prefix, line in replace:
        lines = [line if l.startswith(prefix) else l for l in lines]
    lines = [l for l in lines if not any(l.startswith(p) for p in drop)]
    lines += list(add)
    if "Content-Length" not in " ".join(add):
        lines.append(f"Content-Length: {len(body.encode())}")
    return parse_message(("\r\n".join(lines) + "\r\n\r\n" + body).encode())


def status(req, **kw):
    r = check_request(req, **kw)
    return None if r is None else r.status


class RequestCheckTests(SynchronousTestCase):
    def test_good(self):
        """An ordinary INVITE passes."""
        self.assertIsNone(check_request(request()))
        self.assertIsNone(check_message(request()))

    def test_via(self):
        """No Via or an unusable top Via: drop; a usable top Via with a bad
        second element, another protocol or an empty branch: 400."""
        r = check_request(request(drop=["Via"]))
        self.assertEqual(r, Rejection(None, "no Via header"))
        self.assertIsNone(status(request(replace=[("Via", "Via: junk")])))
        self.assertEqual(status(request(replace=[("Via", "Via: SIP/2.0/UDP h;branch=z9hG4bKx, ;")])), 400)
        self.assertEqual(status(request(replace=[("Via", "Via: SIP/2.0/UDP h;branch=z9hG4bKx,")])), 400)
        self.assertEqual(status(request(replace=[("Via", "Via: SIP/3.0/UDP h;branch=z9hG4bKx")])), 400)
        self.assertEqual(status(request(replace=[("Via", "Via: SIP/2.0/UDP h;branch=")])), 400)
        self.assertEqual(status(request(replace=[("Via", "Via: SIP/2.0/UDP h;branch")])), 400)

    def test_mandatory_headers(self):
        """From, To, Call-ID and CSeq must be there once; Max-Forwards,
        Content-Type may be there at most once."""
        for name in ("From", "To", "Call-ID", "CSeq"):
            r = check_request(request(drop=[name]))
            self.assertEqual(r.status, 400, name)
            self.assertIn(name, r.reason)
        self.assertIsNone(status(request(drop=["Max-Forwards"])))
        for line in ("Max-Forwards: 70", "Content-Type: application/sdp", "Call-ID: x", "t: <sip:x@y>"):
            self.assertEqual(status(request(add=[line])), 400, line)

    def test_call_id(self):
        """A Call-ID with white space inside is refused."""
        self.assertEqual(status(request(replace=[("Call-ID", "Call-ID: a b")])), 400)

    def test_cseq(self):
        """CSeq needs a number below 2**31 and the request's method."""
        self.assertIsNone(status(request(replace=[("CSeq", f"CSeq: {MAX_CSEQ} INVITE")])))
        for value in (f"{MAX_CSEQ + 1} INVITE", "1 invite", "1", "x INVITE", "1 INVITE extra", "1 INV<ITE"):
            self.assertEqual(status(request(replace=[("CSeq", "CSeq: " + value)])), 400, value)

    def test_max_forwards(self):
        """Max-Forwards is 0..255 (leading zeros allowed); 0 is 483."""
        self.assertIsNone(status(request(replace=[("Max-Forwards", "Max-Forwards: 0255")])))
        self.assertEqual(status(request(replace=[("Max-Forwards", "Max-Forwards: 256")])), 400)
        self.assertEqual(status(request(replace=[("Max-Forwards", "Max-Forwards: -1")])), 400)
        self.assertEqual(status(request(replace=[("Max-Forwards", "Max-Forwards: 0")])), 483)

    def test_request_uri(self):
        """sip, sips and tel are routed; other schemes are 416; a Request-URI
        that is not a URI, or has headers, is 400."""
        self.assertIsNone(status(request(first="INVITE tel:+15551234;phone-context=example.com SIP/2.0")))
        self.assertIsNone(status(request(first="INVITE SIPS:bob@b.example.com SIP/2.0")))
        self.assertEqual(status(request(first="INVITE mailto:bob@b.example.com SIP/2.0")), 416)
        self.assertEqual(status(request(first="INVITE urn:service:sos SIP/2.0")), 416)
        for bad in ("bob@b.example.com", "sip:bob@", "sip:a@b?Subject=x", "1sip:a@b", ":x"):
            self.assertEqual(status(request(first=f"INVITE {bad} SIP/2.0")), 400, bad)

    def test_from_to_contact(self):
        """Malformed From, To or Contact values are 400; '*' is only a
        Contact."""
        self.assertEqual(status(request(replace=[("From", "From: <sip:a@b")])), 400)
        self.assertEqual(status(request(replace=[("To", "To: *")])), 400)
        self.assertEqual(status(request(replace=[("Contact", "Contact: <sip:a@b>, junk junk")])), 400)
        self.assertIsNone(status(request(replace=[("Contact", "Contact: <sip:a@b>;q=0.1, <sip:c@d>;q=0.9")])))

    def test_register_to(self):
        """The To of a REGISTER is an address-of-record: sip or sips only."""
        def register(to):
            return request(
                first="REGISTER sip:example.com SIP/2.0",
                replace=[("CSeq", "CSeq: 1 REGISTER"), ("To", "To: " + to), ("Contact", "Contact: *")],
                drop=["Content-Type"],
                add=["Expires: 0"],
                body="",
            )

        self.assertIsNone(status(register("<sips:alice@example.com>")))
        self.assertEqual(status(register("<tel:+15551234>")), 400)

    def test_date(self):
        """A Date in GMT passes; another zone is 400."""
        self.assertIsNone(status(request(add=["Date: Sat, 13 Nov 2010 23:29:00 GMT"])))
        self.assertEqual(status(request(add=["Date: Sat, 13 Nov 2010 23:29:00 PST"])), 400)

    def test_content_length_mismatch(self):
        """A request whose Content-Length no longer matches its body (built or
        edited in code) is refused."""
        req = request()
        req.body = b"v=0\r\n"
        self.assertEqual(status(req), 400)

    def test_require(self):
        """Known option-tags pass (any case, supported given as any iterable
        of strings); unknown ones are 420 with Unsupported; Proxy-Require
        can be left to someone else."""
        self.assertIsNone(status(request(add=["Require: 100rel, Timer"])))
        self.assertIsNone(status(request(add=["Require: foo"]), supported=("path", "foo")))
        r = check_request(request(add=["Require: 100rel, foo", "Require: bar, foo"]))
        self.assertEqual(r, Rejection(420, "Bad Extension", [("Unsupported", "foo, bar")]))
        self.assertEqual(status(request(add=["Proxy-Require: sec-agree"])), 420)
        self.assertIsNone(status(request(add=["Proxy-Require: sec-agree"]), check_proxy_require=False))
        self.assertIn("gruu", DEFAULT_SUPPORTED)

    def test_require_ignored_on_cancel(self):
        """RFC 3261 8.2.2.3: a CANCEL is never refused for its Require."""
        req = request(
            first="CANCEL sip:bob@biloxi.example.com SIP/2.0",
            replace=[("CSeq", "CSeq: 314159 CANCEL")],
            drop=["Content-Type"],
            add=["Require: foo"],
            body="",
        )
        self.assertIsNone(status(req))

    def test_ack_never_answered(self):
        """A refused ACK is dropped: nothing ever answers an ACK."""
        req = request(
            first="ACK sip:bob@biloxi.example.com SIP/2.0",
            replace=[("CSeq", "CSeq: 314159 ACK"), ("Max-Forwards", "Max-Forwards: 0")],
        )
        r = check_request(req)
        self.assertIsNone(r.status)
        self.assertEqual(r.reason, "Too Many Hops")

    def test_body_type(self):
        """A body needs a Content-Type; a session method's body must be SDP
        or multipart (415 with Accept); other methods carry anything."""
        self.assertEqual(status(request(drop=["Content-Type"])), 400)
        self.assertEqual(status(request(replace=[("Content-Type", "Content-Type: sdp")])), 400)
        r = check_request(request(replace=[("Content-Type", "Content-Type: text/html")]))
        self.assertEqual((r.status, r.headers), (415, [("Accept", "application/sdp")]))
        self.assertIsNone(status(request(replace=[("Content-Type", "Content-Type: multipart/mixed;boundary=x")])))
        info = request(
            first="INFO sip:bob@biloxi.example.com SIP/2.0",
            replace=[("CSeq", "CSeq: 2 INFO"), ("Content-Type", "Content-Type: application/dtmf-relay")],
            body="Signal=5\r\nDuration=160\r\n",
        )
        self.assertIsNone(status(info))

    def test_crlf_body_leniency(self):
        """Leniency: senders that pad an empty body with CRLF and no
        Content-Type are accepted."""
        self.assertIsNone(status(request(drop=["Content-Type"], body="\r\n")))

    def test_content_encoding(self):
        """A compressed body is 415 with Accept-Encoding: identity."""
        r = check_request(request(add=["Content-Encoding: gzip"]))
        self.assertEqual((r.status, r.headers), (415, [("Accept-Encoding", "identity")]))
        self.assertIsNone(status(request(add=["e: identity"])))

    def test_accept(self):
        """An INVITE whose Accept excludes SDP is 406; wildcards and an empty
        Accept pass; other methods are not concerned."""
        self.assertIsNone(status(request(add=["Accept: application/sdp;level=1, text/plain"])))
        self.assertIsNone(status(request(add=["Accept: application/*"])))
        self.assertIsNone(status(request(add=["Accept:"])))
        self.assertEqual(status(request(add=["Accept: text/html"])), 406)
        options = request(
            first="OPTIONS sip:bob@biloxi.example.com SIP/2.0",
            replace=[("CSeq", "CSeq: 1 OPTIONS")],
            drop=["Content-Type"],
            add=["Accept: text/html"],
            body="",
        )
        self.assertIsNone(status(options))

    def test_order(self):
        """Syntax errors come before 416, 416 before 483, 483 before 420
        (RFC 3261 16.3)."""
        req = request(
            first="INVITE mailto:a@b SIP/2.0",
            replace=[("Max-Forwards", "Max-Forwards: 0")],
            add=["Require: foo"],
        )
        self.assertEqual(status(req), 416)
        req = request(replace=[("Max-Forwards", "Max-Forwards: 0")], add=["Require: foo"])
        self.assertEqual(status(req), 483)
        req = request(replace=[("CSeq", "CSeq: 1 BYE")], first="INVITE mailto:a@b SIP/2.0")
        self.assertEqual(status(req), 400)

    def test_reason_short(self):
        """The reason phrase quotes the bad value but stays short."""
        r = check_request(request(replace=[("To", "To: <sip:" + "x" * 500 + "@b")]))
        self.assertEqual(r.status, 400)
        self.assertLessEqual(len(r.reason), 200)


RESPONSE = [
    "SIP/2.0 200 OK",
    "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1",
    "Via: SIP/2.0/UDP 192.0.2.2;branch=z9hG4bK2",
    "Call-ID: c1",
    "CSeq: 1 INVITE",
    "From: <sip:a@b>;tag=1",
    "To: <sip:c@d>;tag=2",
    "Content-Length: 0",
]


def response(*, replace=(), drop=()):
    lines = list(RESPONSE)
    for prefix, line in replace:
        lines = [line if l.startswith(prefix) else l for l in lines]
    lines = [l for l in lines if not any(l.startswith(p) for p in drop)]
    return parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())


class ResponseCheckTests(SynchronousTestCase):
    def test_good(self):
        """A well-formed response passes."""
        self.assertIsNone(check_response(response()))
        self.assertIsNone(check_message(response()))

    def test_dropped(self):
        """Responses without Via, with a bad top Via, without Call-ID/From/To/
        CSeq or with a bad CSeq are dropped (status None)."""
        cases = [
            response(drop=["Via"]),
            response(replace=[("Via: SIP/2.0/UDP 192.0.2.1", "Via: nonsense")]),
            response(drop=["Call-ID"]),
            response(drop=["From"]),
            response(drop=["To"]),
            response(drop=["CSeq"]),
            response(replace=[("CSeq", "CSeq: 99999999999 INVITE")]),
        ]
        for resp in cases:
            r = check_response(resp)
            self.assertIsNotNone(r, resp.headers)
            self.assertIsNone(r.status)

    def test_broadcast_next_hop(self):
        """A response that would be forwarded to a broadcast address is
        dropped, whether the second Via is on its own line or not."""
        r = response(replace=[("Via: SIP/2.0/UDP 192.0.2.2", "Via: SIP/2.0/UDP 255.255.255.255;branch=z9hG4bK2")])
        self.assertIsNone(check_response(r).status)
        r = response(
            replace=[("Via: SIP/2.0/UDP 192.0.2.1", "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1, SIP/2.0/UDP 0.0.0.0")]
        )
        self.assertIsNone(check_response(r).status)
        r = response(replace=[("Via: SIP/2.0/UDP 192.0.2.2", "Via: SIP/2.0/UDP 192.0.2.2;received=255.255.255.255")])
        self.assertIsNone(check_response(r).status)


class RejectionTests(SynchronousTestCase):
    def test_value(self):
        """Rejections compare by value and show themselves."""
        a = Rejection(420, "Bad Extension", [("Unsupported", "x")])
        self.assertEqual(a, Rejection(420, "Bad Extension", (("Unsupported", "x"),)))
        self.assertNotEqual(a, Rejection(420, "Bad Extension"))
        self.assertNotEqual(a, "420")
        self.assertIn("420", repr(a))
