"""training sweeps, and per-item predictions beside a job's checkpoint

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "training_sweeps",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("project_id", sa.BigInteger(), nullable=False),
        sa.Column("config", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("job_ids", postgresql.ARRAY(sa.BigInteger()), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_training_sweeps_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_training_sweeps")),
    )
    op.create_index(
        "ix_training_sweeps_project_id_id", "training_sweeps", ["project_id", "id"], unique=False
    )
    # npz of per-item predictions (test splits for the sweep report's paired bootstrap, K-fold
    # out-of-sample predictions, scores of unlabeled items): app/training/predictions.py
    op.add_column("training_artifacts", sa.Column("predictions", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    op.drop_column("training_artifacts", "predictions")
    op.drop_index("ix_training_sweeps_project_id_id", table_name="training_sweeps")
    op.drop_table("training_sweeps")
