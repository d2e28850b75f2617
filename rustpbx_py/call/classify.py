# -*- test-case-name: rustpbx_py.test.test_routing -*-
"""
Which way a new call goes: internal, outbound, inbound, or between two
strangers.

RustPBX decides a call's direction from whether the caller's and the
callee's domains are ours (C{is_same_realm}) and whether the call came
over a trunk; routes can then be limited to one direction, the source
trunk only counts for inbound calls, and a call from a foreign domain to a
foreign domain that did not come over a trunk is refused with 403 (the PBX
is not an open relay).

Our domains are C{proxy.realms}, plus C{localhost}, C{127.0.0.1}, C{::1}
and the addresses the PBX is reached at (C{local_hosts}: the external IP,
the listening addresses).  With no realms at all every host is ours, as in
RustPBX listening on C{0.0.0.0} without realms.
"""

from __future__ import annotations

from typing import Iterable, Optional

from rustpbx_py.call.routing import callee_uri
from rustpbx_py.sip.headers import HeaderError, NameAddr, bare_host, join_hostport, split_hostport
from rustpbx_py.sip.message import Request

__all__ = ["classify", "is_local_host", "INTERNAL", "OUTBOUND", "INBOUND", "EXTERNAL"]

INTERNAL = "internal"
OUTBOUND = "outbound"
INBOUND = "inbound"
EXTERNAL = "external"

_ALWAYS_LOCAL = frozenset(["localhost", "127.0.0.1", "::1"])


def is_local_host(host: str, realms: Iterable[str], local_hosts: Iterable[str] = ()) -> bool:
    """
    Whether C{host} (C{host} or C{host:port}, IPv6 in brackets or not) is
    one of our domains.  Host names compare case-insensitively; a realm
    written with a port matches only that host:port.
    """
    realms = list(realms)
    if not realms:
        return True
    text = host.strip()
    try:
        name, port = split_hostport(text)
    except HeaderError:
        name, port = text, None
    name = bare_host(name)
    if name in _ALWAYS_LOCAL:
        return True
    for local in local_hosts:
        if bare_host(local) == name:
            return True
    with_port = join_hostport(name, port) if port is not None else None
    for realm in realms:
        r = realm.strip().lower()
        if bare_host(r) == name or (with_port is not None and r == with_port):
            return True
    return False


def classify(
    request: Request,
    realms: Iterable[str],
    source_trunk: Optional[str],
    local_hosts: Iterable[str] = (),
    caller_realm: Optional[str] = None,
    callee_known: bool = True,
) -> str:
    """
    The direction of a new call, as RustPBX's call module decides it:

     - from a trunk (C{source_trunk} set): C{"inbound"};
     - caller's and callee's domains both ours: C{"internal"} when the
       callee is one of our users (C{callee_known}), else C{"outbound"}
       (a number dialled at our domain goes out through the routes);
     - caller's ours, callee's not: C{"outbound"};
     - caller's not, callee's ours: C{"inbound"};
     - neither ours: C{"external"}, which the B2BUA refuses with 403.

    @param realms: C{proxy.realms}; empty means every host is ours.
    @param source_trunk: the trunk the call came over, or None.
    @param local_hosts: other names/addresses of this PBX (external IP,
        listening addresses).
    @param caller_realm: the realm the caller authenticated in, which
        RustPBX uses instead of the From host when there is one.
    @param callee_known: whether the callee (Request-URI user, else To
        user) is a user of ours; look it up before calling.

    RustPBX calls every call between two of our domains that arrives over
    a trunk "outbound", which with empty realms makes every trunk call
    outbound; a call from a trunk is "inbound" here, so that inbound routes
    and C{source_trunks} work whatever the realms.
    """
    if source_trunk is not None:
        return INBOUND
    realms = list(realms)
    local_hosts = list(local_hosts)
    if caller_realm is None:
        from_value = request.get("from")
        caller_host = ""
        if from_value is not None:
            try:
                uri = NameAddr.parse(from_value).uri
            except HeaderError:
                uri = None
            if uri is not None:
                caller_host = uri.host
        caller_realm = caller_host
    callee = callee_uri(request)
    callee_host = callee.host if callee is not None else ""
    caller_local = is_local_host(caller_realm, realms, local_hosts) if caller_realm else not realms
    callee_local = is_local_host(callee_host, realms, local_hosts) if callee_host else not realms
    if caller_local and callee_local:
        return INTERNAL if callee_known else OUTBOUND
    if caller_local:
        return OUTBOUND
    if callee_local:
        return INBOUND
    return EXTERNAL
