-- Live state: each agent's latest reported state, and the newest finished calls.

CREATE TABLE agent_states (
    agent_id    TEXT    PRIMARY KEY,
    state       TEXT    NOT NULL,
    at_ms       INTEGER NOT NULL
);

-- Reports logged before this table existed: the latest by event time wins.
INSERT INTO agent_states (agent_id, state, at_ms)
SELECT json_extract(body, '$.agent_id'),
       json_extract(body, '$.state'),
       CAST(ROUND((julianday(json_extract(body, '$.at')) - 2440587.5) * 86400000) AS INTEGER)
FROM event_log
WHERE source = 'app' AND event_type = 'agent_state'
  AND json_valid(body)
  AND json_extract(body, '$.agent_id') IS NOT NULL
  AND julianday(json_extract(body, '$.at')) IS NOT NULL
ORDER BY seq
ON CONFLICT (agent_id) DO UPDATE SET state = excluded.state, at_ms = excluded.at_ms
WHERE excluded.at_ms >= agent_states.at_ms;

CREATE INDEX cdrs_by_end ON cdrs (end_ms) WHERE end_ms IS NOT NULL;
