-- The other keys a request named its device by (a phone number with the device's IP address,
-- an IPv4 address with its private address and its port, ...): the overlap check finds live
-- sessions under any of them. The kept identifier's key stays in sessions.device_key; most
-- sessions name one identifier and have no row here.
CREATE TABLE session_device_aliases (
    device_key  TEXT NOT NULL,
    session_id  TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    PRIMARY KEY (device_key, session_id)
) STRICT, WITHOUT ROWID;

CREATE INDEX session_device_aliases_by_session ON session_device_aliases (session_id);
