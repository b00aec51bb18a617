-- Status notifications to consumers' sinks: the outbox of CloudEvents and their delivery state.

CREATE TABLE notifications (
    id              TEXT PRIMARY KEY NOT NULL,  -- the CloudEvents id, stable across retries
    session_id      TEXT NOT NULL,
    seq             INTEGER NOT NULL,           -- order within the session
    sink            TEXT NOT NULL,
    credential      TEXT,                       -- JSON; kept so delivery outlives the session row
    event           TEXT NOT NULL,              -- JSON CloudEvent without `source`
    state           TEXT NOT NULL,              -- pending | delivered | dead
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    created_at_ms   INTEGER NOT NULL,           -- time of the transition
    next_attempt_ms INTEGER,
    finished_at_ms  INTEGER,
    UNIQUE (session_id, seq)
) STRICT;

CREATE INDEX notifications_pending_by_session ON notifications (session_id, seq) WHERE state = 'pending';
CREATE INDEX notifications_dead ON notifications (created_at_ms) WHERE state = 'dead';

-- Sinks that answered 410 Gone: nothing more is sent to them.
CREATE TABLE gone_sinks (
    sink      TEXT PRIMARY KEY NOT NULL,
    gone_at_ms INTEGER NOT NULL
) STRICT;
