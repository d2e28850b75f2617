"""
Tests for L{rustpbx_py.sip.headers}: URIs, Via, name-addr, parameters.
"""

from twisted.trial.unittest import SynchronousTestCase

from rustpbx_py.sip.headers import (
    URI,
    HeaderError,
    NameAddr,
    Via,
    bare_host,
    format_params,
    join_hostport,
    parse_auth_params,
    parse_content_type,
    parse_params,
    split_hostport,
)


class URITests(SynchronousTestCase):
    def test_sip_uri_parts(self):
        """A full SIP URI splits into scheme, user, password, host, port,
        parameters and headers."""
        u = URI.parse("sips:alice:secret@Example.COM:5061;transport=tcp;lr?Subject=hi&Priority=urgent")
        self.assertEqual(u.scheme, "sips")
        self.assertEqual(u.user, "alice")
        self.assertEqual(u.password, "secret")
        self.assertEqual(u.host, "Example.COM")
        self.assertEqual(u.port, 5061)
        self.assertEqual(u.params, {"transport": "tcp", "lr": None})
        self.assertEqual(u.headers, "Subject=hi&Priority=urgent")
        self.assertEqual(u.transport, "TCP")
        self.assertEqual(u.aor(), "alice@example.com")

    def test_scheme_case_insensitive(self):
        """The scheme is matched case-insensitively and kept lower-case."""
        self.assertEqual(URI.parse("SIP:bob@host").scheme, "sip")

    def test_original_text_kept(self):
        """str() gives back the URI exactly as received, escapes included."""
        text = "sip:%61lice@host;Foo=%62ar"
        self.assertEqual(str(URI.parse(text)), text)

    def test_escapes_in_user_and_params(self):
        """User, password and URI parameters are unescaped (RFC 4475 esc01)."""
        u = URI.parse("sip:cal%6Cer:p%40ss@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31")
        self.assertEqual(u.user, "caller")
        self.assertEqual(u.password, "p@ss")
        self.assertEqual(u.params, {"lr": None, "name": "value%41"})

    def test_invalid_escape_kept(self):
        """A % not followed by two hex digits is kept as it is (esc02)."""
        self.assertEqual(URI.parse("sip:a%ZZb@host").user, "a%ZZb")

    def test_escaped_null(self):
        """%00 in a user part decodes to a NUL character (RFC 4475 escnull)."""
        self.assertEqual(URI.parse("sip:null-%00-null@example.com").user, "null-\x00-null")

    def test_user_with_reserved_characters(self):
        """The user part may hold ; ? , / (user-unreserved): only '@' ends it
        (RFC 4475 intmeth, semiuri)."""
        u = URI.parse("sip:user;par=u%40example.net@example.com")
        self.assertEqual(u.user, "user;par=u@example.net")
        self.assertEqual(u.host, "example.com")
        self.assertEqual(u.params, {})
        u = URI.parse("sip:a?,/;;*:p&w=1,x@example.com")
        self.assertEqual(u.user, "a?,/;;*")
        self.assertEqual(u.password, "p&w=1,x")

    def test_no_user(self):
        """A URI without user part has user None."""
        u = URI.parse("sip:registrar.example.com;lr")
        self.assertIsNone(u.user)
        self.assertEqual(u.host, "registrar.example.com")
        self.assertEqual(u.aor(), "registrar.example.com")

    def test_ipv6(self):
        """IPv6 references keep their brackets in host; bare_host drops them."""
        u = URI.parse("sip:bob@[2001:DB8::1]:5070")
        self.assertEqual(u.host, "[2001:DB8::1]")
        self.assertEqual(u.port, 5070)
        self.assertEqual(u.aor(), "bob@2001:db8::1")

    def test_tel(self):
        """TEL URIs keep the number as user and their parameters (RFC 3966)."""
        u = URI.parse("tel:+1-201-555-0123;phone-context=example.com")
        self.assertEqual(u.scheme, "tel")
        self.assertEqual(u.user, "+1-201-555-0123")
        self.assertEqual(u.params, {"phone-context": "example.com"})

    def test_other_schemes_opaque(self):
        """Unknown schemes parse, their content kept as text (RFC 4475 unksm2)."""
        u = URI.parse("http://www.example.com")
        self.assertEqual(u.scheme, "http")
        self.assertEqual(str(u), "http://www.example.com")
        self.assertEqual(URI.parse("isbn:2983792873").host, "2983792873")

    def test_rejects(self):
        """URIs without scheme, with spaces, without host, with an empty
        user, a bad host or a port above 65535 raise HeaderError."""
        for bad in [
            "user@example.com",
            "<sip:user@example.com>",
            "sip:user@exa mple.com",
            "sip:user@",
            "sip:@host",
            "sip:user@host:70000",
            "sip:user@ho<st",
            "sip:",
            "tel:",
        ]:
            self.assertRaises(HeaderError, URI.parse, bad)

    def test_underscore_host_leniency(self):
        """Leniency: host names with '_' (Windows-named and embedded devices)
        are accepted."""
        self.assertEqual(URI.parse("sip:100@my_pbx.local").host, "my_pbx.local")

    def test_changed_reprints_escaped(self):
        """After changed(), str() rebuilds the URI escaping what must be."""
        u = URI.parse("sip:cal%6Cer@host;n%61me=v%61lue%25%34%31")
        u.user = "a b#"
        u.changed()
        self.assertEqual(str(u), "sip:a%20b%23@host;name=value%2541")
        again = URI.parse(str(u))
        self.assertEqual(again.user, "a b#")
        self.assertEqual(again.params, {"name": "value%41"})

    def test_copy_independent(self):
        """copy() gives a URI whose params can change without touching the
        original."""
        u = URI.parse("sip:a@b;lr")
        c = u.copy()
        c.params["x"] = "1"
        c.changed()
        self.assertEqual(u.params, {"lr": None})
        self.assertEqual(str(c), "sip:a@b;lr;x=1")

    def test_equivalent(self):
        """RFC 3261 19.1.4 comparison: escapes and host case do not matter,
        transport does, unknown params only count when both have them."""
        a = URI.parse("sip:%61lice@ATLANTA.com;transport=TCP")
        self.assertTrue(a.equivalent(URI.parse("sip:alice@atlanta.com;transport=tcp")))
        self.assertFalse(a.equivalent(URI.parse("sip:alice@atlanta.com")))
        self.assertFalse(a.equivalent(URI.parse("sip:ALICE@atlanta.com;transport=tcp")))
        b = URI.parse("sip:carol@chicago.com;foo=1")
        self.assertTrue(b.equivalent(URI.parse("sip:carol@chicago.com")))
        self.assertFalse(b.equivalent(URI.parse("sip:carol@chicago.com;foo=2")))
        self.assertFalse(URI.parse("sip:bob@biloxi.com").equivalent(URI.parse("sip:bob@biloxi.com:5060")))
        self.assertFalse(URI.parse("sip:bob@b.com").equivalent(URI.parse("sips:bob@b.com")))
        self.assertTrue(
            URI.parse("sip:a@b?Subject=x&Priority=y").equivalent(URI.parse("sip:a@b?priority=y&subject=x"))
        )


class ViaTests(SynchronousTestCase):
    def test_parse(self):
        """A Via element gives protocol, transport, sent-by and parameters."""
        v = Via.parse("SIP/2.0/udp host.example.com:5062;branch=z9hG4bKabc;received=192.0.2.1;rport=4000;maddr=239.1.1.1")
        self.assertEqual(v.protocol, "SIP/2.0")
        self.assertEqual(v.transport, "UDP")
        self.assertEqual((v.host, v.port), ("host.example.com", 5062))
        self.assertEqual(v.branch, "z9hG4bKabc")
        self.assertEqual(v.received, "192.0.2.1")
        self.assertEqual(v.rport, 4000)
        self.assertEqual(v.maddr, "239.1.1.1")

    def test_lws_everywhere(self):
        """LWS around the slashes, before ';' and around '=' is accepted
        (RFC 4475 wsinv)."""
        v = Via.parse("SIP  / 2.0  / TCP     spindle.example.com   ; branch  =   z9hG4bK9ikj8")
        self.assertEqual(v.transport, "TCP")
        self.assertEqual(v.host, "spindle.example.com")
        self.assertEqual(v.branch, "z9hG4bK9ikj8")

    def test_rport_flag(self):
        """A bare rport (client request) is a flag: rport property None."""
        v = Via.parse("SIP/2.0/UDP 10.0.0.1;rport;branch=z9hG4bKx")
        self.assertIn("rport", v.params)
        self.assertIsNone(v.rport)

    def test_response_address(self):
        """Responses go to maddr, else received, on rport when filled in."""
        self.assertEqual(Via.parse("SIP/2.0/UDP a.example.com").response_address(), ("a.example.com", 5060))
        self.assertEqual(
            Via.parse("SIP/2.0/UDP a.example.com:5070;received=192.0.2.9;rport=6000").response_address(),
            ("192.0.2.9", 6000),
        )
        self.assertEqual(
            Via.parse("SIP/2.0/UDP a:5070;maddr=224.0.1.75;received=192.0.2.9").response_address(),
            ("224.0.1.75", 5070),
        )

    def test_ipv6(self):
        """An IPv6 sent-by keeps its brackets and prints back the same."""
        v = Via.parse("SIP/2.0/TLS [2001:db8::9]:5061;branch=z9hG4bKq")
        self.assertEqual(v.host, "[2001:db8::9]")
        self.assertEqual(str(v), "SIP/2.0/TLS [2001:db8::9]:5061;branch=z9hG4bKq")

    def test_str(self):
        """str() prints a canonical Via element."""
        v = Via("tcp", "h", 5060, {"branch": "z9hG4bK1", "rport": None})
        self.assertEqual(str(v), "SIP/2.0/TCP h:5060;branch=z9hG4bK1;rport")

    def test_malformed(self):
        """Missing parts, a missing sent-by or a bad port raise HeaderError."""
        for bad in ["SIP/2.0 host", "SIP/2.0/UDP", ";", "SIP/2.0/UDP host:99999", "SIP/2.0/UDP ho st"]:
            self.assertRaises(HeaderError, Via.parse, bad)

    def test_strict_empty_params(self):
        """Empty parameters are skipped leniently but refused with strict
        (RFC 4475 badinv01)."""
        self.assertEqual(Via.parse("SIP/2.0/UDP 192.0.2.15;;").params, {})
        self.assertRaises(HeaderError, Via.parse, "SIP/2.0/UDP 192.0.2.15;;", strict=True)
        self.assertRaises(HeaderError, Via.parse, "SIP/2.0/UDP h;branch=x;", strict=True)
        self.assertEqual(Via.parse("SIP/2.0/UDP h ; branch=x", strict=True).branch, "x")


class NameAddrTests(SynchronousTestCase):
    def test_quoted_display(self):
        """A quoted display name is unescaped; parameters follow '>'."""
        na = NameAddr.parse('"J Rosenberg \\\\\\"" <sip:jdrosen@example.com> ; tag = 98asjd8')
        self.assertEqual(na.display, 'J Rosenberg \\"')
        self.assertEqual(str(na.uri), "sip:jdrosen@example.com")
        self.assertEqual(na.tag, "98asjd8")

    def test_display_with_comma_in_quotes(self):
        """A comma is fine inside quotes (RFC 4475 badaspec's From)."""
        na = NameAddr.parse('"Bell, Alexander" <sip:a.g.bell@example.com>;tag=433423')
        self.assertEqual(na.display, "Bell, Alexander")

    def test_token_display(self):
        """An unquoted display name of tokens, with or without a space
        before '<' (RFC 4475 lwsdisp, intmeth)."""
        self.assertEqual(NameAddr.parse("caller<sip:caller@example.com>;tag=323").display, "caller")
        na = NameAddr.parse("token1~` token2'+_ token3*%!.- <sip:mundane@example.com>")
        self.assertEqual(na.display, "token1~` token2'+_ token3*%!.-")

    def test_utf8_display_leniency(self):
        """Leniency: phones that send a UTF-8 display name without quotes are
        accepted."""
        self.assertEqual(NameAddr.parse("J\u00f6rg M\u00fcller <sip:j@example.com>").display, "J\u00f6rg M\u00fcller")

    def test_non_token_display_refused(self):
        """An unquoted display name with a comma is refused (RFC 4475 baddn)."""
        self.assertRaises(HeaderError, NameAddr.parse, "Bell, Alexander <sip:a.g.bell@example.com>;tag=43")

    def test_unterminated_quote(self):
        """An unterminated quoted display name is refused (RFC 4475 quotbal)."""
        self.assertRaises(HeaderError, NameAddr.parse, '"Mr. J. User <sip:j.user@example.com>')

    def test_spaces_inside_angle_brackets(self):
        """White space inside <> is refused (RFC 4475 badaspec)."""
        self.assertRaises(HeaderError, NameAddr.parse, '"Watson, Thomas" < sip:t.watson@example.org >')

    def test_text_after_bracket(self):
        """Anything but parameters after '>' is refused."""
        self.assertRaises(HeaderError, NameAddr.parse, "<sip:a@b>junk;tag=1")

    def test_addr_spec_params_belong_to_header(self):
        """In an addr-spec, parameters after the URI are header parameters
        (RFC 4475 cparam01); inside <> they belong to the URI (cparam02)."""
        na = NameAddr.parse("sip:+19725552222@gw1.example.net;unknownparam")
        self.assertEqual(na.uri.params, {})
        self.assertEqual(na.params, {"unknownparam": None})
        na = NameAddr.parse("<sip:+19725552222@gw1.example.net;unknownparam>")
        self.assertEqual(na.uri.params, {"unknownparam": None})
        self.assertEqual(na.params, {})

    def test_addr_spec_with_headers_refused(self):
        """An addr-spec with '?' must be in <> (RFC 4475 regbadct); inside <>
        the escaped header is kept (regescrt)."""
        self.assertRaises(HeaderError, NameAddr.parse, "sip:user@example.com?Route=%3Csip:sip.example.com%3E")
        na = NameAddr.parse("<sip:user@example.com?Route=%3Csip:sip.example.com%3E>")
        self.assertEqual(na.uri.headers, "Route=%3Csip:sip.example.com%3E")

    def test_quoted_param_with_angle_brackets(self):
        """A quoted header parameter may hold <> (RFC 5626 +sip.instance)."""
        na = NameAddr.parse('<sip:a@10.0.0.1:5060;ob>;+sip.instance="<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>";reg-id=1')
        self.assertEqual(na.params["+sip.instance"], "<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>")
        self.assertEqual(na.uri.params, {"ob": None})

    def test_wildcard(self):
        """'*' is the Contact wildcard."""
        na = NameAddr.parse(" * ")
        self.assertTrue(na.wildcard)
        self.assertEqual(str(na), "*")

    def test_str(self):
        """str() quotes the display name and brackets the URI."""
        na = NameAddr(URI.parse("sip:a@b"), 'Al "x"', {"tag": "1"})
        self.assertEqual(str(na), '"Al \\"x\\"" <sip:a@b>;tag=1')
        self.assertEqual(NameAddr.parse(str(na)).display, 'Al "x"')

    def test_empty(self):
        """An empty value is refused."""
        self.assertRaises(HeaderError, NameAddr.parse, "  ")


class ParamTests(SynchronousTestCase):
    def test_parse_params(self):
        """Names are lower-cased, flags map to None, quotes are removed."""
        self.assertEqual(
            parse_params(';Tag=abc;lr;q = 0.5;x="a;b"'), {"tag": "abc", "lr": None, "q": "0.5", "x": "a;b"}
        )

    def test_strict(self):
        """strict refuses empty parameters, nameless values, unterminated
        quotes and text before the first ';'."""
        for bad in [";;", ";a;", ";=1", ';a="x', "x;a"]:
            self.assertRaises(HeaderError, parse_params, bad, strict=True)
        self.assertEqual(parse_params(';a="x\\"y"', strict=True), {"a": 'x"y'})

    def test_format_params(self):
        """format_params quotes values that need it."""
        self.assertEqual(format_params({"a": "1", "b": None, "c": "x y", "d": ""}), ';a=1;b;c="x y";d=""')

    def test_auth_params(self):
        """Credentials split into scheme and unquoted, lower-cased params;
        an unknown scheme still parses (RFC 4475 regaut01)."""
        scheme, p = parse_auth_params('Digest username="Alice", realm="atlanta.com", nc=00000001, uri="sip:a@b;x=1,2"')
        self.assertEqual(scheme, "Digest")
        self.assertEqual(p, {"username": "Alice", "realm": "atlanta.com", "nc": "00000001", "uri": "sip:a@b;x=1,2"})
        self.assertEqual(parse_auth_params("NoOneKnowsThisScheme opaque-data=here"), ("NoOneKnowsThisScheme", {"opaque-data": "here"}))

    def test_content_type(self):
        """Content-Type gives the lower-cased media type and its parameters."""
        self.assertEqual(
            parse_content_type("Multipart/Mixed ;boundary=7a9c"), ("multipart/mixed", {"boundary": "7a9c"})
        )
        self.assertRaises(HeaderError, parse_content_type, "sdp")
        self.assertRaises(HeaderError, parse_content_type, "application/")


class HostPortTests(SynchronousTestCase):
    def test_split_join(self):
        """host[:port] splits and joins, bracketing IPv6."""
        self.assertEqual(split_hostport("example.com"), ("example.com", None))
        self.assertEqual(split_hostport("[::1]:5060"), ("[::1]", 5060))
        self.assertEqual(join_hostport("::1", 5060), "[::1]:5060")
        self.assertEqual(join_hostport("h", None), "h")
        self.assertEqual(bare_host("[2001:DB8::1]"), "2001:db8::1")
        self.assertRaises(HeaderError, split_hostport, "h:99999")
        self.assertRaises(HeaderError, split_hostport, "")
