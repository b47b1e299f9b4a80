"""write path: votes_version as a striped counter, and the vote upsert as one server-side call

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30

- `project_vote_changes(project_id, slot, changes)`: a writer adds 1 to one of 64 slots picked
  at random, so writers to different items rarely wait for each other. The project's votes
  version is the sum over its slots. It only ever goes up (deletes add too), and every change
  that commits raises it, so two snapshots with the same sum have the same votes: a fit stored
  with version V is exact for any reader that sees V, and stale for any that sees more.
- `api_keys.rate_limit_per_s`: a per-key request rate (NULL: the server's default).
- `softlabels_ingest_votes(...)`: the whole upsert (create items and workers, lock the batch's
  items in id order, upsert votes, apply the count deltas, bump the version) in one call, so a
  single vote costs one statement (autocommit) instead of ten round trips.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VERSION_SLOTS = 64

FUNCTIONS = f"""
CREATE FUNCTION softlabels_votes_version(p bigint) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT coalesce(sum(changes), 0)::bigint FROM project_vote_changes WHERE project_id = p
$$;

CREATE FUNCTION softlabels_bump_votes_version(p bigint) RETURNS void
LANGUAGE sql VOLATILE AS $$
    INSERT INTO project_vote_changes (project_id, slot, changes)
    VALUES (p, floor(random() * {VERSION_SLOTS})::smallint, 1)
    ON CONFLICT (project_id, slot)
    DO UPDATE SET changes = project_vote_changes.changes + 1
$$;

"""

# The vote upsert (migration 0007 replaces it with one that also records a tool's ids).
INGEST = f"""
-- Errors it raises: SLNOP (no such project), SLCLS (the caller's class list is out of date).
CREATE FUNCTION softlabels_ingest_votes(
    p bigint, expected_classes text[], item_ext text[], worker_ext text[], labels smallint[]
) RETURNS TABLE (inserted bigint, updated bigint, unchanged bigint, votes_version bigint)
LANGUAGE plpgsql VOLATILE
SET jit = off  -- compiling a plan for one pass over one batch costs more than it saves
AS $$
DECLARE
    k integer;
    stored_classes text[];
    written bigint;
BEGIN
    -- KEY SHARE: writers do not block each other, but a PATCH of the classes (which locks the
    -- row FOR UPDATE and refuses once votes exist) either waits for this batch or, if first,
    -- is seen here as changed classes.
    SELECT classes INTO stored_classes FROM projects WHERE id = p FOR KEY SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no project %', p USING ERRCODE = 'SLNOP';
    END IF;
    IF stored_classes IS DISTINCT FROM expected_classes THEN
        RAISE EXCEPTION 'classes of project % changed', p USING ERRCODE = 'SLCLS';
    END IF;
    k := cardinality(stored_classes);

    -- Sorted inserts, then locks in id order: concurrent batches that share items do not
    -- deadlock in the common case (the rare remaining deadlock is retried by the caller).
    INSERT INTO items (project_id, external_id, counts)
    SELECT p, x, array_fill(0, ARRAY[k]) FROM (SELECT DISTINCT unnest(item_ext) AS x) d
    ORDER BY x
    ON CONFLICT (project_id, external_id) DO NOTHING;
    -- Found by index probes, not `external_id = ANY(item_ext)`: without statistics that was
    -- planned as a scan of the table testing each row against the whole array.
    PERFORM 1 FROM items
    WHERE id IN (SELECT l.id FROM unnest(item_ext) AS x(ext)
                 CROSS JOIN LATERAL (SELECT id FROM items
                                     WHERE project_id = p AND external_id = x.ext OFFSET 0) l)
    ORDER BY id FOR UPDATE;
    INSERT INTO workers (project_id, external_id)
    SELECT p, x FROM (SELECT DISTINCT unnest(worker_ext) AS x) d ORDER BY x
    ON CONFLICT (project_id, external_id) DO NOTHING;

    -- One statement, one snapshot: `old` sees the votes as they were before `up` writes, which
    -- is what the counts delta needs. The batch's items are locked, so nobody changes them.
    WITH s AS (
        SELECT i.id AS item_id, w.id AS worker_id, b.label
        FROM unnest(item_ext, worker_ext, labels) AS b(item, worker, label)
        -- One index probe per row (OFFSET 0 keeps the planner from turning these into a
        -- join): without statistics (a new project, or autovacuum off) the plain join was
        -- planned as a hash join over every worker of the project, O(project) per vote.
        CROSS JOIN LATERAL (SELECT id FROM items
                            WHERE project_id = p AND external_id = b.item OFFSET 0) i
        CROSS JOIN LATERAL (SELECT id FROM workers
                            WHERE project_id = p AND external_id = b.worker OFFSET 0) w
    ), old AS (
        SELECT s.item_id, s.worker_id, s.label AS new_label, v.label AS old_label
        FROM s LEFT JOIN votes v ON v.item_id = s.item_id AND v.worker_id = s.worker_id
    ), up AS (
        INSERT INTO votes (item_id, worker_id, project_id, label)
        SELECT o.item_id, o.worker_id, p, o.new_label FROM old o
        WHERE o.old_label IS DISTINCT FROM o.new_label
        ON CONFLICT (item_id, worker_id)
        DO UPDATE SET label = EXCLUDED.label, updated_at = now()
        RETURNING 1
    ), delta AS (
        SELECT o.item_id, o.new_label AS cls, 1 AS d FROM old o
        WHERE o.old_label IS DISTINCT FROM o.new_label
        UNION ALL
        SELECT o.item_id, o.old_label, -1 FROM old o WHERE o.old_label <> o.new_label
    ), per_item AS (
        SELECT t.item_id, array_agg(t.cls) AS ks, array_agg(t.d) AS ds, sum(t.d) AS dn
        FROM (SELECT de.item_id, de.cls, sum(de.d)::int AS d FROM delta de
              GROUP BY de.item_id, de.cls) t
        WHERE t.d <> 0 GROUP BY t.item_id
    ), upd AS (
        UPDATE items i
        SET counts = softlabels_add_counts(i.counts, pi.ks, pi.ds), n_votes = i.n_votes + pi.dn,
            updated_at = now()
        FROM per_item pi WHERE i.id = pi.item_id
        RETURNING 1
    )
    SELECT count(*) FILTER (WHERE o.old_label IS NULL),
           count(*) FILTER (WHERE o.old_label <> o.new_label),
           count(*) FILTER (WHERE o.old_label = o.new_label),
           (SELECT count(*) FROM up)
    INTO inserted, updated, unchanged, written
    FROM old o;

    -- The bodies of softlabels_bump_votes_version / softlabels_votes_version, inline: a
    -- LANGUAGE sql function is parsed and planned on every call (~18% of a single vote's CPU).
    IF written > 0 THEN
        INSERT INTO project_vote_changes AS c (project_id, slot, changes)
        VALUES (p, floor(random() * {VERSION_SLOTS})::smallint, 1)
        ON CONFLICT (project_id, slot) DO UPDATE SET changes = c.changes + 1;
    END IF;
    SELECT coalesce(sum(c.changes), 0)::bigint INTO votes_version
    FROM project_vote_changes c WHERE c.project_id = p;
    RETURN NEXT;
END
$$;
"""


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE project_vote_changes (
            project_id bigint NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
            slot smallint NOT NULL,
            changes bigint NOT NULL,
            CONSTRAINT pk_project_vote_changes PRIMARY KEY (project_id, slot)
        )
        """
    )
    op.execute(
        "INSERT INTO project_vote_changes (project_id, slot, changes) "
        "SELECT id, 0, votes_version FROM projects WHERE votes_version > 0"
    )
    op.drop_column("projects", "votes_version")
    op.execute(FUNCTIONS)
    op.execute(INGEST)
    op.execute("ALTER TABLE api_keys ADD COLUMN rate_limit_per_s double precision")


def downgrade() -> None:
    op.execute("ALTER TABLE api_keys DROP COLUMN rate_limit_per_s")
    op.execute("DROP FUNCTION softlabels_ingest_votes(bigint, text[], text[], text[], smallint[])")
    op.execute("DROP FUNCTION softlabels_bump_votes_version(bigint)")
    op.execute("DROP FUNCTION softlabels_votes_version(bigint)")
    op.execute("ALTER TABLE projects ADD COLUMN votes_version bigint NOT NULL DEFAULT 0")
    op.execute(
        "UPDATE projects p SET votes_version = c.total FROM ("
        "SELECT project_id, sum(changes) AS total FROM project_vote_changes GROUP BY 1) c "
        "WHERE c.project_id = p.id"
    )
    op.execute("DROP TABLE project_vote_changes")
