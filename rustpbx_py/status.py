# -*- test-case-name: rustpbx_py.test.test_status -*-
"""
The live state of a running PBX, as plain data: who is registered, which
calls are up, how many transactions are in flight; and the two admin
actions on it, hanging up a call and removing a registration.

The console pages, the C{/api/v1} resources and the monitor addon all read
the PBX through these functions, so each shows the same figures and none
reaches into the registrar's or the B2BUA's internals itself.  Every
function takes the L{rustpbx_py.interfaces.IServerContext} (its C{core},
C{modules} and C{locator}) and returns JSON-able dicts and lists; a PBX
without a registrar or a call module shows empty lists.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Iterable, List, Optional

from twisted.internet import defer
from twisted.logger import Logger

from rustpbx_py.call import record as R
from rustpbx_py.randomness import random_hex

log = Logger()

#: The hangup reason an admin's hang-up leaves in the call record: RustPBX's
#: console sends its hangup command without a reason, and its reporter
#: records C{bySystem} for such a call.
ADMIN_HANGUP_REASON = R.BY_SYSTEM


def _module(context, name: str) -> Any:
    for module in getattr(context, "modules", None) or ():
        if getattr(module, "name", None) == name:
            return module
    return None


def _registry(context) -> Any:
    """The bindings store: the service's locator, else the registrar's."""
    locator = getattr(context, "locator", None)
    if locator is not None and hasattr(locator, "all_bindings"):
        return locator
    registrar = _module(context, "registrar")
    registry = getattr(registrar, "registry", None)
    if registry is not None and hasattr(registry, "all_bindings"):
        return registry
    return None


def _address(addr) -> str:
    """C{host:port}, with IPv6 hosts in brackets; "" for None."""
    if not addr:
        return ""
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def _now(context) -> float:
    return context.reactor.seconds()


# -- registrations -----------------------------------------------------------


def registrations(context) -> List[dict]:
    """
    Every live binding, by address-of-record then newest first: C{aor},
    C{contact} (as registered) and its C{params}, C{source} (where the
    REGISTER came from, C{host:port}), C{transport}, C{user_agent},
    C{expires} (the lifetime granted), C{expires_at} and C{expires_in}
    (seconds left), C{registered_at} (Unix seconds), C{instance} and
    C{reg_id} (RFC 5626/5627), C{nat} (requests go to the source),
    C{webrtc} (RustPBX's C{supports_webrtc}: calls to it get a WebRTC
    offer), C{path} and C{local} (our address it arrived on).
    """
    registry = _registry(context)
    if registry is None:
        return []
    now = registry.now()
    bindings = sorted(registry.all_bindings(), key=lambda b: (b.aor, -b.registered_at, b.contact))
    return [_binding(b, now) for b in bindings]


def binding_summary(context, binding) -> dict:
    """The dict L{registrations} lists for one binding (for event feeds)."""
    return _binding(binding, _now(context))


def _binding(b, now: float) -> dict:
    return {
        "aor": b.aor,
        "contact": b.contact,
        "params": b.params,
        "source": _address(b.source),
        "transport": b.transport,
        "user_agent": b.user_agent,
        "expires": b.expires,
        "expires_at": b.expires_at,
        "expires_in": b.remaining(now),
        "registered_at": b.registered_at,
        "instance": b.instance,
        "reg_id": b.reg_id,
        "nat": bool(b.nat),
        "webrtc": bool(getattr(b, "webrtc", False)),
        "path": list(b.path),
        "local": _address(b.local),
    }


def unregister(context, aor: str, contact: Optional[str] = None) -> defer.Deferred:
    """
    Remove the bindings of C{aor} (all of them, or the one whose Contact
    URI is C{contact}), as an un-REGISTER would: the database row goes,
    the presence module hears the AOR went offline when it was the last.
    The phone is not told; it registers again at its next refresh.

    Fires with the number of bindings removed (0 when none matched).
    """
    registry = _registry(context)
    if registry is None:
        return defer.succeed(0)
    aor = aor.strip()
    found = [b for b in registry.lookup(aor) if contact is None or _same_contact(b, contact)]
    if not found:
        return defer.succeed(0)
    # A Call-ID of our own: the RFC 3261 10.3 step 7 ordering check only
    # compares requests of one Call-ID, so ours never counts as "old".
    call_id = f"console-{random_hex(8)}"
    removals = [dataclasses.replace(b, expires=0, call_id=call_id, cseq=0, _uri=None, _contact_key=None) for b in found]
    d = registry.update(aor, removals)
    d.addCallback(lambda _: len(found))

    def logged(count):
        log.info("console: {count} binding(s) of {aor} removed", count=count, aor=aor)
        return count

    return d.addCallback(logged)


def _same_contact(binding, contact: str) -> bool:
    from rustpbx_py.registrar import contact_key
    from rustpbx_py.sip.headers import HeaderError, URI

    contact = contact.strip().strip("<>")
    if binding.contact == contact or binding.key == contact:
        return True
    try:
        return contact_key(URI.parse(contact)) == binding.contact_key
    except (HeaderError, ValueError):
        return False


# -- calls -------------------------------------------------------------------


def _calls(context) -> Iterable[Any]:
    module = _module(context, "call")
    if module is None:
        return ()
    return list(getattr(module, "calls", ()))


def active_calls(context) -> List[dict]:
    """
    Every call not ended yet, oldest first: C{id} (the call record's id),
    C{call_id} (the caller's Call-ID) and C{b_call_id}, C{caller},
    C{callee}, C{direction}, C{route}, C{trunk}, C{state} (routing,
    calling, ringing, answered), C{start_time}, C{ring_time},
    C{answer_time} (Unix seconds or None), C{duration} (seconds since the
    INVITE), C{talk_time} (since the answer, or 0), C{media} (mode and
    whether anchored), C{codecs} per leg (C{{"a": "PCMU", "b": "PCMA"}}:
    the media session's when anchored, else the codec the answer chose),
    and C{legs}: each dialog's name, Call-ID, transport, peer address and
    remote party.
    """
    now = _now(context)
    calls = [call for call in _calls(context) if call.state != "ended"]
    calls.sort(key=lambda c: c.record.start_time)
    return [_call(call, now) for call in calls]


def call_summary(context, call) -> dict:
    """The dict L{active_calls} lists for one call (for event feeds; an
    ended call's C{state} is C{ended})."""
    return _call(call, _now(context))


def call_parties(call) -> dict:
    """
    What a call's record says of it without reading its SDP or its legs:
    ids, parties, direction, route, trunk, state and times.  Cheap enough
    for event feeds that publish every call's every step.
    """
    record = call.record
    return {
        "id": record.id,
        "call_id": record.call_id,
        "caller": record.caller,
        "callee": record.callee,
        "direction": record.direction,
        "route": record.route,
        "trunk": record.trunk,
        "state": call.state,
        "start_time": record.start_time,
        "ring_time": record.ring_time,
        "answer_time": record.answer_time,
    }


def _call(call, now: float) -> dict:
    record = call.record
    media = call.media
    return {
        **call_parties(call),
        "b_call_id": call.b_call_id,
        "duration": max(now - record.start_time, 0.0),
        "talk_time": max(now - record.answer_time, 0.0) if record.answer_time is not None else 0.0,
        "media": None
        if media is None
        else {"mode": media.decision.mode, "anchored": bool(media.anchored), "reason": media.decision.reason},
        "codecs": _codecs(call),
        "legs": [_leg(leg) for leg in (call.a, call.b) if leg is not None],
    }


def _leg(leg) -> dict:
    flow = leg.flow
    return {
        "name": leg.name,
        "call_id": leg.call_id,
        "remote": leg.remote,
        "target": leg.target,
        "transport": getattr(flow, "transport", None),
        "peer": _address(getattr(flow, "remote", None)),
    }


def _codecs(call) -> Dict[str, Optional[str]]:
    """
    Each leg's codec: an anchored call's session knows both (they differ
    when it transcodes); otherwise both legs use what the answer chose,
    the first payload of the first audio stream of the SDP we sent the
    caller.
    """
    media = call.media
    session = getattr(media, "session", None) if media is not None else None
    if session is not None:
        try:
            stats = session.stats() or {}
        except Exception:
            log.failure("media session stats failed")
            stats = {}
        return {leg: (stats.get(leg) or {}).get("codec") for leg in ("a", "b")}
    codec = None
    if call.a is not None and call.a.local_sdp:
        codec = first_codec(call.a.local_sdp)
    return {"a": codec, "b": codec}


def first_codec(body: bytes) -> Optional[str]:
    """The first payload's codec name of the first audio stream of an SDP body."""
    from rustpbx_py.sip.sdp import SdpError, SessionDescription

    try:
        sdp = SessionDescription.parse(body)
    except (SdpError, ValueError):
        return None
    for m in sdp.media:
        if m.media != "audio" or m.port == 0 or not m.formats:
            continue
        rtpmap = m.rtpmap()
        for fmt in m.formats:
            entry = rtpmap.get(int(fmt)) if fmt.isdigit() else None
            if entry:
                return entry[0]
        return m.formats[0]
    return None


def find_call(context, call_id: str) -> Any:
    """The live call whose record id, Call-ID or B-side Call-ID is C{call_id}."""
    for call in _calls(context):
        if call.state == "ended":
            continue
        if call_id in (call.record.id, call.record.call_id, call.b_call_id):
            return call
    return None


def hang_up(context, call_id: str) -> bool:
    """
    End a live call as RustPBX's console does: an answered call gets a
    BYE on both legs, one still ringing has its forks cancelled and the
    caller answered 503; the record's hangup reason is
    L{ADMIN_HANGUP_REASON}.  C{call_id} is the record id or either side's
    Call-ID.  False when no live call matched.
    """
    call = find_call(context, call_id)
    if call is None:
        return False
    log.info("console: hanging up call {id} ({caller} -> {callee})", id=call.record.call_id,
             caller=call.record.caller, callee=call.record.callee)
    try:
        call.hangup(ADMIN_HANGUP_REASON)
    except Exception:
        log.failure("hanging up call {id} failed", id=call.record.call_id)
        call.end(ADMIN_HANGUP_REASON)
    return True


# -- trunks ------------------------------------------------------------------


def trunks(context) -> List[dict]:
    """
    Each trunk's health and registration, in configuration order (see
    L{rustpbx_py.call.trunks.TrunkSet.trunk_status}): C{trunk}, C{state}
    (up, down, unknown), C{options}, C{rtt}, C{last_probe}, C{failures},
    C{last_error}, C{fallback_trunk}, C{registration}.
    """
    trunk_set = getattr(context, "trunks", None)
    statuses = getattr(trunk_set, "statuses", None)
    if statuses is None:
        return []
    return list(statuses())


# -- transactions ------------------------------------------------------------


def transactions(context) -> dict:
    """
    The transactions in flight: C{total}, C{pending} (server transactions
    not answered yet) and, for C{server} and C{client} each, C{total},
    C{by_method} and C{by_state} counts (RFC 3261 17 state names).
    """
    core = getattr(context, "core", None)
    layer = getattr(core, "transactions", None)
    out: Dict[str, Any] = {"total": 0, "pending": 0}
    for side in ("server", "client"):
        table = getattr(layer, side, None) or {}
        by_method: Dict[str, int] = {}
        by_state: Dict[str, int] = {}
        for tx in list(table.values()):
            method = tx.request.method
            by_method[method] = by_method.get(method, 0) + 1
            by_state[tx.state] = by_state.get(tx.state, 0) + 1
        out[side] = {"total": len(table), "by_method": by_method, "by_state": by_state}
        out["total"] += len(table)
    out["pending"] = int(getattr(layer, "pending", 0) or 0)
    return out


__all__ = [
    "registrations",
    "binding_summary",
    "call_parties",
    "call_summary",
    "unregister",
    "active_calls",
    "find_call",
    "hang_up",
    "transactions",
    "trunks",
    "first_codec",
    "ADMIN_HANGUP_REASON",
]
