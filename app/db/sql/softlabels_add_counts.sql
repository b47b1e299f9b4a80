-- Adds a sparse delta (class indices `ks`, changes `ds`) to a count vector, so a batch touches
-- each item's counts once, in O(changes) per item (the vote upsert, vote deletes).
CREATE OR REPLACE FUNCTION softlabels_add_counts(counts integer[], ks integer[], ds integer[])
RETURNS integer[] LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    i integer;
BEGIN
    FOR i IN 1 .. coalesce(array_length(ks, 1), 0) LOOP
        counts[ks[i] + 1] := counts[ks[i] + 1] + ds[i];
    END LOOP;
    RETURN counts;
END
$$;
