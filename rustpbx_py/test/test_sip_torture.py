"""
The RFC 4475 torture messages (rustpbx_py/test/data/torture, see its
README) through L{parse_message} and L{rustpbx_py.sip.validate}, plus a
bounded, seeded mutation fuzz over the same corpus.

What each message must give is in L{EXPECTED}: accepted ones are checked
for the values RFC 4475 calls out; refused ones must be refused with the
listed status at the listed stage (or dropped), never a 2xx, never an
exception other than L{SipParseError}.
"""

import random

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from rustpbx_py.sip.headers import URI, HeaderError, NameAddr, Via, parse_auth_params
from rustpbx_py.sip.message import Request, Response, SipParseError, parse_message
from rustpbx_py.sip.multipart import parse_multipart
from rustpbx_py.sip.validate import Rejection, check_message, check_request, check_response

DATA = FilePath(__file__).sibling("data").child("torture")

ACCEPT = "accept"
PARSE = "parse"
CHECK = "check"

#: name -> (RFC 4475 section, stage that refuses it, status); status None
#: means dropped without a response.  ACCEPT: parse and checks pass.
EXPECTED = {
    # 3.1.1 valid messages
    "wsinv": ("3.1.1.1", ACCEPT, None),
    "intmeth": ("3.1.1.2", ACCEPT, None),
    "esc01": ("3.1.1.3", ACCEPT, None),
    "escnull": ("3.1.1.4", ACCEPT, None),
    "esc02": ("3.1.1.5", ACCEPT, None),
    "lwsdisp": ("3.1.1.6", ACCEPT, None),
    "longreq": ("3.1.1.7", ACCEPT, None),
    "dblreq": ("3.1.1.8", ACCEPT, None),
    "semiuri": ("3.1.1.9", ACCEPT, None),
    "transports": ("3.1.1.10", ACCEPT, None),
    "mpart01": ("3.1.1.11", ACCEPT, None),
    "unreason": ("3.1.1.12", ACCEPT, None),
    "noreason": ("3.1.1.13", ACCEPT, None),
    # 3.1.2 invalid messages
    "badinv01": ("3.1.2.1", CHECK, 400),
    "clerr": ("3.1.2.2", PARSE, 400),
    "ncl": ("3.1.2.3", PARSE, 400),
    "scalar02": ("3.1.2.4", CHECK, 400),
    "scalarlg": ("3.1.2.5", CHECK, None),
    "quotbal": ("3.1.2.6", CHECK, 400),
    "ltgtruri": ("3.1.2.7", CHECK, 400),
    "lwsruri": ("3.1.2.8", PARSE, 400),
    "lwsstart": ("3.1.2.9", PARSE, 400),
    "trws": ("3.1.2.10", PARSE, 400),
    "escruri": ("3.1.2.11", CHECK, 400),
    "baddate": ("3.1.2.12", CHECK, 400),
    "regbadct": ("3.1.2.13", CHECK, 400),
    "badaspec": ("3.1.2.14", CHECK, 400),
    "baddn": ("3.1.2.15", CHECK, 400),
    "badvers": ("3.1.2.16", PARSE, 505),
    "mismatch01": ("3.1.2.17", CHECK, 400),
    "mismatch02": ("3.1.2.18", CHECK, 400),
    "bigcode": ("3.1.2.19", PARSE, None),
    # 3.2 transaction layer semantics
    "badbranch": ("3.2.1", CHECK, 400),
    "insuf": ("3.2.2", CHECK, 400),
    "unkscm": ("3.2.3", CHECK, 416),
    "novelsc": ("3.2.4", CHECK, 416),
    "unksm2": ("3.2.5", CHECK, 400),
    # 3.3 application layer semantics
    "bext01": ("3.3.1", CHECK, 420),
    "invut": ("3.3.2", CHECK, 415),
    "regaut01": ("3.3.3", ACCEPT, None),
    "multi01": ("3.3.4", CHECK, 400),
    "mcl01": ("3.3.5", PARSE, 400),
    "bcast": ("3.3.6", CHECK, None),
    "zeromf": ("3.3.7", CHECK, 483),
    "cparam01": ("3.3.8", ACCEPT, None),
    "cparam02": ("3.3.9", ACCEPT, None),
    "regescrt": ("3.3.10", ACCEPT, None),
    "sdp01": ("3.3.11", CHECK, 406),
    # 3.4 backward compatibility
    "inv2543": ("3.4.1", ACCEPT, None),
    # Not in RFC 4475: extra cases shipped by the npm package.
    "badcseq": ("-", CHECK, 400),
    "baddn_sep": ("-", PARSE, None),
    "test": ("-", PARSE, None),
}

#: The status codes a refusal may carry (None: dropped).
ALLOWED_STATUSES = {None, 400, 406, 415, 416, 420, 483, 505, 513}


def load(name: str) -> bytes:
    return DATA.child(name + ".dat").getContent()


def run(data: bytes):
    """
    What the stack does with C{data}: (PARSE, status, error),
    (CHECK, status, rejection) or (ACCEPT, None, message).
    """
    try:
        msg = parse_message(data)
    except SipParseError as e:
        return PARSE, e.status, e
    rejection = check_message(msg)
    if rejection is not None:
        return CHECK, rejection.status, rejection
    return ACCEPT, None, msg


class CorpusTests(SynchronousTestCase):
    def test_corpus_complete(self):
        """Every file in the corpus has an expectation and vice versa; 49 of
        them are the RFC 4475 messages."""
        names = {p.basename()[:-4] for p in DATA.globChildren("*.dat")}
        self.assertEqual(names, set(EXPECTED))
        self.assertEqual(len([n for n, (section, _, _) in EXPECTED.items() if section != "-"]), 49)
        self.assertTrue(DATA.child("README.md").exists())

    def test_outcomes(self):
        """Each message is accepted, or refused at the expected stage with the
        expected status (None: dropped)."""
        for name, (section, stage, status) in sorted(EXPECTED.items()):
            got_stage, got_status, detail = run(load(name))
            self.assertEqual((got_stage, got_status), (stage, status), f"{name} ({section}): {detail!r}")

    def test_never_2xx_never_other_exceptions(self):
        """No refusal carries a 2xx or an unexpected status, and refusals
        with a status can be addressed (the parsed request has a usable
        Via)."""
        for name in EXPECTED:
            stage, status, detail = run(load(name))
            self.assertIn(status, ALLOWED_STATUSES, name)
            if stage == PARSE and status is not None:
                self.assertIsNotNone(detail.message, name)
                Via.parse(detail.message.top_via)

    def test_accepted_roundtrip(self):
        """Every accepted message re-serialises into bytes that parse and
        check the same way, with the same header values and body."""
        for name, (_, stage, _) in EXPECTED.items():
            if stage != ACCEPT:
                continue
            msg = parse_message(load(name))
            again = parse_message(msg.to_bytes(), stream=True)
            self.assertIsNone(check_message(again), name)
            self.assertEqual(
                [(k, v) for k, _, v in again.headers if k != "content-length"],
                [(k, v) for k, _, v in msg.headers if k != "content-length"],
                name,
            )
            self.assertEqual(again.body, msg.body, name)


class ValidMessageTests(SynchronousTestCase):
    """The values RFC 4475 section 3.1.1 (and 3.3, 3.4) says must come out."""

    def parse(self, name) -> Request:
        msg = parse_message(load(name))
        self.assertIsNone(check_message(msg), name)
        return msg

    def test_wsinv(self):
        """3.1.1.1: white space, folding, compact forms, odd case and unknown
        headers all read correctly; unknown headers go out byte-exact."""
        m = self.parse("wsinv")
        self.assertEqual(m.method, "INVITE")
        self.assertEqual(m.ruri.params, {"unknownparam": None})
        to = NameAddr.parse(m.get("to"))
        self.assertEqual(str(to.uri), "sip:vivekg@chair-dnrc.example.com")
        self.assertEqual(to.tag, "1918181833n")
        frm = NameAddr.parse(m.get("from"))
        self.assertEqual(frm.display, 'J Rosenberg \\"')
        self.assertEqual(frm.tag, "98asjd8")
        self.assertEqual(m.max_forwards, 68)
        self.assertEqual(m.call_id, "wsinv.ndaksdj@192.0.2.1")
        self.assertEqual(m.cseq, (9, "INVITE"))
        vias = [Via.parse(v) for v in m.get_all("via")]
        self.assertEqual(
            [(v.transport, v.host, v.branch) for v in vias],
            [
                ("UDP", "192.0.2.2", "390skdjuw"),
                ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
                ("UDP", "192.168.255.111", "z9hG4bK30239"),
            ],
        )
        self.assertEqual(m.get("subject"), "")
        self.assertEqual(m.get("newfangledheader"), "newfangled value continued newfangled value")
        self.assertEqual(m.get("UnknownHeaderWithUnusualValue"), ";;,,;;,;")
        route = NameAddr.parse(m.get("route"))
        self.assertEqual(route.uri.params, {"lr": None, "unknownwith": "value", "unknown-no-value": None})
        contact = NameAddr.parse(m.get("contact"))
        self.assertEqual(contact.display, 'Quoted string ""')
        self.assertEqual(contact.params, {"newparam": "newvalue", "secondparam": None, "q": "0.33"})
        self.assertEqual(len(m.body), 150)
        out = m.to_bytes()
        self.assertIn(b"\r\nNewFangledHeader: newfangled value continued newfangled value\r\n", out)
        self.assertIn(b"\r\nUnknownHeaderWithUnusualValue: ;;,,;;,;\r\n", out)
        self.assertIn(b"\r\nMaX-fOrWaRdS: 0068\r\n", out)

    def test_intmeth(self):
        """3.1.1.2: every legal character in method, URI user and password,
        quoted display (with escaped BEL, NUL, DEL), tokens, Call-ID and an
        extension header whose name and UTF-8 value are kept byte-exact."""
        data = load("intmeth")
        m = self.parse("intmeth")
        method = "!interesting-Method0123456789_*+`.%indeed'~"
        self.assertEqual(m.method, method)
        self.assertEqual(m.cseq, (139122385, method))
        self.assertEqual(m.ruri.user, "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
        self.assertEqual(m.ruri.password, "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
        self.assertEqual(m.ruri.host, "example.com")
        to = NameAddr.parse(m.get("to"))
        self.assertEqual(to.display, "BEL:\x07 NUL:\x00 DEL:\x7f")
        self.assertEqual(to.uri.user, "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
        frm = NameAddr.parse(m.get("from"))
        self.assertEqual(frm.display, "token1~` token2'+_ token3*%!.-")
        self.assertEqual(frm.tag, "_token~1'+`*%!-.")
        self.assertEqual(frm.params["fromparam''~+*_!.-%"], "\u0440\u0430\u0431\u043e\u0442\u0430\u044e\u0449\u0438\u0439")
        self.assertEqual(m.call_id, "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{")
        self.assertEqual(Via.parse(m.top_via).branch, "z9hG4bK-.!%66*_+`'~")
        # Name and value octets are kept; the separator is printed ": ".
        ext = data.split(b"\r\n")[7]
        name, value = ext.split(b":", 1)
        self.assertEqual(name, b"extensionHeader-!.%*+_`'~")
        self.assertIn(b"\r\n" + name + b": " + value + b"\r\n", m.to_bytes())

    def test_esc01(self):
        """3.1.1.3: %-escapes in URIs decode for comparison and stay escaped
        on the wire."""
        m = self.parse("esc01")
        self.assertEqual(m.ruri.user, "sips:user@example.com")
        self.assertEqual(m.ruri.host, "example.net")
        to = NameAddr.parse(m.get("to"))
        self.assertTrue(to.uri.equivalent(URI.parse("sip:user@example.com")))
        self.assertEqual(NameAddr.parse(m.get("from")).uri.user, "I have spaces")
        contact = NameAddr.parse(m.get("contact"))
        self.assertEqual(contact.uri.user, "caller")
        self.assertEqual(contact.uri.params, {"lr": None, "name": "value%41"})
        self.assertEqual(m.get("content-type"), "application/sdp")
        self.assertIn(b"<sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>", m.to_bytes())

    def test_escnull(self):
        """3.1.1.4: escaped NULs in user parts; two distinct Contacts."""
        m = self.parse("escnull")
        self.assertEqual(NameAddr.parse(m.get("to")).uri.user, "null-\x00-null")
        users = [NameAddr.parse(c).uri.user for c in m.get_all("contact")]
        self.assertEqual(users, ["\x00", "\x00\x00"])

    def test_esc02(self):
        """3.1.1.5: % that is not an escape: the method is not REGISTER,
        C%6Fntact is an unknown header, display and branch keep their %."""
        m = self.parse("esc02")
        self.assertEqual(m.method, "RE%47IST%45R")
        self.assertEqual(NameAddr.parse(m.get("to")).display, "%Z%45")
        self.assertEqual(Via.parse(m.top_via).branch, "z9hG4bK209%fzsnel234")
        self.assertEqual(len(m.get_all("contact")), 2)
        self.assertEqual(m.get("c%6fntact"), "<sip:alias2@host2.example.com>")

    def test_lwsdisp(self):
        """3.1.1.6: no LWS between display name and '<'."""
        frm = NameAddr.parse(self.parse("lwsdisp").get("from"))
        self.assertEqual((frm.display, frm.tag), ("caller", "323"))

    def test_longreq(self):
        """3.1.1.7: long values, 34 Via values in every spelling of Via."""
        m = self.parse("longreq")
        vias = m.get_all("via")
        self.assertEqual(len(vias), 34)
        self.assertEqual(Via.parse(vias[0]).host, "sip33.example.com")
        self.assertEqual(Via.parse(vias[-1]).received, "192.0.2.5")
        to = NameAddr.parse(m.get("to"))
        self.assertTrue(to.display.startswith("I have a user name of extremeextreme"))
        self.assertEqual(to.uri.port, 6000)
        self.assertTrue(NameAddr.parse(m.get("from")).tag.startswith("12982982982982"))
        self.assertEqual(len(m.body), 150)
        unknown = [h for h in m.headers if h[1].startswith("Unknown-LongLong")]
        self.assertEqual(len(unknown), 1)

    def test_dblreq(self):
        """3.1.1.8: a second message after Content-Length is ignored."""
        m = self.parse("dblreq")
        self.assertEqual((m.method, m.body), ("REGISTER", b""))
        self.assertEqual(m.call_id, "dblreq.0ha0isndaksdj99sdfafnl3lk233412")

    def test_semiuri(self):
        """3.1.1.9: ';' in the user part is not a parameter; a folded Accept
        list splits into six types."""
        m = self.parse("semiuri")
        self.assertEqual(m.ruri.user, "user;par=u@example.net")
        self.assertEqual(m.ruri.host, "example.com")
        self.assertEqual(m.ruri.params, {})
        self.assertEqual(len(m.get_all("accept")), 6)

    def test_transports(self):
        """3.1.1.10: unknown transports in Via parse."""
        m = self.parse("transports")
        self.assertEqual([Via.parse(v).transport for v in m.get_all("via")], ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"])

    def test_mpart01(self):
        """3.1.1.11: a multipart body with a binary part, kept exact."""
        m = self.parse("mpart01")
        parts = parse_multipart(m.body, m.get("content-type"))
        self.assertEqual([p.content_type for p in parts], ["text/plain", "application/octet-stream"])
        self.assertEqual(parts[0].body, b"Hello")
        self.assertEqual(len(parts[1].body), 342)
        self.assertTrue(m.to_bytes().endswith(m.body))

    def test_unreason(self):
        """3.1.1.12: a UTF-8 reason phrase."""
        m = self.parse("unreason")
        self.assertIsInstance(m, Response)
        self.assertEqual(m.status, 200)
        self.assertEqual(
            m.reason,
            "= 2**3 * 5**2 \u043d\u043e \u0441\u0442\u043e \u0434\u0435\u0432\u044f\u043d\u043e\u0441\u0442\u043e"
            " \u0434\u0435\u0432\u044f\u0442\u044c - \u043f\u0440\u043e\u0441\u0442\u043e\u0435",
        )

    def test_noreason(self):
        """3.1.1.13: an empty reason phrase."""
        m = self.parse("noreason")
        self.assertEqual((m.status, m.reason), (100, ""))

    def test_regaut01(self):
        """3.3.3: an unknown Authorization scheme parses; answering 401 is
        the auth module's business."""
        m = self.parse("regaut01")
        self.assertEqual(parse_auth_params(m.get("authorization"))[0], "NoOneKnowsThisScheme")

    def test_cparam(self):
        """3.3.8 and 3.3.9: a Contact parameter outside <> belongs to the
        Contact, inside <> to the URI."""
        c1 = NameAddr.parse(self.parse("cparam01").get("contact"))
        self.assertEqual((c1.params, c1.uri.params), ({"unknownparam": None}, {}))
        c2 = NameAddr.parse(self.parse("cparam02").get("contact"))
        self.assertEqual((c2.params, c2.uri.params), ({}, {"unknownparam": None}))

    def test_regescrt(self):
        """3.3.10: a Contact URI with an escaped header inside <> is kept."""
        c = NameAddr.parse(self.parse("regescrt").get("contact"))
        self.assertEqual(c.uri.headers, "Route=%3Csip:sip.example.com%3E")

    def test_inv2543(self):
        """3.4.1: an RFC 2543 INVITE (no branch, no Max-Forwards, no
        Content-Length, no From tag) is accepted; its body runs to the end of
        the datagram."""
        m = self.parse("inv2543")
        self.assertIsNone(Via.parse(m.top_via).branch)
        self.assertIsNone(m.max_forwards)
        self.assertIsNone(NameAddr.parse(m.get("from")).tag)
        self.assertEqual(len(m.body), 105)


class InvalidMessageTests(SynchronousTestCase):
    """Specifics of some refusals beyond their status."""

    def test_bext01_unsupported(self):
        """3.3.1: 420 lists every unknown option-tag of Require and
        Proxy-Require in Unsupported."""
        rejection = check_request(parse_message(load("bext01")))
        self.assertEqual(rejection.status, 420)
        self.assertEqual(
            rejection.headers,
            [("Unsupported", "nothingSupportsThis, nothingSupportsThisEither, noProxiesSupportThis, norDoAnyProxiesSupportThis")],
        )

    def test_invut_accept(self):
        """3.3.2: 415 says what we accept."""
        rejection = check_request(parse_message(load("invut")))
        self.assertEqual((rejection.status, rejection.headers), (415, [("Accept", "application/sdp")]))

    def test_badvers_can_answer(self):
        """3.1.2.16: the 505 can be built: the error carries the request."""
        e = self.assertRaises(SipParseError, parse_message, load("badvers"))
        self.assertEqual(e.message.call_id, "badvers.31417@c.example.com")
        self.assertEqual(e.message.method, "OPTIONS")

    def test_responses_checked(self):
        """3.1.2.5 and 3.3.6: bad responses are dropped by check_response."""
        for name in ("scalarlg", "bcast"):
            r = check_response(parse_message(load(name)))
            self.assertIsInstance(r, Rejection)
            self.assertIsNone(r.status)

    def test_mismatch_first_line_kept(self):
        """3.1.2.17/18: the method mismatch is reported as such."""
        for name in ("mismatch01", "mismatch02"):
            self.assertIn("CSeq method", check_request(parse_message(load(name))).reason)


#: Bounded and seeded: the same mutations on every run.
FUZZ_SEED = 4475
FUZZ_ROUNDS = 3000
_INTERESTING_BYTES = b'\r\n \t:;,<>"\\%@?=/*0123456789\x00\xff'


def mutate(rng: random.Random, data: bytes, corpus) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        pos = rng.randrange(len(b) + 1)
        if op == 0 and b:
            b[min(pos, len(b) - 1)] = rng.choice(_INTERESTING_BYTES)
        elif op == 1:
            b[pos:pos] = bytes([rng.choice(_INTERESTING_BYTES)]) * rng.randint(1, 3)
        elif op == 2 and b:
            del b[pos : pos + rng.randint(1, 16)]
        elif op == 3:
            del b[pos:]
        elif op == 4:
            other = rng.choice(corpus)
            start = rng.randrange(len(other) + 1)
            b[pos:pos] = other[start : start + rng.randint(1, 64)]
        elif op == 5:
            lines = bytes(b).split(b"\r\n")
            if len(lines) > 2:
                i = rng.randrange(1, len(lines))
                lines.insert(rng.randrange(1, len(lines)), lines[i])
            b = bytearray(b"\r\n".join(lines))
        else:
            b[pos:pos] = str(rng.choice([0, -1, 2**31, 2**32 + 5, 10**30, 65536])).encode()
    return bytes(b)


#: Values that have broken header parsers: empty, separators only,
#: unbalanced quotes and brackets, huge numbers, stray escapes.
HOSTILE_VALUES = [
    "",
    ",",
    " , ,",
    ";",
    ";;,;",
    "<",
    ">",
    "<>",
    '"',
    '"\\',
    "\\",
    "*",
    "%",
    "%00",
    "sip:",
    "<sip:>",
    "sip:@",
    "SIP/2.0/UDP",
    "SIP/2.0/UDP h;branch",
    "SIP/2.0/UDP [::1",
    "9" * 5000,
    "-1",
    "1 " + "9" * 40,
    "\x00",
    "\udcff",
    "a=b;c" * 200,
]
HOSTILE_HEADERS = [
    "Via",
    "From",
    "To",
    "Call-ID",
    "CSeq",
    "Max-Forwards",
    "Contact",
    "Content-Type",
    "Content-Encoding",
    "Require",
    "Proxy-Require",
    "Accept",
    "Date",
    "Route",
]


class HostileValueTests(SynchronousTestCase):
    def test_hostile_values(self):
        """Every hostile value in every header the stack reads, replacing or
        added to a valid INVITE, REGISTER and response, gives only
        SipParseError or a Rejection with an allowed status; accepted
        messages can be read through the cached accessors."""
        bases = [load("esc01"), load("cparam02"), load("noreason")]
        for base in bases:
            msg = parse_message(base)
            for name in HOSTILE_HEADERS:
                for value in HOSTILE_VALUES:
                    for replace in (True, False):
                        copy = Request(msg.method, msg.uri) if msg.is_request else Response(msg.status, msg.reason)
                        copy.headers = msg.copy_headers()
                        copy.body = msg.body
                        if replace:
                            copy.set(name, value)
                        else:
                            copy.add(name, value)
                        data = copy.to_bytes()
                        try:
                            stage, status, detail = run(data)
                        except Exception as e:  # pragma: no cover - the failure we hunt
                            self.fail(f"{type(e).__name__}: {e} with {name}: {value[:40]!r}")
                        self.assertIn(status, ALLOWED_STATUSES)
                        if stage == ACCEPT:
                            FuzzTests.exercise(self, detail)


class FuzzTests(SynchronousTestCase):
    def test_mutations(self):
        """Seeded random mutations of the corpus only ever give a message,
        SipParseError or a Rejection with an allowed status, and an accepted
        message re-serialises into one that is accepted again."""
        rng = random.Random(FUZZ_SEED)
        corpus = [p.getContent() for p in sorted(DATA.globChildren("*.dat"))]
        outcomes = {PARSE: 0, CHECK: 0, ACCEPT: 0}
        for _ in range(FUZZ_ROUNDS):
            data = mutate(rng, rng.choice(corpus), corpus)
            try:
                stage, status, detail = run(data)
            except Exception as e:  # pragma: no cover - the failure we hunt
                self.fail(f"{type(e).__name__}: {e} on {data!r}")
            outcomes[stage] += 1
            self.assertIn(status, ALLOWED_STATUSES, repr(data))
            if stage == ACCEPT:
                try:
                    again = parse_message(detail.to_bytes(), stream=True)
                except SipParseError as e:  # pragma: no cover
                    self.fail(f"re-serialised message does not parse ({e}): {data!r}")
                self.assertIsNone(check_message(again), repr(data))
                self.exercise(again)
        # The fuzz must reach all three outcomes to mean anything.
        self.assertTrue(all(outcomes.values()), outcomes)

    def exercise(self, msg):
        """Parse the structured headers of an accepted message: only
        HeaderError may come out."""
        for name in ("from", "to", "contact", "route", "record-route"):
            for value in msg.get_all(name):
                try:
                    str(NameAddr.parse(value))
                except HeaderError:
                    pass
        for value in msg.get_all("via"):
            try:
                Via.parse(value).response_address()
            except HeaderError:
                pass
        msg.cseq
        msg.max_forwards
        for accessor in ("via", "from_addr", "to_addr"):
            try:
                getattr(msg, accessor)
            except HeaderError:
                pass
        if msg.is_request:
            str(msg.ruri)
