-- Stable views for Grafana and other SQL tools: their columns only ever grow. Times are
-- timestamptz; durations are seconds.

CREATE VIEW callpulse_cdrs AS
SELECT call_id,
       direction,
       outcome,
       to_timestamp(start_ms / 1000.0)                           AS start_time,
       to_timestamp(answer_ms / 1000.0)                          AS answer_time,
       to_timestamp(end_ms / 1000.0)                             AS end_time,
       (body ->> 'duration_seconds')::double precision          AS duration_seconds,
       (body ->> 'ring_duration_seconds')::double precision     AS ring_duration_seconds,
       (body ->> 'queue_wait_seconds')::double precision        AS queue_wait_seconds,
       body ->> 'caller_number'                                  AS caller_number,
       body ->> 'callee_number'                                  AS callee_number,
       trunk_id,
       agent_id,
       queue,
       room_name,
       room_sid,
       transfer_type,
       body ->> 'transfer_target'                                AS transfer_target,
       body ->> 'recording_url'                                  AS recording_url,
       (body ->> 'sip_error_code')::integer                      AS sip_error_code,
       body ->> 'disconnect_reason'                              AS disconnect_reason,
       short_abandon,
       wrap_up_ms / 1000.0                                       AS wrap_up_seconds
FROM cdrs;

-- One row per UTC bucket, dimension value and direction. `dimension` is all, trunk, agent or
-- queue; `value` is the trunk, agent or queue ('' for dimension all, and for calls without one).
-- The rates are of that row; to combine rows, sum the counts and divide (the formulas are in
-- METRICS.md and repeated here).
CREATE VIEW callpulse_metric_buckets AS
SELECT CASE s.level WHEN 0 THEN 'quarter_hour' WHEN 1 THEN 'hour' ELSE 'day' END AS granularity,
       to_timestamp(s.bucket_ms / 1000.0)                                   AS bucket,
       CASE s.slice WHEN 0 THEN 'all' WHEN 1 THEN 'trunk' WHEN 2 THEN 'agent' ELSE 'queue' END
                                                                            AS dimension,
       s.value,
       CASE s.direction WHEN 0 THEN 'inbound' ELSE 'outbound' END          AS direction,
       c[1]  AS total_calls,
       c[2]  AS inbound_calls,
       c[3]  AS outbound_calls,
       c[4]  AS answered_calls,
       c[5]  AS inbound_answered,
       c[6]  AS outbound_answered,
       c[7]  AS abandoned_calls,
       c[8]  AS short_abandoned_calls,
       c[9]  AS failed_calls,
       c[10] AS busy_calls,
       c[11] AS no_answer_calls,
       c[12] AS inbound_no_answer,
       c[13] AS inbound_failed,
       c[14] AS transferred_calls,
       c[15] AS in_progress_calls,
       c[16] AS answered_within_threshold,
       c[17] AS handled_calls,
       c[18] / 1000.0 AS handle_time_seconds,
       c[19] AS speed_of_answer_calls,
       c[20] / 1000.0 AS speed_of_answer_seconds,
       -- answered inbound / inbound
       c[5]::double precision / NULLIF(c[2], 0)                            AS answer_rate,
       -- (abandoned - short) / (inbound - inbound failed - short)
       (c[7] - c[8])::double precision / NULLIF(c[2] - c[13] - c[8], 0)    AS abandonment_rate,
       c[18] / 1000.0 / NULLIF(c[17], 0)                                   AS avg_handle_time_seconds,
       c[20] / 1000.0 / NULLIF(c[19], 0)                                   AS avg_speed_of_answer_seconds,
       -- within threshold / (inbound answered + inbound no answer + abandoned not short)
       c[16]::double precision / NULLIF(c[5] + c[12] + c[7] - c[8], 0)     AS service_level,
       c[14]::double precision / NULLIF(c[4], 0)                           AS transfer_rate,
       c[9]::double precision / NULLIF(c[1], 0)                            AS error_rate
FROM rollup_slices s
CROSS JOIN LATERAL (SELECT s.counters AS c) k;

CREATE VIEW callpulse_metrics_hourly AS
SELECT * FROM callpulse_metric_buckets WHERE granularity = 'hour';
CREATE VIEW callpulse_metrics_daily AS
SELECT * FROM callpulse_metric_buckets WHERE granularity = 'day';
