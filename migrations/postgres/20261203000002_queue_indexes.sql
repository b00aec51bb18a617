-- Claims and the next due time read waiting jobs and lapsed leases through one index each: the
-- earlier (queue, due_at_ms) index made the next due time a scan of every job of a queue
-- (thousands of purges scheduled a minute ahead), at every dispatcher round.
CREATE INDEX job_queue_waiting ON job_queue (queue, due_at_ms) WHERE claimed_by IS NULL;
CREATE INDEX job_queue_leases ON job_queue (queue, lease_until_ms) WHERE claimed_by IS NOT NULL;
DROP INDEX job_queue_by_due;
