-- The trace context of the work that enqueued a job (W3C traceparent, the caller's
-- x-correlator): the job's run links back to it.
ALTER TABLE job_queue ADD COLUMN traceparent TEXT;
ALTER TABLE job_queue ADD COLUMN correlator TEXT;
