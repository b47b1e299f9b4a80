"""vote lifecycle and tool connectors: vote provenance, excluded workers, connector configs,
outbound webhook subscriptions and their delivery log; the write path (0005) learns them:
`softlabels_ingest_votes` records a tool's ids, skips excluded workers in the counts and records
`item.settled` events in the same transaction (`softlabels_emit_settled`)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SOURCES = "source IN ('api', 'label-studio', 'argilla', 'import')"


def _now() -> sa.Column:
    return sa.Column(
        "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
    )


OLD_INGEST = "softlabels_ingest_votes(bigint, text[], text[], text[], smallint[])"
NEW_INGEST = (
    "softlabels_ingest_votes(bigint, text[], text[], text[], smallint[], text, text[], text[])"
)
FUNCTIONS = """
-- `item.settled` for the items this transaction changed (their updated_at = now()), for each
-- subscription that asks for it: a webhook_deliveries row and a queue job (procrastinate's own
-- defer function, the lock keeping one item's deliveries in order), in the caller's transaction.
-- One indexed lookup when the project has no such subscription (app/webhooks.py).
CREATE FUNCTION softlabels_emit_settled(p bigint) RETURNS integer
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

-- Errors it raises: SLNOP (no such project), SLCLS (the caller's class list is out of date).
CREATE FUNCTION softlabels_ingest_votes(
    p bigint, expected_classes text[], item_ext text[], worker_ext text[], labels smallint[],
    vote_source text, refs text[], tasks text[]
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
        -- One index probe per row (OFFSET 0 keeps the planner from turning these into a
        -- join): without statistics (a new project, or autovacuum off) the plain join was
        -- planned as a hash join over every worker of the project, O(project) per vote.
        CROSS JOIN LATERAL (SELECT id FROM items
                            WHERE project_id = p AND external_id = b.item OFFSET 0) i
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
        VALUES (p, floor(random() * 64)::smallint, 1)  -- VERSION_SLOTS of migration 0005
        ON CONFLICT (project_id, slot) DO UPDATE SET changes = c.changes + 1;
        PERFORM softlabels_emit_settled(p);
    END IF;
    SELECT coalesce(sum(c.changes), 0)::bigint INTO votes_version
    FROM project_vote_changes c WHERE c.project_id = p;
    RETURN NEXT;
END
$$;
"""


def upgrade() -> None:
    # Where a vote came from, and the tool's own ids: its annotation (response) id, the key
    # that makes redelivered events idempotent and deletes findable, and its task (record) id,
    # which a task deletion names.
    op.add_column("votes", sa.Column("source", sa.Text(), server_default="api", nullable=False))
    op.add_column("votes", sa.Column("tool_ref", sa.Text(), nullable=True))
    op.add_column("votes", sa.Column("tool_task", sa.Text(), nullable=True))
    op.create_check_constraint(op.f("ck_votes_source"), "votes", SOURCES)
    op.create_index(
        "ix_votes_tool_ref",
        "votes",
        ["project_id", "source", "tool_ref"],
        postgresql_where=sa.text("tool_ref IS NOT NULL"),
    )
    op.create_index(
        "ix_votes_tool_task",
        "votes",
        ["project_id", "source", "tool_task"],
        postgresql_where=sa.text("tool_task IS NOT NULL"),
    )
    op.add_column(
        "workers", sa.Column("excluded", sa.Boolean(), server_default="false", nullable=False)
    )

    op.create_table(
        "connectors",
        sa.Column("project_id", sa.BigInteger(), nullable=False),
        sa.Column("tool", sa.Text(), nullable=False),
        sa.Column("config", postgresql.JSONB(), nullable=False),
        # The tool's API token (Label Studio) or the shared signing secret (Argilla): needed in
        # clear to call the tool or check signatures; never returned by the API or logged.
        sa.Column("secret", sa.Text(), nullable=True),
        sa.Column("last_sync_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_sync", postgresql.JSONB(), nullable=True),
        _now(),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("tool IN ('label-studio', 'argilla')", name=op.f("ck_connectors_tool")),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_connectors_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("project_id", "tool", name=op.f("pk_connectors")),
    )

    op.create_table(
        "webhook_subscriptions",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("project_id", sa.BigInteger(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),  # "whsec_<base64>"
        sa.Column("events", sa.ARRAY(sa.Text()), nullable=False),
        sa.Column("settle_votes", sa.Integer(), nullable=True),
        sa.Column("settle_entropy", sa.Float(), nullable=True),
        sa.Column("active", sa.Boolean(), server_default="true", nullable=False),
        _now(),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_webhook_subscriptions_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_subscriptions")),
    )
    op.create_index("ix_webhook_subscriptions_project_id", "webhook_subscriptions", ["project_id"])

    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("subscription_id", sa.BigInteger(), nullable=False),
        sa.Column("msg_id", sa.Text(), nullable=False),  # the webhook-id header
        sa.Column("event", sa.Text(), nullable=False),
        # Ordering key: deliveries with the same key go out one at a time, in id order.
        sa.Column("order_key", sa.Text(), nullable=False),
        # Once-only key (e.g. "item.settled:<item>"): a second event with it is not queued.
        sa.Column("dedupe_key", sa.Text(), nullable=True),
        sa.Column("payload", postgresql.JSONB(), nullable=False),  # our own event, not a tool's
        sa.Column("status", sa.Text(), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        _now(),
        sa.CheckConstraint(
            "status IN ('pending', 'delivered', 'failed')",
            name=op.f("ck_webhook_deliveries_status"),
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["webhook_subscriptions.id"],
            name=op.f("fk_webhook_deliveries_subscription_id_webhook_subscriptions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
    )
    op.create_index(
        "ix_webhook_deliveries_subscription_id_id", "webhook_deliveries", ["subscription_id", "id"]
    )
    op.create_index(
        "uq_webhook_deliveries_dedupe",
        "webhook_deliveries",
        ["subscription_id", "dedupe_key"],
        unique=True,
        postgresql_where=sa.text("dedupe_key IS NOT NULL"),
    )

    op.execute(f"DROP FUNCTION {OLD_INGEST}")
    op.execute(FUNCTIONS)


def downgrade() -> None:
    from importlib import import_module

    op.execute(f"DROP FUNCTION {NEW_INGEST}")
    op.execute("DROP FUNCTION softlabels_emit_settled(bigint)")
    write_path = import_module("migrations.versions.2026_11_30_0005_write_path")
    op.execute(write_path.INGEST)
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_subscriptions")
    op.drop_table("connectors")
    op.drop_column("workers", "excluded")
    op.drop_index("ix_votes_tool_task", table_name="votes")
    op.drop_index("ix_votes_tool_ref", table_name="votes")
    op.drop_constraint(op.f("ck_votes_source"), "votes", type_="check")
    op.drop_column("votes", "tool_task")
    op.drop_column("votes", "tool_ref")
    op.drop_column("votes", "source")
