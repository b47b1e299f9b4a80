-- One more change to the project's votes: +1 in one of VERSION_SLOTS slots (app/db/sql/__init__.py)
-- picked at random, so concurrent writers rarely wait for each other's row lock. The votes
-- version is the sum over the slots (softlabels_votes_version).
CREATE OR REPLACE FUNCTION softlabels_bump_votes_version(p bigint) RETURNS void
LANGUAGE sql VOLATILE AS $$
    INSERT INTO project_vote_changes (project_id, slot, changes)
    VALUES (p, floor(random() * {VERSION_SLOTS})::smallint, 1)
    ON CONFLICT (project_id, slot)
    DO UPDATE SET changes = project_vote_changes.changes + 1
$$;
