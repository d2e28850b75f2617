# -*- test-case-name: rustpbx_py.test.test_transfer -*-
"""
Call transfer through the B2BUA (RFC 3515 REFER, RFC 3891 Replaces,
RFC 5589 call flows).

The PBX relays a REFER end to end instead of acting on it itself, as
RustPBX does when it anchors media: our B2BUA passes SDP through, so the
phone being transferred (the transferee) must set up the new call, and a
real phone does so with the Refer-To URI it was given.  That URI names a
user of the PBX (blind transfer) or carries a Replaces naming the
consultation dialog the transferor has I{with the PBX} (attended
transfer), so the transferee's new INVITE comes back to the PBX, which is
the party RFC 3891 expects to hold that dialog.  Two things need mapping:

 - the NOTIFYs of the implicit subscription name the REFER by its CSeq
   (C{Event: refer;id=<cseq>}); the REFER went out on the other leg with
   that leg's CSeq, so the id is mapped back (else the transferor answers
   481);
 - an INVITE with Replaces names one leg of a call of ours: the new call
   goes to the peer of the I{other} leg of that call, with a Replaces
   naming the dialog that peer has with us.
"""

from __future__ import annotations

import re
from typing import Optional, Tuple

from rustpbx_py.call.dialog import tag_of

_EVENT_ID = re.compile(r"(;[ \t]*id[ \t]*=[ \t]*)([0-9]+)", re.IGNORECASE)


def event_package(value: Optional[str]) -> str:
    """The package of an Event header (C{"refer"} for C{"refer;id=3"}), lower case."""
    if not value:
        return ""
    return value.split(";", 1)[0].strip().lower()


def event_id(value: Optional[str]) -> Optional[int]:
    """The C{id} parameter of an Event header as a number, if any."""
    if not value:
        return None
    match = _EVENT_ID.search(value)
    return int(match.group(2)) if match else None


def with_event_id(value: str, new_id: int) -> str:
    """An Event header value with its C{id} parameter replaced."""
    return _EVENT_ID.sub(lambda m: f"{m.group(1)}{new_id}", value, count=1)


def parse_replaces(value: Optional[str]) -> Optional[Tuple[str, str, str]]:
    """
    (call-id, to-tag, from-tag) of a Replaces header (RFC 3891 6.1), or
    None when it is missing or lacks one of them.
    """
    if not value:
        return None
    parts = [p.strip() for p in value.split(";")]
    call_id = parts[0]
    params = {}
    for p in parts[1:]:
        name, _, v = p.partition("=")
        params[name.strip().lower()] = v.strip()
    to_tag = params.get("to-tag")
    from_tag = params.get("from-tag")
    if not call_id or to_tag is None or from_tag is None:
        return None
    return call_id, to_tag, from_tag


def replaces_header(leg) -> str:
    """
    The Replaces naming C{leg}'s dialog as its peer sees it: the peer's
    tag is the to-tag, ours the from-tag (RFC 3891 3).
    """
    return f"{leg.call_id};to-tag={tag_of(leg.remote) or ''};from-tag={leg.local_tag}"


def find_replaced(legs: dict, value: Optional[str]):
    """
    The (call, leg) of ours an INVITE's Replaces names, or None.  The
    to-tag names our side of the dialog (the recipient's local tag, RFC
    3891 3); a phone that swaps the tags is matched by its from-tag too.
    """
    parsed = parse_replaces(value)
    if parsed is None:
        return None
    call_id, to_tag, from_tag = parsed
    for ours, theirs in ((to_tag, from_tag), (from_tag, to_tag)):
        entry = legs.get((call_id, ours))
        if entry is not None and tag_of(entry[1].remote) == theirs:
            return entry
    return None
