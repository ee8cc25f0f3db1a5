-- What each CDR added to the rollups, as the rollups' own binary tally (its dimensions are the
-- row's columns). It replaces the JSON `contribution`, which rows written before keep and are read
-- from until rewritten: reading a window's edge from it is several times cheaper than from JSON.
ALTER TABLE cdrs ADD COLUMN contribution_tally BLOB;
