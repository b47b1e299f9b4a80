"""batches that share items overlap: the ingest functions lock items last

softlabels_ingest_votes and softlabels_ingest_ticks took their items' row locks (FOR UPDATE,
through a no-op ON CONFLICT update) in their first statement and held them to the commit, so
concurrent batches on shared items ran one after another. They now insert new votes with ON
CONFLICT DO NOTHING, lock the votes that were there (NO KEY UPDATE, key order) to read what they
were, and lock the items (NO KEY UPDATE) only for the counts update at the end. Same arguments
and results. app/votes/lifecycle.py takes its locks in the same order (votes before items).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from app.db import sql

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# app.db.sql.digest() of the files this migration was written for (tests/test_sql_functions.py).
SQL_DIGEST = "6b0ba422981519968932e66fe08e20e4c0d8dfbb66a1d6756e28ef90863e8cc1"


def upgrade() -> None:
    sql.apply(op.get_bind())


def downgrade() -> None:
    # Same signatures: the previous bodies replace the new ones in place.
    for text in (PREVIOUS_INGEST_VOTES, PREVIOUS_INGEST_TICKS):
        op.execute(text.replace("{VERSION_SLOTS}", str(sql.VERSION_SLOTS)))


# app/db/sql/softlabels_ingest_votes.sql as migration 0013 applied it.
PREVIOUS_INGEST_VOTES = """
CREATE OR REPLACE FUNCTION softlabels_ingest_votes(
    p bigint, expected_classes text[], item_ext text[], worker_ext text[], labels smallint[],
    vote_source text, refs text[], tasks text[], requests integer[] DEFAULT NULL
) RETURNS TABLE (inserted bigint, updated bigint, unchanged bigint, votes_version bigint,
                 outcomes smallint[])
LANGUAGE plpgsql VOLATILE
SET jit = off  -- compiling a plan for one pass over one batch costs more than it saves
-- Every lookup here is by key. Planner statistics can be far off (a table emptied and vacuumed,
-- then refilled by one import; autovacuum off): a "tiny" table then gets a sequential scan per
-- probed row. Without seq scans the plans are index probes whatever the statistics say.
SET enable_seqscan = off
AS $$
DECLARE
    k integer;
    stored_classes text[];
    stored_type text;
    written bigint;
    bumps bigint;
    batch_item_ext text[];
    batch_item_id bigint[];
BEGIN
    -- KEY SHARE: writers do not block each other, but a PATCH of the classes (which locks the
    -- row FOR UPDATE and refuses once votes exist) either waits for this batch or, if first,
    -- is seen here as changed classes.
    SELECT classes, task_type INTO stored_classes, stored_type FROM projects WHERE id = p
    FOR KEY SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no project %', p USING ERRCODE = 'SLNOP';
    END IF;
    -- A multi-label project's votes are sets (softlabels_ingest_ticks): the caller validated
    -- against a project that has changed since (its task type, like its classes, can change
    -- until the first vote).
    IF stored_classes IS DISTINCT FROM expected_classes OR stored_type = 'multi_label' THEN
        RAISE EXCEPTION 'classes or task type of project % changed', p USING ERRCODE = 'SLCLS';
    END IF;
    k := cardinality(stored_classes);

    -- The batch's items: created if new, locked, and their ids, in one statement that finds
    -- them through the unique index (ON CONFLICT's arbiter), not through a plan: with stale
    -- statistics the planner probed (project_id, id) and filtered on the external id, a scan
    -- of the project per vote (160 s for one 50k batch, benchmarks/results/ingest.md). The
    -- no-op update is the lock (an existing row is rewritten, in place when it can be: HOT).
    -- Sorted by external id, so concurrent batches that share items take their locks in the
    -- same order (the rare remaining deadlock is retried by the caller).
    WITH r AS (
        INSERT INTO items AS i (project_id, external_id, counts)
        SELECT p, x, array_fill(0, ARRAY[k]) FROM (SELECT DISTINCT unnest(item_ext) AS x) d
        ORDER BY x
        ON CONFLICT (project_id, external_id) DO UPDATE SET external_id = EXCLUDED.external_id
        RETURNING i.id, i.external_id
    )
    SELECT array_agg(r.external_id), array_agg(r.id) INTO batch_item_ext, batch_item_id FROM r;
    INSERT INTO workers (project_id, external_id)
    SELECT p, x FROM (SELECT DISTINCT unnest(worker_ext) AS x) d ORDER BY x
    ON CONFLICT (project_id, external_id) DO NOTHING;
    -- FOR SHARE: excluding a worker (app/lifecycle.py) waits for this batch, and this batch for
    -- it, so the counts never include an excluded worker's vote or miss an included one's.
    PERFORM 1 FROM workers
    WHERE id IN (SELECT l.id FROM unnest(worker_ext) AS x(ext)
                 CROSS JOIN LATERAL (SELECT id FROM workers
                                     WHERE project_id = p AND external_id = x.ext OFFSET 0) l)
    ORDER BY id FOR SHARE;

    -- One statement, one snapshot: `old` sees the votes as they were before `up` writes, which
    -- is what the counts delta needs. The batch's items are locked, so nobody changes them.
    WITH s AS (
        SELECT i.id AS item_id, w.id AS worker_id, w.excluded, b.label, b.ref, b.task, b.n,
               requests[b.n::integer] AS req
        FROM unnest(item_ext, worker_ext, labels,
                    coalesce(refs, array_fill(NULL::text, ARRAY[cardinality(item_ext)])),
                    coalesce(tasks, array_fill(NULL::text, ARRAY[cardinality(item_ext)])))
             WITH ORDINALITY AS b(item, worker, label, ref, task, n)
        -- Item ids from the statement above (a join of two arrays); workers by one index
        -- probe per row (OFFSET 0 keeps the planner from turning it into a join): without
        -- statistics the plain join was planned as a hash join over every worker of the
        -- project, O(project) per vote.
        JOIN unnest(batch_item_ext, batch_item_id) AS i(ext, id) ON i.ext = b.item
        CROSS JOIN LATERAL (SELECT id, excluded FROM workers
                            WHERE project_id = p AND external_id = b.worker OFFSET 0) w
    ), old AS (
        SELECT s.item_id, s.worker_id, s.excluded, s.ref, s.task, s.n, s.req,
               s.label AS new_label,
               v.label AS old_label,
               -- a tool's vote with a new annotation id or task is rewritten, same label or not
               (s.ref IS NOT NULL AND (v.tool_ref, v.tool_task) IS DISTINCT FROM (s.ref, s.task))
                   AS new_ref
        FROM s LEFT JOIN votes v ON v.item_id = s.item_id AND v.worker_id = s.worker_id
    ), up AS (
        INSERT INTO votes (item_id, worker_id, project_id, label, source, tool_ref, tool_task)
        SELECT o.item_id, o.worker_id, p, o.new_label, vote_source, o.ref, o.task FROM old o
        WHERE o.old_label IS DISTINCT FROM o.new_label OR o.new_ref
        ON CONFLICT (item_id, worker_id)
        DO UPDATE SET label = EXCLUDED.label, updated_at = now(), source = EXCLUDED.source,
                      tool_ref = EXCLUDED.tool_ref, tool_task = EXCLUDED.tool_task
        RETURNING 1
    ), delta AS (
        -- Excluded workers' votes are stored but never counted (app/lifecycle.py).
        SELECT o.item_id, o.new_label AS cls, 1 AS d FROM old o
        WHERE o.old_label IS DISTINCT FROM o.new_label AND NOT o.excluded
        UNION ALL
        SELECT o.item_id, o.old_label, -1 FROM old o
        WHERE o.old_label <> o.new_label AND NOT o.excluded
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
           (SELECT count(*) FROM up),
           count(DISTINCT o.req) FILTER (WHERE o.old_label IS DISTINCT FROM o.new_label
                                         OR o.new_ref),
           array_agg((CASE WHEN o.old_label IS NULL THEN 0
                           WHEN o.old_label <> o.new_label THEN 1 ELSE 2 END)::smallint
                     ORDER BY o.n) FILTER (WHERE requests IS NOT NULL)
    INTO inserted, updated, unchanged, written, bumps, outcomes
    FROM old o;

    -- The bodies of softlabels_bump_votes_version / softlabels_votes_version, inline: a
    -- LANGUAGE sql function is parsed and planned on every call (~18% of a single vote's CPU).
    IF written > 0 THEN
        IF requests IS NULL THEN
            bumps := 1;
        END IF;
        INSERT INTO project_vote_changes AS c (project_id, slot, changes)
        VALUES (p, floor(random() * {VERSION_SLOTS})::smallint, bumps)
        ON CONFLICT (project_id, slot) DO UPDATE SET changes = c.changes + EXCLUDED.changes;
        PERFORM softlabels_emit_settled(p);
    END IF;
    SELECT coalesce(sum(c.changes), 0)::bigint INTO votes_version
    FROM project_vote_changes c WHERE c.project_id = p;
    RETURN NEXT;
END
$$;
"""

# app/db/sql/softlabels_ingest_ticks.sql as migration 0013 applied it.
PREVIOUS_INGEST_TICKS = """
CREATE OR REPLACE FUNCTION softlabels_ingest_ticks(
    p bigint, expected_classes text[], item_ext text[], worker_ext text[], tick_sets text[],
    vote_source text, refs text[], tasks text[], requests integer[] DEFAULT NULL
) RETURNS TABLE (inserted bigint, updated bigint, unchanged bigint, votes_version bigint,
                 outcomes smallint[])
LANGUAGE plpgsql VOLATILE
SET jit = off
-- Lookups by key only, whatever the statistics say (see softlabels_ingest_votes).
SET enable_seqscan = off
AS $$
DECLARE
    k integer;
    stored_classes text[];
    stored_type text;
    written bigint;
    bumps bigint;
    batch_item_ext text[];
    batch_item_id bigint[];
BEGIN
    -- Locks and checks as softlabels_ingest_votes does, for the other task type.
    SELECT classes, task_type INTO stored_classes, stored_type FROM projects WHERE id = p
    FOR KEY SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no project %', p USING ERRCODE = 'SLNOP';
    END IF;
    IF stored_classes IS DISTINCT FROM expected_classes OR stored_type <> 'multi_label' THEN
        RAISE EXCEPTION 'classes or task type of project % changed', p USING ERRCODE = 'SLCLS';
    END IF;
    k := cardinality(stored_classes);

    WITH r AS (
        INSERT INTO items AS i (project_id, external_id, counts)
        SELECT p, x, array_fill(0, ARRAY[k]) FROM (SELECT DISTINCT unnest(item_ext) AS x) d
        ORDER BY x
        ON CONFLICT (project_id, external_id) DO UPDATE SET external_id = EXCLUDED.external_id
        RETURNING i.id, i.external_id
    )
    SELECT array_agg(r.external_id), array_agg(r.id) INTO batch_item_ext, batch_item_id FROM r;
    INSERT INTO workers (project_id, external_id)
    SELECT p, x FROM (SELECT DISTINCT unnest(worker_ext) AS x) d ORDER BY x
    ON CONFLICT (project_id, external_id) DO NOTHING;
    PERFORM 1 FROM workers
    WHERE id IN (SELECT l.id FROM unnest(worker_ext) AS x(ext)
                 CROSS JOIN LATERAL (SELECT id FROM workers
                                     WHERE project_id = p AND external_id = x.ext OFFSET 0) l)
    ORDER BY id FOR SHARE;

    -- One statement, one snapshot, as in softlabels_ingest_votes. `fresh`: no vote before (an
    -- empty set is a vote, so "no ticks" cannot say it); `moved`: a new or different set.
    WITH s AS (
        SELECT i.id AS item_id, w.id AS worker_id, w.excluded, b.t::smallint[] AS ticks,
               b.ref, b.task, b.n, requests[b.n::integer] AS req
        FROM unnest(item_ext, worker_ext, tick_sets,
                    coalesce(refs, array_fill(NULL::text, ARRAY[cardinality(item_ext)])),
                    coalesce(tasks, array_fill(NULL::text, ARRAY[cardinality(item_ext)])))
             WITH ORDINALITY AS b(item, worker, t, ref, task, n)
        JOIN unnest(batch_item_ext, batch_item_id) AS i(ext, id) ON i.ext = b.item
        CROSS JOIN LATERAL (SELECT id, excluded FROM workers
                            WHERE project_id = p AND external_id = b.worker OFFSET 0) w
    ), old AS (
        SELECT s.item_id, s.worker_id, s.excluded, s.ref, s.task, s.n, s.req,
               s.ticks AS new_ticks,
               v.ticks AS old_ticks, v.item_id IS NULL AS fresh,
               (v.item_id IS NULL OR v.ticks IS DISTINCT FROM s.ticks) AS moved,
               (s.ref IS NOT NULL AND (v.tool_ref, v.tool_task) IS DISTINCT FROM (s.ref, s.task))
                   AS new_ref
        FROM s LEFT JOIN votes v ON v.item_id = s.item_id AND v.worker_id = s.worker_id
    ), up AS (
        INSERT INTO votes (item_id, worker_id, project_id, label, ticks, source, tool_ref,
                           tool_task)
        SELECT o.item_id, o.worker_id, p, -1, o.new_ticks, vote_source, o.ref, o.task FROM old o
        WHERE o.moved OR o.new_ref
        ON CONFLICT (item_id, worker_id)
        DO UPDATE SET label = EXCLUDED.label, ticks = EXCLUDED.ticks, updated_at = now(),
                      source = EXCLUDED.source, tool_ref = EXCLUDED.tool_ref,
                      tool_task = EXCLUDED.tool_task
        RETURNING 1
    ), delta AS (
        -- Excluded workers' votes are stored but never counted (app/votes/lifecycle.py).
        SELECT o.item_id, c AS cls, 1 AS d FROM old o CROSS JOIN LATERAL unnest(o.new_ticks) c
        WHERE o.moved AND NOT o.excluded
        UNION ALL
        SELECT o.item_id, c, -1 FROM old o CROSS JOIN LATERAL unnest(o.old_ticks) c
        WHERE o.moved AND NOT o.fresh AND NOT o.excluded
    ), per_class AS (
        SELECT t.item_id, array_agg(t.cls) AS ks, array_agg(t.d) AS ds
        FROM (SELECT de.item_id, de.cls::int AS cls, sum(de.d)::int AS d FROM delta de
              GROUP BY de.item_id, de.cls) t
        WHERE t.d <> 0 GROUP BY t.item_id
    ), voters AS (
        SELECT o.item_id, count(*)::int AS dn FROM old o WHERE o.fresh AND NOT o.excluded
        GROUP BY o.item_id
    ), per_item AS (
        -- An item may gain a voter and no tick (an empty set), or ticks and no voter.
        SELECT coalesce(c.item_id, n.item_id) AS item_id, coalesce(c.ks, '{}') AS ks,
               coalesce(c.ds, '{}') AS ds, coalesce(n.dn, 0) AS dn
        FROM per_class c FULL JOIN voters n ON n.item_id = c.item_id
    ), upd AS (
        UPDATE items i
        SET counts = softlabels_add_counts(i.counts, pi.ks, pi.ds), n_votes = i.n_votes + pi.dn,
            updated_at = now()
        FROM per_item pi WHERE i.id = pi.item_id
        RETURNING 1
    )
    SELECT count(*) FILTER (WHERE o.fresh),
           count(*) FILTER (WHERE o.moved AND NOT o.fresh),
           count(*) FILTER (WHERE NOT o.moved),
           (SELECT count(*) FROM up),
           count(DISTINCT o.req) FILTER (WHERE o.moved OR o.new_ref),
           array_agg((CASE WHEN o.fresh THEN 0 WHEN o.moved THEN 1 ELSE 2 END)::smallint
                     ORDER BY o.n) FILTER (WHERE requests IS NOT NULL)
    INTO inserted, updated, unchanged, written, bumps, outcomes
    FROM old o;

    -- The version bump inline, as in softlabels_ingest_votes, by one per writing request.
    IF written > 0 THEN
        IF requests IS NULL THEN
            bumps := 1;
        END IF;
        INSERT INTO project_vote_changes AS c (project_id, slot, changes)
        VALUES (p, floor(random() * {VERSION_SLOTS})::smallint, bumps)
        ON CONFLICT (project_id, slot) DO UPDATE SET changes = c.changes + EXCLUDED.changes;
        PERFORM softlabels_emit_settled(p);
    END IF;
    SELECT coalesce(sum(c.changes), 0)::bigint INTO votes_version
    FROM project_vote_changes c WHERE c.project_id = p;
    RETURN NEXT;
END
$$;
"""
