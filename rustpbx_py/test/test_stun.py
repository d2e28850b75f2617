"""
Tests for L{rustpbx_py.media.stun}: aioice's STUN codec against the RFC
5769 test vectors (decoded, integrity and fingerprint verified, re-encoded
byte for byte), and the ICE-lite responder's answers checked the way a
browser checks them (aioice parses and verifies them with our password).
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import struct

from aioice import stun
from twisted.trial.unittest import SynchronousTestCase

from rustpbx_py.media.stun import IceLiteResponder, is_stun, new_credentials, verified_message


def _hex(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


#: RFC 5769 section 2.1-2.3, as printed (SOFTWARE/USERNAME padding is 0x20 there).
PASSWORD = b"VOkJxbRl1RmTxUk/WvJxBt"
TRANSACTION = _hex("b7 e7 a7 01 bc 34 d6 86 fa 87 df ae")
SAMPLE_REQUEST = _hex("""
    00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 10 53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74
    00 24 00 04 6e 00 01 ff
    80 29 00 08 93 2f f9 b1 51 26 3b 36
    00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20
    00 08 00 14 9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2
    80 28 00 04 e5 7a 3b cf""")
SAMPLE_IPV4_RESPONSE = _hex("""
    01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 08 00 01 a1 47 e1 12 a6 43
    00 08 00 14 2b 91 f5 99 fd 9e 90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7
    80 28 00 04 c0 7d 4c 96""")
SAMPLE_IPV6_RESPONSE = _hex("""
    01 01 00 48 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 14 00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9
    00 08 00 14 a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75 bf e3 ed 41
    80 28 00 04 c8 fb 0b 4c""")


def _zero_padding(data: bytes) -> bytes:
    """
    The vector with every attribute's padding bytes set to 0 (aioice pads
    with zeros, RFC 5769 with spaces; RFC 8489 section 14 lets the sender
    choose and tells the receiver to ignore them) and MESSAGE-INTEGRITY and
    FINGERPRINT recomputed with hashlib/zlib, independently of aioice.
    """
    out = bytearray(data)
    pos = 20
    while pos < len(out):
        kind, length = struct.unpack("!HH", out[pos:pos + 4])
        value = pos + 4
        pad = (4 - length % 4) % 4
        out[value + length:value + length + pad] = bytes(pad)
        if kind == 0x0008:  # MESSAGE-INTEGRITY over the header (length up to it) + what precedes
            covered = bytearray(out[:pos])
            covered[2:4] = struct.pack("!H", pos + 24 - 20)
            out[value:value + 20] = hmac.new(PASSWORD, bytes(covered), hashlib.sha1).digest()
        elif kind == 0x8028:  # FINGERPRINT
            covered = bytearray(out[:pos])
            covered[2:4] = struct.pack("!H", pos + 8 - 20)
            out[value:value + 4] = struct.pack("!I", binascii.crc32(bytes(covered)) ^ 0x5354554E)
        pos = value + length + pad
    return bytes(out)


class Rfc5769Tests(SynchronousTestCase):
    """aioice's codec reproduces RFC 5769's test vectors."""

    def test_vectors_verify(self) -> None:
        """
        Each vector, as printed, passes the FINGERPRINT check (in the parse)
        and the MESSAGE-INTEGRITY check with the RFC's password; one changed
        byte or another password fails.
        """
        for vector in (SAMPLE_REQUEST, SAMPLE_IPV4_RESPONSE, SAMPLE_IPV6_RESPONSE):
            self.assertIsNotNone(verified_message(vector, PASSWORD))
            self.assertIsNone(verified_message(vector, b"VOkJxbRl1RmTxUk/WvJxBu"))
            forged = bytearray(vector)
            forged[30] ^= 1  # inside SOFTWARE, covered by both checks
            self.assertRaises(ValueError, stun.parse_message, bytes(forged))  # FINGERPRINT

    def test_sample_request(self) -> None:
        """
        2.1: the decoded attributes are the RFC's, and encoding them again
        (same order, same password) gives the vector byte for byte (padding
        zeroed, see L{_zero_padding}); the re-encoded request verifies.
        """
        message = verified_message(SAMPLE_REQUEST, PASSWORD)
        self.assertEqual((message.message_method, message.message_class),
                         (stun.Method.BINDING, stun.Class.REQUEST))
        self.assertEqual(message.transaction_id, TRANSACTION)
        self.assertEqual(message.attributes["SOFTWARE"], "STUN test client")
        self.assertEqual(message.attributes["PRIORITY"], 0x6E0001FF)
        self.assertEqual(message.attributes["ICE-CONTROLLED"], 0x932FF9B151263B36)
        self.assertEqual(message.attributes["USERNAME"], "evtj:h6vY")
        again = stun.Message(stun.Method.BINDING, stun.Class.REQUEST, transaction_id=TRANSACTION)
        for name in ("SOFTWARE", "PRIORITY", "ICE-CONTROLLED", "USERNAME"):
            again.attributes[name] = message.attributes[name]
        again.add_message_integrity(PASSWORD)
        if "FINGERPRINT" not in again.attributes:
            again.add_fingerprint()
        self.assertEqual(bytes(again), _zero_padding(SAMPLE_REQUEST))
        self.assertNotEqual(_zero_padding(SAMPLE_REQUEST), SAMPLE_REQUEST)  # padding did differ
        self.assertIsNotNone(verified_message(bytes(again), PASSWORD))

    def _response(self, vector: bytes, address) -> None:
        message = verified_message(vector, PASSWORD)
        self.assertEqual((message.message_method, message.message_class),
                         (stun.Method.BINDING, stun.Class.RESPONSE))
        self.assertEqual(message.transaction_id, TRANSACTION)
        self.assertEqual(message.attributes["SOFTWARE"], "test vector")
        self.assertEqual(message.attributes["XOR-MAPPED-ADDRESS"], address)
        again = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, transaction_id=TRANSACTION)
        again.attributes["SOFTWARE"] = "test vector"
        again.attributes["XOR-MAPPED-ADDRESS"] = address
        again.add_message_integrity(PASSWORD)
        if "FINGERPRINT" not in again.attributes:
            again.add_fingerprint()
        self.assertEqual(bytes(again), _zero_padding(vector))
        # The XOR-MAPPED-ADDRESS bytes themselves carry no padding: exact.
        start = vector.index(b"\x00\x20", 20)
        self.assertIn(vector[start:start + 8], bytes(again))

    def test_ipv4_response(self) -> None:
        """2.2: XOR-MAPPED-ADDRESS 192.0.2.1:32853, decoded and re-encoded."""
        self._response(SAMPLE_IPV4_RESPONSE, ("192.0.2.1", 32853))

    def test_ipv6_response(self) -> None:
        """2.3: XOR-MAPPED-ADDRESS [2001:db8:1234:5678:11:2233:4455:6677]:32853."""
        self._response(SAMPLE_IPV6_RESPONSE, ("2001:db8:1234:5678:11:2233:4455:6677", 32853))


def _check(ufrag: str, pwd: str, remote: str = "brws", use_candidate: bool = False,
           transaction: bytes = TRANSACTION) -> bytes:
    """A browser's connectivity check (ICE-CONTROLLING, PRIORITY, USERNAME, MI, FINGERPRINT)."""
    request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST, transaction_id=transaction)
    request.attributes["USERNAME"] = f"{ufrag}:{remote}"
    request.attributes["PRIORITY"] = 0x6E7F1EFF
    request.attributes["ICE-CONTROLLING"] = 0x1122334455667788
    if use_candidate:
        request.attributes["USE-CANDIDATE"] = None
    request.add_message_integrity(pwd.encode())
    if "FINGERPRINT" not in request.attributes:
        request.add_fingerprint()
    return bytes(request)


class ResponderTests(SynchronousTestCase):
    """The ICE-lite responder answers valid checks only."""

    def setUp(self) -> None:
        self.ice = IceLiteResponder("Ab3+", "0123456789abcdefghijklmn", software="rustpbx_py")

    def test_answer(self) -> None:
        """
        A valid check gets a Binding success response with the same
        transaction id, XOR-MAPPED-ADDRESS = the source, and a
        MESSAGE-INTEGRITY (our password) + FINGERPRINT that aioice verifies.
        """
        for source in (("127.0.0.1", 50000), ("2001:db8::7", 61000)):
            out = self.ice.handle(_check("Ab3+", self.ice.pwd), source)
            self.assertTrue(is_stun(out))
            response = verified_message(out, self.ice.pwd.encode())
            self.assertIsNotNone(response)
            self.assertEqual((response.message_method, response.message_class),
                             (stun.Method.BINDING, stun.Class.RESPONSE))
            self.assertEqual(response.transaction_id, TRANSACTION)
            self.assertEqual(response.attributes["XOR-MAPPED-ADDRESS"], source)
            self.assertIn("FINGERPRINT", response.attributes)
            self.assertEqual(list(response.attributes)[-2:], ["MESSAGE-INTEGRITY", "FINGERPRINT"])
            self.assertIsNone(verified_message(out, b"another password"))
        self.assertEqual(self.ice.answered, 2)

    def test_bad_integrity_silent(self) -> None:
        """A check keyed with another password gets no answer and is counted."""
        self.assertIsNone(self.ice.handle(_check("Ab3+", "wrong-password-xxxxxxxx"), ("127.0.0.1", 5)))
        self.assertEqual(self.ice.dropped["integrity"], 1)
        self.assertEqual(self.ice.answered, 0)
        self.assertIsNone(self.ice.selected)

    def test_other_username(self) -> None:
        """A check for another ufrag, or from a peer ufrag we were not given, is dropped."""
        self.assertIsNone(self.ice.handle(_check("zzzz", self.ice.pwd), ("127.0.0.1", 5)))
        self.ice.remote_ufrag = "known"
        self.assertIsNone(self.ice.handle(_check("Ab3+", self.ice.pwd, remote="other"), ("127.0.0.1", 5)))
        self.assertEqual(self.ice.dropped["username"], 2)
        self.assertIsNotNone(self.ice.handle(_check("Ab3+", self.ice.pwd, remote="known"), ("127.0.0.1", 5)))

    def test_no_integrity_or_garbage(self) -> None:
        """No MESSAGE-INTEGRITY, a truncated message, a response: no answer, no exception."""
        bare = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
        bare.attributes["USERNAME"] = "Ab3+:x"
        self.assertIsNone(self.ice.handle(bytes(bare), ("127.0.0.1", 5)))
        self.assertEqual(self.ice.dropped["integrity"], 1)
        good = _check("Ab3+", self.ice.pwd)
        for junk in (good[:-3], good[:19], b"\x00\x01" + bytes(30)):
            self.assertIsNone(self.ice.handle(junk, ("127.0.0.1", 5)))
        self.assertEqual(self.ice.dropped["malformed"], 3)
        self.assertIsNone(self.ice.handle(SAMPLE_IPV4_RESPONSE, ("127.0.0.1", 5)))
        self.assertEqual(self.ice.dropped["not-request"], 1)

    def test_selected_pair(self) -> None:
        """The first valid check's source is used until a USE-CANDIDATE check nominates one."""
        self.ice.handle(_check("Ab3+", self.ice.pwd), ("127.0.0.1", 1000))
        self.assertEqual(self.ice.selected, ("127.0.0.1", 1000))
        self.ice.handle(_check("Ab3+", self.ice.pwd), ("127.0.0.1", 2000))
        self.assertEqual(self.ice.selected, ("127.0.0.1", 1000))
        self.ice.handle(_check("Ab3+", self.ice.pwd, use_candidate=True), ("127.0.0.1", 3000))
        self.assertEqual(self.ice.selected, ("127.0.0.1", 3000))

    def test_demultiplexing(self) -> None:
        """RFC 7983: STUN starts with 0-3 and carries the cookie; RTP (128-191) and DTLS (20-63) are not STUN."""
        self.assertTrue(is_stun(SAMPLE_REQUEST))
        self.assertFalse(is_stun(b"\x80\x00" + SAMPLE_REQUEST[2:]))
        self.assertFalse(is_stun(b"\x16\xfe\xfd" + bytes(30)))
        self.assertFalse(is_stun(SAMPLE_REQUEST[:4] + b"XXXX" + SAMPLE_REQUEST[8:]))

    def test_credentials(self) -> None:
        """Generated credentials are ice-chars of RFC 8839's minimum lengths, random each time."""
        ufrag, pwd = new_credentials()
        self.assertGreaterEqual(len(ufrag), 4)
        self.assertGreaterEqual(len(pwd), 22)
        self.assertNotEqual(new_credentials(), (ufrag, pwd))
        responder = IceLiteResponder()
        self.assertEqual(len(responder.pwd), 24)
