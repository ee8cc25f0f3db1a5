-- The decoded call event travels in its log row, and the acknowledging transaction writes that
-- row alone: `call_events` is filled by the CDR pipeline, which follows the log. Its three
-- random-keyed indexes cost a page write each per event, and written in the append they made the
-- webhook wait for them.
ALTER TABLE event_log ADD COLUMN call_event TEXT;

-- Events logged before this migration that the pipeline has not applied yet: their decoded form
-- moves into the log row the pipeline now reads.
UPDATE event_log
SET call_event = (SELECT body FROM call_events c WHERE c.seq = event_log.seq)
WHERE seq > COALESCE((SELECT value FROM cursors WHERE name = 'cdr_pipeline'), 0);
