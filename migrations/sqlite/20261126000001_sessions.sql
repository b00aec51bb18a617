-- QoS sessions, their history, and the simulated network's grant ledger.

CREATE TABLE sessions (
    id              TEXT PRIMARY KEY NOT NULL,
    revision        INTEGER NOT NULL,
    status          TEXT NOT NULL,
    status_info     TEXT,
    device_key      TEXT NOT NULL,
    device          TEXT NOT NULL,   -- JSON: the selected identifier
    flow            TEXT NOT NULL,   -- JSON: application server and ports
    qos_profile     TEXT NOT NULL,
    duration_secs   INTEGER NOT NULL,
    sink            TEXT,
    sink_credential TEXT,            -- JSON; never returned by the API
    created_at_ms   INTEGER NOT NULL,
    started_at_ms   INTEGER,
    expires_at_ms   INTEGER,
    grant_state     TEXT NOT NULL DEFAULT 'none',
    grant_id        TEXT,
    deleted         INTEGER NOT NULL DEFAULT 0
) STRICT;

-- The overlap check reads the live sessions of one device.
CREATE INDEX sessions_live_by_device ON sessions (device_key) WHERE status <> 'UNAVAILABLE';
CREATE INDEX sessions_by_device ON sessions (device_key);

-- Append-only history of every transition; survives the purge of its session.
CREATE TABLE session_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id  TEXT NOT NULL,
    revision    INTEGER NOT NULL,
    from_status TEXT,
    to_status   TEXT NOT NULL,
    reason      TEXT NOT NULL,
    at_ms       INTEGER NOT NULL
) STRICT;

CREATE INDEX session_events_by_session ON session_events (session_id, id);

-- What the simulated network holds: one grant per session at most.
CREATE TABLE sim_grants (
    grant_id          TEXT PRIMARY KEY NOT NULL,
    session_id        TEXT NOT NULL UNIQUE,
    provisioned_at_ms INTEGER NOT NULL,
    lease_until_ms    INTEGER,
    released_at_ms    INTEGER
) STRICT;
