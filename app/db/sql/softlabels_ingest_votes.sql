-- Errors it raises: SLNOP (no such project), SLCLS (the caller's class list or task type is out
-- of date), 40001 (an item or vote it found was deleted before it could lock it: redo the call,
-- as for a deadlock). Single-label and ordinal votes: `labels` are class or level indices.
-- `requests` (group commit, app/votes/group_commit.py): several API requests' votes in one call,
-- vote i from request requests[i]. The votes version then rises once per request that changed
-- something, as if each had been its own call, and `outcomes` gives each vote's fate in input
-- order (0 inserted, 1 updated, 2 unchanged) so that each request gets its own counts. NULL: the
-- batch is one request, and `outcomes` is NULL.
--
-- Locks, and why batches that share items do not queue on each other: the project (KEY
-- SHARE); the workers (SHARE, id order); new votes as they are inserted and the votes that
-- were there (NO KEY UPDATE), both in (item, worker) order, so only a batch writing the same
-- vote waits; and last, only for the counts update before the commit, the items of the votes
-- written (NO KEY UPDATE, external-id order). The vote-row locks come before the item locks
-- in every writer (app/votes/lifecycle.py), so none waits on another in a cycle. Before, the
-- first statement locked every item of the batch FOR UPDATE until the commit, and concurrent
-- batches of 20-500 votes on 3,000 items ran one at a time (benchmarks/load.py: 19 of 20
-- backends waiting on a lock). Items are not KEY SHARE-locked on the way in: with every batch
-- sharing them, each lock made a multixact, and their lookups came to dominate the CPU.
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
    n_twice bigint;
    n_locked integer;
    -- The items of the votes written.
    w_item bigint[];
    batch_item_ext text[];
    batch_item_id bigint[];
    -- The batch's votes resolved to ids, in key order; `fresh`: inserted by this call.
    v_item bigint[];
    v_worker bigint[];
    v_excluded boolean[];
    v_label smallint[];
    v_ref text[];
    v_task text[];
    v_n bigint[];
    v_fresh boolean[];
    -- The votes that existed, locked: position in the v_ arrays, and what they were.
    e_pos bigint[];
    e_label smallint[];
    e_ref text[];
    e_task text[];
    -- The counted changes: item, new label, old label (NULL: a new vote).
    d_item bigint[];
    d_new smallint[];
    d_old smallint[];
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

    -- The batch's items: created if new, and their ids. Both find rows through the unique
    -- index: ON CONFLICT's arbiter, then per item the first row at or after (project, id) in
    -- that index's order, a probe no other index can serve. A plain `project_id = p AND
    -- external_id = x` was planned, on a fresh table, over (project_id, id) with a filter: a
    -- scan of the project per item (10x fewer calls/s with four writers), as a stale-statistics
    -- plan once did per vote (160 s for one 50k batch, benchmarks/results/ingest.md). No lock
    -- yet: see below.
    INSERT INTO items AS i (project_id, external_id, counts)
    SELECT p, x, array_fill(0, ARRAY[k]) FROM (SELECT DISTINCT unnest(item_ext) AS x) d
    ORDER BY x
    ON CONFLICT (project_id, external_id) DO NOTHING;
    SELECT array_agg(d.x), array_agg(l.id) INTO batch_item_ext, batch_item_id
    FROM (SELECT DISTINCT unnest(item_ext) AS x) d
    LEFT JOIN LATERAL (SELECT i.id, i.project_id, i.external_id FROM items i
                       WHERE (i.project_id, i.external_id) >= (p, d.x)
                       ORDER BY i.project_id, i.external_id LIMIT 1) l
        ON l.project_id = p AND l.external_id = d.x;
    IF array_position(batch_item_id, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'items of project % deleted while voted on', p
            USING ERRCODE = 'serialization_failure';
    END IF;
    INSERT INTO workers (project_id, external_id)
    SELECT p, x FROM (SELECT DISTINCT unnest(worker_ext) AS x) d ORDER BY x
    ON CONFLICT (project_id, external_id) DO NOTHING;
    -- FOR SHARE: excluding a worker (app/votes/lifecycle.py) waits for this batch, and this
    -- batch for it, so the counts never include an excluded worker's vote or miss an included
    -- one's.
    PERFORM 1 FROM workers
    WHERE id IN (SELECT l.id FROM unnest(worker_ext) AS x(ext)
                 CROSS JOIN LATERAL (SELECT id FROM workers
                                     WHERE project_id = p AND external_id = x.ext OFFSET 0) l)
    ORDER BY id FOR SHARE;

    -- New votes: inserted, in key order (two batches inserting the same new votes wait on each
    -- other in one order, never in a cycle). One that a concurrent batch inserted first is
    -- skipped here and found below with that batch's label, once it has committed.
    WITH s AS (
        SELECT i.id AS item_id, w.id AS worker_id, w.excluded, b.label, b.ref, b.task, b.n
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
    ), ins AS (
        INSERT INTO votes (item_id, worker_id, project_id, label, source, tool_ref, tool_task)
        SELECT s.item_id, s.worker_id, p, s.label, vote_source, s.ref, s.task FROM s
        ORDER BY s.item_id, s.worker_id
        ON CONFLICT (item_id, worker_id) DO NOTHING
        RETURNING item_id, worker_id
    )
    SELECT array_agg(s.item_id ORDER BY s.item_id, s.worker_id),
           array_agg(s.worker_id ORDER BY s.item_id, s.worker_id),
           array_agg(s.excluded ORDER BY s.item_id, s.worker_id),
           array_agg(s.label ORDER BY s.item_id, s.worker_id),
           array_agg(s.ref ORDER BY s.item_id, s.worker_id),
           array_agg(s.task ORDER BY s.item_id, s.worker_id),
           array_agg(s.n ORDER BY s.item_id, s.worker_id),
           array_agg(ins.item_id IS NOT NULL ORDER BY s.item_id, s.worker_id),
           count(*) - count(DISTINCT (s.item_id, s.worker_id))
    INTO v_item, v_worker, v_excluded, v_label, v_ref, v_task, v_n, v_fresh, n_twice
    FROM s LEFT JOIN ins ON ins.item_id = s.item_id AND ins.worker_id = s.worker_id;
    -- One vote per (item, worker) in a call (the callers validate it): a second would be
    -- counted as new too.
    IF n_twice > 0 THEN
        RAISE EXCEPTION 'a worker votes twice on an item in one call to project %', p
            USING ERRCODE = 'cardinality_violation';
    END IF;

    -- The votes that were there: locked in key order, and read as they are now (after any
    -- concurrent writer of the same vote has committed), which is what the counts delta needs.
    IF false = ANY(v_fresh) THEN
        SELECT array_agg(e.pos ORDER BY e.pos), array_agg(e.label ORDER BY e.pos),
               array_agg(e.tool_ref ORDER BY e.pos), array_agg(e.tool_task ORDER BY e.pos)
        INTO e_pos, e_label, e_ref, e_task
        FROM (SELECT s.pos, v.label, v.tool_ref, v.tool_task
              FROM unnest(v_item, v_worker, v_fresh)
                   WITH ORDINALITY AS s(item_id, worker_id, fresh, pos)
              JOIN votes v ON v.item_id = s.item_id AND v.worker_id = s.worker_id
              WHERE NOT s.fresh
              ORDER BY s.item_id, s.worker_id
              FOR NO KEY UPDATE OF v) e;
    END IF;
    IF coalesce(cardinality(e_pos), 0) + cardinality(array_positions(v_fresh, true))
       <> coalesce(cardinality(v_item), 0) THEN
        RAISE EXCEPTION 'votes of project % deleted while voted on', p
            USING ERRCODE = 'serialization_failure';
    END IF;

    -- Rewritten: a changed label, or a tool's vote with a new annotation id or task (same
    -- label or not). Their rows are this call's already.
    IF e_pos IS NOT NULL THEN
        UPDATE votes v
        SET label = c.label, updated_at = now(), source = vote_source, tool_ref = c.ref,
            tool_task = c.task
        FROM (SELECT s.item_id, s.worker_id, s.label, s.ref, s.task
              FROM unnest(e_pos, e_label, e_ref, e_task) AS e(pos, label, ref, task)
              JOIN unnest(v_item, v_worker, v_label, v_ref, v_task)
                   WITH ORDINALITY AS s(item_id, worker_id, label, ref, task, pos) ON s.pos = e.pos
              WHERE e.label <> s.label
                 OR (s.ref IS NOT NULL AND (e.ref, e.task) IS DISTINCT FROM (s.ref, s.task))) c
        WHERE v.item_id = c.item_id AND v.worker_id = c.worker_id;
    END IF;

    -- What became of each vote, and the counted changes (excluded workers' votes are stored
    -- but never counted, app/votes/lifecycle.py): item, new label, old label (NULL: new vote).
    WITH o AS (
        SELECT s.item_id, s.excluded, s.n, s.fresh, s.label AS new_label, e.label AS old_label,
               (s.fresh OR e.label <> s.label
                OR (s.ref IS NOT NULL AND (e.ref, e.task) IS DISTINCT FROM (s.ref, s.task)))
                   AS written
        FROM unnest(v_item, v_excluded, v_label, v_ref, v_task, v_n, v_fresh)
             WITH ORDINALITY AS s(item_id, excluded, label, ref, task, n, fresh, pos)
        LEFT JOIN unnest(e_pos, e_label, e_ref, e_task) AS e(pos, label, ref, task)
             ON e.pos = s.pos
    )
    SELECT count(*) FILTER (WHERE o.fresh),
           count(*) FILTER (WHERE o.old_label <> o.new_label),
           count(*) FILTER (WHERE o.old_label = o.new_label),
           count(*) FILTER (WHERE o.written),
           count(DISTINCT requests[o.n::integer]) FILTER (WHERE o.written),
           array_agg((CASE WHEN o.fresh THEN 0 WHEN o.old_label <> o.new_label THEN 1
                           ELSE 2 END)::smallint ORDER BY o.n) FILTER (WHERE requests IS NOT NULL),
           array_agg(o.item_id) FILTER (WHERE o.counted),
           array_agg(o.new_label) FILTER (WHERE o.counted),
           array_agg(o.old_label) FILTER (WHERE o.counted),
           array_agg(DISTINCT o.item_id) FILTER (WHERE o.written)
    INTO inserted, updated, unchanged, written, bumps, outcomes, d_item, d_new, d_old, w_item
    FROM (SELECT o.*, NOT o.excluded AND (o.fresh OR o.old_label <> o.new_label) AS counted
          FROM o) o;

    -- The counts, last: the items of the votes written, locked in external-id order (as every
    -- writer of items does), then each item's counts moved once by its net change per class.
    -- The lock also covers the deferred foreign-key checks of the new votes (no lock of their
    -- own to take), and finds an item deleted since its id was read: the call is redone.
    IF w_item IS NOT NULL THEN
        SELECT count(*) INTO n_locked
        FROM (SELECT b.id FROM unnest(batch_item_ext, batch_item_id) AS b(ext, id)
              WHERE b.id = ANY(w_item) ORDER BY b.ext) u
        CROSS JOIN LATERAL (SELECT 1 FROM items WHERE id = u.id FOR NO KEY UPDATE) l;
        IF n_locked <> cardinality(w_item) THEN
            RAISE EXCEPTION 'items of project % deleted while voted on', p
                USING ERRCODE = 'serialization_failure';
        END IF;
        WITH delta AS (
            SELECT d.item_id, d.new_label AS cls, 1 AS d
            FROM unnest(d_item, d_new, d_old) AS d(item_id, new_label, old_label)
            UNION ALL
            SELECT d.item_id, d.old_label, -1
            FROM unnest(d_item, d_new, d_old) AS d(item_id, new_label, old_label)
            WHERE d.old_label IS NOT NULL
        ), per_item AS (
            SELECT t.item_id, array_agg(t.cls) AS ks, array_agg(t.d) AS ds, sum(t.d) AS dn
            FROM (SELECT de.item_id, de.cls::int AS cls, sum(de.d)::int AS d FROM delta de
                  GROUP BY de.item_id, de.cls) t
            WHERE t.d <> 0 GROUP BY t.item_id
        )
        UPDATE items i
        SET counts = softlabels_add_counts(i.counts, pi.ks, pi.ds), n_votes = i.n_votes + pi.dn,
            updated_at = now()
        FROM per_item pi WHERE i.id = pi.item_id;
    END IF;

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
