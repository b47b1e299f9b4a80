-- The project's votes version: the sum over its slots (softlabels_bump_votes_version). It only
-- ever goes up (deletes add too) and every change that commits raises it, so two snapshots with
-- the same version have the same votes: a fit stored with version V is exact for a reader that
-- sees V, and stale for one that sees more.
CREATE OR REPLACE FUNCTION softlabels_votes_version(p bigint) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT coalesce(sum(changes), 0)::bigint FROM project_vote_changes WHERE project_id = p
$$;
