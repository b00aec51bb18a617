-- Set once a provisioning attempt was repeated: the network may then hold a grant for the
-- session that we never learned the id of, and its release must search for it. Sessions from
-- before this column are searched (1).
ALTER TABLE sessions ADD COLUMN stray_grant_possible INTEGER NOT NULL DEFAULT 1;
