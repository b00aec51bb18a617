-- The API client that created a session (its token's client claim). Sessions created before
-- authentication existed belong to no client ('').
ALTER TABLE sessions ADD COLUMN owner TEXT NOT NULL DEFAULT '';
CREATE INDEX sessions_owner_live ON sessions (owner, status) WHERE deleted = 0;
