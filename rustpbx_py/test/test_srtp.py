"""
Tests for L{rustpbx_py.media.srtp}: a=crypto parsing and writing (real
lines from RFC 4568 and phones), SDES protect/unprotect round trips for
RTP and RTCP in every suite, MKI handling, and dropping (never raising
on) forged, replayed and malformed packets.
"""

from __future__ import annotations

import base64
import struct

from twisted.trial.unittest import SynchronousTestCase

from rustpbx_py.media import srtp
from rustpbx_py.media.srtp import SdesKeys, SrtpError, parse_crypto, select_crypto, srtp_session

#: a=crypto values as phones and the RFC write them.
REAL_LINES = {
    # RFC 4568 section 9.1 (offer example): lifetime 2^20 and a 4-byte MKI of 1.
    "rfc4568": "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4",
    # RFC 4568 section 9.1, second line: the 32-bit tag suite.
    "rfc4568_32": "2 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj|2^20|1:32",
    # Collected offer (rustpbx_py/test/data/sdp): no lifetime, no MKI.
    "plain": "1 AES_CM_128_HMAC_SHA1_80 inline:m+XCGwZNSz7k/3sw/WCHUNkUMD7MCSJtnzWzsT1l",
    # Desk phones (Snom, Grandstream) give a decimal-power lifetime: 2^31.
    "desk": "1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^31",
    # RFC 7714 section 14.2 style AEAD line (28-byte key||salt, base64 padded).
    "gcm": "1 AEAD_AES_128_GCM inline:" + base64.b64encode(bytes(range(28))).decode(),
    # A session parameter (RFC 4568 6.3.7 replay window).
    "wsh": "3 AES_CM_128_HMAC_SHA1_80 inline:m+XCGwZNSz7k/3sw/WCHUNkUMD7MCSJtnzWzsT1l WSH=256",
}


def rtp(seq: int, ssrc: int = 0x1234ABCD, payload: bytes = b"\xd5" * 160, pt: int = 8) -> bytes:
    """A minimal RTP packet (V=2, no CSRC, no extension)."""
    return struct.pack("!BBHII", 0x80, pt, seq & 0xFFFF, seq * 160 & 0xFFFFFFFF, ssrc) + payload


def rtcp_rr(ssrc: int = 0x1234ABCD) -> bytes:
    """An RTCP receiver report with no report blocks."""
    return struct.pack("!BBHI", 0x80, 201, 1, ssrc)


class ParseTests(SynchronousTestCase):
    """a=crypto lines in, L{SdesKeys} out, and back."""

    def test_rfc4568_example(self) -> None:
        """RFC 4568's example: suite, 30-byte key, tag, lifetime 2^20, MKI 1 on 4 bytes."""
        keys = parse_crypto(REAL_LINES["rfc4568"])
        self.assertEqual((keys.tag, keys.suite, len(keys.key), keys.lifetime, keys.mki),
                         (1, "AES_CM_128_HMAC_SHA1_80", 30, 2 ** 20, (1, 4)))
        self.assertEqual(keys.attribute(), REAL_LINES["rfc4568"])
        self.assertIn("|1000|", SdesKeys(keys.suite, keys.key, lifetime=1000, mki=(1, 4)).attribute())

    def test_real_lines(self) -> None:
        """Every collected line parses; writing it back and parsing again gives the same keys."""
        for name, line in REAL_LINES.items():
            keys = parse_crypto(line)
            self.assertEqual(parse_crypto(keys.attribute()), keys, name)
            self.assertEqual(parse_crypto("a=crypto:" + line), keys, name)  # whole SDP line accepted
        self.assertEqual(parse_crypto(REAL_LINES["desk"]).lifetime, 2 ** 31)
        self.assertEqual(parse_crypto(REAL_LINES["rfc4568_32"]).mki, (1, 32))
        self.assertEqual(parse_crypto(REAL_LINES["wsh"]).window_size, 256)
        self.assertEqual(parse_crypto(REAL_LINES["gcm"]).key, bytes(range(28)))

    def test_errors_name_the_problem(self) -> None:
        """Each unusable line is refused with a message saying what is wrong."""
        cases = {
            "1 AES_256_CM_HMAC_SHA1_80 inline:" + "A" * 60: "AES_256_CM_HMAC_SHA1_80",
            "1 AES_CM_128_HMAC_SHA1_80 inline:!!!notbase64": "base64",
            "1 AES_CM_128_HMAC_SHA1_80 inline:" + base64.b64encode(bytes(20)).decode(): "20 bytes",
            "1 AES_CM_128_HMAC_SHA1_80 uri:http://example.com/key": "key method",
            "1 AES_CM_128_HMAC_SHA1_80 inline:m+XCGwZNSz7k/3sw/WCHUNkUMD7MCSJtnzWzsT1l|2^20|x": "'x'",
            "1 AES_CM_128_HMAC_SHA1_80 inline:m+XCGwZNSz7k/3sw/WCHUNkUMD7MCSJtnzWzsT1l|1:200": "MKI length",
            "1 AES_CM_128_HMAC_SHA1_80 inline:m+XCGwZNSz7k/3sw/WCHUNkUMD7MCSJtnzWzsT1l|300:1": "fit",
            "1 AES_CM_128_HMAC_SHA1_80 inline:m+XCGwZNSz7k/3sw/WCHUNkUMD7MCSJtnzWzsT1l UNENCRYPTED_SRTP": "UNENCRYPTED_SRTP",
            "1 AES_CM_128_HMAC_SHA1_80 inline:m+XCGwZNSz7k/3sw/WCHUNkUMD7MCSJtnzWzsT1l KDR=24": "KDR=24",
            "AES_CM_128_HMAC_SHA1_80 inline:m+XCGwZNSz7k/3sw/WCHUNkUMD7MCSJtnzWzsT1l": "expected",
            "": "expected",
        }
        for line, text in cases.items():
            e = self.assertRaises(SrtpError, parse_crypto, line)
            self.assertIn(text, str(e), line)

    def test_select_first_usable(self) -> None:
        """
        An offer listing an unsupported suite first (Linphone offers
        AES_256_CM first) gets the first line the PBX can use, tag kept.
        """
        offer = ["1 AES_256_CM_HMAC_SHA1_80 inline:" + "A" * 64, None, REAL_LINES["rfc4568_32"],
                 REAL_LINES["plain"]]
        keys = select_crypto(offer)
        self.assertEqual((keys.tag, keys.suite), (2, "AES_CM_128_HMAC_SHA1_32"))
        self.assertIsNone(select_crypto(["1 F8_128_HMAC_SHA1_80 inline:abc"]))
        self.assertIsNone(select_crypto([]))

    def test_generate(self) -> None:
        """Generated keys are random, of the suite's length, and write a parseable line under the given tag."""
        a, b = SdesKeys.generate(), SdesKeys.generate()
        self.assertNotEqual(a.key, b.key)
        self.assertEqual(len(a.key), 30)
        line = a.attribute(5)
        self.assertTrue(line.startswith("5 AES_CM_128_HMAC_SHA1_80 inline:"), line)
        self.assertEqual(parse_crypto(line).key, a.key)
        if "AEAD_AES_256_GCM" in srtp.AVAILABLE:
            self.assertEqual(len(SdesKeys.generate("AEAD_AES_256_GCM").key), 44)
        self.assertRaises(SrtpError, SdesKeys.generate, "NULL_HMAC_SHA1_80")


class ProtectTests(SynchronousTestCase):
    """One side protects with its key; the other unprotects with the key from its SDP."""

    def pair(self, keys: SdesKeys):
        """The phone's outbound session and the PBX's inbound one, keyed from the a=crypto line."""
        theirs = parse_crypto(keys.attribute())
        return srtp_session(keys, outbound=True), srtp_session(theirs, outbound=False)

    def test_round_trip_every_suite(self) -> None:
        """RTP and RTCP survive protect -> unprotect in every suite libsrtp has here, and the wire differs from the clear text."""
        self.assertIn("AES_CM_128_HMAC_SHA1_80", srtp.AVAILABLE)
        self.assertIn("AES_CM_128_HMAC_SHA1_32", srtp.AVAILABLE)
        for suite in srtp.AVAILABLE:
            sender, receiver = self.pair(SdesKeys.generate(suite))
            for seq in range(1000, 1050):
                packet = rtp(seq)
                wire = sender.protect(packet)
                self.assertNotEqual(wire[12:172], packet[12:], suite)
                self.assertEqual(receiver.unprotect(wire), packet, suite)
            report = rtcp_rr()
            self.assertEqual(receiver.unprotect_rtcp(sender.protect_rtcp(report)), report, suite)
            self.assertEqual(receiver.dropped, {"auth": 0, "replay": 0, "invalid": 0})

    def test_tag_lengths(self) -> None:
        """_80 adds a 10-byte tag to RTP, _32 a 4-byte one; SRTCP adds index (4) + 10 in both (RFC 4568 6.2.2)."""
        for suite, tag in (("AES_CM_128_HMAC_SHA1_80", 10), ("AES_CM_128_HMAC_SHA1_32", 4)):
            sender = srtp_session(SdesKeys.generate(suite), outbound=True)
            self.assertEqual(len(sender.protect(rtp(1))), 172 + tag)
            self.assertEqual(len(sender.protect_rtcp(rtcp_rr())), 8 + 4 + 10)

    def test_wrong_key_dropped(self) -> None:
        """A packet protected with another key fails authentication: None, counted as auth."""
        sender = srtp_session(SdesKeys.generate(), outbound=True)
        receiver = srtp_session(SdesKeys.generate(), outbound=False)
        self.assertIsNone(receiver.unprotect(sender.protect(rtp(1))))
        self.assertIsNone(receiver.unprotect_rtcp(sender.protect_rtcp(rtcp_rr())))
        self.assertEqual(receiver.dropped["auth"], 2)

    def test_tampered_dropped(self) -> None:
        """One flipped payload bit: authentication fails."""
        sender, receiver = self.pair(SdesKeys.generate())
        wire = bytearray(sender.protect(rtp(7)))
        wire[20] ^= 1
        self.assertIsNone(receiver.unprotect(bytes(wire)))
        self.assertEqual(receiver.dropped["auth"], 1)

    def test_replay_dropped(self) -> None:
        """The same SRTP packet twice: the second is a replay, dropped and counted; later ones still pass."""
        sender, receiver = self.pair(SdesKeys.generate())
        first = sender.protect(rtp(10))
        self.assertIsNotNone(receiver.unprotect(first))
        self.assertIsNone(receiver.unprotect(first))
        self.assertEqual(receiver.dropped["replay"], 1)
        self.assertEqual(receiver.unprotect(sender.protect(rtp(11))), rtp(11))

    def test_garbage_never_raises(self) -> None:
        """Empty, short, oversized and non-RTP input: None each, counted as invalid or auth."""
        sender, receiver = self.pair(SdesKeys.generate())
        for packet in (b"", b"\x80", bytes(11), b"\x80" * 5000, bytearray(b"\x80" * 40), memoryview(bytes(200))):
            self.assertIsNone(receiver.unprotect(packet))
            self.assertIsNone(receiver.unprotect_rtcp(packet))
        self.assertIsNone(sender.protect(b"\x80"))
        self.assertIsNone(sender.protect(rtp(1, payload=bytes(1400))))  # no room for the tag
        self.assertEqual(sum(receiver.dropped.values()), 12)
        self.assertEqual(sum(sender.dropped.values()), 2)

    def test_ssrc_change(self) -> None:
        """A new SSRC mid-call (phone restarted its stream) is accepted: sessions take any SSRC."""
        sender, receiver = self.pair(SdesKeys.generate())
        self.assertEqual(receiver.unprotect(sender.protect(rtp(1, ssrc=1))), rtp(1, ssrc=1))
        self.assertEqual(receiver.unprotect(sender.protect(rtp(500, ssrc=2))), rtp(500, ssrc=2))

    def test_repeated_outbound_sequence(self) -> None:
        """The relay may forward a duplicate from the plain side: protect() does not refuse it."""
        sender = srtp_session(SdesKeys.generate(), outbound=True)
        self.assertIsNotNone(sender.protect(rtp(3)))
        self.assertIsNotNone(sender.protect(rtp(3)))


class MkiTests(SynchronousTestCase):
    """Keys with an MKI (RFC 3711 3.1): the field is on the wire, between the payload and the tag."""

    def test_mki_on_the_wire(self) -> None:
        """Protect inserts the MKI before the tag; unprotect with the same keys accepts it, and a plain-keyed receiver cannot."""
        keys = parse_crypto(REAL_LINES["rfc4568"])
        sender, receiver = srtp_session(keys, True), srtp_session(keys, False)
        wire = sender.protect(rtp(1))
        self.assertEqual(len(wire), 172 + 4 + 10)
        self.assertEqual(wire[172:176], b"\x00\x00\x00\x01")
        self.assertEqual(receiver.unprotect(wire), rtp(1))
        rtcp_wire = sender.protect_rtcp(rtcp_rr())
        self.assertEqual(rtcp_wire[12:16], b"\x00\x00\x00\x01")
        self.assertEqual(receiver.unprotect_rtcp(rtcp_wire), rtcp_rr())
        no_mki = srtp_session(SdesKeys(keys.suite, keys.key), False)
        self.assertIsNone(no_mki.unprotect(sender.protect(rtp(2))))

    def test_wrong_mki_dropped(self) -> None:
        """A packet carrying another MKI value is dropped as invalid."""
        keys = parse_crypto(REAL_LINES["rfc4568"])
        other = SdesKeys(keys.suite, keys.key, mki=(2, 4))
        wire = srtp_session(other, True).protect(rtp(1))
        receiver = srtp_session(keys, False)
        self.assertIsNone(receiver.unprotect(wire))
        self.assertEqual(receiver.dropped["invalid"], 1)
