"""vote lifecycle and tool connectors: vote provenance, excluded workers, connector configs,
outbound webhook subscriptions and their delivery log

Revision ID: 0005_lifecycle
Revises: 0004
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005_lifecycle"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SOURCES = "source IN ('api', 'label-studio', 'argilla', 'import')"


def _now() -> sa.Column:
    return sa.Column(
        "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
    )


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


def downgrade() -> None:
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
