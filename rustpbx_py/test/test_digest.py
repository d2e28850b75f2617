"""
Tests for L{rustpbx_py.sip.digest}.
"""

from twisted.trial.unittest import SynchronousTestCase

from rustpbx_py.sip import digest
from rustpbx_py.sip.headers import parse_auth_params

# RFC 7616 section 3.9.1.
USERNAME = "Mufasa"
PASSWORD = "Circle of Life"
REALM = "http-auth@example.org"
URI = "/dir/index.html"
NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
CNONCE_MD5 = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
CNONCE_SHA256 = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


class RFC7616VectorsTests(SynchronousTestCase):
    """The worked examples of RFC 7616 section 3.9.1."""

    def test_md5(self):
        """The MD5 response of the RFC's example is reproduced."""
        ha1 = digest.compute_ha1("MD5", USERNAME, REALM, PASSWORD)
        response = digest.compute_response("MD5", ha1, "GET", URI, NONCE, "00000001", CNONCE_MD5, "auth")
        self.assertEqual(response, "8ca523f5e9506fed4657c9700eebdbec")

    def test_sha256(self):
        """The SHA-256 response of the RFC's example is reproduced."""
        ha1 = digest.compute_ha1("SHA-256", USERNAME, REALM, PASSWORD)
        response = digest.compute_response("SHA-256", ha1, "GET", URI, NONCE, "00000001", CNONCE_SHA256, "auth")
        self.assertEqual(response, "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1")

    def test_verify_parsed_rfc_header(self):
        """
        The RFC's SHA-256 Authorization header parses and verifies against
        the password's HA1, and fails against another password.
        """
        header = (
            'Digest username="Mufasa", realm="http-auth@example.org", '
            'uri="/dir/index.html", algorithm=SHA-256, '
            'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", nc=00000001, '
            'cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", qop=auth, '
            'response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1", '
            'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
        )
        creds = digest.parse_credentials(header)
        self.assertEqual(creds.algorithm, "SHA-256")
        self.assertEqual(creds.nonce_count, 1)
        self.assertEqual(creds.opaque, "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS")
        good = digest.compute_ha1("SHA-256", USERNAME, REALM, PASSWORD)
        bad = digest.compute_ha1("SHA-256", USERNAME, REALM, "Circle of Death")
        self.assertTrue(digest.verify_response(creds, good, "GET"))
        self.assertFalse(digest.verify_response(creds, bad, "GET"))
        self.assertFalse(digest.verify_response(creds, good, "POST"))


class ComputationTests(SynchronousTestCase):
    """The other forms of the response computation."""

    def test_rfc2069_form(self):
        """Without qop the response is H(HA1:nonce:HA2) (RFC 2069, allowed by RFC 3261)."""
        ha1 = digest.compute_ha1("MD5", "alice", "example.com", "secret")
        ha2 = digest.hash_hex("MD5", "REGISTER:sip:example.com")
        expected = digest.hash_hex("MD5", f"{ha1}:abc:{ha2}")
        self.assertEqual(digest.compute_response("MD5", ha1, "REGISTER", "sip:example.com", "abc"), expected)

    def test_sess(self):
        """-sess algorithms hash the HA1 with the nonce and cnonce first (RFC 7616 3.4.2)."""
        ha1 = digest.compute_ha1("SHA-256", "alice", "example.com", "secret")
        sess = digest.hash_hex("SHA-256", f"{ha1}:n:c")
        ha2 = digest.hash_hex("SHA-256", "INVITE:sip:bob@example.com")
        expected = digest.hash_hex("SHA-256", f"{sess}:n:00000001:c:auth:{ha2}")
        got = digest.compute_response("SHA-256-sess", ha1, "INVITE", "sip:bob@example.com", "n", "00000001", "c", "auth")
        self.assertEqual(got, expected)

    def test_auth_int(self):
        """qop=auth-int includes the hash of the body in HA2."""
        body = b"v=0\r\n"
        ha2 = digest.compute_ha2("MD5", "INVITE", "sip:b@x", "auth-int", body)
        import hashlib

        self.assertEqual(
            ha2,
            digest.hash_hex("MD5", "INVITE:sip:b@x:" + hashlib.md5(body).hexdigest()),
        )

    def test_algorithm_names(self):
        """Algorithm tokens are case-insensitive; absent means MD5; unknown ones are refused."""
        self.assertEqual(digest.normalize_algorithm("sha-256"), "SHA-256")
        self.assertEqual(digest.normalize_algorithm(None), "MD5")
        self.assertEqual(digest.base_algorithm("md5-SESS"), "MD5")
        self.assertRaises(digest.DigestError, digest.normalize_algorithm, "SHA-512-256")


class ChallengeAndCredentialsTests(SynchronousTestCase):
    """Formatting challenges and parsing credentials."""

    def test_challenge_round_trip(self):
        """A formatted challenge parses back to the same parameters."""
        text = digest.format_challenge('ex"ample.com', "N1", "SHA-256", ("auth",), stale=True)
        scheme, params = parse_auth_params(text)
        self.assertEqual(scheme, "Digest")
        self.assertEqual(params["realm"], 'ex"ample.com')
        self.assertEqual(params["nonce"], "N1")
        self.assertEqual(params["algorithm"], "SHA-256")
        self.assertEqual(params["qop"], "auth")
        self.assertEqual(params["stale"], "true")

    def test_missing_parameter(self):
        """Credentials without a response are refused, naming what is missing."""
        e = self.assertRaises(
            digest.DigestError,
            digest.parse_credentials,
            'Digest username="a", realm="r", nonce="n", uri="sip:r"',
        )
        self.assertIn("response", str(e))

    def test_not_digest(self):
        """Basic credentials are not digest credentials."""
        self.assertRaises(digest.DigestError, digest.parse_credentials, "Basic YTpi")

    def test_bad_nc(self):
        """qop with a malformed nonce-count is refused."""
        self.assertRaises(
            digest.DigestError,
            digest.parse_credentials,
            'Digest username="a", realm="r", nonce="n", uri="sip:r", response="x", qop=auth, nc=1, cnonce="c"',
        )

    def test_lenient_case(self):
        """Upper-case response hex and qop tokens (seen from some phones) are normalised."""
        creds = digest.parse_credentials(
            'Digest username="a", realm="r", nonce="n", uri="sip:r", response="ABCD", '
            'qop=AUTH, nc=0000000A, cnonce="c", algorithm=md5'
        )
        self.assertEqual(creds.response, "abcd")
        self.assertEqual(creds.qop, "auth")
        self.assertEqual(creds.nonce_count, 10)
        self.assertEqual(creds.algorithm, "MD5")
