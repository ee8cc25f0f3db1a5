-- Alerting: the state of each alert (rule and key), the notices of its transitions, and one
-- delivery per notice and channel: the outbox, written in the same transaction as the state.

CREATE TABLE alert_states (
    rule        TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    since_ms    INTEGER NOT NULL,
    notice      TEXT    NOT NULL,
    PRIMARY KEY (rule, key)
);

CREATE TABLE alert_notices (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    rule        TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    created_ms  INTEGER NOT NULL,
    body        TEXT    NOT NULL
);
CREATE INDEX alert_notices_by_time ON alert_notices (created_ms);

CREATE TABLE alert_deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    notice_id       INTEGER NOT NULL REFERENCES alert_notices (id),
    channel         TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    delivered_ms    INTEGER,
    last_error      TEXT,
    UNIQUE (notice_id, channel)
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (next_attempt_ms) WHERE delivered_ms IS NULL;
