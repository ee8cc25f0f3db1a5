-- The calls of a room are found through the legs' SIP events in `call_events` (which name the call
-- and its room, and are indexed by room already), not through the CDRs' room columns. Room sids
-- and names are random keys: these two indexes cost every CDR write two page writes at random
-- places, and the pipeline rewrites a call's CDR about once for every two of its events.
DROP INDEX cdrs_by_room_sid;
DROP INDEX cdrs_by_room_name;
