"""core schema

Revision ID: 0001
Revises:
Create Date: 2026-11-27 23:11:57.177304
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Adds a sparse delta (class indices `ks`, changes `ds`) to a count vector. Used by the vote
# upsert (app/ingest.py) so a batch touches each item's counts once, in O(changes) per item.
ADD_COUNTS = """
CREATE FUNCTION softlabels_add_counts(counts integer[], ks integer[], ds integer[])
RETURNS integer[] LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    i integer;
BEGIN
    FOR i IN 1 .. coalesce(array_length(ks, 1), 0) LOOP
        counts[ks[i] + 1] := counts[ks[i] + 1] + ds[i];
    END LOOP;
    RETURN counts;
END
$$
"""


def upgrade() -> None:
    op.execute(ADD_COUNTS)
    op.create_table(
        "projects",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("classes", sa.ARRAY(sa.Text()), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("n_features", sa.Integer(), nullable=True),
        sa.Column("votes_version", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("name ~ '^[a-z0-9_-]{1,64}$'", name=op.f("ck_projects_name_format")),
        sa.CheckConstraint(
            "cardinality(classes) BETWEEN 2 AND 1000", name=op.f("ck_projects_n_classes")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_projects")),
        sa.UniqueConstraint("name", name=op.f("uq_projects_name")),
    )
    op.create_table(
        "items",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("project_id", sa.BigInteger(), nullable=False),
        sa.Column("external_id", sa.String(length=256), nullable=False),
        sa.Column("features", sa.ARRAY(sa.REAL()), nullable=True),
        sa.Column("gold", sa.SmallInteger(), nullable=True),
        sa.Column("meta", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("counts", sa.ARRAY(sa.Integer()), nullable=False),
        sa.Column("n_votes", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_items_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_items")),
        sa.UniqueConstraint(
            "project_id", "external_id", name=op.f("uq_items_project_id_external_id")
        ),
    )
    op.create_index("ix_items_project_id_id", "items", ["project_id", "id"], unique=False)
    op.create_table(
        "workers",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("project_id", sa.BigInteger(), nullable=False),
        sa.Column("external_id", sa.String(length=256), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_workers_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workers")),
        sa.UniqueConstraint(
            "project_id", "external_id", name=op.f("uq_workers_project_id_external_id")
        ),
    )
    op.create_table(
        "votes",
        sa.Column("item_id", sa.BigInteger(), nullable=False),
        sa.Column("worker_id", sa.BigInteger(), nullable=False),
        sa.Column("project_id", sa.BigInteger(), nullable=False),
        sa.Column("label", sa.SmallInteger(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["item_id"], ["items.id"], name=op.f("fk_votes_item_id_items"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["worker_id"],
            ["workers.id"],
            name=op.f("fk_votes_worker_id_workers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("item_id", "worker_id", name=op.f("pk_votes")),
    )
    op.create_index("ix_votes_project_id", "votes", ["project_id"], unique=False)
    op.create_index("ix_votes_worker_id", "votes", ["worker_id"], unique=False)


def downgrade() -> None:
    op.execute("DROP FUNCTION softlabels_add_counts(integer[], integer[], integer[])")
    op.drop_index("ix_votes_worker_id", table_name="votes")
    op.drop_index("ix_votes_project_id", table_name="votes")
    op.drop_table("votes")
    op.drop_table("workers")
    op.drop_index("ix_items_project_id_id", table_name="items")
    op.drop_table("items")
    op.drop_table("projects")
