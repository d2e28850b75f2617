# -*- test-case-name: rustpbx_py.test.test_srtp -*-
"""
SRTP keyed by SDES (RFC 4568 C{a=crypto}), on each call leg independently,
so an SRTP phone can talk to a plain RTP phone through the relay.

SDES carries the master key and salt in the SDP itself::

    a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:<base64 key||salt>[|lifetime][|MKI:length] [session params]

The offerer's key protects what the offerer sends; the answerer picks one
offered line (same tag and suite) and sends its own key.  So for each leg
the relay holds two sessions: one inbound (unprotect what the phone sends,
with the phone's key) and one outbound (protect what goes to the phone,
with the key the PBX put in its own SDP).  L{srtp_session} builds either.

Encryption itself is libsrtp (pylibsrtp).  What libsrtp cannot be told
through pylibsrtp is handled here: an MKI (RFC 3711 section 3.1, sent by
some desk phones) is cut out before unprotecting and put back after
protecting, since the MKI field is not part of the authenticated portion.

SRTP packets arrive from the network: authentication failures, replays
and malformed packets are dropped (the methods return None) and counted
in L{SrtpSession.dropped}; no exception leaves the session.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, NamedTuple, Optional, Tuple

import pylibsrtp

__all__ = ["SrtpError", "SdesKeys", "SrtpSession", "parse_crypto", "srtp_session",
           "select_crypto", "SUITES", "DEFAULT_SUITE"]


class SrtpError(ValueError):
    """An a=crypto line or keying that cannot be used (the message says why)."""


class _Suite(NamedTuple):
    profile: int  # pylibsrtp.Policy.SRTP_PROFILE_*
    key_length: int  # master key, bytes
    salt_length: int  # master salt, bytes
    rtp_tag: int  # bytes of SRTP auth tag after the MKI (0 for AEAD: the tag is in the ciphertext)
    rtcp_tag: int  # same for SRTCP


#: The crypto suites pylibsrtp can run (RFC 4568 section 6.2, RFC 7714
#: section 14.2), in the PBX's order of preference.
SUITES: Dict[str, _Suite] = {
    "AES_CM_128_HMAC_SHA1_80": _Suite(pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 16, 14, 10, 10),
    # RFC 4568 6.2.2: 32-bit tag on SRTP only; SRTCP keeps its 80-bit tag.
    "AES_CM_128_HMAC_SHA1_32": _Suite(pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32, 16, 14, 4, 10),
    "AEAD_AES_128_GCM": _Suite(pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 16, 12, 0, 0),
    "AEAD_AES_256_GCM": _Suite(pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM, 32, 12, 0, 0),
}

DEFAULT_SUITE = "AES_CM_128_HMAC_SHA1_80"

#: Session parameters (RFC 4568 section 6.3) pylibsrtp cannot honour: an
#: offer line carrying one is skipped (another line may fit).
_UNSUPPORTED_PARAMS = ("UNENCRYPTED_SRTP", "UNENCRYPTED_SRTCP", "UNAUTHENTICATED_SRTP",
                       "FEC_ORDER", "FEC_KEY")

_CRYPTO_RE = re.compile(r"^\s*(?:a=)?(?:crypto:)?(\d{1,9})\s+(\S+)\s+(\S+)((?:\s+\S+)*)\s*$")
_LIFETIME_RE = re.compile(r"^(?:2\^(\d{1,2})|(\d{1,20}))$")
_MKI_RE = re.compile(r"^(\d{1,20}):(\d{1,3})$")


def _available(suite: _Suite) -> bool:
    """Whether this libsrtp build runs C{suite} (GCM needs libsrtp built with OpenSSL)."""
    try:
        key = bytes(suite.key_length + suite.salt_length)
        pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                                           srtp_profile=suite.profile))
    except Exception:
        return False
    return True


#: The suites this machine's libsrtp runs, in preference order.
AVAILABLE = tuple(name for name, suite in SUITES.items() if _available(suite))


@dataclass(frozen=True)
class SdesKeys:
    """
    One SDES key: the suite, the master key and salt (concatenated, as
    libsrtp takes them), and what else the C{a=crypto} line said.

    @ivar tag: the a=crypto tag the answer must repeat.
    @ivar lifetime: master key lifetime in packets, when given (informative:
        libsrtp enforces its own limit, far above what a call uses).
    @ivar mki: the MKI value and its length in bytes, or None.
    @ivar params: the session parameters, as written (e.g. C{("WSH=128",)}).
    """

    suite: str
    key: bytes
    tag: int = 1
    lifetime: Optional[int] = None
    mki: Optional[Tuple[int, int]] = None
    params: Tuple[str, ...] = field(default=())

    @classmethod
    def generate(cls, suite: str = DEFAULT_SUITE, tag: int = 1) -> "SdesKeys":
        """A fresh random master key and salt for C{suite} (the PBX's side of a leg)."""
        spec = _suite(suite)
        return cls(suite=suite, key=os.urandom(spec.key_length + spec.salt_length), tag=tag)

    def attribute(self, tag: Optional[int] = None) -> str:
        """
        The value of an C{a=crypto} attribute (without C{crypto:}) carrying
        this key, under C{tag} (default: L{tag}).
        """
        inline = "inline:" + base64.b64encode(self.key).decode("ascii")
        if self.lifetime is not None:
            power = self.lifetime.bit_length() - 1
            inline += f"|2^{power}" if self.lifetime == 1 << power else f"|{self.lifetime}"
        if self.mki is not None:
            inline += f"|{self.mki[0]}:{self.mki[1]}"
        return " ".join([str(self.tag if tag is None else tag), self.suite, inline, *self.params])

    @property
    def window_size(self) -> int:
        """The replay window (RFC 4568 WSH=, at least 64), 0 for libsrtp's default (128)."""
        for param in self.params:
            name, _, value = param.partition("=")
            if name == "WSH" and value.isdigit():
                return max(64, min(int(value), 0x7FFF))
        return 0


def _suite(name: str) -> _Suite:
    try:
        spec = SUITES[name]
    except KeyError:
        raise SrtpError(f"a=crypto suite {name!r} is not supported "
                        f"(supported: {', '.join(AVAILABLE)})") from None
    if name not in AVAILABLE:
        raise SrtpError(f"a=crypto suite {name} is not available in this libsrtp build")
    return spec


def parse_crypto(value: str) -> SdesKeys:
    """
    An C{a=crypto} attribute value (C{"1 AES_CM_128_HMAC_SHA1_80
    inline:..."}; a leading C{a=crypto:} or C{crypto:} is accepted) as
    L{SdesKeys}.  Raises L{SrtpError} naming what is wrong: unknown
    suite, bad base64, wrong key length, a lifetime or MKI that does not
    parse, a session parameter libsrtp cannot honour.  Only the first key
    of a line with several (RFC 4568 allows that with MKIs) is used.
    """
    match = _CRYPTO_RE.match(value or "")
    if not match:
        raise SrtpError(f"a=crypto: expected '<tag> <suite> inline:<key>', got {value!r}")
    tag, suite_name, key_params, session = match.groups()
    spec = _suite(suite_name)
    first = key_params.split(";")[0]
    method, _, info = first.partition(":")
    if method != "inline":
        raise SrtpError(f"a=crypto: key method {method!r} is not supported (only inline)")
    parts = info.split("|")
    try:
        key = base64.b64decode(parts[0] + "=" * (-len(parts[0]) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise SrtpError(f"a=crypto: the inline key of tag {tag} is not base64") from None
    if len(key) != spec.key_length + spec.salt_length:
        raise SrtpError(f"a=crypto: {suite_name} needs a {spec.key_length + spec.salt_length}-byte "
                        f"key and salt, tag {tag} has {len(key)} bytes")
    lifetime = mki = None
    for part in parts[1:]:
        life, mki_match = _LIFETIME_RE.match(part), _MKI_RE.match(part)
        if mki_match and mki is None:
            length = int(mki_match.group(2))
            if not 1 <= length <= 128:
                raise SrtpError(f"a=crypto: MKI length {length} out of range 1-128")
            mki = (int(mki_match.group(1)), length)
            if mki[0] >= 256 ** length:
                raise SrtpError(f"a=crypto: MKI {mki[0]} does not fit in {length} bytes")
        elif life and lifetime is None and mki is None:
            lifetime = 2 ** int(life.group(1)) if life.group(1) else int(life.group(2))
        else:
            raise SrtpError(f"a=crypto: cannot parse {part!r} after the key of tag {tag}")
    params = tuple(session.split())
    for param in params:
        name = param.partition("=")[0]
        if name in _UNSUPPORTED_PARAMS or (name == "KDR" and param != "KDR=0"):
            raise SrtpError(f"a=crypto: session parameter {param} is not supported")
    return SdesKeys(suite=suite_name, key=key, tag=int(tag), lifetime=lifetime, mki=mki, params=params)


def select_crypto(values: Iterable[Optional[str]]) -> Optional[SdesKeys]:
    """
    The first usable line of an offer's C{a=crypto} values (RFC 4568
    section 7.1.1: the answerer picks one; lines it cannot use are
    skipped), or None when none is usable.
    """
    for value in values:
        try:
            return parse_crypto(value or "")
        except SrtpError:
            continue
    return None


class SrtpSession:
    """
    One direction of SRTP on one leg: C{protect}/C{protect_rtcp} for what
    the PBX sends (outbound), C{unprotect}/C{unprotect_rtcp} for what it
    receives (inbound).  Every method returns the packet, or None when it
    was dropped; C{dropped} counts why (C{"auth"}: authentication failed,
    C{"replay"}: a replayed or too old packet, C{"invalid"}: anything else,
    e.g. too short or too long).
    """

    def __init__(self, keys: SdesKeys, outbound: bool) -> None:
        spec = _suite(keys.suite)
        policy = pylibsrtp.Policy(
            key=keys.key,
            ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound else pylibsrtp.Policy.SSRC_ANY_INBOUND,
            srtp_profile=spec.profile)
        # The relay forwards what the other leg sends: a source that repeats
        # a sequence number must not make protect() fail.
        policy.allow_repeat_tx = True
        policy.window_size = keys.window_size
        self._session = pylibsrtp.Session(policy)
        self.keys = keys
        self.outbound = outbound
        self.dropped: Dict[str, int] = {"auth": 0, "replay": 0, "invalid": 0}
        self._mki = keys.mki[0].to_bytes(keys.mki[1], "big") if keys.mki else b""
        self._rtp_tag = spec.rtp_tag
        self._rtcp_tag = spec.rtcp_tag

    def protect(self, packet: bytes) -> Optional[bytes]:
        """An RTP packet -> SRTP (None if it is not RTP libsrtp can protect)."""
        return self._add_mki(self._run(self._session.protect, packet), self._rtp_tag)

    def unprotect(self, packet: bytes) -> Optional[bytes]:
        """An SRTP packet -> RTP (None if it fails authentication, is replayed or malformed)."""
        return self._run(self._session.unprotect, self._cut_mki(packet, self._rtp_tag))

    def protect_rtcp(self, packet: bytes) -> Optional[bytes]:
        """An RTCP compound packet -> SRTCP."""
        return self._add_mki(self._run(self._session.protect_rtcp, packet), self._rtcp_tag)

    def unprotect_rtcp(self, packet: bytes) -> Optional[bytes]:
        """An SRTCP packet -> RTCP (None when dropped)."""
        return self._run(self._session.unprotect_rtcp, self._cut_mki(packet, self._rtcp_tag))

    def _run(self, method, packet: Optional[bytes]) -> Optional[bytes]:
        if packet is None:
            return None
        try:
            return method(bytes(packet))
        except pylibsrtp.Error as e:
            reason = str(e)
            if "authentication" in reason:
                self.dropped["auth"] += 1
            elif "replay" in reason or "too old" in reason:
                self.dropped["replay"] += 1
            else:
                self.dropped["invalid"] += 1
        except Exception:  # too long, too short, not bytes: network input
            self.dropped["invalid"] += 1
        return None

    def _cut_mki(self, packet: bytes, tag: int) -> Optional[bytes]:
        """SRTP with an MKI -> the same without it (libsrtp is keyed without MKI)."""
        if not self._mki:
            return packet
        end = len(packet) - tag
        start = end - len(self._mki)
        if start < 12 or packet[start:end] != self._mki:
            self.dropped["invalid"] += 1
            return None
        return packet[:start] + packet[end:]

    def _add_mki(self, packet: Optional[bytes], tag: int) -> Optional[bytes]:
        if packet is None or not self._mki:
            return packet
        end = len(packet) - tag
        return packet[:end] + self._mki + packet[end:]


def srtp_session(keys: SdesKeys, outbound: bool) -> SrtpSession:
    """
    The SRTP session for one direction of a leg: C{outbound=True} with the
    key the PBX offered or answered (protects what the PBX sends),
    C{outbound=False} with the phone's key (unprotects what it sends).
    """
    return SrtpSession(keys, outbound)
