-- Registrar bindings (RFC 3261 section 10): one row per contact of an
-- address-of-record.  The registrar keeps every live binding in memory and
-- writes each change here before it answers 200, so a restart finds every
-- acknowledged registration again.  Times are Unix seconds (DOUBLE PRECISION:
-- PostgreSQL's REAL would round them to minutes).
CREATE TABLE registrations (
    aor TEXT NOT NULL,
    binding_key TEXT NOT NULL,
    contact TEXT NOT NULL,
    params TEXT NOT NULL DEFAULT '',
    instance_id TEXT,
    reg_id TEXT,
    call_id TEXT NOT NULL,
    cseq BIGINT NOT NULL,
    expires INTEGER NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    registered_at DOUBLE PRECISION NOT NULL,
    path TEXT NOT NULL DEFAULT '',
    transport TEXT NOT NULL,
    source_host TEXT NOT NULL,
    source_port INTEGER NOT NULL,
    local_host TEXT,
    local_port INTEGER,
    flow_id TEXT,
    user_agent TEXT NOT NULL DEFAULT '',
    nat INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (aor, binding_key)
);
-- The sweeper deletes by expiry time.
CREATE INDEX registrations_expires_at ON registrations (expires_at);
