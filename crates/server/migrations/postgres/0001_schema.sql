-- The PostgreSQL schema. Tables that grow with time are range-partitioned on a millisecond
-- column: daily for the event log, call events, quarantine and CDRs; monthly for the rollups.
-- Partitions are created ahead of need by the store's maintenance (named <table>_pYYYYMMDD or
-- <table>_pYYYYMM); each table has a DEFAULT partition that catches a row no partition covers,
-- so an insert never fails. Retention drops whole partitions.

-- The event log is the truth: every authentic webhook and application event, raw, once. It is
-- partitioned by the event's own time (its body's createdAt or at), so a retry of the same body
-- lands in the same partition and the key finds it.
CREATE SEQUENCE event_log_seq AS bigint;
CREATE TABLE event_log (
    seq             bigint  NOT NULL DEFAULT nextval('event_log_seq'),
    source          text    NOT NULL,
    event_id        text    NOT NULL,
    event_type      text    NOT NULL,
    occurred_ms     bigint  NOT NULL,
    received_at_ms  bigint  NOT NULL,
    body            bytea   NOT NULL,
    PRIMARY KEY (source, event_id, occurred_ms)
) PARTITION BY RANGE (occurred_ms);
CREATE INDEX event_log_by_seq ON event_log (seq);
CREATE TABLE event_log_default PARTITION OF event_log DEFAULT;

-- Decoded call events (derived; rebuilt from the log). `xid` is the writing transaction: the CDR
-- pipeline reads in (xid, seq) order and only transactions older than every running one, so a
-- slow commit can never slip behind its position.
CREATE TABLE call_events (
    seq             bigint  NOT NULL,
    xid             xid8    NOT NULL DEFAULT pg_current_xact_id(),
    call_id         text,
    room_sid        text,
    room_name       text,
    at_ms           bigint  NOT NULL,
    received_at_ms  bigint  NOT NULL,
    event_type      text    NOT NULL,
    body            text    NOT NULL,
    PRIMARY KEY (seq, at_ms)
) PARTITION BY RANGE (at_ms);
CREATE INDEX call_events_by_position ON call_events (xid, seq);
CREATE INDEX call_events_by_call ON call_events (call_id) WHERE call_id IS NOT NULL;
CREATE INDEX call_events_by_room_sid ON call_events (room_sid) WHERE room_sid IS NOT NULL;
CREATE INDEX call_events_by_room_name ON call_events (room_name) WHERE room_name IS NOT NULL;
CREATE TABLE call_events_default PARTITION OF call_events DEFAULT;

-- Authentic bodies that could not be decoded, kept for inspection.
CREATE SEQUENCE quarantine_id AS bigint;
CREATE TABLE quarantine (
    id              bigint  NOT NULL DEFAULT nextval('quarantine_id'),
    source          text    NOT NULL,
    received_at_ms  bigint  NOT NULL,
    reason          text    NOT NULL,
    content_type    text,
    body            bytea   NOT NULL,
    PRIMARY KEY (id, received_at_ms)
) PARTITION BY RANGE (received_at_ms);
CREATE TABLE quarantine_default PARTITION OF quarantine DEFAULT;

-- One CDR per SIP leg (derived), partitioned by start. A call's start can move as its events
-- arrive, so the store deletes the old row when it does: call_id stays unique across partitions.
CREATE TABLE cdrs (
    call_id         text    NOT NULL,
    start_ms        bigint  NOT NULL,
    end_ms          bigint,
    last_event_ms   bigint  NOT NULL,
    direction       text    NOT NULL,
    outcome         text    NOT NULL,
    trunk_id        text,
    agent_id        text,
    queue           text,
    room_sid        text,
    room_name       text,
    body            jsonb   NOT NULL,
    updated_at_ms   bigint  NOT NULL,
    contribution    text,
    answer_ms       bigint,
    wrap_up_ms      bigint  NOT NULL DEFAULT 0,
    short_abandon   boolean NOT NULL DEFAULT false,
    transfer_type   text,
    PRIMARY KEY (call_id, start_ms)
) PARTITION BY RANGE (start_ms);
CREATE INDEX cdrs_by_start ON cdrs (start_ms, call_id);
CREATE INDEX cdrs_by_call ON cdrs (call_id);
CREATE INDEX cdrs_by_room_sid ON cdrs (room_sid);
CREATE INDEX cdrs_by_room_name ON cdrs (room_name);
CREATE INDEX cdrs_open ON cdrs (last_event_ms) WHERE outcome = 'in_progress';
CREATE INDEX cdrs_by_end ON cdrs (end_ms) WHERE end_ms IS NOT NULL;
CREATE TABLE cdrs_default PARTITION OF cdrs DEFAULT;

-- Metric rollups, as in the SQLite schema: the tally of the CDRs that started in each 15-minute
-- UTC bucket per direction, trunk, agent and queue ('' when none), kept exact by upsert_cdrs.
CREATE TABLE rollups (
    bucket_ms   bigint  NOT NULL,
    direction   text    NOT NULL,
    trunk_id    text    NOT NULL,
    agent_id    text    NOT NULL,
    queue       text    NOT NULL,
    tally       bytea   NOT NULL,
    PRIMARY KEY (bucket_ms, direction, trunk_id, agent_id, queue)
) PARTITION BY RANGE (bucket_ms);
CREATE TABLE rollups_default PARTITION OF rollups DEFAULT;

-- Slices (0 all calls, 1 by trunk, 2 by agent, 3 by queue) at three UTC levels (0 quarter-hour,
-- 1 hour, 2 day); direction 0 inbound, 1 outbound. `counters` repeats the tally's counters as
-- plain numbers (Tally::counters order) for SQL readers: see the callpulse_metrics_* views.
CREATE TABLE rollup_slices (
    slice       bigint   NOT NULL,
    level       bigint   NOT NULL,
    bucket_ms   bigint   NOT NULL,
    direction   bigint   NOT NULL,
    value       text     NOT NULL,
    tally       bytea    NOT NULL,
    counters    bigint[] NOT NULL,
    PRIMARY KEY (slice, level, bucket_ms, direction, value)
) PARTITION BY RANGE (bucket_ms);
CREATE TABLE rollup_slices_default PARTITION OF rollup_slices DEFAULT;

-- Progress markers of background tasks: the CDR pipeline's (xid, seq) position.
CREATE TABLE cursors (
    name    text    PRIMARY KEY,
    tx      bigint  NOT NULL,
    seq     bigint  NOT NULL
);

CREATE TABLE agent_states (
    agent_id    text    PRIMARY KEY,
    state       text    NOT NULL,
    at_ms       bigint  NOT NULL
);

CREATE TABLE alert_states (
    rule        text    NOT NULL,
    key         text    NOT NULL,
    state       text    NOT NULL,
    since_ms    bigint  NOT NULL,
    notice      text    NOT NULL,
    PRIMARY KEY (rule, key)
);

CREATE TABLE alert_notices (
    id          bigserial PRIMARY KEY,
    rule        text    NOT NULL,
    key         text    NOT NULL,
    status      text    NOT NULL,
    created_ms  bigint  NOT NULL,
    body        text    NOT NULL
);
CREATE INDEX alert_notices_by_time ON alert_notices (created_ms);

CREATE TABLE alert_deliveries (
    id              bigserial PRIMARY KEY,
    notice_id       bigint  NOT NULL REFERENCES alert_notices (id),
    channel         text    NOT NULL,
    attempts        bigint  NOT NULL DEFAULT 0,
    next_attempt_ms bigint  NOT NULL,
    delivered_ms    bigint,
    last_error      text,
    UNIQUE (notice_id, channel)
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (next_attempt_ms) WHERE delivered_ms IS NULL;
