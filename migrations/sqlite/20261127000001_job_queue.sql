-- The job queue. One row per job that waits or runs; acknowledging a finished job deletes its
-- row. `claimed_by` names the process a row was handed to (NULL while it waits): the claim and
-- the acknowledgement are batched, so a job costs two shared transactions, not four of its own.
-- Not named `jobs`: SQLite names are case-insensitive, and databases of earlier versions hold
-- apalis's `Jobs` table, whose jobs are adopted (and the table dropped) at startup.
CREATE TABLE job_queue (
    id              INTEGER PRIMARY KEY,
    queue           TEXT NOT NULL,
    payload         TEXT NOT NULL,   -- JSON: the job's own fields
    attempt         INTEGER NOT NULL DEFAULT 0,
    due_at_ms       INTEGER NOT NULL,
    claimed_by      TEXT,
    claimed_at_ms   INTEGER
) STRICT;

-- Claims read the waiting jobs of one queue in due order.
CREATE INDEX job_queue_waiting ON job_queue (queue, due_at_ms) WHERE claimed_by IS NULL;
