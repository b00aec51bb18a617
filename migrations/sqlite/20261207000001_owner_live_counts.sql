-- Each client's live sessions (REQUESTED or AVAILABLE, not deleted), kept by triggers in the
-- transaction that changes a session: the per-client quota reads one row instead of counting
-- the client's sessions on every create (a client near a quota of thousands made each create
-- walk thousands of index entries). The owner index served only that count.
CREATE TABLE owner_live_counts (
    owner TEXT PRIMARY KEY NOT NULL,
    live  INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

INSERT INTO owner_live_counts (owner, live)
    SELECT owner, COUNT(*) FROM sessions
    WHERE status IN ('REQUESTED', 'AVAILABLE') AND deleted = 0
    GROUP BY owner;

CREATE TRIGGER owner_live_on_insert AFTER INSERT ON sessions
    WHEN NEW.status IN ('REQUESTED', 'AVAILABLE') AND NEW.deleted = 0
BEGIN
    INSERT INTO owner_live_counts (owner, live) VALUES (NEW.owner, 1)
        ON CONFLICT (owner) DO UPDATE SET live = live + 1;
END;

CREATE TRIGGER owner_live_on_delete AFTER DELETE ON sessions
    WHEN OLD.status IN ('REQUESTED', 'AVAILABLE') AND OLD.deleted = 0
BEGIN
    UPDATE owner_live_counts SET live = live - 1 WHERE owner = OLD.owner;
END;

CREATE TRIGGER owner_live_on_update AFTER UPDATE OF status, deleted, owner ON sessions
    WHEN (OLD.status IN ('REQUESTED', 'AVAILABLE') AND OLD.deleted = 0)
         IS NOT (NEW.status IN ('REQUESTED', 'AVAILABLE') AND NEW.deleted = 0)
      OR OLD.owner IS NOT NEW.owner
BEGIN
    UPDATE owner_live_counts SET live = live - 1
        WHERE owner = OLD.owner AND OLD.status IN ('REQUESTED', 'AVAILABLE') AND OLD.deleted = 0;
    INSERT INTO owner_live_counts (owner, live)
        SELECT NEW.owner, 1 WHERE NEW.status IN ('REQUESTED', 'AVAILABLE') AND NEW.deleted = 0
        ON CONFLICT (owner) DO UPDATE SET live = live + 1;
END;

DROP INDEX sessions_owner_live;
