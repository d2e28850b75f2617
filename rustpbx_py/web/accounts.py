# -*- test-case-name: rustpbx_py.test.test_web_accounts -*-
"""
Console administrators and their sessions, in the database (migration
C{0050_console.sql}).

Passwords are hashed with scrypt (C{hashlib.scrypt}, memory-hard: a
stolen table costs an attacker memory as well as time per guess), each
with its own random salt; the cost parameters are stored with the hash so
they can be raised later.  Hashing takes tens of milliseconds and runs in
the reactor's thread pool, never on the reactor thread.

Sessions: the browser's cookie holds a random token, the table only its
HMAC-SHA256 under C{[console] session_secret}; each session has its own
CSRF token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field
from typing import Optional, Tuple

from twisted.internet import defer, threads

#: scrypt cost: N (CPU/memory), r (block size), p (parallelism).  128 * N * r
#: bytes = 16 MiB of memory per hash, about 50 ms on a current core.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32

#: Shortest password create-admin and the console accept.
MIN_PASSWORD_LENGTH = 8

#: How long a session lives without being used, and at most, seconds.
SESSION_IDLE = 8 * 3600.0
SESSION_MAX = 7 * 86400.0


class AccountError(Exception):
    """A user name or password that cannot be used; the message says why."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """C{"scrypt$N$r$p$SALT$HASH"} for C{password}, with a fresh random salt."""
    salt = secrets.token_bytes(SALT_BYTES)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=_maxmem(n, r), dklen=HASH_BYTES)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def _maxmem(n: int, r: int) -> int:
    # OpenSSL's default limit (32 MiB) refuses larger costs; allow twice
    # what the parameters need.
    return 2 * 128 * n * r + 1024 * 1024


def verify_password(password: str, stored: str) -> bool:
    """Whether C{password} matches C{stored} (from L{hash_password});
    False for a malformed C{stored}."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        n_, r_, p_ = int(n), int(r), int(p)
        salt_b, digest_b = base64.b64decode(salt), base64.b64decode(digest)
        if not (1 < n_ <= 2**20 and 0 < r_ <= 64 and 0 < p_ <= 16):
            return False
        computed = hashlib.scrypt(
            password.encode("utf-8"), salt=salt_b, n=n_, r=r_, p=p_, maxmem=_maxmem(n_, r_), dklen=len(digest_b)
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(computed, digest_b)


#: A hash no password matches, checked when the user name is unknown so that
#: the answer takes as long as for a wrong password.
_DUMMY_HASH: Optional[str] = None


def _dummy_hash() -> str:
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = hash_password(secrets.token_hex(16))
    return _DUMMY_HASH


def check_username(username: str) -> str:
    """C{username} stripped, or L{AccountError} when it cannot name an admin."""
    name = (username or "").strip()
    if not name or len(name) > 64 or any(c.isspace() or ord(c) < 32 for c in name):
        raise AccountError(f"expected a user name of 1-64 characters without spaces, found {username!r}")
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    return password


def new_password_errors(errors: dict, password: str, again: str, field: str = "password") -> None:
    """
    Put into C{errors} (form field -> message) what is wrong with a new
    password typed twice: too short under C{field}, the second copy
    different under C{"again"}.
    """
    try:
        check_password(password)
    except AccountError as e:
        errors[field] = str(e)
    if password != again:
        errors["again"] = "the two passwords differ"


@dataclass
class Principal:
    """
    Who makes a request: a logged-in administrator (C{kind="admin"}) or an
    API token (C{kind="token"}, named after its first characters).  Pages
    and API resources receive it as C{admin} / C{who}; L{audit} records
    C{username} and C{source}.
    """

    username: str
    kind: str = "admin"
    admin_id: Optional[int] = None
    source: str = ""
    scopes: Tuple[str, ...] = ()
    csrf_token: str = ""
    session_hash: str = field(default="", repr=False)

    def allows(self, scope: Optional[str]) -> bool:
        """Whether this principal may use a resource needing C{scope}: an
        admin may do everything, a token with no scopes too, otherwise
        the token must list the scope."""
        if scope is None or self.kind == "admin" or not self.scopes:
            return True
        return scope in self.scopes


class Accounts:
    """
    Administrators and sessions in C{store} (a L{rustpbx_py.store.db.Database}).

    @param secret: C{[console] session_secret} (bytes or text): the key of
        the session tokens' HMAC.
    """

    def __init__(self, store, secret, clock=None) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self.store = store
        self.secret = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
        self.clock = clock

    # -- administrators ----------------------------------------------------------------

    @defer.inlineCallbacks
    def set_admin(self, username: str, password: str, enable: bool = True):
        """
        Create administrator C{username}, or set its password (and, with
        C{enable}, enable it) when it exists; its sessions end.  Fires with
        True when it was created.
        """
        username = check_username(username)
        check_password(password)
        hashed = yield threads.deferToThread(hash_password, password)
        now = time.time()
        rows = yield self.store.run_query("SELECT id FROM console_admins WHERE username = ?", (username,))
        if rows:
            yield self.store.run_many([
                ("UPDATE console_admins SET password_hash = ?, updated_at = ?"
                 + (", enabled = 1" if enable else "") + " WHERE id = ?", (hashed, now, rows[0][0])),
                ("DELETE FROM console_sessions WHERE admin_id = ?", (rows[0][0],)),
            ])
            return False
        yield self.store.run_operation(
            "INSERT INTO console_admins (username, password_hash, enabled, created_at, updated_at) VALUES (?, ?, 1, ?, ?)",
            (username, hashed, now, now),
        )
        return True

    @defer.inlineCallbacks
    def list_admins(self):
        """Fire with every administrator as a dict (id, username, enabled,
        created_at, last_login_at), by name."""
        rows = yield self.store.run_query(
            "SELECT id, username, enabled, created_at, last_login_at FROM console_admins ORDER BY username")
        return [{"id": int(r[0]), "username": r[1], "enabled": bool(r[2]), "created_at": r[3], "last_login_at": r[4]}
                for r in rows]

    @defer.inlineCallbacks
    def _other_enabled(self, username: str):
        rows = yield self.store.run_query(
            "SELECT COUNT(*) FROM console_admins WHERE enabled = 1 AND username <> ?", (username,))
        return int(rows[0][0])

    @defer.inlineCallbacks
    def set_enabled(self, username: str, enabled: bool):
        """
        Enable or disable administrator C{username}; disabling ends its
        sessions.  Raises L{AccountError} for an unknown name, or when it
        would leave no enabled administrator (nobody could log in again
        but through create-admin on the server).
        """
        rows = yield self.store.run_query("SELECT id FROM console_admins WHERE username = ?", (username,))
        if not rows:
            raise AccountError(f"no administrator is called {username!r}")
        if not enabled and not (yield self._other_enabled(username)):
            raise AccountError("the last enabled administrator cannot be disabled")
        statements = [("UPDATE console_admins SET enabled = ?, updated_at = ? WHERE id = ?",
                       (1 if enabled else 0, time.time(), rows[0][0]))]
        if not enabled:
            statements.append(("DELETE FROM console_sessions WHERE admin_id = ?", (rows[0][0],)))
        yield self.store.run_many(statements)

    @defer.inlineCallbacks
    def delete_admin(self, username: str):
        """Delete administrator C{username} and its sessions (the audit log
        keeps its name); refused like L{set_enabled} for the last one."""
        rows = yield self.store.run_query("SELECT id FROM console_admins WHERE username = ?", (username,))
        if not rows:
            raise AccountError(f"no administrator is called {username!r}")
        if not (yield self._other_enabled(username)):
            raise AccountError("the last enabled administrator cannot be deleted")
        yield self.store.run_many([
            ("DELETE FROM console_sessions WHERE admin_id = ?", (rows[0][0],)),
            ("DELETE FROM console_admins WHERE id = ?", (rows[0][0],)),
        ])

    def prune(self, audit_days: int) -> defer.Deferred:
        """Delete expired sessions and, with C{audit_days} > 0, the audit
        rows older than that many days, in one transaction."""
        now = self.clock.seconds()
        statements = [("DELETE FROM console_sessions WHERE expires_at < ?", (now,))]
        if audit_days > 0:
            statements.append(("DELETE FROM console_audit WHERE at < ?", (now - audit_days * 86400.0,)))
        return self.store.run_many(statements)

    def admin_count(self) -> defer.Deferred:
        d = self.store.run_query("SELECT COUNT(*) FROM console_admins WHERE enabled = 1")
        return d.addCallback(lambda rows: int(rows[0][0]))

    @defer.inlineCallbacks
    def authenticate(self, username: str, password: str):
        """Fire with (admin id, user name) when the password is right for an
        enabled administrator, else None (after the same scrypt work)."""
        rows = yield self.store.run_query(
            "SELECT id, username, password_hash, enabled FROM console_admins WHERE username = ?", ((username or "").strip(),)
        )
        stored = rows[0][2] if rows else _dummy_hash()
        ok = yield threads.deferToThread(verify_password, password, stored)
        if not rows or not ok or not rows[0][3]:
            return None
        yield self.store.run_operation("UPDATE console_admins SET last_login_at = ? WHERE id = ?", (time.time(), rows[0][0]))
        return int(rows[0][0]), rows[0][1]

    # -- sessions ------------------------------------------------------------------------

    def _token_hash(self, token: str) -> str:
        return hmac.new(self.secret, token.encode("ascii", "replace"), hashlib.sha256).hexdigest()

    @defer.inlineCallbacks
    def open_session(self, admin_id: int, source: str):
        """Fire with (cookie token, csrf token) of a new session."""
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(24)
        now = self.clock.seconds()
        yield self.store.run_many([
            ("DELETE FROM console_sessions WHERE expires_at < ?", (now,)),
            (
                "INSERT INTO console_sessions (token_hash, admin_id, csrf_token, source, created_at, last_seen, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (self._token_hash(token), admin_id, csrf, source, now, now, now + SESSION_IDLE),
            ),
        ])
        return token, csrf

    @defer.inlineCallbacks
    def session(self, token: str, source: str = ""):
        """Fire with the L{Principal} of a live session for C{token}, or
        None; each use extends an idle session, up to L{SESSION_MAX}."""
        if not token or len(token) > 128:
            return None
        key = self._token_hash(token)
        rows = yield self.store.run_query(
            "SELECT s.admin_id, a.username, s.csrf_token, s.created_at, s.expires_at, s.last_seen FROM console_sessions s "
            "JOIN console_admins a ON a.id = s.admin_id WHERE s.token_hash = ? AND a.enabled = 1",
            (key,),
        )
        now = self.clock.seconds()
        if not rows or rows[0][4] <= now or now - rows[0][3] >= SESSION_MAX:
            return None
        admin_id, username, csrf, _created, _expires, last_seen = rows[0]
        if now - last_seen > 60:
            yield self.store.run_operation(
                "UPDATE console_sessions SET last_seen = ?, expires_at = ? WHERE token_hash = ?", (now, now + SESSION_IDLE, key)
            )
        return Principal(username=username, admin_id=int(admin_id), source=source, csrf_token=csrf, session_hash=key)

    def close_session(self, principal: Principal) -> defer.Deferred:
        return self.store.run_operation("DELETE FROM console_sessions WHERE token_hash = ?", (principal.session_hash,))
