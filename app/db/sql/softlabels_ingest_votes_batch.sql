-- softlabels_ingest_votes with a plan made for the batch's own size on every call: PL/pgSQL
-- caches a generic plan per statement after a few calls, costed for an unnest of 10 rows, which
-- on a large batch probes each vote's item by scanning the project. A function's SET clause holds
-- for everything it calls. Single votes keep the plain function: their generic plan is costed
-- for their size, and re-planning every call costs ~0.9 ms (the caller picks by batch size).
CREATE OR REPLACE FUNCTION softlabels_ingest_votes_batch(
    bigint, text[], text[], text[], smallint[], text, text[], text[], integer[] DEFAULT NULL
)
RETURNS TABLE (inserted bigint, updated bigint, unchanged bigint, votes_version bigint,
               outcomes smallint[])
LANGUAGE sql VOLATILE
SET plan_cache_mode = force_custom_plan
AS $$ SELECT * FROM softlabels_ingest_votes($1, $2, $3, $4, $5, $6, $7, $8, $9) $$;
