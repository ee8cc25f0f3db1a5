-- The log's duplicate check was keyed on (source, event_id). Event ids are random, so every append
-- wrote a page of that index at a random place: about a page of WAL per event, besides the row.
-- Keyed on (source, dedup_ms, event_id), where dedup_ms is when the sender sent the event
-- (`NewEvent::sent_at`: a LiveKit body's `createdAt`, which every retry repeats), appends land at
-- the index's end. Events that do not say when they were sent (application events, whose id alone
-- decides) have 0 there.
CREATE TABLE event_log_by_time (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    source          TEXT    NOT NULL,
    event_id        TEXT    NOT NULL,
    event_type      TEXT    NOT NULL,
    received_at_ms  INTEGER NOT NULL,
    body            BLOB    NOT NULL,
    call_event      TEXT,
    dedup_ms        INTEGER NOT NULL,
    UNIQUE (source, dedup_ms, event_id)
);

-- Logged rows get what the decoder gives them: `createdAt` in milliseconds when it is a number of
-- seconds from 1 to the year 3000 (`livekit::decode`), else 0.
INSERT INTO event_log_by_time
    (seq, source, event_id, event_type, received_at_ms, body, call_event, dedup_ms)
SELECT seq, source, event_id, event_type, received_at_ms, body, call_event,
    CASE WHEN source = 'livekit' AND json_valid(CAST(body AS TEXT)) THEN COALESCE((
        SELECT s * 1000 FROM (
            SELECT CAST(json_extract(CAST(body AS TEXT), '$.createdAt') AS INTEGER) AS s)
        WHERE s BETWEEN 1 AND 32503680000), 0)
    ELSE 0 END
FROM event_log;

-- Dropping the old table drops its AUTOINCREMENT counter: the new one continues from it, so no
-- sequence number is ever given twice.
INSERT INTO sqlite_sequence (name, seq)
SELECT 'event_log_by_time', 0
WHERE EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'event_log')
    AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'event_log_by_time');
UPDATE sqlite_sequence
SET seq = (SELECT MAX(seq) FROM sqlite_sequence WHERE name IN ('event_log', 'event_log_by_time'))
WHERE name = 'event_log_by_time';

DROP TABLE event_log;
ALTER TABLE event_log_by_time RENAME TO event_log;
