"""What items are: their text or image, stored beside the items for the training worker.

The API's item upserts, the connectors and the file imports all store content through
`store_content`. Fields a row gives replace the stored ones and fields it omits are kept, as for
the rest of an item; the merged row's `digest` then names exactly that content, so an embedding
made of other content is never reused (app/training reads it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.orm import Session

from app.votes.records import image_media_type

CONTENT_FIELDS = ("text", "image", "image_url")


@dataclass
class ContentIn:
    """One item's content as given: only the fields in `given` change."""

    item: str  # external id
    text: str | None = None
    image: bytes | None = None
    image_url: str | None = None
    source: str | None = None  # the connector whose credentials fetch `image_url`
    given: frozenset[str] = field(default_factory=lambda: frozenset(CONTENT_FIELDS))


def digest(text_: str | None, image: bytes | None, image_url: str | None) -> str:
    """sha256 over the three fields, each length-prefixed so no two contents collide."""
    h = hashlib.sha256()
    for part in (
        None if text_ is None else text_.encode(),
        image,
        None if image_url is None else image_url.encode(),
    ):
        h.update(b"-" if part is None else len(part).to_bytes(8, "big") + part)
    return h.hexdigest()


_EXISTING = text(
    """
    SELECT i.external_id, c.text, c.image, c.image_url, c.source
    FROM items i JOIN item_content c ON c.item_id = i.id
    WHERE i.project_id = :p AND i.external_id = ANY(:ids)
    ORDER BY c.item_id
    FOR UPDATE OF c
    """
)
_UPSERT = text(
    """
    INSERT INTO item_content (item_id, text, image, image_url, media_type, source, digest)
    SELECT i.id, s.text, s.image, s.image_url, s.media_type, s.source, s.digest
    FROM unnest(CAST(:ids AS text[]), CAST(:texts AS text[]), CAST(:images AS bytea[]),
                CAST(:urls AS text[]), CAST(:types AS text[]), CAST(:sources AS text[]),
                CAST(:digests AS text[]))
        AS s(id, text, image, image_url, media_type, source, digest)
    JOIN items i ON i.project_id = :p AND i.external_id = s.id
    ORDER BY i.id
    ON CONFLICT (item_id) DO UPDATE SET
        text = EXCLUDED.text, image = EXCLUDED.image, image_url = EXCLUDED.image_url,
        media_type = EXCLUDED.media_type, source = EXCLUDED.source, digest = EXCLUDED.digest,
        updated_at = now()
    WHERE item_content.digest IS DISTINCT FROM EXCLUDED.digest
        OR item_content.source IS DISTINCT FROM EXCLUDED.source
    """
)
_DELETE = text(
    """
    DELETE FROM item_content c USING items i
    WHERE c.item_id = i.id AND i.project_id = :p AND i.external_id = ANY(:ids)
    """
)


def store_content(session: Session, project_id: int, rows: Sequence[ContentIn]) -> None:
    """Merge `rows` into the stored content of their items (which must exist). A row that clears
    every field removes the item's content."""
    if not rows:
        return
    ids = [r.item for r in rows]
    stored = {
        row.external_id: row for row in session.execute(_EXISTING, {"p": project_id, "ids": ids})
    }
    keep, clear = [], []
    for r in rows:
        old = stored.get(r.item)
        merged = {
            f: getattr(r, f) if f in r.given else (getattr(old, f) if old else None)
            for f in CONTENT_FIELDS
        }
        if "image" in r.given and r.image is not None:
            merged["image_url"] = None  # a new image replaces the URL, and the reverse
        if "image_url" in r.given and r.image_url is not None:
            merged["image"] = None
        if all(v is None for v in merged.values()):
            clear.append(r.item)
            continue
        source = r.source if r.source is not None or old is None else old.source
        if old is not None and source == old.source and all(
            merged[f] == getattr(old, f) for f in CONTENT_FIELDS
        ):
            continue  # stored as it is (a re-sync sends every task's content again)
        keep.append((r.item, merged, source))
    if clear:
        session.execute(_DELETE, {"p": project_id, "ids": clear})
    if not keep:
        return
    session.execute(
        _UPSERT,
        {
            "p": project_id,
            "ids": [k[0] for k in keep],
            "texts": [k[1]["text"] for k in keep],
            "images": [k[1]["image"] for k in keep],
            "urls": [k[1]["image_url"] for k in keep],
            "types": [
                image_media_type(k[1]["image"]) if k[1]["image"] is not None else None for k in keep
            ],
            "sources": [k[2] for k in keep],
            "digests": [digest(k[1]["text"], k[1]["image"], k[1]["image_url"]) for k in keep],
        },
    )
