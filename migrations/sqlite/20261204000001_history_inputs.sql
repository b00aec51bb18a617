-- The inputs that drove the server (API commands, network and sink answers, callbacks, timer
-- firings), each written in the transaction of the write it caused, for export and replay.
-- `body` is the input as JSON (src/recording/input.rs); rows go with the history retention.
CREATE TABLE history_inputs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms       INTEGER NOT NULL,
    session_id  TEXT,
    body        TEXT NOT NULL
) STRICT;
