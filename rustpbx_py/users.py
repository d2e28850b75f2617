# -*- test-case-name: rustpbx_py.test.test_users -*-
"""
SIP users and where they come from (RustPBX's C{[[proxy.user_backends]]}).

A L{UserChain} asks each configured backend in turn -- C{memory} (users
written in the config), C{plain} (a C{username:password} file),
C{database} (a table in SQLite or PostgreSQL, column names configurable)
and C{http} (a JSON web service) -- and the first that knows the user
answers.  Like the resolver chain of C{twisted.names}, the chain is data: a
list, not a class hierarchy.

A backend answers with a L{SipUser}, with L{None} when it does not know the
user, or fails with L{UserBackendError} when it cannot tell (database down,
web service unreachable): the chain then tries the others and, if none
knows the user, reports the failure so that the auth module answers 503
instead of treating a working password as unknown.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections import OrderedDict
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple
from urllib.parse import urlencode

from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from rustpbx_py.interfaces import IUserBackend
from rustpbx_py.sip import digest

__all__ = [
    "SipUser",
    "UserBackendError",
    "SpamDetected",
    "UserConfigError",
    "MemoryUserBackend",
    "PlainUserBackend",
    "DatabaseUserBackend",
    "HttpUserBackend",
    "UserChain",
    "build_user_backends",
    "normalize_realm",
]

log = Logger()


class UserBackendError(Exception):
    """A backend could not answer (not: the user is unknown)."""


class SpamDetected(UserBackendError):
    """An HTTP user service said the request is spam: drop it silently."""


class UserConfigError(ValueError):
    """A C{[[proxy.user_backends]]} entry we cannot use; the message says why."""


def normalize_realm(realm: Optional[str]) -> str:
    """
    A realm as a comparison key: lower case, without a C{:port} and without
    IPv6 brackets (C{Example.COM:5060} and C{example.com} are one realm).
    """
    if not realm:
        return ""
    key = _REALM_KEYS.get(realm)
    if key is None:
        key = _realm_key(realm)
        if len(_REALM_KEYS) >= 1024:
            _REALM_KEYS.clear()
        _REALM_KEYS[realm] = key
    return key


#: Realm spellings seen -> comparison key (asked several times per request).
_REALM_KEYS: Dict[str, str] = {}


def _realm_key(realm: str) -> str:
    realm = realm.strip().lower()
    if realm.startswith("["):
        end = realm.find("]")
        return realm[1:end] if end > 0 else realm
    if realm.count(":") == 1:
        host, _, port = realm.partition(":")
        if port.isdigit():
            return host
    return realm


def _truthy(value: Any) -> bool:
    """Database and JSON booleans: 1/0, true/false, "t"/"f", "yes"/"no"."""
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "f", "no", "n", "off")
    return bool(value)


@dataclasses.dataclass
class SipUser:
    """
    One SIP account (RustPBX's C{SipUser}).

    Credentials are a C{password} or, for backends that must not hold clear
    passwords, precomputed HA1 values: C{ha1} is MD5(username:realm:password)
    and C{ha1_sha256} the SHA-256 one (RFC 7616, RFC 8760).  A stored HA1 is
    only valid for the realm it was computed with.
    """

    username: str
    realm: Optional[str] = None
    password: Optional[str] = None
    ha1: Optional[str] = None
    ha1_sha256: Optional[str] = None
    enabled: bool = True
    id: int = 0
    display_name: Optional[str] = None
    email: Optional[str] = None
    phone: Optional[str] = None
    note: Optional[str] = None
    departments: Optional[List[str]] = None
    allow_guest_calls: bool = False
    voicemail_disabled: bool = False
    is_support_webrtc: bool = False
    call_forwarding_mode: Optional[str] = None
    call_forwarding_destination: Optional[str] = None
    call_forwarding_timeout: Optional[int] = None

    #: Keys accepted in config and JSON besides the field names.
    ALIASES = {"ha1_md5": "ha1", "name": "display_name", "displayname": "display_name"}

    @classmethod
    def from_mapping(cls, data: Any, where: str = "user", strict: bool = False) -> "SipUser":
        """
        Build a user from a config table, a JSON object or a row-like object.

        @param where: names the source in error messages (which file/key).
        @param strict: reject unknown keys (config files, where an unknown
            key is a typo); JSON services may send extra fields.
        @raise UserConfigError: no username, a field of the wrong type, or
            (strict) an unknown key.
        """
        mapping = _as_mapping(data)
        known = {f.name: f for f in dataclasses.fields(cls)}
        values: Dict[str, Any] = {}
        for key, value in mapping.items():
            name = cls.ALIASES.get(key, key)
            if name not in known:
                if strict:
                    raise UserConfigError(
                        f"{where}: unknown key {key!r} (expected one of {', '.join(sorted(known))})"
                    )
                continue
            if value is None:
                continue
            if name in ("enabled", "allow_guest_calls", "voicemail_disabled", "is_support_webrtc"):
                value = _truthy(value)
            elif name in ("id", "call_forwarding_timeout"):
                try:
                    value = int(value)
                except (TypeError, ValueError):
                    raise UserConfigError(f"{where}: {key} must be a number, not {value!r}")
            elif name == "departments":
                if isinstance(value, str):
                    value = [value]
                value = [str(v) for v in value]
            else:
                value = str(value)
            values[name] = value
        if not values.get("username"):
            raise UserConfigError(f"{where}: a user needs a username")
        for key in ("ha1", "ha1_sha256"):
            if key in values:
                values[key] = values[key].strip().lower()
        return cls(**values)

    @property
    def aor(self) -> str:
        """C{username@realm}, or the bare username without a realm."""
        return f"{self.username}@{self.realm}" if self.realm else self.username

    def algorithms(self) -> List[str]:
        """
        The base digest algorithms this user's credentials can be checked
        with, strongest first: both with a password, else the stored HA1s.
        """
        if self.password is not None:
            return ["SHA-256", "MD5"]
        out = []
        if self.ha1_sha256:
            out.append("SHA-256")
        if self.ha1:
            out.append("MD5")
        return out

    def ha1_for(self, algorithm: str, username: str, realm: str) -> Optional[str]:
        """
        The plain HA1 to check a response with, or None when this user has
        no credentials for that algorithm.

        @param username: the username as the client sent it in the
            credentials (it is what the client hashed).
        """
        base = digest.base_algorithm(algorithm)
        if self.password is not None:
            return digest.compute_ha1(base, username, realm, self.password)
        if base == "SHA-256":
            return self.ha1_sha256
        return self.ha1

    def public(self) -> Dict[str, Any]:
        """The user's fields without credentials (for logs, APIs, CDRs)."""
        data = dataclasses.asdict(self)
        for key in ("password", "ha1", "ha1_sha256"):
            data.pop(key, None)
        return data

    def __repr__(self) -> str:
        return f"<SipUser {self.aor} enabled={self.enabled}>"


def _as_mapping(data: Any) -> Mapping[str, Any]:
    if isinstance(data, Mapping):
        return data
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        return dataclasses.asdict(data)
    if hasattr(data, "__dict__"):
        return {k: v for k, v in vars(data).items() if not k.startswith("_")}
    if hasattr(data, "__slots__"):
        return {k: getattr(data, k) for k in data.__slots__ if hasattr(data, k)}
    raise UserConfigError(f"cannot read a user from {data!r}")


def _opt(cfg: Any, name: str, default: Any = None) -> Any:
    """A config value from a table (dict) or an attribute object; None -> default."""
    if isinstance(cfg, Mapping):
        value = cfg.get(name)
    else:
        value = getattr(cfg, name, None)
    return default if value is None else value


def _with_realm(user: SipUser, realm: Optional[str]) -> SipUser:
    """A copy of a realm-less user, placed in the realm it was asked for."""
    if realm and not user.realm:
        return dataclasses.replace(user, realm=realm)
    return user


# -- memory --------------------------------------------------------------------

#: How many placed copies a memory backend keeps (realms come from requests).
_MAX_PLACED = 10000


@implementer(IUserBackend)
class MemoryUserBackend:
    """
    Users written in the config (C{type = "memory"}, C{users = [...]}).

    A user with a realm answers only for that realm; a user without one
    answers for any realm (RustPBX's behaviour), the realm being filled in
    from the request.
    """

    kind = "memory"

    def __init__(self, users: Iterable[SipUser] = ()) -> None:
        self._users: Dict[Tuple[str, str], SipUser] = {}
        #: Realm-less users placed in the realms they were asked for, kept
        #: so a look-up does not copy the user every time.
        self._placed: Dict[Tuple[str, str], SipUser] = {}
        for user in users:
            self.add(user)

    def add(self, user: SipUser) -> None:
        """Add or replace a user (the console's API uses this)."""
        self._users[(user.username, normalize_realm(user.realm))] = user
        self._placed.clear()

    def remove(self, username: str, realm: Optional[str] = None) -> None:
        """Forget a user."""
        self._users.pop((username, normalize_realm(realm)), None)
        self._placed.clear()

    def __len__(self) -> int:
        return len(self._users)

    def get_user(self, username: str, realm: Optional[str]) -> Optional[SipUser]:
        key = (username, normalize_realm(realm))
        user = self._users.get(key)
        if user is not None:
            return user
        placed = self._placed.get(key)
        if placed is not None:
            return placed
        user = self._users.get((username, ""))
        if user is None:
            return None
        placed = _with_realm(user, realm)
        if len(self._placed) >= _MAX_PLACED:
            self._placed.clear()
        self._placed[key] = placed
        return placed


# -- plain file ------------------------------------------------------------------


@implementer(IUserBackend)
class PlainUserBackend:
    """
    A text file of C{username:password} lines (C{type = "plain"},
    C{path = "..."}); blank lines and C{#} comments are skipped.

    The file is read again when its modification time or size changes,
    checked at most once every C{check_interval} seconds, so an admin can
    add a user without a restart.  The passwords answer for any realm.
    """

    kind = "plain"

    def __init__(self, path: str, reactor: Any = None, check_interval: float = 1.0) -> None:
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self.path = path
        self._reactor = reactor
        self.check_interval = check_interval
        self._users: Dict[str, SipUser] = {}
        self._stamp: Optional[Tuple[float, int]] = None
        self._checked_at: Optional[float] = None
        try:
            self.reload()
        except OSError as e:
            raise UserConfigError(f"user_backends plain: cannot read {path!r}: {e.strerror}")

    def reload(self) -> None:
        """Read the file now (raises OSError when it cannot be read)."""
        st = os.stat(self.path)
        users: Dict[str, SipUser] = {}
        with open(self.path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                username, sep, password = line.partition(":")
                username, password = username.strip(), password.strip()
                if not sep or not username:
                    log.warn(
                        "{path}:{lineno}: expected username:password, line skipped",
                        path=self.path,
                        lineno=lineno,
                    )
                    continue
                users[username] = SipUser(username=username, password=password)
        self._users = users
        self._stamp = (st.st_mtime, st.st_size)
        self._checked_at = self._reactor.seconds()

    def _maybe_reload(self) -> None:
        now = self._reactor.seconds()
        if self._checked_at is not None and now - self._checked_at < self.check_interval:
            return
        self._checked_at = now
        try:
            st = os.stat(self.path)
        except OSError as e:
            log.warn("user file {path} unreadable ({error}); keeping the users read before", path=self.path, error=e)
            return
        if (st.st_mtime, st.st_size) != self._stamp:
            try:
                self.reload()
                log.info("user file {path} reloaded: {count} users", path=self.path, count=len(self._users))
            except (OSError, UnicodeDecodeError) as e:
                log.warn("user file {path} unreadable ({error}); keeping the users read before", path=self.path, error=e)

    def __len__(self) -> int:
        return len(self._users)

    def get_user(self, username: str, realm: Optional[str]) -> Optional[SipUser]:
        self._maybe_reload()
        user = self._users.get(username)
        return _with_realm(user, realm) if user is not None else None


# -- database --------------------------------------------------------------------

_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")

_DB_COLUMNS = (
    # (config key, SipUser field, default column or None when optional)
    ("username_column", "username", "username"),
    ("password_column", "password", "password"),
    ("id_column", "id", None),
    ("enabled_column", "enabled", None),
    ("realm_column", "realm", None),
    ("ha1_column", "ha1", None),
    ("ha1_sha256_column", "ha1_sha256", None),
    ("display_name_column", "display_name", None),
    ("email_column", "email", None),
    ("phone_column", "phone", None),
    ("note_column", "note", None),
)

#: The columns of the project's C{users} table (migration 0020_users.sql).
PROJECT_USERS_COLUMNS = {
    "id_column": "id",
    "username_column": "username",
    "realm_column": "realm",
    "password_column": "password",
    "ha1_column": "ha1",
    "ha1_sha256_column": "ha1_sha256",
    "enabled_column": "enabled",
    "display_name_column": "display_name",
    "email_column": "email",
    "phone_column": "phone",
    "note_column": "note",
}


@implementer(IUserBackend)
class DatabaseUserBackend:
    """
    Users in a database table (C{type = "database"}).

    Column names are configurable (C{username_column}, C{password_column},
    C{realm_column}, C{enabled_column}, C{id_column}, ...) so an existing
    customer table can be used as it is; they are checked to be plain SQL
    identifiers because they are written into the query text.  With a realm
    column, a row whose realm is empty or NULL answers for any realm, and a
    row of the asked realm wins over it.
    """

    kind = "database"

    def __init__(
        self,
        db: Any,
        table_name: str = "users",
        columns: Optional[Mapping[str, Optional[str]]] = None,
        deleted_at_column: Optional[str] = None,
        owns_db: bool = False,
    ) -> None:
        self.db = db
        self.owns_db = owns_db
        self.table_name = self._check_ident("table_name", table_name)
        columns = dict(columns or {})
        self.columns: List[Tuple[str, str]] = []  # (column, field)
        for key, field, default in _DB_COLUMNS:
            column = columns.pop(key, None) or default
            if column:
                self.columns.append((self._check_ident(key, column), field))
        if columns:
            raise UserConfigError(f"user_backends database: unknown keys {sorted(columns)}")
        self.deleted_at_column = (
            self._check_ident("deleted_at_column", deleted_at_column) if deleted_at_column else None
        )
        by_field = {field: column for column, field in self.columns}
        self._username_column = by_field["username"]
        self._realm_column = by_field.get("realm")
        self._query = self._build_query()

    @staticmethod
    def _check_ident(key: str, value: str) -> str:
        if not isinstance(value, str) or not _IDENT_RE.match(value):
            raise UserConfigError(
                f"user_backends database: {key} = {value!r} is not a plain SQL identifier "
                "(letters, digits and underscores)"
            )
        return value

    def _build_query(self) -> str:
        select = ", ".join(column for column, _ in self.columns)
        where = [f"{self._username_column} = ?"]
        order = ""
        if self._realm_column:
            rc = self._realm_column
            where.append(f"({rc} = ? OR {rc} = ? OR {rc} IS NULL OR {rc} = '')")
            order = f" ORDER BY CASE WHEN {rc} = ? OR {rc} = ? THEN 0 ELSE 1 END"
        if self.deleted_at_column:
            where.append(f"{self.deleted_at_column} IS NULL")
        return f"SELECT {select} FROM {self.table_name} WHERE {' AND '.join(where)}{order} LIMIT 1"

    def get_user(self, username: str, realm: Optional[str]) -> defer.Deferred:
        params: List[Any] = [username]
        if self._realm_column:
            raw = (realm or "").strip()
            norm = normalize_realm(realm)
            params += [raw, norm, raw, norm]
        d = self.db.run_query(self._query, params)

        def found(rows):
            if not rows:
                return None
            row = rows[0]
            data: Dict[str, Any] = {}
            for (column, field), value in zip(self.columns, row):
                data[field] = value
            data["username"] = data.get("username") or username
            user = SipUser.from_mapping(data, where=f"table {self.table_name}")
            if realm:
                user = dataclasses.replace(user, realm=realm)
            return user

        def failed(f: Failure):
            raise UserBackendError(f"user table {self.table_name}: {f.getErrorMessage()}")

        return d.addCallbacks(found, failed)

    def close(self) -> None:
        """Close the connection pool when this backend opened it."""
        if self.owns_db:
            self.db.close()


# -- http ------------------------------------------------------------------------


class _StringProducer:
    """A request body for L{twisted.web.client.Agent}."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.length = len(body)

    def startProducing(self, consumer):
        consumer.write(self.body)
        return defer.succeed(None)

    def pauseProducing(self):
        pass

    def resumeProducing(self):
        pass

    def stopProducing(self):
        pass


class _RetryableError(Exception):
    """An HTTP attempt failed in a way worth retrying (5xx, timeout, refused)."""


@implementer(IUserBackend)
class HttpUserBackend:
    """
    Users looked up in a web service (C{type = "http"}), as RustPBX does:
    C{GET url?username=..&realm=..} (or a form C{POST}), answered with the
    user as a JSON object.  A non-2xx answer may carry
    C{{"reason": "not_found" | "disabled" | "spam" | ...}}.

    Each look-up has a timeout (C{http_timeout_ms}), is retried
    C{http_retry_count} times after C{http_retry_delay_ms} on timeouts,
    refused connections and 5xx, and its answer (a user or "unknown") is
    cached C{cache_ttl_secs} seconds in an LRU of C{cache_size} entries, so
    that a burst of REGISTERs or a scanner does not become a burst of HTTP
    requests.  Concurrent look-ups of one user share one HTTP request.
    """

    kind = "http"
    log = Logger()

    def __init__(
        self,
        url: str,
        reactor: Any = None,
        method: str = "GET",
        username_field: str = "username",
        realm_field: str = "realm",
        headers: Optional[Mapping[str, str]] = None,
        timeout: float = 5.0,
        retry_count: int = 1,
        retry_delay: float = 0.5,
        cache_ttl: float = 30.0,
        cache_size: int = 10000,
        agent: Any = None,
        clock: Any = None,
    ) -> None:
        """
        @param reactor: connects to the service.
        @param agent: an L{twisted.web.iweb.IAgent}; by default an Agent
            with a persistent connection pool (see L{close}).
        @param clock: times the timeouts, retry delays and cache; the
            reactor by default (tests pass a L{task.Clock}).
        """
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        if not url.startswith(("http://", "https://")):
            raise UserConfigError(f"user_backends http: url {url!r} must start with http:// or https://")
        method = method.upper()
        if method not in ("GET", "POST"):
            raise UserConfigError(f"user_backends http: method {method!r} must be GET or POST")
        self.url = url
        self.method = method
        self.username_field = username_field
        self.realm_field = realm_field
        self.headers = dict(headers or {})
        self.timeout = timeout
        self.retry_count = max(0, int(retry_count))
        self.retry_delay = retry_delay
        self.cache_ttl = cache_ttl
        self.cache_size = max(0, int(cache_size))
        self._reactor = reactor
        self._clock = clock if clock is not None else reactor
        self._pool = None
        if agent is None:
            from twisted.web.client import Agent, HTTPConnectionPool

            self._pool = HTTPConnectionPool(reactor, persistent=True)
            agent = Agent(reactor, connectTimeout=timeout, pool=self._pool)
        self._agent = agent
        self._cache: "OrderedDict[Tuple[str, str], Tuple[float, Optional[SipUser]]]" = OrderedDict()
        self._pending: Dict[Tuple[str, str], List[defer.Deferred]] = {}
        self.requests_made = 0

    def get_user(self, username: str, realm: Optional[str]) -> defer.Deferred:
        key = (username, normalize_realm(realm))
        now = self._clock.seconds()
        cached = self._cache.get(key)
        if cached is not None:
            if cached[0] > now:
                self._cache.move_to_end(key)
                return defer.succeed(cached[1])
            del self._cache[key]
        waiting = self._pending.get(key)
        d: defer.Deferred = defer.Deferred()
        if waiting is not None:
            waiting.append(d)
            return d
        self._pending[key] = [d]
        self._attempt(username, realm or "", 0).addBoth(self._finished, key)
        return d

    def _finished(self, result: Any, key: Tuple[str, str]) -> None:
        waiters = self._pending.pop(key, [])
        if not isinstance(result, Failure) and self.cache_ttl > 0 and self.cache_size > 0:
            self._cache[key] = (self._clock.seconds() + self.cache_ttl, result)
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        for d in waiters:
            d.callback(result) if not isinstance(result, Failure) else d.errback(result)

    def _attempt(self, username: str, realm: str, attempt: int) -> defer.Deferred:
        self.requests_made += 1
        d = self._request(username, realm)

        def retry(f: Failure):
            retryable = f.check(_RetryableError, defer.TimeoutError, defer.CancelledError) or _is_network_error(f)
            if not retryable:
                if f.check(UserBackendError):
                    return f
                raise UserBackendError(f"user service {self.url}: {f.getErrorMessage()}")
            if attempt >= self.retry_count:
                raise UserBackendError(
                    f"user service {self.url} failed {attempt + 1} times, last: {f.getErrorMessage() or f.type.__name__}"
                )
            self.log.info(
                "user service {url} attempt {attempt} failed ({error}); retrying",
                url=self.url,
                attempt=attempt + 1,
                error=f.getErrorMessage() or f.type.__name__,
            )
            return task.deferLater(self._clock, self.retry_delay, self._attempt, username, realm, attempt + 1)

        return d.addErrback(retry)

    def _request(self, username: str, realm: str) -> defer.Deferred:
        from twisted.web.client import readBody
        from twisted.web.http_headers import Headers

        fields = [(self.username_field, username), (self.realm_field, realm)]
        headers = Headers({k.encode(): [v.encode()] for k, v in self.headers.items()})
        headers.setRawHeaders(b"accept", [b"application/json"])
        body = None
        url = self.url
        if self.method == "GET":
            url += ("&" if "?" in url else "?") + urlencode(fields)
        else:
            headers.setRawHeaders(b"content-type", [b"application/x-www-form-urlencoded"])
            body = _StringProducer(urlencode(fields).encode())
        d = self._agent.request(self.method.encode(), url.encode(), headers, body)
        d.addCallback(lambda response: readBody(response).addCallback(lambda data: (response.code, data)))
        d.addTimeout(self.timeout, self._clock)
        return d.addCallback(self._parse, username, realm)

    def _parse(self, result: Tuple[int, bytes], username: str, realm: str) -> Optional[SipUser]:
        code, data = result
        payload: Any = None
        if data.strip():
            try:
                payload = json.loads(data)
            except ValueError:
                if 200 <= code < 300:
                    raise UserBackendError(f"user service {self.url}: answer is not JSON")
        if code >= 500:
            raise _RetryableError(f"HTTP {code}")
        if 200 <= code < 300:
            if payload is None:
                return None
            if not isinstance(payload, dict):
                raise UserBackendError(f"user service {self.url}: expected a JSON object")
            payload.setdefault("username", username)
            user = SipUser.from_mapping(payload, where=f"user service {self.url}")
            return _with_realm(user, realm)
        reason = payload.get("reason") if isinstance(payload, dict) else None
        if code == 404 or reason in ("not_found", "not_user"):
            return None
        if reason in ("disabled", "blocked"):
            return SipUser(username=username, realm=realm or None, enabled=False)
        if reason in ("spam", "spam_detected"):
            raise SpamDetected(f"user service {self.url} reports spam for {username}")
        message = payload.get("message") if isinstance(payload, dict) else None
        raise UserBackendError(f"user service {self.url}: HTTP {code} {reason or ''} {message or ''}".strip())

    def close(self) -> defer.Deferred:
        """Close the kept-alive connections to the service."""
        if self._pool is not None:
            return self._pool.closeCachedConnections()
        return defer.succeed(None)


def _is_network_error(f: Failure) -> bool:
    from twisted.internet import error as ierror
    from twisted.web import _newclient

    return bool(
        f.check(
            ierror.ConnectError,
            ierror.ConnectionLost,
            ierror.DNSLookupError,
            ierror.TimeoutError,
            _newclient.ResponseFailed,
            _newclient.RequestTransmissionFailed,
        )
    )


# -- the chain -------------------------------------------------------------------


@implementer(IUserBackend)
class UserChain:
    """
    The configured backends, asked in order until one knows the user.

    A failing backend does not stop the chain; if no later backend knows
    the user, the chain fails with L{UserBackendError} (or the backend's
    L{SpamDetected}, which stops the chain at once).
    """

    def __init__(self, backends: Iterable[Any] = ()) -> None:
        self.backends = list(backends)

    def get_user(self, username: str, realm: Optional[str]) -> defer.Deferred:
        return self._next(username, realm, 0, None)

    def find(self, username: str, realm: Optional[str]) -> Any:
        """
        Like L{get_user}, but the user (or None) is returned directly when
        the backends asked answer at once (memory, plain files): the
        authentication of every request asks, and a Deferred per request
        cost more than the look-up.  A Deferred otherwise.
        """
        backends = self.backends
        for index, backend in enumerate(backends):
            try:
                result = backend.get_user(username, realm)
            except Exception:
                failure = Failure()
                if failure.check(SpamDetected):
                    return defer.fail(failure)
                self._log_failure(backend, failure)
                return self._next(username, realm, index + 1, failure)
            if isinstance(result, defer.Deferred):
                return self._chain(result, username, realm, index + 1, backend)
            if result is not None:
                return result
        return None

    def _next(self, username: str, realm: Optional[str], index: int, error: Optional[Failure]) -> defer.Deferred:
        while index < len(self.backends):
            backend = self.backends[index]
            d = defer.maybeDeferred(backend.get_user, username, realm)
            # Walk synchronous answers without recursion.
            if d.called:
                box: List[Any] = []
                d.addBoth(box.append)
                result = box[0]
                if isinstance(result, Failure):
                    if result.check(SpamDetected):
                        return defer.fail(result)
                    self._log_failure(backend, result)
                    error = result
                elif result is not None:
                    return defer.succeed(result)
                index += 1
                continue
            return self._chain(d, username, realm, index + 1, backend, error)
        if error is not None:
            if error.check(UserBackendError):
                return defer.fail(error)
            return defer.fail(UserBackendError(error.getErrorMessage()))
        return defer.succeed(None)

    def _chain(
        self,
        d: defer.Deferred,
        username: str,
        realm: Optional[str],
        nxt: int,
        backend: Any,
        error: Optional[Failure] = None,
    ) -> defer.Deferred:
        """After C{backend}'s answer C{d}: the user, or on to backend C{nxt}."""

        def answered(user):
            if user is not None:
                return user
            return self._next(username, realm, nxt, error)

        def failed(f: Failure):
            if f.check(SpamDetected):
                return f
            self._log_failure(backend, f)
            return self._next(username, realm, nxt, f)

        return d.addCallbacks(answered, failed)

    @staticmethod
    def _log_failure(backend: Any, f: Failure) -> None:
        log.warn(
            "user backend {kind} failed: {error}",
            kind=getattr(backend, "kind", backend),
            error=f.getErrorMessage(),
        )

    def close(self) -> defer.Deferred:
        """Release what the backends opened (database pools, HTTP connections)."""
        waits = []
        for backend in self.backends:
            close = getattr(backend, "close", None)
            if close is not None:
                waits.append(defer.maybeDeferred(close))
        return defer.gatherResults(waits, consumeErrors=True).addCallback(lambda _: None)


def build_user_backends(config: Any, store: Any = None, reactor: Any = None) -> UserChain:
    """
    Build the chain from C{proxy.user_backends}.

    @param config: the whole config (its C{proxy} section is used) or the
        proxy section itself.
    @param store: the project's L{rustpbx_py.store.db.Database}; a
        C{database} backend without a C{url} (or with the store's URL) uses
        it and its C{users} table (migration 0020).
    @raise UserConfigError: an unknown C{type} or unusable settings.
    """
    proxy = getattr(config, "proxy", config)
    entries = _opt(proxy, "user_backends", []) or []
    backends: List[Any] = []
    for index, entry in enumerate(entries):
        where = f"proxy.user_backends[{index}]"
        kind = str(_opt(entry, "type", _opt(entry, "kind", ""))).lower()
        if kind == "memory":
            users = [
                SipUser.from_mapping(u, where=f"{where}.users[{i}]", strict=isinstance(u, Mapping))
                for i, u in enumerate(_opt(entry, "users", []) or [])
            ]
            backends.append(MemoryUserBackend(users))
        elif kind == "plain":
            path = _opt(entry, "path")
            if not path:
                raise UserConfigError(f"{where}: a plain backend needs a path")
            backends.append(PlainUserBackend(str(path), reactor))
        elif kind == "database":
            backends.append(_build_database_backend(entry, store, where))
        elif kind == "http":
            url = _opt(entry, "url")
            if not url:
                raise UserConfigError(f"{where}: an http backend needs a url")
            backends.append(
                HttpUserBackend(
                    str(url),
                    reactor,
                    method=str(_opt(entry, "method", "GET")),
                    username_field=str(_opt(entry, "username_field", "username")),
                    realm_field=str(_opt(entry, "realm_field", "realm")),
                    headers=_opt(entry, "headers", {}),
                    timeout=float(_opt(entry, "http_timeout_ms", 5000)) / 1000.0,
                    retry_count=int(_opt(entry, "http_retry_count", 1)),
                    retry_delay=float(_opt(entry, "http_retry_delay_ms", 500)) / 1000.0,
                    # Not RustPBX keys (its token cache is another thing):
                    # read when the config offers them, else 30 s / 10000.
                    cache_ttl=float(_opt(entry, "cache_ttl_secs", 30)),
                    cache_size=int(_opt(entry, "cache_size", 10000)),
                )
            )
        elif kind == "extension":
            # RustPBX's console extensions table; the console is not here
            # yet.  Skipped; rustpbx_py.features names it at start-up and
            # in check-config.
            pass
        else:
            raise UserConfigError(
                f"{where}: type {kind!r} is not one of memory, plain, database, http"
            )
    return UserChain(backends)


def _build_database_backend(entry: Any, store: Any, where: str) -> DatabaseUserBackend:
    url = _opt(entry, "url")
    owns = False
    if url and (store is None or url != getattr(store, "url", None)):
        from rustpbx_py.store.db import Database, DatabaseError

        try:
            db = Database(str(url))
        except DatabaseError as e:
            raise UserConfigError(f"{where}: {e}")
        owns = True
    elif store is not None:
        db = store
    else:
        raise UserConfigError(f"{where}: a database backend needs a url (no project database is configured)")
    columns = {key: _opt(entry, key) for key, _, _ in _DB_COLUMNS}
    table_name = str(_opt(entry, "table_name", "users"))
    defaults = {key: default for key, _, default in _DB_COLUMNS}
    if not owns and table_name == "users" and all(columns[k] in (None, defaults[k]) for k in columns):
        # The project's own table (migration 0020_users.sql): use all of it.
        columns = dict(PROJECT_USERS_COLUMNS)
    return DatabaseUserBackend(
        db,
        table_name=table_name,
        columns=columns,
        deleted_at_column=_opt(entry, "deleted_at_column"),
        owns_db=owns,
    )
