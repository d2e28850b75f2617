# -*- test-case-name: rustpbx_py.test.test_presence -*-
"""
The C{presence} module (RustPBX's presence module): the PBX is the
presence agent and the message-waiting notifier of its users.

 - C{SUBSCRIBE} with C{Event: presence} (RFC 3856) to a user of ours opens
   a subscription dialog with the PBX, answered 200 and followed at once by
   a NOTIFY carrying the user's state as PIDF (RFC 3863), then again at
   every change, refresh, and at the end (RFC 6665).
 - C{PUBLISH} (RFC 3903) stores a user's PIDF document with an entity-tag
   and an expiry; a user who published nothing is C{open} while registered
   and C{closed} otherwise, the document RustPBX builds too, and watchers
   are told when that changes (the registry's observers).
 - C{SUBSCRIBE} with C{Event: message-summary} (RFC 3842) is answered the
   same way with the truth of this PBX: it keeps no voicemail, so
   C{Messages-Waiting: no}.

The subscriber must be one of our users (the auth module authenticated
it); a target that is not a user gets 404, another event package 489 Bad
Event with our C{Allow-Events}.  Phones subscribe to the PBX, not to each
other, so the watched phone need not be a presence server itself, and
state survives its being offline.  Subscriptions and publications live in
memory: after a restart phones refresh them within their expiry.
"""

from __future__ import annotations

import secrets
from typing import Dict, List, Optional, Tuple
from xml.sax.saxutils import escape

from twisted.logger import Logger
from zope.interface import implementer

from rustpbx_py.call.dialog import Leg, record_route_headers, tag_of, uas_leg_from_request
from rustpbx_py.interfaces import ABORT, CONTINUE, IProxyModule
from rustpbx_py.registrar import make_aor
from rustpbx_py.sip.headers import HeaderError, URI, bare_host
from rustpbx_py.sip.message import Request, Response

PRESENCE = "presence"
MWI = "message-summary"
EVENTS = (PRESENCE, MWI)
ALLOW_EVENTS = ", ".join(EVENTS)
PIDF = "application/pidf+xml"
SUMMARY = "application/simple-message-summary"
#: Expiry bounds, seconds: the default of RFC 3856 / RFC 3903, the
#: longest we grant and the shortest we accept (423 below it).
DEFAULT_EXPIRES = 3600
MAX_EXPIRES = 3600
MIN_EXPIRES = 60


def event_package(value: Optional[str]) -> str:
    if not value:
        return ""
    return value.split(";", 1)[0].strip().lower()


def _expires(request: Request) -> Optional[int]:
    value = request.get("expires")
    if value is None:
        return DEFAULT_EXPIRES
    try:
        n = int(value.strip())
    except ValueError:
        return None
    return n if n >= 0 else None


def _checked_expires(tx) -> Optional[int]:
    """The Expires of C{tx}'s SUBSCRIBE or PUBLISH, or None once it is
    answered 400 (unreadable) or 423 (under L{MIN_EXPIRES}, RFC 6665 4.2.1.1
    and RFC 3903 6)."""
    expires = _expires(tx.request)
    if expires is None:
        tx.reply(400, "Bad Expires")
        return None
    if 0 < expires < MIN_EXPIRES:
        tx.reply(423, "Interval Too Brief", [("Min-Expires", str(MIN_EXPIRES))])
        return None
    return expires


def pidf_document(entity: str, basic: str) -> bytes:
    """A minimal PIDF document (RFC 3863) with one tuple."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="{escape(entity, {chr(34): "&quot;"})}">\n'
        f'  <tuple id="pbx"><status><basic>{basic}</basic></status></tuple>\n'
        "</presence>\n"
    ).encode()


class Subscription:
    """One subscription dialog in which we are the notifier."""

    def __init__(self, event: str, aor: str, entity: str, leg: Leg, expires_at: float) -> None:
        self.event = event
        self.aor = aor
        self.entity = entity
        self.leg = leg
        self.expires_at = expires_at
        self.timer = None


class Publication:
    """One PUBLISHed document (RFC 3903 4.1: one per entity-tag)."""

    def __init__(self, etag: str, body: bytes, content_type: str, expires_at: float) -> None:
        self.etag = etag
        self.body = body
        self.content_type = content_type
        self.expires_at = expires_at
        self.timer = None


@implementer(IProxyModule)
class PresenceModule:
    """Presence agent (SUBSCRIBE/PUBLISH/NOTIFY) for the PBX's users."""

    name = "presence"
    log = Logger()

    def __init__(self, context) -> None:
        self.context = context
        self.config = context.config
        self.core = context.core
        self.clock = context.reactor
        #: (Call-ID, our tag) -> subscription.
        self.subscriptions: Dict[Tuple[str, str], Subscription] = {}
        #: AoR -> entity-tag -> publication, in publishing order.
        self.publications: Dict[str, Dict[str, Publication]] = {}

    # -- IProxyModule --------------------------------------------------------

    def allow_methods(self) -> List[str]:
        return ["SUBSCRIBE", "PUBLISH"]

    def allow_events(self) -> List[str]:
        """The event packages served, for the core's C{Allow-Events}."""
        return list(EVENTS)

    def start(self) -> None:
        observers = getattr(self.context.locator, "observers", None)
        if observers is not None:
            observers.append(self._registration_changed)

    def stop(self) -> None:
        observers = getattr(self.context.locator, "observers", None)
        if observers is not None and self._registration_changed in observers:
            observers.remove(self._registration_changed)
        for sub in list(self.subscriptions.values()):
            self._cancel_timer(sub)
        self.subscriptions.clear()
        for pubs in self.publications.values():
            for pub in pubs.values():
                self._cancel_timer(pub)
        self.publications.clear()

    def on_transaction_end(self, tx) -> None:
        pass

    def on_transaction_begin(self, tx):
        request = tx.request
        if request.method == "PUBLISH":
            return self._publish(tx)
        if request.method != "SUBSCRIBE":
            return CONTINUE
        to_tag = tag_of(request.get("to"))
        if to_tag:
            if (request.call_id, to_tag) not in self.subscriptions and self.core.dialog_lookup(request):
                # A call's dialog (a REFER's subscription): the call module's.
                return CONTINUE
            self._refresh(tx, to_tag)
            return ABORT
        return self._subscribe(tx)

    # -- who -----------------------------------------------------------------

    def _realm_for(self, host: str) -> str:
        realms = [r.lower() for r in self.config.proxy.realms]
        host = host.lower()
        if host in realms:
            return host
        return realms[0] if realms else host

    def _is_local(self, host: str) -> bool:
        realms = self.config.proxy.realms
        host = host.lower()
        return not realms or host in (r.lower() for r in realms) or host in self.core.local_hosts

    def _target(self, tx):
        """
        The (AoR, entity URI) a request is about, once the user is known to
        exist; None after answering 404 (or 400 for a bad Request-URI).
        Fires through a Deferred when a user backend must be asked.
        """
        from twisted.internet import defer

        try:
            uri = URI.parse(tx.request.uri)
        except HeaderError:
            tx.reply(400, "Bad Request-URI")
            return defer.succeed(None)
        host = bare_host(uri.host)
        if not uri.user or not self._is_local(host):
            tx.reply(404, "Not Found")
            return defer.succeed(None)
        realm = self._realm_for(host)
        aor = make_aor(uri.user, realm)
        entity = f"sip:{uri.user}@{realm}"
        locator = self.context.locator
        if locator is not None and locator.lookup(aor):
            return defer.succeed((aor, entity))
        users = self.context.users
        if users is None:
            tx.reply(404, "Not Found")
            return defer.succeed(None)

        def found(user):
            if user is None:
                tx.reply(404, "Not Found")
                return None
            return (aor, entity)

        return defer.maybeDeferred(users.get_user, uri.user, realm).addCallback(found)

    # -- SUBSCRIBE -----------------------------------------------------------

    def _subscribe(self, tx):
        request = tx.request
        event = event_package(request.get("event"))
        if event not in EVENTS:
            tx.reply(489, "Bad Event", [("Allow-Events", ALLOW_EVENTS)])
            return ABORT
        accepted = self._refuse_accept(tx, event)
        if accepted is not None:
            return ABORT
        expires = _checked_expires(tx)
        if expires is None:
            return ABORT
        d = self._target(tx)
        d.addCallback(self._subscribe_to, tx, event, min(expires, MAX_EXPIRES))
        d.addErrback(self._failed, tx)
        return ABORT

    def _refuse_accept(self, tx, event: str) -> Optional[bool]:
        """406 when the subscriber's Accept excludes the body we would send."""
        wanted = PIDF if event == PRESENCE else SUMMARY
        accept = ",".join(tx.request.get_all("accept")).lower()
        if not accept.strip():
            return None
        types = [a.split(";", 1)[0].strip() for a in accept.split(",")]
        if wanted in types or "*/*" in types or wanted.split("/")[0] + "/*" in types:
            return None
        tx.reply(406, "Not Acceptable", [("Accept", wanted)])
        return True

    def _subscribe_to(self, target, tx, event: str, expires: int) -> None:
        if target is None or tx.completed:
            return
        aor, entity = target
        request = tx.request
        leg = uas_leg_from_request("sub", request, tx.local_tag(), tx.reply_flow)
        sub = Subscription(event, aor, entity, leg, self.clock.seconds() + expires)
        headers = [("Expires", str(expires)), ("Contact", self.core.contact_for(tx.reply_flow))]
        tx.reply(200, "OK", headers + record_route_headers(request))
        if expires == 0:
            # A fetch (RFC 6665 4.4.3): one NOTIFY and done.
            self._notify(sub, terminated="timeout")
            return
        self.subscriptions[leg.key] = sub
        sub.timer = self.clock.callLater(expires, self._expired, sub)
        self._notify(sub)

    def _refresh(self, tx, to_tag: str) -> None:
        """A SUBSCRIBE inside one of our subscriptions: refresh or end it."""
        request = tx.request
        sub = self.subscriptions.get((request.call_id, to_tag))
        if sub is None or tag_of(request.get("from")) != tag_of(sub.leg.remote):
            tx.reply(481, "Subscription Does Not Exist")
            return
        number = request.cseq[0]
        if number <= sub.leg.remote_cseq:
            tx.reply(500, "Server Internal Error", [("Retry-After", "1")])
            return
        sub.leg.remote_cseq = number
        if event_package(request.get("event")) != sub.event:
            tx.reply(489, "Bad Event", [("Allow-Events", ALLOW_EVENTS)])
            return
        expires = _checked_expires(tx)
        if expires is None:
            return
        expires = min(expires, MAX_EXPIRES)
        sub.leg.refresh_target(request)
        tx.reply(200, "OK", [("Expires", str(expires)), ("Contact", self.core.contact_for(tx.reply_flow))])
        self._cancel_timer(sub)
        if expires == 0:
            self._end(sub, "timeout")
            return
        sub.expires_at = self.clock.seconds() + expires
        sub.timer = self.clock.callLater(expires, self._expired, sub)
        self._notify(sub)

    def _expired(self, sub: Subscription) -> None:
        sub.timer = None
        self._end(sub, "timeout")

    def _end(self, sub: Subscription, reason: str) -> None:
        self._cancel_timer(sub)
        if self.subscriptions.get(sub.leg.key) is sub:
            del self.subscriptions[sub.leg.key]
            self._notify(sub, terminated=reason)

    # -- NOTIFY --------------------------------------------------------------

    def state(self, aor: str, entity: str) -> Tuple[bytes, str]:
        """
        The presence document of C{aor}: the latest publication, else
        C{open} while the user has a registered contact, C{closed} otherwise.
        """
        pubs = self.publications.get(aor)
        if pubs:
            latest = list(pubs.values())[-1]
            return latest.body, latest.content_type
        locator = self.context.locator
        registered = bool(locator is not None and locator.lookup(aor))
        return pidf_document(entity, "open" if registered else "closed"), PIDF

    def _summary(self, sub: Subscription) -> bytes:
        return f"Messages-Waiting: no\r\nMessage-Account: {sub.entity}\r\nVoice-Message: 0/0 (0/0)\r\n".encode()

    def _notify(self, sub: Subscription, terminated: Optional[str] = None) -> None:
        if terminated is not None:
            state = f"terminated;reason={terminated}"
        else:
            left = max(int(sub.expires_at - self.clock.seconds()), 0)
            state = f"active;expires={left}"
        if sub.event == PRESENCE:
            body, content_type = self.state(sub.aor, sub.entity)
        else:
            body, content_type = self._summary(sub), SUMMARY
        headers = [("Event", sub.event), ("Subscription-State", state), ("Content-Type", content_type)]
        leg = sub.leg
        try:
            notify = leg.request("NOTIFY", self.core.via_for(leg.flow), self.core.contact_for(leg.flow), headers, body)
            self.core.send_request(notify, leg.flow, lambda ctx, r: self._notified(sub, r))
        except Exception:
            self.log.failure("presence: NOTIFY to {aor} watcher failed", aor=sub.aor)

    def _notified(self, sub: Subscription, response: Response) -> None:
        """RFC 6665 4.2.2: a NOTIFY refused (other than 401/407/... retries) ends the subscription."""
        status = response.status
        if status < 300 or status in (401, 407):
            return
        if self.subscriptions.get(sub.leg.key) is sub:
            self._cancel_timer(sub)
            del self.subscriptions[sub.leg.key]

    def _registration_changed(self, aor: str, registered: bool) -> None:
        """A user registered its first contact or lost its last: watchers of
        a user who published nothing see it go open or closed."""
        if not self.publications.get(aor):
            self.notify_watchers(aor)

    def notify_watchers(self, aor: str) -> None:
        """Tell every presence subscriber of C{aor} its new state."""
        for sub in list(self.subscriptions.values()):
            if sub.aor == aor and sub.event == PRESENCE:
                self._notify(sub)

    # -- PUBLISH -------------------------------------------------------------

    def _publish(self, tx):
        request = tx.request
        if event_package(request.get("event")) != PRESENCE:
            tx.reply(489, "Bad Event", [("Allow-Events", PRESENCE)])
            return ABORT
        expires = _checked_expires(tx)
        if expires is None:
            return ABORT
        if request.body:
            content_type = (request.get("content-type") or "").split(";", 1)[0].strip().lower()
            if content_type != PIDF:
                tx.reply(415, "Unsupported Media Type", [("Accept", PIDF)])
                return ABORT
        d = self._target(tx)
        d.addCallback(self._publish_to, tx, min(expires, MAX_EXPIRES))
        d.addErrback(self._failed, tx)
        return ABORT

    def _publish_to(self, target, tx, expires: int) -> None:
        if target is None or tx.completed:
            return
        aor, entity = target
        request = tx.request
        user = tx.context.user
        username = getattr(user, "username", None)
        if username is not None and make_aor(username, aor.split("@", 1)[1]) != aor:
            # Only the user publishes its own presence.
            tx.reply(403, "Forbidden")
            return
        pubs = self.publications.setdefault(aor, {})
        match = request.get("sip-if-match")
        if match is None:
            if not request.body:
                tx.reply(400, "Missing Presence Document")
                self._drop_empty(aor)
                return
            pub = None
        else:
            pub = pubs.get(match.strip())
            if pub is None:
                tx.reply(412, "Conditional Request Failed")
                self._drop_empty(aor)
                return
            self._cancel_timer(pub)
            del pubs[pub.etag]
        if expires == 0:
            tx.reply(200, "OK", [("Expires", "0")])
            self._drop_empty(aor)
            self.notify_watchers(aor)
            return
        etag = secrets.token_hex(8)
        if request.body:
            body, content_type = request.body, PIDF
        else:
            body, content_type = pub.body, pub.content_type
        new = Publication(etag, body, content_type, self.clock.seconds() + expires)
        new.timer = self.clock.callLater(expires, self._publication_expired, aor, new)
        pubs[etag] = new
        tx.reply(200, "OK", [("SIP-ETag", etag), ("Expires", str(expires))])
        if request.body:
            self.notify_watchers(aor)

    def _publication_expired(self, aor: str, pub: Publication) -> None:
        pub.timer = None
        pubs = self.publications.get(aor, {})
        if pubs.get(pub.etag) is pub:
            del pubs[pub.etag]
            self._drop_empty(aor)
            self.notify_watchers(aor)

    def _drop_empty(self, aor: str) -> None:
        if not self.publications.get(aor):
            self.publications.pop(aor, None)

    # -- helpers -------------------------------------------------------------

    @staticmethod
    def _cancel_timer(item) -> None:
        if item.timer is not None and item.timer.active():
            item.timer.cancel()
        item.timer = None

    def _failed(self, failure, tx) -> None:
        self.log.failure("presence: {method} failed", failure, method=tx.request.method)
        if not tx.completed:
            tx.reply(500, "Server Internal Error")
