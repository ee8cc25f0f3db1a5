-- An append in one round trip: the function runs in the caller's transaction (its own, called
-- outside one), and each statement inside takes a fresh snapshot, so the lookup sees every
-- append of the same ids that committed while this one waited for their locks. Sent as separate
-- statements, an append was seven round trips (begin, locks, lookup, log rows, call events,
-- agent states, commit), each a wait for its task to be scheduled again among the requests.
--
-- Arrays run in parallel, one element per event of the batch; the call event and agent report
-- columns are NULL for an event without one. Returns the position in the batch (from 1) and the
-- sequence number of every event stored; the others were already logged, or repeat an earlier
-- event of the batch.
CREATE FUNCTION callpulse_append(
    p_source text[], p_event_id text[], p_event_type text[], p_occurred_ms bigint[],
    p_received_at_ms bigint[], p_body bytea[],
    p_call_id text[], p_room_sid text[], p_room_name text[], p_at_ms bigint[],
    p_call_event_type text[], p_call_event text[],
    p_agent_id text[], p_agent_state text[], p_agent_at_ms bigint[])
RETURNS TABLE (ord bigint, seq bigint)
-- Planned once per session: a custom plan for each call's arrays (the cache's choice) spent a
-- quarter of the server's time planning over the partitions again.
SET plan_cache_mode = force_generic_plan
LANGUAGE plpgsql VOLATILE AS $$
-- The result's column names (ord, seq) are also columns of the tables read: a bare name means the
-- column.
#variable_conflict use_column
DECLARE
    stored_ord bigint[];
    stored_seq bigint[];
BEGIN
    -- The primary key holds the partition key, so it only finds a repeated id within one
    -- partition. Each id is locked instead (in one order, so batches cannot deadlock) and looked
    -- for in every partition: an id is stored once, whatever its time says.
    PERFORM pg_advisory_xact_lock(h)
    FROM (SELECT DISTINCT hashtext(s || ':' || e) AS h
          FROM UNNEST(p_source, p_event_id) AS k(s, e) ORDER BY h) ids;

    WITH input AS (
        SELECT * FROM UNNEST(p_source, p_event_id, p_event_type, p_occurred_ms,
                             p_received_at_ms, p_body, p_call_id, p_room_sid, p_room_name,
                             p_at_ms, p_call_event_type, p_call_event)
            WITH ORDINALITY AS i(source, event_id, event_type, occurred_ms, received_at_ms, body,
                                 call_id, room_sid, room_name, at_ms, call_event_type,
                                 call_event, ord)
    ),
    fresh AS (
        SELECT DISTINCT ON (i.source, i.event_id) i.*
        FROM input i
        -- A lookup per event, which the planner makes an index probe per partition whatever
        -- the tables' statistics say (`NOT EXISTS`, an anti-join, was planned as a hash join
        -- over a sequential scan of every partition while they were new).
        WHERE (SELECT true FROM event_log l
               WHERE l.source = i.source AND l.event_id = i.event_id LIMIT 1) IS NULL
        ORDER BY i.source, i.event_id, i.ord
    ),
    -- The lookup under the locks is the word on what is new, so the rows are numbered here and
    -- inserted without ON CONFLICT: a conflict would be a broken lock, and fails the append.
    numbered AS (
        SELECT f.*, nextval('event_log_seq') AS seq FROM fresh f ORDER BY f.ord
    ),
    logged AS (
        INSERT INTO event_log
            (seq, source, event_id, event_type, occurred_ms, received_at_ms, body)
        SELECT seq, source, event_id, event_type, occurred_ms, received_at_ms, body
        FROM numbered
    ),
    indexed AS (
        INSERT INTO call_events
            (seq, call_id, room_sid, room_name, at_ms, received_at_ms, event_type, body)
        SELECT n.seq, n.call_id, n.room_sid, n.room_name, n.at_ms, n.received_at_ms,
               n.call_event_type, n.call_event
        FROM numbered n WHERE n.call_event IS NOT NULL
    )
    SELECT array_agg(n.ord ORDER BY n.ord), array_agg(n.seq ORDER BY n.ord)
    INTO stored_ord, stored_seq FROM numbered n;

    -- An agent's latest report by event time wins; of equal times, the later in the batch.
    INSERT INTO agent_states (agent_id, state, at_ms)
    SELECT DISTINCT ON (a.agent_id) a.agent_id, a.state, a.at_ms
    FROM UNNEST(p_agent_id, p_agent_state, p_agent_at_ms) WITH ORDINALITY AS a(agent_id, state, at_ms, ord)
    WHERE a.agent_id IS NOT NULL AND a.ord = ANY (stored_ord)
    ORDER BY a.agent_id, a.at_ms DESC, a.ord DESC
    ON CONFLICT (agent_id) DO UPDATE SET state = excluded.state, at_ms = excluded.at_ms
    WHERE excluded.at_ms >= agent_states.at_ms;
    IF FOUND THEN
        PERFORM pg_notify('callpulse_agents', '');
    END IF;

    RETURN QUERY SELECT * FROM UNNEST(stored_ord, stored_seq);
END
$$;
