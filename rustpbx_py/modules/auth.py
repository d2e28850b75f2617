# -*- test-case-name: rustpbx_py.test.test_auth -*-
"""
The C{auth} module: digest authentication of requests (RFC 3261 section
22, RFC 7616, RFC 8760), RustPBX's AuthModule.

Which requests are challenged:
 - requests from a trunk (C{tx.context.trunk}, set by the acl module)
   never are;
 - ACK and CANCEL never are (RFC 3261 22.1: they cannot be resubmitted);
 - OPTIONS addressed to the server itself (a Request-URI without a user
   part: keep-alive pings, monitoring) is left to the core to answer;
 - an in-dialog request (To tag present) from the source address that
   authenticated the dialog (same Call-ID and From tag) passes without a
   new challenge while the C{dialog_auth_cache} entry lives; any other
   in-dialog request is challenged like a new one, so that knowing a
   dialog's identifiers (they travel in the clear) is not enough to hang
   it up or re-target its media;
 - every other request is challenged: 401 with WWW-Authenticate for
   REGISTER (the registrar is the UAS), 407 with Proxy-Authenticate for
   the rest (we act as a proxy toward the callee).

The realm is the entry of C{realms} naming the request's domain -- the
Request-URI host for REGISTER (the domain being registered to, RFC 3261
10.2) and the From host otherwise (the caller's domain, whose credentials
are asked for) -- else the first configured realm, else that host.

By default a challenge is one MD5 header with C{qop="auth"}, what Kamailio
and Asterisk send: every UA understands it, while two headers break real
ones (baresip/libre gives up on a 401 with MD5 and SHA-256, JsSIP keeps
only the last header).  C{auth_algorithms} lists the challenges to send
instead, one header each in that order (RFC 8760 section 2.4 wants the
preferred first, e.g. C{["SHA-256", "MD5"]}); a response computed with any
listed algorithm is accepted, one with an algorithm not listed is
challenged again.  A nonce carries its issue time and an HMAC of it, so
it is checked without storing it; it is valid for C{nonce_lifetime}
seconds, after which a correct response earns C{stale=true} and the
client retries without asking its user.  Each nonce's highest nonce-count
is remembered (bounded) and a response that does not raise it is a replay.

Outcomes: correct credentials set C{tx.context.user} and
C{tx.context.realm} and continue, and refund the request to the acl
module's frequency limiter (C{tx.context.credit}) with the challenged
request that earned the nonce, so that phones never use up their source
address's budget.  Before any password is checked, the digest C{uri} must
name the Request-URI (RFC 7616 3.4.6, RFC 2617 3.2.2.5: "SHOULD return a
400 Bad Request"; compared as URIs: scheme, user, host and port, without
parameters; SIPp's user-less uri accepted) -- else 400, so a response captured for one request cannot
authorise another -- and the nonce must be one we issued (its HMAC):
another one gets a fresh challenge with C{stale=true}, never a 403, so a
guess needs a nonce from us.  Wrong credentials for a known user are
answered 403 (no new challenge); with C{ensure_user}, a request naming a
user no backend knows is dropped without any answer, which denies scanners
the 401 that would confirm an extension exists.

Both are failures counted per source by a L{LoginGuard}
(C{auth_failure_limit}, C{auth_failure_delay}, C{auth_ban_time}): each
403 comes later than the one before, and at the limit the source is
banned -- every request from it is dropped by this module's screen in the
core, before anything answers -- so that password guessing and user
enumeration stop after a handful of tries.  Each failure and each ban is
logged on one line for fail2ban::

    auth failure: user="1001" source=198.51.100.66 method=REGISTER reason=wrong password failures=3
    auth ban: source=198.51.100.66 user="*" seconds=900 failures=5
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import struct
from collections import Counter, OrderedDict
from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from rustpbx_py.interfaces import ABORT, CONTINUE, IProxyModule
from rustpbx_py.modules.acl import OncePer, limiter_key, source_address
from rustpbx_py.modules.guard import LoginGuard
from rustpbx_py.randomness import random_bytes
from rustpbx_py.sip import digest
from rustpbx_py.sip.headers import HeaderError, NameAddr, URI
from rustpbx_py.users import SpamDetected, normalize_realm

__all__ = ["AuthModule", "NonceManager", "DialogAuthCache", "select_realm"]

#: Methods that are never challenged (RFC 3261 section 22.1).
NEVER_CHALLENGED = frozenset(["ACK", "CANCEL"])

DEFAULT_ALGORITHMS = ("MD5",)


class NonceManager:
    """
    Issues and checks nonces without a table of issued nonces.

    A nonce is base64url(issue time | 8 random bytes | HMAC-SHA256 of
    both and the realm, truncated to 16 bytes).  The key is random per
    process unless a shared secret is given (several nodes behind one
    address must share it).  Only the highest nonce-count of nonces that
    were used is stored, for at most C{max_tracked} nonces; when that many
    are in use at once, the oldest are forgotten and every nonce issued
    before them is treated as stale, so forgetting never allows a replay.
    """

    def __init__(
        self,
        clock: Any,
        secret: Optional[bytes] = None,
        lifetime: float = 300.0,
        max_tracked: int = 100000,
    ) -> None:
        self._clock = clock
        self._key = secret if secret is not None else os.urandom(32)
        self.lifetime = lifetime
        self.max_tracked = max_tracked
        self._counts: "OrderedDict[str, Tuple[int, int]]" = OrderedDict()  # nonce -> (issued, nc)
        self._floor = -1  # nonces issued at or before this time are stale

    def _mac(self, head: bytes, realm: str) -> bytes:
        return hmac.new(self._key, head + normalize_realm(realm).encode("utf-8"), hashlib.sha256).digest()[:16]

    def issue(self, realm: str) -> str:
        """A fresh nonce for C{realm}."""
        head = struct.pack(">Q", int(self._clock.seconds())) + random_bytes(8)
        return base64.urlsafe_b64encode(head + self._mac(head, realm)).decode("ascii").rstrip("=")

    def issued_at(self, nonce: str, realm: str) -> Optional[int]:
        """The issue time of one of our nonces for C{realm}, None for any other text."""
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except (ValueError, TypeError):
            return None
        if len(raw) != 32:
            return None
        head, mac = raw[:16], raw[16:]
        if not hmac.compare_digest(mac, self._mac(head, realm)):
            return None
        return struct.unpack(">Q", head[:8])[0]

    def fresh(self, nonce: str, realm: str) -> bool:
        """Whether C{nonce} is ours, for C{realm}, and not expired."""
        issued = self.issued_at(nonce, realm)
        if issued is None:
            return False
        now = self._clock.seconds()
        return issued <= now + 1 and now - issued <= self.lifetime and issued > self._floor

    def used(self, nonce: str) -> bool:
        """Whether a verified response already used C{nonce} (see L{use})."""
        return nonce in self._counts

    def use(self, nonce: str, nc: int) -> bool:
        """
        Record a verified response's nonce-count; False when it does not
        exceed the highest already seen for this nonce (a replay).
        """
        counts = self._counts
        entry = counts.get(nonce)
        if entry is not None:
            if nc <= entry[1]:
                return False
            counts[nonce] = (entry[0], nc)
            return True
        self._prune()
        issued = struct.unpack(">Q", base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))[:8])[0]
        counts[nonce] = (issued, nc)
        while len(counts) > self.max_tracked:
            _, (old_issued, _) = counts.popitem(last=False)
            self._floor = max(self._floor, old_issued)
        return True

    def prune(self) -> None:
        """Forget the counts of nonces that have expired anyway (L{use}
        does it too; the server's housekeeping, when no one calls)."""
        self._prune()

    def _prune(self) -> None:
        """Forget the counts of nonces that have expired anyway."""
        limit = self._clock.seconds() - self.lifetime
        counts = self._counts
        while counts:
            nonce, (issued, _) = next(iter(counts.items()))
            if issued >= limit:
                break
            del counts[nonce]

    def __len__(self) -> int:
        return len(self._counts)


class DialogAuthCache:
    """
    Dialogs (Call-ID, From tag) that authenticated, with the source address
    they authenticated from, for C{ttl} seconds, LRU-bounded to C{size}
    (RustPBX's C{dialog_auth_cache}).
    """

    def __init__(self, clock: Any, size: int = 10000, ttl: float = 3600.0) -> None:
        self._clock = clock
        self.size = max(1, int(size))
        self.ttl = ttl
        self._entries: "OrderedDict[Tuple[str, str], Tuple[Any, float, Any, Optional[str]]]" = OrderedDict()

    def put(self, call_id: str, from_tag: str, source: Any, user: Any = None, realm: Optional[str] = None) -> None:
        """Remember that this dialog authenticated from C{source}."""
        key = (call_id, from_tag)
        self._entries[key] = (source, self._clock.seconds() + self.ttl, user, realm)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def get(self, call_id: str, from_tag: str, source: Any) -> Optional[Tuple[Any, Optional[str]]]:
        """(user, realm) when the dialog is cached for this source and alive, else None."""
        key = (call_id, from_tag)
        entry = self._entries.get(key)
        if entry is None:
            return None
        cached_source, expires, user, realm = entry
        if self._clock.seconds() >= expires:
            del self._entries[key]
            return None
        if cached_source != source:
            return None
        self._entries.move_to_end(key)
        return user, realm

    def remove(self, call_id: str, from_tag: str) -> None:
        self._entries.pop((call_id, from_tag), None)

    def prune(self) -> None:
        """Drop the expired entries (L{get} drops only those it is asked for)."""
        now = self._clock.seconds()
        for key in [k for k, entry in self._entries.items() if entry[1] <= now]:
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if obj is None:
        return default
    if isinstance(obj, dict):
        value = obj.get(name)
    else:
        value = getattr(obj, name, None)
    return default if value is None else value


def select_realm(realms: Sequence[str], host: Optional[str]) -> str:
    """
    The configured realm naming C{host} (compared without case or port),
    else the first configured realm, else the host itself.
    """
    key = normalize_realm(host)
    for realm in realms:
        if normalize_realm(realm) == key:
            return realm
    if realms:
        return realms[0]
    return key or "localhost"


def _source_key(flow: Any) -> Tuple[str, str, int]:
    host, port = flow.remote[0], flow.remote[1]
    return (str(getattr(flow, "transport", "")).upper(), str(host).lower(), int(port))


@implementer(IProxyModule)
class AuthModule:
    """The C{auth} pipeline stage (see the module docstring)."""

    name = "auth"
    log = Logger()

    def __init__(
        self,
        proxy: Any,
        users: Any,
        reactor: Any = None,
        secret: Optional[bytes] = None,
        nonce_lifetime: float = 300.0,
        algorithms: Optional[Iterable[str]] = None,
        to_self: Optional[Callable[[Any], bool]] = None,
        core: Any = None,
    ) -> None:
        """
        @param proxy: the C{[proxy]} config section.
        @param users: the L{rustpbx_py.interfaces.IUserBackend} chain.
        @param secret: the nonce key; random per process when None and the
            config has no C{nonce_secret}.
        @param algorithms: the challenges to offer, in order; the config's
            C{auth_algorithms} when None and present, else
            L{DEFAULT_ALGORITHMS}.
        @param to_self: tells whether a request is addressed to the PBX
            itself (the core's C{addressed_to_self}); by default, a
            Request-URI without a user part.
        @param core: the SIP core whose screens this module joins at start
            to silence banned sources; without one, bans are enforced in
            the pipeline.
        """
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self._reactor = reactor
        self.users = users
        self._to_self = to_self or (lambda request: _uri_user(request.uri) is None)
        self.realms: List[str] = list(_get(proxy, "realms", []) or [])
        self.ensure_user = bool(_get(proxy, "ensure_user", False))
        if secret is None:
            configured = _get(proxy, "nonce_secret", None)
            if configured:
                secret = hashlib.sha256(str(configured).encode("utf-8")).digest()
        self.nonces = NonceManager(reactor, secret, nonce_lifetime)
        algorithms = list(algorithms or _get(proxy, "auth_algorithms", None) or DEFAULT_ALGORITHMS)
        self.algorithms = [digest.normalize_algorithm(a) for a in algorithms]
        cache_cfg = _get(proxy, "dialog_auth_cache", None)
        self.dialog_cache: Optional[DialogAuthCache] = None
        if cache_cfg is not None and _get(cache_cfg, "enabled", True):
            self.dialog_cache = DialogAuthCache(
                reactor,
                size=int(_get(cache_cfg, "cache_size", 10000)),
                ttl=float(_get(cache_cfg, "ttl_seconds", 3600)),
            )
        self._log_once = OncePer(reactor, 60.0)
        self.core = core
        self._screening = False
        #: ("attempt"|"success", method) and ("failure", method, reason)
        #: -> count: digest checks, read by the monitor addon at scrape time.
        self.stats: Counter = Counter()
        limit = _get(proxy, "auth_failure_limit", None)
        self.guard = LoginGuard(
            reactor,
            (int(_get(limit, "count")), float(_get(limit, "window_seconds"))) if limit is not None else None,
            ban_time=float(_get(proxy, "auth_ban_time", 900)),
            delay=float(_get(proxy, "auth_failure_delay", 1.0)),
        )
        self._held: dict = {}  # delayed 403s: IDelayedCall -> (tx, Deferred)

    # -- IProxyModule ------------------------------------------------------------

    def allow_methods(self) -> List[str]:
        return ["*"]

    def start(self) -> None:
        if self.core is not None and self.guard.enabled:
            self.core.screens.append(self.screen)
            self._screening = True

    def stop(self) -> None:
        if self._screening:
            self.core.screens.remove(self.screen)
            self._screening = False
        for call, (tx, d) in list(self._held.items()):
            call.cancel()
            self._answer_held(call, tx, d)

    def screen(self, request: Any, flow: Any) -> bool:
        """The core's look at every request: True (drop it silently) for a banned source."""
        key = _guard_source(flow)
        return key is not None and self.guard.banned(key)

    def on_transaction_end(self, tx: Any) -> None:
        pass

    def on_transaction_begin(self, tx: Any) -> Any:
        request = tx.request
        method = request.method.upper()
        context = tx.context
        if context.trunk or method in NEVER_CHALLENGED:
            return CONTINUE
        if not self._screening and self.screen(request, tx.flow):
            context.spam = True
            return ABORT
        from_na = _cached_addr(request, "from_addr")
        to_na = _cached_addr(request, "to_addr")
        in_dialog = to_na is not None and bool(to_na.tag)
        if method == "OPTIONS" and not in_dialog and self._to_self(request):
            return CONTINUE
        from_tag = from_na.tag if from_na is not None else None
        if in_dialog and self.dialog_cache is not None and from_tag:
            hit = self.dialog_cache.get(request.call_id, from_tag, _source_key(tx.flow))
            if hit is not None:
                context.user, context.realm = hit
                if context.credit is not None:
                    context.credit(1)
                return CONTINUE

        realm = self.realm_for(request, from_na)
        credentials = self._credentials(request, method, realm)
        if credentials is None:
            return self._challenge_new(tx, realm, from_na)
        if not _same_resource(credentials.uri, request.uri):
            # RFC 7616 3.4.6 / RFC 2617 3.2.2.5; before any password check.
            tx.reply(400, "Bad Request: digest uri does not match the Request-URI")
            return ABORT
        if self._user_banned(tx, credentials.username):
            return self._drop(tx, f"banned user {credentials.username} from this source")
        return self._with_user(tx, credentials.username, realm, self._check, tx, credentials, realm, from_tag)

    def _with_user(self, tx: Any, username: str, realm: str, then: Callable[..., Any], *args: Any) -> Any:
        """
        C{then(user, *args)} with the user (or None) the backends know as
        C{username} in C{realm}.  A backend that answers at once (memory,
        plain file; see L{UserChain.find}) needs no Deferred, and the
        pipeline goes on synchronously; a failed look-up answers 503.
        """
        find = getattr(self.users, "find", None) or self.users.get_user
        try:
            found = find(username, realm)
        except Exception:
            return self._backend_failed(Failure(), tx)
        if not isinstance(found, defer.Deferred):
            return then(found, *args)
        found.addCallback(then, *args)
        found.addErrback(self._backend_failed, tx)
        return found

    # -- decisions ---------------------------------------------------------------

    def realm_for(self, request: Any, from_na: Optional[NameAddr] = None) -> str:
        """The realm a request is challenged in (see the module docstring)."""
        host: Optional[str] = None
        if request.method.upper() == "REGISTER":
            try:
                host = request.ruri.host
            except HeaderError:
                host = None
        else:
            if from_na is None:
                from_na = _cached_addr(request, "from_addr")
            if from_na is not None and from_na.uri is not None:
                host = from_na.uri.host
        return select_realm(self.realms, host)

    def _credentials(self, request: Any, method: str, realm: str) -> Optional[digest.Credentials]:
        """
        The Digest credentials meant for our realm: from Authorization for
        REGISTER and Proxy-Authorization otherwise, then (for clients that
        answer a 407 with Authorization or the reverse) the other header.
        Credentials for other realms belong to other servers (RFC 3261 22.3).
        """
        names = ("authorization", "proxy-authorization")
        if method != "REGISTER":
            names = names[::-1]
        key = normalize_realm(realm)
        for name in names:
            for value in request.get_all(name):
                try:
                    credentials = digest.parse_credentials(value)
                except digest.DigestError:
                    continue
                if normalize_realm(credentials.realm) == key:
                    return credentials
        return None

    def _challenge_new(self, tx: Any, realm: str, from_na: Optional[NameAddr]) -> Any:
        """No usable credentials: challenge, or with C{ensure_user} first make
        sure the named user exists."""
        if not self.ensure_user:
            self._challenge(tx, realm)
            return ABORT
        username = from_na.uri.user if from_na is not None and from_na.uri is not None else None
        if not username:
            return self._drop(tx, "no user in From")
        if self._user_banned(tx, username):
            return self._drop(tx, f"banned user {username} from this source")

        def found(user):
            if user is None:
                self._failed(tx, username, "unknown user")
                return self._drop(tx, f"unknown user {username}@{realm}")
            self._challenge(tx, realm, algorithms=self._algorithms_for(user))
            return ABORT

        return self._with_user(tx, username, realm, found)

    def _check(
        self,
        user: Any,
        tx: Any,
        credentials: digest.Credentials,
        realm: str,
        from_tag: Optional[str],
    ) -> str:
        request = tx.request
        self.stats["attempt", request.method] += 1
        if user is None:
            delay = self._failed(tx, credentials.username, "unknown user")
            if self.ensure_user or delay is None:
                return self._drop(tx, f"unknown user {credentials.username}@{realm}")
            return self._forbid(tx, f"unknown user {credentials.username}@{realm}", delay)
        if not user.enabled:
            delay = self._failed(tx, credentials.username, "disabled user")
            if delay is None:
                return self._drop(tx, f"user {credentials.username}@{realm} is disabled")
            return self._forbid(tx, f"user {credentials.username}@{realm} is disabled", delay)
        if credentials.algorithm not in self.algorithms:
            self._challenge(tx, realm, algorithms=self._algorithms_for(user))
            return ABORT
        ha1 = user.ha1_for(credentials.algorithm, credentials.username, credentials.realm)
        if ha1 is None:
            # The client chose an algorithm this user has no hash for.
            self._challenge(tx, realm, algorithms=self._algorithms_for(user))
            return ABORT
        if self.nonces.issued_at(credentials.nonce, realm) is None:
            # Not a nonce of ours (forged, another realm's, from before a
            # restart with a random secret): whatever the response, a fresh
            # challenge, so that no guess is checked without our nonce.
            self._challenge(tx, realm, stale=True, algorithms=self._algorithms_for(user))
            return ABORT
        if not digest.verify_response(credentials, ha1, request.method, request.body):
            delay = self._failed(tx, credentials.username, "wrong password")
            if delay is None:
                return self._drop(tx, f"wrong credentials for {credentials.username}@{realm}, source banned")
            return self._forbid(tx, f"wrong credentials for {credentials.username}@{realm}", delay)
        first_use = not self.nonces.used(credentials.nonce)
        if not self.nonces.fresh(credentials.nonce, realm) or not self.nonces.use(
            credentials.nonce, credentials.nonce_count
        ):
            # Right password, unusable nonce (expired, from before a
            # restart, or a replayed nonce-count): a new nonce will do.
            self._challenge(tx, realm, stale=True, algorithms=self._algorithms_for(user))
            return ABORT
        tx.context.user = user
        tx.context.realm = realm
        self.stats["success", request.method] += 1
        source = _guard_source(tx.flow)
        if source is not None:
            self.guard.succeeded(source)
        if tx.context.credit is not None:
            # This request, and on a nonce's first use the challenged
            # request that earned it (with its ACK for INVITE).
            earned = (2 if request.method.upper() == "INVITE" else 1) if first_use else 0
            tx.context.credit(1 + earned)
        if self.dialog_cache is not None and from_tag and request.method.upper() != "REGISTER":
            self.dialog_cache.put(request.call_id, from_tag, _source_key(tx.flow), user, realm)
        return CONTINUE

    def _algorithms_for(self, user: Any) -> List[str]:
        """Our algorithms this user's credentials can be checked with."""
        available = set(user.algorithms())
        chosen = [a for a in self.algorithms if digest.base_algorithm(a) in available]
        return chosen or list(self.algorithms)

    # -- answers -----------------------------------------------------------------

    def _challenge(self, tx: Any, realm: str, stale: bool = False, algorithms: Optional[List[str]] = None) -> None:
        """Send 401 (REGISTER) or 407 with one challenge per algorithm."""
        nonce = self.nonces.issue(realm)
        if tx.request.method.upper() == "REGISTER":
            status, header = 401, "WWW-Authenticate"
        else:
            status, header = 407, "Proxy-Authenticate"
        headers = [
            (header, digest.format_challenge(realm, nonce, algorithm, ("auth",), stale=stale))
            for algorithm in (algorithms or self.algorithms)
        ]
        tx.reply(status, "", headers)

    def _forbid(self, tx: Any, why: str, delay: float = 0.0) -> Any:
        """403, C{delay} seconds from now (a Deferred firing ABORT then) or at once."""
        host = tx.flow.remote[0]
        if self._log_once((host, "403")):
            self.log.info("auth: 403 to {method} from {host}: {why}", method=tx.request.method, host=host, why=why)
        if delay <= 0:
            tx.reply(403, "Forbidden")
            return ABORT
        d: defer.Deferred = defer.Deferred()
        call = self._reactor.callLater(delay, lambda: self._answer_held(call, tx, d))
        self._held[call] = (tx, d)
        return d

    def _answer_held(self, call: Any, tx: Any, d: defer.Deferred) -> None:
        self._held.pop(call, None)
        if not tx.completed:
            tx.reply(403, "Forbidden")
        d.callback(ABORT)

    def _user_banned(self, tx: Any, username: Optional[str]) -> bool:
        """Whether this source is banned for this user (a trusted source's failures)."""
        source = _guard_source(tx.flow)
        return source is not None and self.guard.banned((source, (username or "").lower()))

    def _failed(self, tx: Any, username: Optional[str], reason: str) -> Optional[float]:
        """
        Count a failed login of C{username} from the request's source and log
        it for fail2ban: the seconds to hold the answer back, or None when
        this failure banned the source (the request then gets no answer).
        """
        self.stats["failure", tx.request.method, reason] += 1
        host = tx.flow.remote[0]
        source = _guard_source(tx.flow)
        if source is None or not self.guard.enabled:
            return 0.0
        key = self.guard.key(source, username)
        count, delay, banned = self.guard.failed(key)
        method = tx.request.method
        self.log.info(
            'auth failure: user="{user}" source={host} method={method} reason={reason} failures={count}',
            user=_printable(username),
            host=host,
            method=method,
            reason=reason,
            count=count,
        )
        if banned:
            self.log.warn(
                'auth ban: source={host} user="{user}" seconds={seconds} failures={count}',
                host=host,
                user="*" if isinstance(key, str) else _printable(username),
                seconds=int(banned),
                count=count,
            )
            return None
        return delay

    def _drop(self, tx: Any, why: str) -> str:
        tx.context.spam = True
        host = tx.flow.remote[0]
        if self._log_once((host, "drop")):
            # why holds the request's user name: bytes that are not UTF-8
            # (kept as surrogates) made the log file's writer raise.
            why = "".join(c if c.isprintable() else "?" for c in why[:200])
            self.log.info("auth: dropping {method} from {host}: {why}", method=tx.request.method, host=host, why=why)
        return ABORT

    def _backend_failed(self, f: Failure, tx: Any) -> str:
        if f.check(SpamDetected):
            return self._drop(tx, f.getErrorMessage())
        self.log.warn("auth: user look-up failed: {error}", error=f.getErrorMessage())
        if not tx.completed:
            tx.reply(503, "Service Unavailable", [("Retry-After", "5")])
        return ABORT

    # -- for other modules --------------------------------------------------------

    def trust_dialog(self, call_id: str, from_tag: str, flow: Any, user: Any = None, realm: Optional[str] = None) -> None:
        """
        Let in-dialog requests with this Call-ID and From tag from C{flow}'s
        address pass without a challenge (the call module uses it for the
        dialogs it opens toward callees, whose BYE would else be
        challenged).  A no-op when the dialog cache is disabled.
        """
        if self.dialog_cache is not None:
            self.dialog_cache.put(call_id, from_tag, _source_key(flow), user, realm)

    def forget_dialog(self, call_id: str, from_tag: str) -> None:
        """
        The dialog with this Call-ID and From tag is over (the call module
        says so 64*T1 after the call ended, once a crossing BYE has had
        its answer): its cache entry goes now rather than at the end of
        C{ttl_seconds}, so that the cache holds live calls only.
        """
        if self.dialog_cache is not None:
            self.dialog_cache.remove(call_id, from_tag)

    def prune(self) -> None:
        """Expired nonce-counts and dialog cache entries go (the server's
        housekeeping calls this every minute)."""
        self.nonces.prune()
        if self.dialog_cache is not None:
            self.dialog_cache.prune()


def _guard_source(flow: Any) -> Optional[str]:
    """The source a flow's failures count against: its IPv4 address or IPv6 /64."""
    ip = source_address(str(flow.remote[0]))
    return limiter_key(ip) if ip is not None else None


def _printable(text: Optional[str]) -> str:
    """A user name as logged: no quotes, spaces or control characters (log injection)."""
    if not text:
        return ""
    return "".join(c if c.isprintable() and c not in '" =' else "?" for c in text[:64])


def _same_resource(digest_uri: str, request_uri: str) -> bool:
    """
    Whether the digest C{uri} names the Request-URI: the same text, or the
    same scheme, user, host (without case) and port -- parameters such as
    C{transport} are left out, as some phones drop them from one of the two.
    A digest uri without a user part naming the same host and port is
    accepted too: SIPp 3.6 (the load tester of every SIP bench) always
    answers with C{uri="sip:HOST:PORT"}, whatever the Request-URI's user.
    """
    if digest_uri == request_uri:
        return True
    try:
        a, b = URI.parse(digest_uri), URI.parse(request_uri)
    except HeaderError:
        return False
    return (
        a.scheme.lower() == b.scheme.lower()
        and (a.user == b.user or a.user is None)
        and a.host.lower() == b.host.lower()
        and (a.port or None) == (b.port or None)
    )


def _cached_addr(request: Any, attribute: str) -> Optional[NameAddr]:
    """From or To parsed once per message (C{from_addr}/C{to_addr}), or None."""
    try:
        return getattr(request, attribute)
    except HeaderError:
        return None


def _uri_user(uri: str) -> Optional[str]:
    try:
        return URI.parse(uri).user
    except HeaderError:
        return None
