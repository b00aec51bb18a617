-- When the network's grant of an AVAILABLE session ends unless renewed (renew_grant jobs).
ALTER TABLE sessions ADD COLUMN lease_until_ms INTEGER;
