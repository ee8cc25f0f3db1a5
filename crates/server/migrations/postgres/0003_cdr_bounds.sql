-- The latest call start stored, kept by every CDR write, so a metric query reads one row instead
-- of the newest row of every CDR partition. Only ever raised: "at least the latest start".
CREATE TABLE cdr_bounds (
    only_row        boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    latest_start_ms bigint
);
INSERT INTO cdr_bounds (latest_start_ms) SELECT MAX(start_ms) FROM cdrs;
