-- The web console (rustpbx_py.web): administrators, their sessions and the
-- audit log of what they changed.  Times are Unix seconds (DOUBLE
-- PRECISION, as in 0010); enabled is 1 or 0.
--
-- password_hash is "scrypt$N$r$p$SALT$HASH" (salt and hash in base64), so
-- the cost parameters can be raised later without invalidating old hashes.
CREATE TABLE IF NOT EXISTS console_admins (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 1,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    last_login_at DOUBLE PRECISION
);
CREATE UNIQUE INDEX IF NOT EXISTS console_admins_username ON console_admins (username);

-- A logged-in browser.  The cookie holds a random token; the table holds
-- only its HMAC under [console] session_secret, so a copy of the database
-- does not hand out sessions, and a new secret logs everybody out.
CREATE TABLE IF NOT EXISTS console_sessions (
    token_hash TEXT PRIMARY KEY,
    admin_id INTEGER NOT NULL,
    csrf_token TEXT NOT NULL,
    source TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    last_seen DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS console_sessions_admin ON console_sessions (admin_id);

-- Who changed what, when, from where: one row per change made through the
-- console or the API (and per login, logout and refused login).
CREATE TABLE IF NOT EXISTS console_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at DOUBLE PRECISION NOT NULL,
    who TEXT NOT NULL,
    source TEXT,
    action TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS console_audit_at ON console_audit (at);
