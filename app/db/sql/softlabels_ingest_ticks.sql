-- softlabels_ingest_votes for a multi-label project: vote i is the set of class indices
-- `tick_sets[i]` (a smallint[] literal such as '{0,3}', sorted and distinct, '{}' for "none
-- apply") that worker_ext[i] ticked on item_ext[i]. Stored as votes.ticks with label = -1.
-- The item's counts[k] is how many of its (counted) voters ticked k, n_votes its voters: a
-- changed set moves the classes it gained and lost, a repeated one changes nothing.
-- Errors it raises: SLNOP (no such project), SLCLS (the caller's class list is out of date, or
-- the project is not multi-label any more), 40001 (as softlabels_ingest_votes). `requests` and
-- `outcomes`, and the locks and their order: as in softlabels_ingest_votes.
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
    v_ticks text[];
    v_ref text[];
    v_task text[];
    v_n bigint[];
    v_fresh boolean[];
    -- The votes that existed, locked: position in the v_ arrays, and what they were.
    e_pos bigint[];
    e_ticks text[];
    e_ref text[];
    e_task text[];
    -- The counted changes: item, new set, old set (NULL: a new vote).
    d_item bigint[];
    d_new text[];
    d_old text[];
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

    -- New votes, then the ones that were there, locked and read as they are now, as in
    -- softlabels_ingest_votes. A set travels as its text ('{0,3}'): an array of arrays would
    -- be a 2-D array, which PostgreSQL wants rectangular.
    WITH s AS (
        SELECT i.id AS item_id, w.id AS worker_id, w.excluded, b.t AS ticks, b.ref, b.task, b.n
        FROM unnest(item_ext, worker_ext, tick_sets,
                    coalesce(refs, array_fill(NULL::text, ARRAY[cardinality(item_ext)])),
                    coalesce(tasks, array_fill(NULL::text, ARRAY[cardinality(item_ext)])))
             WITH ORDINALITY AS b(item, worker, t, ref, task, n)
        JOIN unnest(batch_item_ext, batch_item_id) AS i(ext, id) ON i.ext = b.item
        CROSS JOIN LATERAL (SELECT id, excluded FROM workers
                            WHERE project_id = p AND external_id = b.worker OFFSET 0) w
    ), ins AS (
        INSERT INTO votes (item_id, worker_id, project_id, label, ticks, source, tool_ref,
                           tool_task)
        SELECT s.item_id, s.worker_id, p, -1, s.ticks::smallint[], vote_source, s.ref, s.task
        FROM s ORDER BY s.item_id, s.worker_id
        ON CONFLICT (item_id, worker_id) DO NOTHING
        RETURNING item_id, worker_id
    )
    SELECT array_agg(s.item_id ORDER BY s.item_id, s.worker_id),
           array_agg(s.worker_id ORDER BY s.item_id, s.worker_id),
           array_agg(s.excluded ORDER BY s.item_id, s.worker_id),
           array_agg(s.ticks ORDER BY s.item_id, s.worker_id),
           array_agg(s.ref ORDER BY s.item_id, s.worker_id),
           array_agg(s.task ORDER BY s.item_id, s.worker_id),
           array_agg(s.n ORDER BY s.item_id, s.worker_id),
           array_agg(ins.item_id IS NOT NULL ORDER BY s.item_id, s.worker_id),
           count(*) - count(DISTINCT (s.item_id, s.worker_id))
    INTO v_item, v_worker, v_excluded, v_ticks, v_ref, v_task, v_n, v_fresh, n_twice
    FROM s LEFT JOIN ins ON ins.item_id = s.item_id AND ins.worker_id = s.worker_id;
    -- One vote per (item, worker) in a call (the callers validate it): a second would be
    -- counted as new too.
    IF n_twice > 0 THEN
        RAISE EXCEPTION 'a worker votes twice on an item in one call to project %', p
            USING ERRCODE = 'cardinality_violation';
    END IF;

    IF false = ANY(v_fresh) THEN
        SELECT array_agg(e.pos ORDER BY e.pos), array_agg(e.ticks::text ORDER BY e.pos),
               array_agg(e.tool_ref ORDER BY e.pos), array_agg(e.tool_task ORDER BY e.pos)
        INTO e_pos, e_ticks, e_ref, e_task
        FROM (SELECT s.pos, v.ticks, v.tool_ref, v.tool_task
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

    -- Rewritten: a different set, or a tool's vote with a new annotation id or task.
    IF e_pos IS NOT NULL THEN
        UPDATE votes v
        SET label = -1, ticks = c.ticks::smallint[], updated_at = now(), source = vote_source,
            tool_ref = c.ref, tool_task = c.task
        FROM (SELECT s.item_id, s.worker_id, s.ticks, s.ref, s.task
              FROM unnest(e_pos, e_ticks, e_ref, e_task) AS e(pos, ticks, ref, task)
              JOIN unnest(v_item, v_worker, v_ticks, v_ref, v_task)
                   WITH ORDINALITY AS s(item_id, worker_id, ticks, ref, task, pos) ON s.pos = e.pos
              WHERE e.ticks::smallint[] IS DISTINCT FROM s.ticks::smallint[]
                 OR (s.ref IS NOT NULL AND (e.ref, e.task) IS DISTINCT FROM (s.ref, s.task))) c
        WHERE v.item_id = c.item_id AND v.worker_id = c.worker_id;
    END IF;

    -- `moved`: a new or different set. Counted changes as in softlabels_ingest_votes.
    WITH o AS (
        SELECT s.item_id, s.excluded, s.n, s.fresh, s.ticks AS new_ticks, e.ticks AS old_ticks,
               (s.fresh OR e.ticks::smallint[] IS DISTINCT FROM s.ticks::smallint[]) AS moved,
               (s.ref IS NOT NULL AND (e.ref, e.task) IS DISTINCT FROM (s.ref, s.task))
                   AS new_ref
        FROM unnest(v_item, v_excluded, v_ticks, v_ref, v_task, v_n, v_fresh)
             WITH ORDINALITY AS s(item_id, excluded, ticks, ref, task, n, fresh, pos)
        LEFT JOIN unnest(e_pos, e_ticks, e_ref, e_task) AS e(pos, ticks, ref, task)
             ON e.pos = s.pos
    )
    SELECT count(*) FILTER (WHERE o.fresh),
           count(*) FILTER (WHERE o.moved AND NOT o.fresh),
           count(*) FILTER (WHERE NOT o.moved),
           count(*) FILTER (WHERE o.moved OR o.new_ref),
           count(DISTINCT requests[o.n::integer]) FILTER (WHERE o.moved OR o.new_ref),
           array_agg((CASE WHEN o.fresh THEN 0 WHEN o.moved THEN 1 ELSE 2 END)::smallint
                     ORDER BY o.n) FILTER (WHERE requests IS NOT NULL),
           array_agg(o.item_id) FILTER (WHERE o.moved AND NOT o.excluded),
           array_agg(o.new_ticks) FILTER (WHERE o.moved AND NOT o.excluded),
           array_agg(o.old_ticks) FILTER (WHERE o.moved AND NOT o.excluded),
           array_agg(DISTINCT o.item_id) FILTER (WHERE o.moved OR o.new_ref)
    INTO inserted, updated, unchanged, written, bumps, outcomes, d_item, d_new, d_old, w_item
    FROM o;

    -- The counts, last, as in softlabels_ingest_votes. An item may gain a voter and no tick
    -- (an empty set), or ticks and no voter.
    IF w_item IS NOT NULL THEN
        SELECT count(*) INTO n_locked
        FROM (SELECT b.id FROM unnest(batch_item_ext, batch_item_id) AS b(ext, id)
              WHERE b.id = ANY(w_item) ORDER BY b.ext) u
        CROSS JOIN LATERAL (SELECT 1 FROM items WHERE id = u.id FOR NO KEY UPDATE) l;
        IF n_locked <> cardinality(w_item) THEN
            RAISE EXCEPTION 'items of project % deleted while voted on', p
                USING ERRCODE = 'serialization_failure';
        END IF;
        WITH d AS (
            SELECT * FROM unnest(d_item, d_new, d_old) AS d(item_id, new_ticks, old_ticks)
        ), delta AS (
            SELECT d.item_id, c AS cls, 1 AS d
            FROM d CROSS JOIN LATERAL unnest(d.new_ticks::smallint[]) c
            UNION ALL
            SELECT d.item_id, c, -1 FROM d CROSS JOIN LATERAL unnest(d.old_ticks::smallint[]) c
        ), per_class AS (
            SELECT t.item_id, array_agg(t.cls) AS ks, array_agg(t.d) AS ds
            FROM (SELECT de.item_id, de.cls::int AS cls, sum(de.d)::int AS d FROM delta de
                  GROUP BY de.item_id, de.cls) t
            WHERE t.d <> 0 GROUP BY t.item_id
        ), voters AS (
            SELECT d.item_id, count(*)::int AS dn FROM d WHERE d.old_ticks IS NULL
            GROUP BY d.item_id
        ), per_item AS (
            SELECT coalesce(c.item_id, n.item_id) AS item_id, coalesce(c.ks, '{}') AS ks,
                   coalesce(c.ds, '{}') AS ds, coalesce(n.dn, 0) AS dn
            FROM per_class c FULL JOIN voters n ON n.item_id = c.item_id
        )
        UPDATE items i
        SET counts = softlabels_add_counts(i.counts, pi.ks, pi.ds), n_votes = i.n_votes + pi.dn,
            updated_at = now()
        FROM per_item pi WHERE i.id = pi.item_id;
    END IF;

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
