-- The inputs that drove the server (API commands, network and sink answers, callbacks, timer
-- firings), each written in the transaction of the write it caused, for export and replay.
-- `body` is the input as JSON (src/recording/input.rs); rows go with the history retention.
CREATE TABLE history_inputs (
    id          BIGSERIAL PRIMARY KEY,
    at_ms       BIGINT NOT NULL,
    session_id  TEXT,
    body        TEXT NOT NULL
);
