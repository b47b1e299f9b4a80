"""What a content job reads of its items' content (the `item_content` table).

Texts are read with the snapshot, in its REPEATABLE READ transaction: a fitted encoder (TF-IDF)
needs every training text at once, and texts are small. Images are not: the snapshot reads a
reference to each (its digest, whether bytes are stored, or its URL), and the bytes are read
in chunks as they are encoded (`load_images`), so a project of large photos never sits in the
worker's memory whole, and an image whose embedding is cached is never read at all.

Items are usable when they carry what the job's encoder reads: a text for a text encoder, an
uploaded image or an image URL for an image encoder. The others are left out of the job and
counted (`StoredContent.lacking`), as items without a feature vector are for a features job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text

from app.training.encoders import IMAGE_ENCODERS, TEXT_ENCODERS
from app.training.errors import JobError

TEXT, IMAGE = "text", "image"
# SQL: the item's content row `c` holds what a job of this kind reads.
_HAS = {TEXT: "c.text IS NOT NULL", IMAGE: "(c.image IS NOT NULL OR c.image_url IS NOT NULL)"}
_WHAT = {TEXT: "a text", IMAGE: "an image (uploaded, or an image_url)"}


def content_kind(encoder_name: str) -> str | None:
    """TEXT or IMAGE for a content encoder's name; None for "features"."""
    if encoder_name in TEXT_ENCODERS:
        return TEXT
    if encoder_name in IMAGE_ENCODERS:
        return IMAGE
    return None


@dataclass(frozen=True)
class ContentRef:
    """One item's content as the snapshot saw it."""

    db_id: int
    item: str  # external id, for messages
    digest: str  # item_content.digest: what a cached embedding must have been made of
    text: str | None  # text jobs: the text itself
    stored_image: bool  # image jobs: bytes are stored (load_images reads them)
    image_url: str | None
    source: str | None  # the connector whose credentials fetch image_url


@dataclass(frozen=True)
class StoredContent:
    kind: str  # TEXT or IMAGE
    voted: list[ContentRef]  # row i = the snapshot's data.item_ids[i]
    extra: list[ContentRef]  # row i = data.extra_ids[i] (items with no votes)
    lacking: int  # voted items left out: they carry no content of this kind

    @property
    def refs(self) -> list[ContentRef]:
        return self.voted + self.extra


def _select(kind: str, voted: bool) -> Any:
    counts = "i.counts" if voted else "NULL"
    return text(
        f"""
        SELECT i.id, i.external_id, CAST(ARRAY[] AS real[]), {counts}, coalesce(i.gold, -1),
               i.n_votes, c.digest, {"c.text" if kind == TEXT else "NULL"}, c.image IS NOT NULL,
               c.image_url, c.source
        FROM items i JOIN item_content c ON c.item_id = i.id
        WHERE i.project_id = :p AND i.n_votes {"> 0" if voted else "= 0"} AND {_HAS[kind]}
        ORDER BY i.id
        """
    )


def read_items(
    conn: Connection, project_id: int, kind: str
) -> tuple[list[Any], list[Any], StoredContent]:
    """(voted rows, unvoted rows, their content) in the shape snapshot.py reads feature items:
    (id, external id, features, counts, gold, n_votes) with an empty feature vector, for the
    encoder to fill; unvoted rows (id, external id, features, gold)."""
    voted = conn.execute(_select(kind, True), {"p": project_id}).all()
    extra = conn.execute(_select(kind, False), {"p": project_id}).all()
    have, total = usable_content(conn, project_id, kind)
    if not voted:
        raise JobError(no_content_reason(kind, have, total))

    def refs(rows: Sequence[Any]) -> list[ContentRef]:
        return [ContentRef(r[0], r[1], *r[6:]) for r in rows]

    stored = StoredContent(kind, refs(voted), refs(extra), lacking=total - have)
    return (
        [r[:6] for r in voted],
        [(r[0], r[1], r[2], r[4]) for r in extra],
        stored,
    )


def usable_content(conn: Connection, project_id: int, kind: str) -> tuple[int, int]:
    """(voted items carrying content of `kind`, voted items)."""
    row = conn.execute(
        text(
            f"""
            SELECT count(*) FILTER (WHERE coalesce({_HAS[kind]}, false)), count(*)
            FROM items i LEFT JOIN item_content c ON c.item_id = i.id
            WHERE i.project_id = :p AND i.n_votes > 0
            """
        ),
        {"p": project_id},
    ).one()
    return int(row[0]), int(row[1])


def no_content_reason(kind: str, have: int, total: int) -> str:
    if total == 0:
        return "the project has no item with votes yet"
    return (
        f"{have} of {total} voted items have {_WHAT[kind]}; store the items' content first "
        "(POST /items with `text`, `image` or `image_url`, or a connector's content field)"
    )


def load_images(conn: Connection, refs: Sequence[ContentRef]) -> dict[int, tuple[bytes, str]]:
    """The stored bytes of these items' images and the digest they have now, by item db id
    (an item whose image went away since the snapshot is absent)."""
    rows = conn.execute(
        text(
            "SELECT item_id, image, digest FROM item_content "
            "WHERE item_id = ANY(:ids) AND image IS NOT NULL"
        ),
        {"ids": [r.db_id for r in refs if r.stored_image]},
    ).all()
    return {int(r[0]): (bytes(r[1]), str(r[2])) for r in rows}
