-- The API version a session was created through (v0 or v1): its notifications' format and
-- some lifecycle rules follow it.
ALTER TABLE sessions ADD COLUMN api TEXT NOT NULL DEFAULT 'v1';
