"""task types: a project asks for one class (`single`), a set of classes (`multi_label`) or a
level on an ordered scale (`ordinal`)

- projects.task_type (CHECK), fixed once the project has votes (the API refuses the change);
  projects.level_values: an ordinal scale's numeric values (for mean and median), one per level;
- votes.ticks: a multi-label vote's set of class indices (sorted, distinct, possibly empty),
  with votes.label = -1; single and ordinal votes keep label (the class or level index) and no
  ticks. A multi-label item's counts[k] is how many of its voters ticked class k and n_votes is
  its number of voters, kept by softlabels_ingest_ticks as softlabels_ingest_votes keeps
  single-label counts;
- softlabels_ingest_votes refuses a multi-label project (the caller's cached project is stale),
  softlabels_emit_settled gives no entropy for a multi-label item (its counts are no
  distribution).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from app.db import sql

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# app.db.sql.digest() of the files this migration was written for (tests/test_sql_functions.py).
SQL_DIGEST = "e9eba9ef5de24eb0cf472624e4bee5f24a41aac6eb9e0c83e80c6eaac78b2d9e"


def upgrade() -> None:
    op.execute("ALTER TABLE projects ADD COLUMN task_type text NOT NULL DEFAULT 'single'")
    op.execute(
        "ALTER TABLE projects ADD CONSTRAINT ck_projects_task_type "
        "CHECK (task_type IN ('single', 'multi_label', 'ordinal'))"
    )
    op.execute("ALTER TABLE projects ADD COLUMN level_values double precision[]")
    op.execute(
        "ALTER TABLE projects ADD CONSTRAINT ck_projects_level_values CHECK (level_values IS NULL "
        "OR (task_type = 'ordinal' AND cardinality(level_values) = cardinality(classes)))"
    )
    op.execute("ALTER TABLE votes ADD COLUMN ticks smallint[]")
    # A vote is either a class/level index or a set of ticks, never both: a reader that takes
    # `label` as an index never meets the -1 of a multi-label vote unawares.
    op.execute(
        "ALTER TABLE votes ADD CONSTRAINT ck_votes_label_or_ticks "
        "CHECK ((ticks IS NULL AND label >= 0) OR (ticks IS NOT NULL AND label = -1))"
    )
    sql.apply(op.get_bind())


def downgrade() -> None:
    # Without task types a multi-label vote means nothing: refuse rather than drop votes.
    found = op.get_bind().exec_driver_sql(
        "SELECT EXISTS (SELECT 1 FROM votes WHERE ticks IS NOT NULL)"
    )
    if found.scalar_one():
        raise RuntimeError(
            "multi-label votes exist: delete those projects before downgrading below 0012"
        )
    for name in ("softlabels_ingest_ticks_batch", "softlabels_ingest_ticks"):
        op.execute(f"DROP FUNCTION IF EXISTS {name}")
    op.execute(PREVIOUS_INGEST_VOTES)
    op.execute(PREVIOUS_EMIT_SETTLED)
    op.execute("ALTER TABLE votes DROP CONSTRAINT ck_votes_label_or_ticks")
    op.execute("ALTER TABLE votes DROP COLUMN ticks")
    op.execute("ALTER TABLE projects DROP CONSTRAINT ck_projects_level_values")
    op.execute("ALTER TABLE projects DROP COLUMN level_values")
    op.execute("ALTER TABLE projects DROP CONSTRAINT ck_projects_task_type")
    op.execute("ALTER TABLE projects DROP COLUMN task_type")


# The two functions as migration 0010 applied them.
PREVIOUS_INGEST_VOTES = """
-- Errors it raises: SLNOP (no such project), SLCLS (the caller's class list is out of date).
CREATE OR REPLACE FUNCTION softlabels_ingest_votes(
    p bigint, expected_classes text[], item_ext text[], worker_ext text[], labels smallint[],
    vote_source text, refs text[], tasks text[]
) RETURNS TABLE (inserted bigint, updated bigint, unchanged bigint, votes_version bigint)
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
    written bigint;
    batch_item_ext text[];
    batch_item_id bigint[];
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
        SELECT i.id AS item_id, w.id AS worker_id, w.excluded, b.label, b.ref, b.task
        FROM unnest(item_ext, worker_ext, labels,
                    coalesce(refs, array_fill(NULL::text, ARRAY[cardinality(item_ext)])),
                    coalesce(tasks, array_fill(NULL::text, ARRAY[cardinality(item_ext)])))
             AS b(item, worker, label, ref, task)
        -- Item ids from the statement above (a join of two arrays); workers by one index
        -- probe per row (OFFSET 0 keeps the planner from turning it into a join): without
        -- statistics the plain join was planned as a hash join over every worker of the
        -- project, O(project) per vote.
        JOIN unnest(batch_item_ext, batch_item_id) AS i(ext, id) ON i.ext = b.item
        CROSS JOIN LATERAL (SELECT id, excluded FROM workers
                            WHERE project_id = p AND external_id = b.worker OFFSET 0) w
    ), old AS (
        SELECT s.item_id, s.worker_id, s.excluded, s.ref, s.task, s.label AS new_label,
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
           (SELECT count(*) FROM up)
    INTO inserted, updated, unchanged, written
    FROM old o;

    -- The bodies of softlabels_bump_votes_version / softlabels_votes_version, inline: a
    -- LANGUAGE sql function is parsed and planned on every call (~18% of a single vote's CPU).
    IF written > 0 THEN
        INSERT INTO project_vote_changes AS c (project_id, slot, changes)
        VALUES (p, floor(random() * 64)::smallint, 1)
        ON CONFLICT (project_id, slot) DO UPDATE SET changes = c.changes + 1;
        PERFORM softlabels_emit_settled(p);
    END IF;
    SELECT coalesce(sum(c.changes), 0)::bigint INTO votes_version
    FROM project_vote_changes c WHERE c.project_id = p;
    RETURN NEXT;
END
$$;
"""

PREVIOUS_EMIT_SETTLED = """
-- `item.settled` for the items this transaction changed (their updated_at = now()), for each
-- subscription that asks for it: a webhook_deliveries row and a queue job (procrastinate's own
-- defer function, the lock keeping one item's deliveries in order), in the caller's transaction.
-- One indexed lookup when the project has no such subscription (app/webhooks.py).
CREATE OR REPLACE FUNCTION softlabels_emit_settled(p bigint) RETURNS integer
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    jobs procrastinate_job_to_defer_v1[];
BEGIN
    IF NOT EXISTS (SELECT 1 FROM webhook_subscriptions
                   WHERE project_id = p AND active AND 'item.settled' = ANY(events)) THEN
        RETURN 0;
    END IF;
    WITH subs AS (
        SELECT id, settle_votes, settle_entropy FROM webhook_subscriptions
        WHERE project_id = p AND active AND 'item.settled' = ANY(events)
    ), touched AS (
        SELECT i.id, i.external_id, i.counts, i.n_votes,
               CASE WHEN i.n_votes < 2 THEN NULL ELSE (
                   SELECT -sum((c::float8 / i.n_votes) * ln(c::float8 / i.n_votes))
                          / ln(cardinality(i.counts))
                   FROM unnest(i.counts) AS c WHERE c > 0) END AS entropy
        FROM items i WHERE i.project_id = p AND i.updated_at = now()
    ), ins AS (
        INSERT INTO webhook_deliveries
            (subscription_id, msg_id, event, order_key, dedupe_key, payload)
        SELECT s.id, 'msg_' || md5(random()::text || clock_timestamp()::text), 'item.settled',
               'item:' || t.external_id, NULL,
               jsonb_build_object(
                   'type', 'item.settled', 'timestamp',
                   to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                   'data', jsonb_build_object(
                       'project', (SELECT name FROM projects WHERE id = p),
                       'item', t.external_id, 'n_votes', t.n_votes, 'entropy', t.entropy,
                       'counts', (SELECT jsonb_object_agg(k.name, t.counts[k.ord])
                                  FROM unnest((SELECT classes FROM projects WHERE id = p))
                                       WITH ORDINALITY AS k(name, ord))))
        FROM subs s JOIN touched t ON
            (s.settle_votes IS NOT NULL AND t.n_votes >= s.settle_votes)
            OR (s.settle_entropy IS NOT NULL AND t.entropy IS NOT NULL
                AND t.entropy < s.settle_entropy)
        ORDER BY t.id
        RETURNING id, subscription_id, order_key
    )
    SELECT array_agg(ROW('webhooks', 'softlabels.webhook', 0,
                         'webhook:' || subscription_id || ':' || order_key, NULL,
                         jsonb_build_object('delivery_id', id), NULL
                        )::procrastinate_job_to_defer_v1 ORDER BY id)
    INTO jobs FROM ins;
    IF jobs IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM procrastinate_defer_jobs_v1(jobs);
    RETURN cardinality(jobs);
END
$$;
"""
