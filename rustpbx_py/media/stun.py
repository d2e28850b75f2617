# -*- test-case-name: rustpbx_py.test.test_stun -*-
"""
ICE-lite (RFC 8445 section 2.5): the PBX's side of a WebRTC leg answers
the browser's STUN connectivity checks and never sends checks itself.

A browser learns our C{a=ice-ufrag}/C{a=ice-pwd} from the SDP and sends a
Binding request to the relay port with C{USERNAME = "<our ufrag>:<its
ufrag>"}, a C{MESSAGE-INTEGRITY} keyed with our password (the short-term
credential, RFC 8489 section 9.1) and a C{FINGERPRINT}.  We answer with a
Binding success response carrying C{XOR-MAPPED-ADDRESS} = the request's
source, integrity-protected with the same password, plus C{FINGERPRINT}.
The browser only starts DTLS and media once such an answer arrives.

The STUN wire format is aioice's C{stun} module (a maintained codec), not a
hand-written one.  Datagrams come from the network: anything malformed,
addressed to another ufrag or failing integrity gets no answer (an answer
would be an oracle for guessing the password) and is counted in
L{IceLiteResponder.dropped}.
"""

from __future__ import annotations

import secrets
import string
from typing import Dict, Optional, Tuple

from aioice import stun

__all__ = ["IceLiteResponder", "is_stun", "verified_message", "new_credentials"]

#: Characters ICE allows in ufrag/pwd (RFC 8839 section 5.4, ice-char).
_ICE_CHARS = string.ascii_letters + string.digits + "+/"


def new_credentials() -> Tuple[str, str]:
    """
    A fresh C{(ice-ufrag, ice-pwd)}: 8 and 24 ice-chars (RFC 8839 asks for at
    least 24 bits and 128 bits of randomness; 6 bits a character).
    """
    ufrag = "".join(secrets.choice(_ICE_CHARS) for _ in range(8))
    pwd = "".join(secrets.choice(_ICE_CHARS) for _ in range(24))
    return ufrag, pwd


def is_stun(data: bytes) -> bool:
    """
    Whether a datagram on a multiplexed port is STUN: first byte 0-3
    (RFC 7983 section 7), at least a header, and the magic cookie.
    """
    return (len(data) >= stun.HEADER_LENGTH and data[0] < 4
            and data[4:8] == b"\x21\x12\xa4\x42")


def verified_message(data: bytes, key: bytes) -> Optional[stun.Message]:
    """
    Parse a STUN message and check its MESSAGE-INTEGRITY with C{key}
    (the FINGERPRINT, when present, is checked by the parse).  Returns
    None when either check fails or the message lacks MESSAGE-INTEGRITY;
    raises ValueError when it is not STUN at all.

    aioice moved the integrity check out of C{parse_message} (0.10): both
    forms are handled, as Debian ships an older aioice than PyPI.
    """
    message = stun.parse_message(data)
    if "MESSAGE-INTEGRITY" not in message.attributes:
        return None
    check = getattr(message, "check_message_integrity", None)
    if check is not None:
        return message if check(key) else None
    try:  # aioice < 0.10: parse_message(data, integrity_key) raises on a mismatch
        return stun.parse_message(data, integrity_key=key)
    except ValueError:
        return None


class IceLiteResponder:
    """
    The ICE-lite agent of one WebRTC leg (one component: RTP and RTCP are
    multiplexed, RFC 5761).

    @ivar ufrag: our C{a=ice-ufrag}.
    @ivar pwd: our C{a=ice-pwd}.
    @ivar remote_ufrag: the peer's ufrag from its SDP, when known: a check
        whose USERNAME names another one (a stale offer's) is refused.
    @ivar selected: the source of the last valid check carrying
        C{USE-CANDIDATE} (the nominated pair, RFC 8445 section 7.3.1.5),
        else of the first valid check: where media for this leg goes.
    @ivar answered: valid checks answered.
    @ivar dropped: checks not answered, by reason (C{"malformed"},
        C{"username"}, C{"integrity"}, C{"not-request"}).
    """

    def __init__(self, ufrag: Optional[str] = None, pwd: Optional[str] = None,
                 remote_ufrag: Optional[str] = None, software: Optional[str] = None) -> None:
        if ufrag is None or pwd is None:
            ufrag, pwd = new_credentials()
        self.ufrag = ufrag
        self.pwd = pwd
        self.remote_ufrag = remote_ufrag
        self.software = software
        self.selected: Optional[Tuple[str, int]] = None
        self.answered = 0
        self.dropped: Dict[str, int] = {"malformed": 0, "username": 0, "integrity": 0,
                                        "not-request": 0}

    def restart(self, remote_ufrag: Optional[str]) -> None:
        """
        An ICE restart (the peer's re-offer has a new ufrag/pwd, RFC 8445
        section 9): new credentials of ours for the answer (RFC 8839), the
        peer's new ufrag; checks with the old ones are refused from now
        on.  Media keeps going to the selected address until a check with
        the new credentials nominates one (the browser's network may not
        have changed at all).
        """
        self.ufrag, self.pwd = new_credentials()
        self.remote_ufrag = remote_ufrag

    def handle(self, data: bytes, source: Tuple[str, int]) -> Optional[bytes]:
        """
        A STUN datagram from C{source} -> the response to send back to it,
        or None (nothing to send: dropped, or a response/indication, which
        an ICE-lite agent never expects).
        """
        try:
            header = stun.parse_message(data)
        except (ValueError, KeyError, IndexError, UnicodeDecodeError):
            self.dropped["malformed"] += 1
            return None
        if (header.message_method != stun.Method.BINDING
                or header.message_class != stun.Class.REQUEST):
            self.dropped["not-request"] += 1
            return None
        username = header.attributes.get("USERNAME", "")
        local, _, remote = username.partition(":")
        if local != self.ufrag or (self.remote_ufrag is not None and remote != self.remote_ufrag):
            self.dropped["username"] += 1
            return None
        request = verified_message(data, self.pwd.encode("utf-8"))
        if request is None:
            self.dropped["integrity"] += 1
            return None
        if "USE-CANDIDATE" in request.attributes or self.selected is None:
            self.selected = (source[0], source[1])
        self.answered += 1
        response = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE,
                                transaction_id=request.transaction_id)
        response.attributes["XOR-MAPPED-ADDRESS"] = (source[0], source[1])
        if self.software:
            response.attributes["SOFTWARE"] = self.software
        response.add_message_integrity(self.pwd.encode("utf-8"))
        if "FINGERPRINT" not in response.attributes:  # aioice < 0.10 adds it separately
            response.add_fingerprint()
        return bytes(response)
