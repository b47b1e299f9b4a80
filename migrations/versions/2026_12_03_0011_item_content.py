"""item content: each item's text or image, and the embeddings encoders made of them

Content lives beside `items`, not in it: the vote path updates an item's counts row at every
vote, and a row that carried a page of text or an image would make each of those updates
heavier. Embeddings are cached per (item, encoder, version) with the digest of the content they
were made from, so a sweep encodes each item once and changed content is encoded again.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE item_content (
            item_id bigint NOT NULL,
            text text,
            image bytea,
            image_url text,
            media_type text,
            source text,
            digest text NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_item_content PRIMARY KEY (item_id),
            CONSTRAINT fk_item_content_item_id_items FOREIGN KEY (item_id)
                REFERENCES items (id) ON DELETE CASCADE,
            CONSTRAINT ck_item_content_one_image CHECK (image IS NULL OR image_url IS NULL),
            CONSTRAINT ck_item_content_something CHECK (
                text IS NOT NULL OR image IS NOT NULL OR image_url IS NOT NULL
            )
        )
        """
    )
    op.execute(
        """
        CREATE TABLE embeddings (
            item_id bigint NOT NULL,
            encoder text NOT NULL,
            digest text NOT NULL,
            vector real[] NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_embeddings PRIMARY KEY (item_id, encoder),
            CONSTRAINT fk_embeddings_item_id_items FOREIGN KEY (item_id)
                REFERENCES items (id) ON DELETE CASCADE
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE embeddings")
    op.execute("DROP TABLE item_content")
