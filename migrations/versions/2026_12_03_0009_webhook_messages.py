"""webhook messages: the Standard Webhooks message ids an inbound connector has accepted

Each accepted id is kept for longer than the signature's timestamp tolerance (at most 300 s), so
a replay inside it is refused; one after it is stale anyway. Rows are purged as new ones arrive
(app/connectors/replay.py).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE webhook_messages (
            project_id bigint NOT NULL,
            tool text NOT NULL,
            msg_id text NOT NULL,
            received_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_webhook_messages PRIMARY KEY (project_id, tool, msg_id),
            CONSTRAINT fk_webhook_messages_project_id_connectors FOREIGN KEY (project_id, tool)
                REFERENCES connectors (project_id, tool) ON DELETE CASCADE
        )
        """
    )
    op.execute("CREATE INDEX ix_webhook_messages_received_at ON webhook_messages (received_at)")


def downgrade() -> None:
    op.execute("DROP TABLE webhook_messages")
