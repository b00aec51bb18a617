-- The PostgreSQL schema: the same tables as the SQLite one (times in milliseconds since the
-- epoch, ids and JSON as text), plus what several nodes on one database need: job leases with
-- an epoch (fencing) and a leader row for maintenance that must run once.

CREATE TABLE sessions (
    id                   TEXT PRIMARY KEY,
    revision             BIGINT NOT NULL,
    status               TEXT NOT NULL,
    status_info          TEXT,
    device_key           TEXT NOT NULL,
    device               TEXT NOT NULL,   -- JSON: the selected identifier
    flow                 TEXT NOT NULL,   -- JSON: application server and ports
    qos_profile          TEXT NOT NULL,
    duration_secs        BIGINT NOT NULL,
    sink                 TEXT,
    sink_credential      TEXT,            -- JSON, sealed; never returned by the API
    created_at_ms        BIGINT NOT NULL,
    started_at_ms        BIGINT,
    expires_at_ms        BIGINT,
    grant_state          TEXT NOT NULL DEFAULT 'none',
    grant_id             TEXT,
    deleted              BOOLEAN NOT NULL DEFAULT false,
    api                  TEXT NOT NULL DEFAULT 'v1',
    lease_until_ms       BIGINT,
    owner                TEXT NOT NULL DEFAULT '',
    stray_grant_possible BOOLEAN NOT NULL DEFAULT true
);

CREATE INDEX sessions_live_by_device ON sessions (device_key) WHERE status <> 'UNAVAILABLE';
CREATE INDEX sessions_owner_live ON sessions (owner, status) WHERE NOT deleted;

-- Other keys a request named its device by (see the SQLite migration of the same name).
CREATE TABLE session_device_aliases (
    device_key  TEXT NOT NULL,
    session_id  TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    PRIMARY KEY (device_key, session_id)
);

CREATE INDEX session_device_aliases_by_session ON session_device_aliases (session_id);

-- Append-only history of every transition; survives the purge of its session.
CREATE TABLE session_events (
    id          BIGSERIAL PRIMARY KEY,
    session_id  TEXT NOT NULL,
    revision    BIGINT NOT NULL,
    from_status TEXT,
    to_status   TEXT NOT NULL,
    reason      TEXT NOT NULL,
    at_ms       BIGINT NOT NULL
);

CREATE INDEX session_events_by_session ON session_events (session_id, id);

-- What the simulated network holds: one grant per session at most.
CREATE TABLE sim_grants (
    grant_id          TEXT PRIMARY KEY,
    session_id        TEXT NOT NULL UNIQUE,
    provisioned_at_ms BIGINT NOT NULL,
    lease_until_ms    BIGINT,
    released_at_ms    BIGINT
);

-- Status notifications to consumers' sinks: the outbox and its delivery state.
CREATE TABLE notifications (
    id              TEXT PRIMARY KEY,   -- the CloudEvents id, stable across retries
    session_id      TEXT NOT NULL,
    seq             BIGINT NOT NULL,    -- order within the session
    sink            TEXT NOT NULL,
    credential      TEXT,
    event           TEXT NOT NULL,      -- JSON CloudEvent without `source`
    state           TEXT NOT NULL,      -- pending | delivered | dead
    attempts        BIGINT NOT NULL DEFAULT 0,
    last_error      TEXT,
    created_at_ms   BIGINT NOT NULL,
    next_attempt_ms BIGINT,
    finished_at_ms  BIGINT,
    UNIQUE (session_id, seq)
);

CREATE INDEX notifications_pending_by_session ON notifications (session_id, seq) WHERE state = 'pending';
CREATE INDEX notifications_dead ON notifications (created_at_ms) WHERE state = 'dead';
CREATE INDEX notifications_settled ON notifications (finished_at_ms) WHERE state <> 'pending';

CREATE TABLE gone_sinks (
    sink       TEXT PRIMARY KEY,
    gone_at_ms BIGINT NOT NULL
);

-- The job queue. A claim sets `claimed_by` (the node), a lease (`lease_until_ms`, renewed by
-- the node's heartbeat) and the next `epoch`; a job whose lease lapsed is claimed again by any
-- node, and every write of the job's earlier claim is then refused (its epoch is past).
CREATE TABLE job_queue (
    id             BIGSERIAL PRIMARY KEY,
    queue          TEXT NOT NULL,
    payload        TEXT NOT NULL,
    attempt        INTEGER NOT NULL DEFAULT 0,
    due_at_ms      BIGINT NOT NULL,
    claimed_by     TEXT,
    claimed_at_ms  BIGINT,
    lease_until_ms BIGINT,
    epoch          BIGINT NOT NULL DEFAULT 0
);

CREATE INDEX job_queue_by_due ON job_queue (queue, due_at_ms);
CREATE INDEX job_queue_claimed ON job_queue (claimed_by) WHERE claimed_by IS NOT NULL;

-- One holder per role for a while (maintenance that must run on one node only).
CREATE TABLE leaders (
    role     TEXT PRIMARY KEY,
    holder   TEXT NOT NULL,
    until_ms BIGINT NOT NULL
);
