-- Call ids, room sids and room names are random strings. Indexed as such, every call event cost
-- a page write at a random place in each of three indexes that grow with the log: 12-14 KB of
-- WAL an event, at 250 events a transaction, and more the longer the log. Each key now gets a
-- number the first time it is indexed, and call events are indexed by those numbers: a call's
-- events arrive within minutes of each other, so they land in the last pages of each index, and
-- only a key's first sight (three a call, not three an event) writes at a random place.
CREATE TABLE call_keys (
    key_no  INTEGER PRIMARY KEY,
    -- 0: call id, 1: room sid, 2: room name.
    kind    INTEGER NOT NULL,
    key     TEXT    NOT NULL,
    UNIQUE (kind, key)
);

INSERT INTO call_keys (kind, key)
SELECT 0, call_id FROM call_events WHERE call_id IS NOT NULL GROUP BY call_id ORDER BY MIN(seq);
INSERT INTO call_keys (kind, key)
SELECT 1, room_sid FROM call_events WHERE room_sid IS NOT NULL GROUP BY room_sid ORDER BY MIN(seq);
INSERT INTO call_keys (kind, key)
SELECT 2, room_name FROM call_events WHERE room_name IS NOT NULL GROUP BY room_name ORDER BY MIN(seq);

ALTER TABLE call_events ADD COLUMN call_no INTEGER;
ALTER TABLE call_events ADD COLUMN room_sid_no INTEGER;
ALTER TABLE call_events ADD COLUMN room_name_no INTEGER;

UPDATE call_events SET
    call_no = (SELECT key_no FROM call_keys WHERE kind = 0 AND key = call_events.call_id),
    room_sid_no = (SELECT key_no FROM call_keys WHERE kind = 1 AND key = call_events.room_sid),
    room_name_no = (SELECT key_no FROM call_keys WHERE kind = 2 AND key = call_events.room_name);

DROP INDEX IF EXISTS call_events_by_call;
DROP INDEX IF EXISTS call_events_by_room_sid;
DROP INDEX IF EXISTS call_events_by_room_name;
CREATE INDEX call_events_by_call_no ON call_events (call_no) WHERE call_no IS NOT NULL;
CREATE INDEX call_events_by_room_sid_no ON call_events (room_sid_no) WHERE room_sid_no IS NOT NULL;
CREATE INDEX call_events_by_room_name_no ON call_events (room_name_no) WHERE room_name_no IS NOT NULL;
