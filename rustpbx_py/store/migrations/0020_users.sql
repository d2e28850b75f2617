-- SIP accounts for the "database" user backend when it uses the project's own
-- database (proxy.user_backends entry with type = "database" and no url).
-- A row with an empty or NULL realm answers for every realm.  Either password
-- or the HA1 hashes (MD5 and SHA-256 of username:realm:password) are set.
-- enabled is 1 or 0; times are Unix seconds (DOUBLE PRECISION, as in
-- 0010).  The id numbers itself (an IDENTITY column on PostgreSQL).
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT NOT NULL,
    realm TEXT NOT NULL DEFAULT '',
    password TEXT,
    ha1 TEXT,
    ha1_sha256 TEXT,
    enabled INTEGER NOT NULL DEFAULT 1,
    display_name TEXT,
    email TEXT,
    phone TEXT,
    note TEXT,
    created_at DOUBLE PRECISION,
    updated_at DOUBLE PRECISION
);
CREATE UNIQUE INDEX IF NOT EXISTS users_username_realm ON users (username, realm);
