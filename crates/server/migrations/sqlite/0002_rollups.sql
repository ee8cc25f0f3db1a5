-- Metric rollups: the additive tally of the CDRs that started in each 15-minute UTC bucket, per
-- direction, trunk, agent and queue ('' when the call has none). Kept exact by upsert_cdrs, which
-- subtracts a rewritten CDR's old contribution and adds the new one in the same transaction.
-- 15 minutes divides every UTC offset in use, so hours and days in any time zone are unions of buckets.
CREATE TABLE rollups (
    bucket_ms   INTEGER NOT NULL,
    direction   TEXT    NOT NULL,
    trunk_id    TEXT    NOT NULL,
    agent_id    TEXT    NOT NULL,
    queue       TEXT    NOT NULL,
    tally       BLOB    NOT NULL,
    PRIMARY KEY (bucket_ms, direction, trunk_id, agent_id, queue)
) WITHOUT ROWID;

-- The same tallies summed per slice (0 all calls, 1 by trunk, 2 by agent, 3 by queue) at three UTC
-- levels (0 quarter-hour, 1 hour, 2 day), so a window is tiled by few, coarse rows.
-- direction: 0 inbound, 1 outbound; value: the slice's dimension ('' for none and for slice 0).
CREATE TABLE rollup_slices (
    slice       INTEGER NOT NULL,
    level       INTEGER NOT NULL,
    bucket_ms   INTEGER NOT NULL,
    direction   INTEGER NOT NULL,
    value       TEXT    NOT NULL,
    tally       BLOB    NOT NULL,
    PRIMARY KEY (slice, level, bucket_ms, direction, value)
) WITHOUT ROWID;

-- What each CDR added to the rollups, so a rewrite subtracts exactly that (even after a change of
-- the service-level threshold).
ALTER TABLE cdrs ADD COLUMN contribution TEXT;

-- Plain numeric columns of the CDR, for SQL tools that compute metrics themselves.
ALTER TABLE cdrs ADD COLUMN answer_ms INTEGER;
ALTER TABLE cdrs ADD COLUMN wrap_up_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE cdrs ADD COLUMN short_abandon INTEGER NOT NULL DEFAULT 0;
ALTER TABLE cdrs ADD COLUMN transfer_type TEXT;
