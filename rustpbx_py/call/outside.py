# -*- test-case-name: rustpbx_py.test.test_outside -*-
"""
Requests outside any dialog that go to a user rather than to the PBX:
MESSAGE (RFC 3428) and OPTIONS addressed to a user.

They are routed like a new call (a registered user's contacts first, then
the routes and trunks) and forked in parallel to every contact.  A
non-INVITE request has no CANCEL: the first 2xx is passed to the sender
and any later answer is simply dropped; when no fork succeeds the best
failure is passed on (RFC 3261 16.7 step 6).  No dialog is created, so
nothing is kept once the answer went back.
"""

from __future__ import annotations

from typing import List, Optional

from twisted.internet import defer
from twisted.logger import Logger

from rustpbx_py.call.b2bua import Target, best_response
from rustpbx_py.call.credentials import trunk_authorization
from rustpbx_py.call.dialog import from_with_tag
from rustpbx_py.registrar import make_aor
from rustpbx_py.sip.headers import HeaderError, URI, bare_host
from rustpbx_py.sip.message import Request, Response
from rustpbx_py.transaction.responses import new_call_id, new_tag

#: The methods relayed to a user outside a dialog.
RELAYED_METHODS = ("MESSAGE", "OPTIONS")

#: Headers of the sender's request the relayed one carries (the body's
#: description above all: a MESSAGE must arrive as it was sent).
COPIED = (
    "content-type",
    "content-disposition",
    "content-encoding",
    "content-language",
    "accept",
    "accept-encoding",
    "accept-language",
    "subject",
    "date",
    "priority",
    "in-reply-to",
    "reply-to",
    "expires",
    "p-asserted-identity",
    "p-preferred-identity",
)
#: Headers of the answer passed back to the sender.
ANSWERED = (
    "content-type",
    "content-disposition",
    "content-encoding",
    "allow",
    "allow-events",
    "accept",
    "accept-encoding",
    "accept-language",
    "supported",
    "retry-after",
    "warning",
    "date",
)


def _fails_over(status: int) -> bool:
    return status == 408 or 500 <= status < 600


class _Fork:
    __slots__ = ("target", "request", "final", "auth_tried")

    def __init__(self, target: Target, request: Request) -> None:
        self.target = target
        self.request = request
        self.final: Optional[Response] = None
        self.auth_tried = False


class OutsideRelay:
    """
    One request forked to a list of target groups: every target of a group
    at once; the next group only when the whole group failed with 5xx or
    408 (trunk failover, as for calls).
    """

    log = Logger()

    def __init__(self, core, tx, groups: List[List[Target]], callid_suffix: Optional[str] = None) -> None:
        self.core = core
        self.tx = tx
        self.groups = [list(g) for g in groups if g]
        self.forks: List[_Fork] = []
        self.call_id = new_call_id(callid_suffix)
        self.tag = new_tag()
        self.cseq = 0

    def start(self) -> None:
        if not self.groups:
            self.tx.reply(480, "Temporarily Unavailable")
            return
        for target in self.groups.pop(0):
            self._send(target)

    def _build(self, target: Target) -> Request:
        a = self.tx.request
        template = target.template or a
        req = Request(a.method, target.uri)
        req.add("Via", self.core.via_for(target.flow))
        mf = a.max_forwards
        req.add("Max-Forwards", str(max((70 if mf is None else mf) - 1, 0)))
        req.add("From", from_with_tag(template, self.tag))
        req.add("To", target.to)
        req.add("Call-ID", self.call_id)
        self.cseq += 1
        req.add("CSeq", f"{self.cseq} {a.method}")
        for route in target.routes:
            req.add("Route", route)
        for h in a.headers:
            if h[0] in COPIED or h[0].startswith("x-"):
                req.headers.append(list(h))
        req.body = a.body
        return req

    def _send(self, target: Target, request: Optional[Request] = None) -> None:
        fork = _Fork(target, request or self._build(target))
        self.forks.append(fork)
        self.core.send_request(fork.request, target.flow, lambda ctx, r, fork=fork: self._answered(fork, r))

    def _answered(self, fork: _Fork, response: Response) -> None:
        status = response.status
        if status < 200 or self.tx.completed:
            # Provisionals mean nothing here; after the first final answer
            # the others are dropped (a non-INVITE cannot be cancelled).
            return
        if 200 <= status < 300:
            fork.final = response
            self._pass_on(response)
            return
        if status in (401, 407) and self._retry_with_credentials(fork, response):
            return
        fork.final = response
        if not all(f.final is not None for f in self.forks):
            return
        best = best_response([f.final for f in self.forks])
        if self.groups and best is not None and _fails_over(best.status):
            for target in self.groups.pop(0):
                self._send(target)
            return
        if best is None:
            self.tx.reply(480, "Temporarily Unavailable")
        elif best.status in (401, 407):
            # A challenge for credentials the sender cannot answer.
            self.tx.reply(403, "Forbidden")
        else:
            self._pass_on(best)

    def _pass_on(self, response: Response) -> None:
        headers = [(h[1], h[2]) for h in response.headers if h[0] in ANSWERED]
        if 300 <= response.status < 400:
            headers += [(h[1], h[2]) for h in response.headers if h[0] == "contact"]
        self.tx.reply(response.status, response.reason, headers, response.body)

    def _retry_with_credentials(self, fork: _Fork, response: Response) -> bool:
        """A carrier's 401/407: send again with the trunk's credentials (once)."""
        if fork.auth_tried:
            return False
        req = fork.request
        authorization = trunk_authorization(fork.target.trunk, response, req.method, req.uri)
        if authorization is None:
            return False
        retry = Request(req.method, req.uri, req.copy_headers(), req.body)
        retry.remove("via")
        retry.insert("Via", self.core.via_for(fork.target.flow))
        self.cseq += 1
        retry.set("CSeq", f"{self.cseq} {req.method}")
        retry.set(*authorization)
        fork.final = response
        self.forks.remove(fork)
        self._send(fork.target, retry)
        self.forks[-1].auth_tried = True
        return True


@defer.inlineCallbacks
def route_outside(module, tx):
    """
    Relay C{tx}'s request (MESSAGE, or OPTIONS to a user) as the call
    module would route an INVITE to the same address: the user's contacts;
    else the routes' trunks; else 480 for a known user with no contact,
    403 for a request between two foreign domains, 404 for anyone else.
    """
    from rustpbx_py.call.classify import EXTERNAL, classify

    request = tx.request
    try:
        uri = URI.parse(request.uri)
    except HeaderError:
        tx.reply(400, "Bad Request-URI")
        return
    user = uri.user
    host = bare_host(uri.host)
    local = module.is_local_host(host)
    context = module.context
    bindings = []
    if local and user and context.locator is not None:
        bindings = context.locator.lookup(make_aor(user, module.realm_for(host)))
    if bindings:
        targets = yield module._binding_targets(bindings, request)
        if targets:
            _relay(module, tx, [targets])
            return
    known = bool(bindings)
    if local and user and not known and context.users is not None:
        found = yield defer.maybeDeferred(context.users.get_user, user, module.realm_for(host))
        known = found is not None
    source_trunk = tx.context.trunk
    direction = classify(request, module.config.proxy.realms, source_trunk, module.core.local_hosts, tx.context.realm, known)
    auth_user = getattr(tx.context.user, "username", None)
    decision = module.router.route(request, source_trunk, direction, auth_user) if module.router else None
    if decision is not None:
        groups, refusal = yield _decision_groups(module, tx, decision)
        if tx.completed:
            return
        if refusal is not None:
            tx.reply(refusal[0], refusal[1], refusal[2] if len(refusal) > 2 else ())
            return
        _relay(module, tx, groups)
        return
    if direction == EXTERNAL:
        tx.reply(403, "Forbidden")
    elif known:
        tx.reply(480, "Temporarily Unavailable")
    else:
        tx.reply(404, "Not Found")


def _relay(module, tx, groups: List[List[Target]]) -> None:
    OutsideRelay(module.core, tx, groups, module.config.proxy.callid_suffix).start()


@defer.inlineCallbacks
def _decision_groups(module, tx, decision):
    """The target groups of a route's decision, or a refusal (status, reason[, headers])."""
    action = decision.action
    if action == "reject":
        return [], (decision.code or 403, decision.reason or "Forbidden", decision.headers or ())
    if action == "busy":
        return [], (486, "Busy Here")
    if action != "forward":
        return [], (405, "Method Not Allowed", [("Allow", module.core.allow_header())])
    if not decision.trunks:
        groups = yield module._uri_groups(decision.request)
        return (groups, None) if groups else ([], (480, "Temporarily Unavailable"))
    from rustpbx_py.modules.call import identity

    caller = decision.caller or identity(tx.request.get("from"))
    callee = decision.callee or identity(tx.request.get("to"))
    groups, refusal = yield module._trunk_groups(list(decision.trunks), decision.request, caller, callee, tx.context.trunk)
    if not groups:
        return [], refusal or (503, "Service Unavailable")
    return groups, None
