-- The event log is the truth: every authentic webhook and application event, raw, once.
CREATE TABLE event_log (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    source          TEXT    NOT NULL,
    event_id        TEXT    NOT NULL,
    event_type      TEXT    NOT NULL,
    received_at_ms  INTEGER NOT NULL,
    body            BLOB    NOT NULL,
    UNIQUE (source, event_id)
);

-- Decoded call events, one per event_log row that matters to a CDR (derived; rebuilt from the log).
CREATE TABLE call_events (
    seq         INTEGER PRIMARY KEY,
    call_id     TEXT,
    room_sid    TEXT,
    room_name   TEXT,
    at_ms       INTEGER NOT NULL,
    event_type  TEXT    NOT NULL,
    body        TEXT    NOT NULL
);
CREATE INDEX call_events_by_call ON call_events (call_id) WHERE call_id IS NOT NULL;
CREATE INDEX call_events_by_room_sid ON call_events (room_sid) WHERE room_sid IS NOT NULL;
CREATE INDEX call_events_by_room_name ON call_events (room_name) WHERE room_name IS NOT NULL;

-- Authentic bodies that could not be decoded, kept for inspection.
CREATE TABLE quarantine (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    source          TEXT    NOT NULL,
    received_at_ms  INTEGER NOT NULL,
    reason          TEXT    NOT NULL,
    content_type    TEXT,
    body            BLOB    NOT NULL
);

-- One CDR per SIP leg (derived). Filter columns beside the full record.
CREATE TABLE cdrs (
    call_id         TEXT    PRIMARY KEY,
    start_ms        INTEGER NOT NULL,
    end_ms          INTEGER,
    last_event_ms   INTEGER NOT NULL,
    direction       TEXT    NOT NULL,
    outcome         TEXT    NOT NULL,
    trunk_id        TEXT,
    agent_id        TEXT,
    queue           TEXT,
    room_sid        TEXT,
    room_name       TEXT,
    body            TEXT    NOT NULL,
    updated_at_ms   INTEGER NOT NULL
);
CREATE INDEX cdrs_by_start ON cdrs (start_ms, call_id);
CREATE INDEX cdrs_by_room_sid ON cdrs (room_sid);
CREATE INDEX cdrs_by_room_name ON cdrs (room_name);
CREATE INDEX cdrs_open ON cdrs (last_event_ms) WHERE outcome = 'in_progress';

-- Progress markers of background tasks (the CDR pipeline's position in the log).
CREATE TABLE cursors (
    name    TEXT    PRIMARY KEY,
    value   INTEGER NOT NULL
);
