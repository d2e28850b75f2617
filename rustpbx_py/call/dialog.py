# -*- test-case-name: rustpbx_py.test.test_b2bua -*-
"""
One leg of a back-to-back call: a dialog (RFC 3261 section 12) between the
PBX and one peer, and the requests we build inside it.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Tuple

from rustpbx_py.sip.headers import HeaderError, NameAddr
from rustpbx_py.sip.message import Request, Response


class Leg:
    """
    Our side of one dialog.

    @ivar local: our From (caller leg: the To we answered with, tagged).
    @ivar remote: the peer's address with its tag.
    @ivar target: the peer's Contact URI: where in-dialog requests go.
    @ivar routes: the route set (Record-Route, in the order we use it).
    @ivar flow: the flow in-dialog requests to the peer go over.
    """

    def __init__(
        self,
        name: str,
        call_id: str,
        local_tag: str,
        local: str,
        remote: str,
        target: str,
        routes: List[str],
        flow,
        cseq: int = 0,
    ) -> None:
        self.name = name
        self.call_id = call_id
        self.local_tag = local_tag
        self.local = local
        self.remote = remote
        self.target = target
        self.routes = routes
        self.flow = flow
        self.cseq = cseq
        self.remote_cseq = 0
        self.peer_allow: Tuple[str, ...] = ()
        self.peer_supported: Tuple[str, ...] = ()
        #: The last session description we sent the peer (an offer or an
        #: answer): what a refreshing re-INVITE offers again, unchanged.
        self.local_sdp = b""
        #: Methods the peer refused with 405/501 although it listed them.
        self.refused: set = set()

    @property
    def key(self) -> Tuple[str, str]:
        return (self.call_id, self.local_tag)

    def allows(self, method: str) -> bool:
        """Whether the peer said it accepts C{method} (no Allow: assume yes for the RFC 3261 core)."""
        if method in self.refused:
            return False
        if not self.peer_allow:
            return method in ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS")
        return method in self.peer_allow

    def request(
        self,
        method: str,
        via: str,
        contact: Optional[str] = None,
        headers: Iterable[Tuple[str, str]] = (),
        body: bytes = b"",
        cseq: Optional[int] = None,
        max_forwards: int = 70,
    ) -> Request:
        """
        A new request inside this dialog (12.2.1.1), along the route set.
        C{max_forwards}: 70 for a request of ours, one less than the
        triggering request's for one we relay.
        """
        if cseq is None:
            if method not in ("ACK", "CANCEL"):
                self.cseq += 1
            cseq = self.cseq
        uri, routes = request_target(self.target, self.routes)
        req = Request(method, uri)
        req.add("Via", via)
        req.add("Max-Forwards", str(max_forwards))
        req.add("From", self.local)
        req.add("To", self.remote)
        req.add("Call-ID", self.call_id)
        req.add("CSeq", f"{cseq} {method}")
        for route in routes:
            req.add("Route", route)
        if contact and method in ("INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"):
            req.add("Contact", contact)
        for name, value in headers:
            req.add(name, value)
        req.body = body
        return req

    def learn_peer(self, message) -> None:
        """Remember what the peer supports (Allow, Supported)."""
        allow = message.get_all("allow")
        if allow:
            self.peer_allow = tuple(a.strip().upper() for a in allow)
        supported = message.get_all("supported")
        if supported:
            self.peer_supported = tuple(s.strip().lower() for s in supported)

    def refresh_target(self, message) -> None:
        """A target refresh (12.2): the peer's new Contact, if it sent one."""
        target = contact_target(message)
        if target:
            self.target = target

    def confirm(self, response: Response) -> None:
        """
        The 2xx that confirms an early dialog (12.1.2): the route set and
        the remote target are taken again from it.
        """
        self.routes = list(reversed(response.get_all("record-route")))
        self.remote = response.get("to") or self.remote
        self.refresh_target(response)
        self.learn_peer(response)

    def __repr__(self) -> str:
        return f"<Leg {self.name} {self.call_id} {self.local_tag}>"


def request_target(target: str, routes: List[str]) -> Tuple[str, List[str]]:
    """
    The Request-URI and Route headers of a request to C{target} along
    C{routes} (RFC 3261 12.2.1.1): with a loose router first (C{;lr}) the
    target stays the Request-URI; a strict router (RFC 2543) wants its own
    URI there, and the remote target goes last in the Route headers.
    """
    if not routes:
        return target, routes
    try:
        first = NameAddr.parse(routes[0]).uri
    except HeaderError:
        return target, routes
    if first is None or "lr" in first.params:
        return target, routes
    uri = first.copy()
    # Parameters a Request-URI may not carry (19.1.1): method, headers.
    if "method" in uri.params or uri.headers:
        uri.params.pop("method", None)
        uri.headers = ""
        uri.changed()
    return str(uri), list(routes[1:]) + [f"<{target}>"]


def record_route_headers(request: Request) -> List[Tuple[str, str]]:
    """
    The Record-Route headers a dialog-creating response to C{request}
    carries: the request's, in order (RFC 3261 12.1.1), so the peer's
    later requests go back through the proxies that asked to stay.
    """
    return [("Record-Route", route) for route in request.get_all("record-route")]


def relayed_max_forwards(request: Request) -> int:
    """Max-Forwards for a request we send because of C{request}: one less
    than it had (RFC 3261 16.6 step 3; 70 when it had none)."""
    mf = request.max_forwards
    return max((70 if mf is None else mf) - 1, 0)


def tag_of(header_value: Optional[str]) -> Optional[str]:
    """The tag parameter of a From or To value, if any."""
    if not header_value:
        return None
    try:
        return _TAGS[header_value]
    except KeyError:
        pass
    try:
        tag = NameAddr.parse(header_value).tag
    except HeaderError:
        tag = None
    if len(_TAGS) >= 10000:
        _TAGS.clear()
    _TAGS[header_value] = tag
    return tag


#: From/To values seen -> their tag: every in-dialog message asks, several
#: times, and the answer is a string (nothing a caller could change).
_TAGS: Dict[str, Optional[str]] = {}


def forget_tags() -> None:
    """
    Empty the tag cache (the server's housekeeping does, every minute): it
    is refilled by the messages of live dialogs, and the entries of ended
    ones, a few strings each spread over every arena a burst of calls
    allocated, would keep those arenas mapped after the calls are over.
    """
    _TAGS.clear()


def contact_target(message) -> Optional[str]:
    """The URI of the first Contact of a message, as text."""
    value = message.get("contact")
    if not value:
        return None
    first = message.get_all("contact")[0]
    try:
        na = NameAddr.parse(first)
    except HeaderError:
        return None
    return str(na.uri) if na.uri is not None else None


def with_tag(header_value: str, tag: str) -> str:
    """A From/To value with C{tag} set."""
    if tag_of(header_value):
        return header_value
    return f"{header_value};tag={tag}"


def from_with_tag(template: Request, tag: str) -> str:
    """
    The From of a request we originate as a B2BUA from C{template}'s From:
    its display name and URI with our C{tag} instead of the caller's, or
    an anonymous From when the caller's cannot be parsed.
    """
    value = template.get("from") or ""
    try:
        na = NameAddr.parse(value)
    except HeaderError:
        return f"<sip:anonymous@anonymous.invalid>;tag={tag}"
    na.params = {k: v for k, v in na.params.items() if k != "tag"}
    na.params["tag"] = tag
    return str(na)


def uac_leg_from_response(name: str, request: Request, response: Response, flow) -> Leg:
    """The dialog a 2xx (or 1xx with a tag) to our INVITE creates (12.1.2)."""
    routes = list(reversed(response.get_all("record-route")))
    leg = Leg(
        name,
        request.call_id,
        tag_of(request.get("from")) or "",
        request.get("from") or "",
        response.get("to") or request.get("to") or "",
        contact_target(response) or request.uri,
        routes,
        flow,
        cseq=request.cseq[0],
    )
    leg.learn_peer(response)
    return leg


def uas_leg_from_request(name: str, request: Request, local_tag: str, flow) -> Leg:
    """The dialog we create by answering an INVITE (12.1.1)."""
    leg = Leg(
        name,
        request.call_id,
        local_tag,
        with_tag(request.get("to") or "", local_tag),
        request.get("from") or "",
        contact_target(request) or "",
        request.get_all("record-route"),
        flow,
        cseq=0,
    )
    leg.remote_cseq = request.cseq[0]
    leg.learn_peer(request)
    return leg
