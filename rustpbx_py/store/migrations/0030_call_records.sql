-- One row per call, written when the call starts and completed when it
-- ends, so a crash leaves a row that the next start closes as bySystem.
-- Times are Unix seconds (DOUBLE PRECISION, as in 0010).
CREATE TABLE IF NOT EXISTS call_records (
    id TEXT PRIMARY KEY,
    call_id TEXT NOT NULL,
    caller TEXT,
    callee TEXT,
    direction TEXT,
    route TEXT,
    trunk TEXT,
    start_time DOUBLE PRECISION NOT NULL,
    ring_time DOUBLE PRECISION,
    answer_time DOUBLE PRECISION,
    end_time DOUBLE PRECISION,
    status_code INTEGER,
    hangup_reason TEXT,
    sip_flow TEXT
);
CREATE INDEX IF NOT EXISTS call_records_call_id ON call_records (call_id);
CREATE INDEX IF NOT EXISTS call_records_start ON call_records (start_time);
