# -*- test-case-name: rustpbx_py.test.test_registrar -*-
"""
The registrar module (RustPBX's C{registrar}): answers REGISTER the way
RFC 3261 section 10.3 says, with RFC 3327 (Path), RFC 5626/5627
(C{+sip.instance}, C{reg-id}) and RustPBX's C{nat_fix}.

It runs after acl and auth: when auth accepted the request,
C{tx.context.user} and C{tx.context.realm} name who registers.  The
bindings live in a L{rustpbx_py.registrar.Registry}, which is also the
service's locator (C{module.registry}).  The 200 goes out only once the
binding is committed to the database.
"""

from __future__ import annotations

from email.utils import formatdate
from typing import Any, List, Optional, Tuple

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from rustpbx_py.interfaces import ABORT, CONTINUE, IProxyModule
from rustpbx_py.registrar import (
    Binding,
    OutOfOrder,
    Registry,
    binding_key,
    contact_key,
    is_webrtc_binding,
    make_aor,
    needs_nat_fix,
)
from rustpbx_py.sip.headers import HeaderError, NameAddr, split_outside_quotes

#: RustPBX's default C{registrar_expires}.
DEFAULT_EXPIRES = 3600
#: The shortest registration we accept (423 below it), unless
#: C{registrar_expires} is shorter still.  One minute keeps NAT bindings
#: fresh without letting a phone refresh every few seconds.
MIN_EXPIRES = 60
#: Live contacts one address-of-record may have (C{proxy.max_contacts}):
#: a REGISTER that would leave more is refused with 403, as Asterisk does
#: for an AOR's C{max_contacts}; every call forks to each contact, so the
#: limit also bounds the INVITEs one call can make.
DEFAULT_MAX_CONTACTS = 10
#: RFC 3261 20.19: larger delta-seconds mean this.
MAX_DELTA = 2**32 - 1


_last_date: List[Any] = [None, ""]


def _http_date(now: float) -> str:
    """The C{Date} header value for C{now} (RFC 3261 20.17), formatted once per second."""
    second = int(now)
    if _last_date[0] != second:
        _last_date[0] = second
        _last_date[1] = formatdate(second, usegmt=True)
    return _last_date[1]


class RegisterRejected(Exception):
    """A REGISTER we answer with an error: status, reason, extra headers."""

    def __init__(self, status: int, reason: str, headers: Optional[list] = None) -> None:
        Exception.__init__(self, f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.headers = headers or []


def _delta_seconds(text: str, where: str) -> int:
    """Parse an expires value (RFC 3261 20.19), capped at 2**32-1."""
    text = text.strip()
    if not text.isdigit():
        raise RegisterRejected(400, f"Bad Request: {where} is not a number of seconds")
    return min(int(text), MAX_DELTA)


def _split_params(text: str) -> List[str]:
    """C{;a=b;c="x;y"} into its parameters, leaving quoted C{;} alone."""
    return [p.strip() for p in split_outside_quotes(text, ";") if p.strip()]


def contact_params_text(element: str) -> str:
    """
    The header parameters of one Contact element exactly as the phone wrote
    them, without C{expires}: what the 200 repeats (RFC 3261 10.3 step 8
    lists contacts as registered; re-printing parsed parameters would, for
    one, unquote C{+sip.instance="<urn:...>"}).
    """
    t = element.strip()
    i = 0
    if t.startswith('"'):
        j = 1
        while j < len(t) and t[j] != '"':
            j += 2 if t[j] == "\\" else 1
        i = j + 1
    lt = t.find("<", i)
    semi = t.find(";", i)
    if lt >= 0 and (semi < 0 or lt < semi):
        rest = t[t.find(">", lt) + 1 :]
    else:
        # addr-spec: parameters after the URI are the header's (20.10).
        rest = t[semi:] if semi >= 0 else ""
    kept = [p for p in _split_params(rest) if p.split("=", 1)[0].strip().lower() != "expires"]
    return "".join(";" + p for p in kept)


@implementer(IProxyModule)
class RegistrarModule:
    """
    Answers REGISTER from the registry; every other method passes by.

    @param registry: where bindings live (the service's locator too).
    @param registrar_expires: the lifetime granted when the phone asks for
        none, and the longest one granted (C{proxy.registrar_expires}).
    @param min_expires: shorter requests get 423 with C{Min-Expires}.
    @param nat_fix: C{proxy.nat_fix}, see L{rustpbx_py.registrar.needs_nat_fix}.
    @param max_contacts: the most live contacts one AOR may have; a
        REGISTER that would leave more gets 403 and changes nothing.
    """

    name = "registrar"
    log = Logger()

    def __init__(
        self,
        registry: Registry,
        registrar_expires: int = DEFAULT_EXPIRES,
        min_expires: int = MIN_EXPIRES,
        nat_fix: bool = True,
        max_contacts: int = DEFAULT_MAX_CONTACTS,
    ) -> None:
        self.registry = registry
        self.max_contacts = max(1, int(max_contacts))
        self.registrar_expires = max(1, int(registrar_expires))
        self.min_expires = max(1, min(int(min_expires), self.registrar_expires))
        self.nat_fix = nat_fix

    @classmethod
    def from_context(cls, context: Any) -> "RegistrarModule":
        """Build from an L{rustpbx_py.interfaces.IServerContext}."""
        config = context.config
        proxy = getattr(config, "proxy", config)
        expires = getattr(proxy, "registrar_expires", None) or DEFAULT_EXPIRES
        nat_fix = getattr(proxy, "nat_fix", True)
        registry = Registry(getattr(context, "store", None), getattr(context, "reactor", None))
        max_contacts = getattr(proxy, "max_contacts", None) or DEFAULT_MAX_CONTACTS
        return cls(registry, expires, MIN_EXPIRES, True if nat_fix is None else bool(nat_fix), max_contacts)

    # -- IProxyModule -------------------------------------------------------

    def allow_methods(self) -> list:
        return ["REGISTER"]

    def start(self) -> defer.Deferred:
        return self.registry.start()

    def stop(self) -> defer.Deferred:
        return self.registry.stop()

    def on_transaction_end(self, tx) -> None:
        pass

    def on_transaction_begin(self, tx):
        """
        Check the REGISTER, apply it to the registry and answer once the
        change is committed.  Returns a Deferred firing L{ABORT}: the
        registrar always answers.
        """
        request = tx.request
        if request.method.upper() != "REGISTER":
            return CONTINUE
        try:
            aor, action = self._plan(tx)
        except RegisterRejected as e:
            tx.reply(e.status, e.reason, e.headers)
            return ABORT
        d = action()
        d.addCallbacks(self._accepted, self._failed, callbackArgs=(tx,), errbackArgs=(tx, aor))
        d.addCallback(lambda _: ABORT)
        return d

    # -- REGISTER handling --------------------------------------------------

    def _plan(self, tx) -> Tuple[str, Any]:
        """
        Everything RFC 3261 10.3 lets us decide before touching bindings:
        fires the registry call to make, or raises L{RegisterRejected}.
        """
        request = tx.request
        to_text = request.get("to")
        if not to_text:
            raise RegisterRejected(400, "Bad Request: missing To header")
        try:
            to_uri = request.to_addr.uri
        except HeaderError:
            raise RegisterRejected(400, "Bad Request: malformed To header")
        if to_uri is None or to_uri.scheme not in ("sip", "sips") or not to_uri.user:
            raise RegisterRejected(400, "Bad Request: To must be a sip: URI with a user part")
        context = tx.context
        user = getattr(context, "user", None)
        username = getattr(user, "username", None)
        if username and username.lower() != to_uri.user.lower():
            # 10.3 step 4: credentials of one user may not move another.
            raise RegisterRejected(403, "Forbidden: To user does not match the authenticated user")
        realm = getattr(context, "realm", None) or to_uri.host
        aor = make_aor(to_uri.user, realm)

        call_id = request.call_id
        cseq, _method = request.cseq
        if not call_id or not cseq:
            raise RegisterRejected(400, "Bad Request: missing Call-ID or CSeq")
        expires_text = request.get("expires")
        header_expires = None if expires_text is None else _delta_seconds(expires_text, "Expires header")

        elements = request.get_all("contact")
        registry = self.registry
        if not elements:
            # 10.3 step 6/8: a query lists the current bindings.
            return aor, lambda: registry.query(aor)
        if any(e.strip() == "*" for e in elements):
            if len(elements) != 1 or header_expires != 0:
                raise RegisterRejected(400, "Bad Request: Contact * needs Expires: 0 and no other Contact")
            return aor, lambda: registry.remove_all(aor, call_id, cseq)

        flow = tx.flow
        transport = (flow.transport or "UDP").upper()
        source = (flow.remote[0], int(flow.remote[1]))
        local = tuple(flow.local) if getattr(flow, "local", None) else None
        path = tuple(request.get_all("path"))
        user_agent = request.get("user-agent") or ""
        now = registry.now()
        changes: List[Binding] = []
        for element in elements:
            try:
                contact = NameAddr.parse(element)
            except HeaderError:
                raise RegisterRejected(400, f"Bad Request: malformed Contact {element[:80]!r}")
            uri = contact.uri
            if uri is None or uri.scheme not in ("sip", "sips"):
                raise RegisterRejected(400, "Bad Request: Contact must be a sip: or sips: URI")
            param = contact.params.get("expires")
            if param is not None:
                expires = _delta_seconds(param, "Contact expires parameter")
            elif header_expires is not None:
                expires = header_expires
            else:
                expires = self.registrar_expires
            if expires:
                if expires < self.min_expires:
                    raise RegisterRejected(
                        423, "Interval Too Brief", [("Min-Expires", str(self.min_expires))]
                    )
                expires = min(expires, self.registrar_expires)
            instance = contact.params.get("+sip.instance") or None
            reg_id = contact.params.get("reg-id") if instance else None
            ckey = contact_key(uri)
            changes.append(
                Binding(
                    aor=aor,
                    contact=str(uri),
                    key=binding_key(uri, instance, reg_id, ckey),
                    call_id=call_id,
                    cseq=cseq,
                    expires=expires,
                    registered_at=now,
                    transport=transport,
                    source=source,
                    params=contact_params_text(element),
                    instance=instance,
                    reg_id=reg_id,
                    path=path,
                    local=local,  # type: ignore[arg-type]
                    flow_id=getattr(flow, "id", None),
                    user_agent=user_agent,
                    nat=needs_nat_fix(uri, source, transport, self.nat_fix, bool(path)),
                    webrtc=is_webrtc_binding(uri, transport, user),
                    _uri=uri,
                    _contact_key=ckey,
                )
            )
        self._check_max_contacts(tx, aor, changes)
        return aor, lambda: registry.update(aor, changes)

    def _check_max_contacts(self, tx, aor: str, changes: List[Binding]) -> None:
        """
        Refuse (403, like Asterisk's C{max_contacts}) a REGISTER after which
        C{aor} would have more than C{max_contacts} live contacts: refreshed
        and removed contacts do not count twice, new ones add up with the
        bindings already committed.
        """
        keys = {b.key for b in self.registry.lookup(aor)}
        for change in changes:
            if change.expires:
                keys.add(change.key)
            else:
                keys.discard(change.key)
        if len(keys) > self.max_contacts:
            self.log.warn(
                "registrar: REGISTER of {aor} from {host} refused: {count} contacts, max_contacts is {limit}",
                aor=aor,
                host=tx.flow.remote[0],
                count=len(keys),
                limit=self.max_contacts,
            )
            raise RegisterRejected(403, f"Forbidden: more than {self.max_contacts} contacts")

    def _accepted(self, bindings: List[Binding], tx) -> None:
        """10.3 step 8: 200 with every current binding and its time left."""
        if tx.completed:
            return
        now = self.registry.now()
        headers = [("Contact", b.contact_header(now)) for b in bindings]
        request = tx.request
        path = request.get_all("path")
        if path and "path" in (s.lower() for s in request.get_all("supported")):
            # RFC 3327 5.3: echo the Path to a UA that understands it.
            headers.append(("Path", ", ".join(path)))
            headers.append(("Supported", "path"))
        headers.append(("Date", _http_date(now)))
        tx.reply(200, "OK", headers)

    def _failed(self, failure: Failure, tx, aor: str) -> None:
        if tx.completed:
            return
        if failure.check(OutOfOrder):
            # 10.3 step 7: "the update MUST be aborted and the request fails".
            tx.reply(500, "Server Internal Error: out-of-order CSeq")
            return
        self.log.failure("registrar: storing the bindings of {aor} failed", failure, aor=aor)
        tx.reply(503, "Service Unavailable: registration store failed", [("Retry-After", "5")])
