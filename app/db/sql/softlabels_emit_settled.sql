-- `item.settled` for the items this transaction changed (their updated_at = now()), for each
-- subscription that asks for it: a webhook_deliveries row and a queue job (procrastinate's own
-- defer function, the lock keeping one item's deliveries in order), in the caller's transaction.
-- One indexed lookup when the project has no such subscription (app/webhooks.py).
CREATE OR REPLACE FUNCTION softlabels_emit_settled(p bigint) RETURNS integer
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    jobs procrastinate_job_to_defer_v1[];
    multi boolean;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM webhook_subscriptions
                   WHERE project_id = p AND active AND 'item.settled' = ANY(events)) THEN
        RETURN 0;
    END IF;
    SELECT task_type = 'multi_label' INTO multi FROM projects WHERE id = p;
    WITH subs AS (
        SELECT id, settle_votes, settle_entropy FROM webhook_subscriptions
        WHERE project_id = p AND active AND 'item.settled' = ANY(events)
    ), touched AS (
        SELECT i.id, i.external_id, i.counts, i.n_votes,
               -- A multi-label item's counts are per-class tick counts, not a distribution.
               CASE WHEN i.n_votes < 2 OR multi THEN NULL ELSE (
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
