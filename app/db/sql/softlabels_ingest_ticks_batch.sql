-- softlabels_ingest_ticks with a plan made for the batch's own size on every call, for large
-- batches (why: softlabels_ingest_votes_batch).
CREATE OR REPLACE FUNCTION softlabels_ingest_ticks_batch(
    bigint, text[], text[], text[], text[], text, text[], text[], integer[] DEFAULT NULL
)
RETURNS TABLE (inserted bigint, updated bigint, unchanged bigint, votes_version bigint,
               outcomes smallint[])
LANGUAGE sql VOLATILE
SET plan_cache_mode = force_custom_plan
AS $$ SELECT * FROM softlabels_ingest_ticks($1, $2, $3, $4, $5, $6, $7, $8, $9) $$;
