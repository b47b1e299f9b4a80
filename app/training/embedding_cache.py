"""The embedding cache: a frozen encoder's vector of each item's content, kept in PostgreSQL
(`embeddings`), so a second job or every cell of a sweep encodes each item once.

Key: (item, encoder key), with the content's digest beside the vector. The encoder key is the
encoder's `version` (its name, code revision, options, the weights' digest and the library
versions: app/training/encoders/base.py), so other weights or options never hit, and a vector
counts only while its digest is the item's content digest now (new content is encoded again
and replaces it).

Only encoders whose output is a function of the content alone are cached (`cacheable`): the
pretrained ones, and hashing without its SVD. A fitted encoder (TF-IDF, hashing + SVD) depends
on the job's training split; its vectors are the job's own and recomputed each time -- a fit
and a sparse product, seconds for thousands of texts -- so the table never fills with one copy
per split. The small CNN is trained with the model: nothing to cache.

Two jobs of a sweep start together: the first to take the (project, encoder) advisory lock
encodes, the others wait on it and then find every vector cached.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
from sqlalchemy import Engine, text

from app.training.encoders import Encoder

STORE_BATCH = 500  # rows per INSERT
POLL_S = 0.5  # how often a job waiting on another's encoding checks whether it was cancelled


class Stopped(Exception):
    """The job was cancelled (or ran out of time) while waiting or encoding."""


def cacheable(encoder: Encoder) -> bool:
    return not encoder.end_to_end and not encoder.fits_on_data


@contextmanager
def encoding_lock(
    engine: Engine, project_id: int, key: str, should_stop: Callable[[], bool] | None = None
) -> Iterator[None]:
    """Held while a job encodes a project's items with one encoder: a session advisory lock,
    released on exit or when the connection drops (a worker that dies holds nothing)."""
    with engine.connect() as conn:
        args = {"k": f"softlabels-embeddings:{project_id}:{key}"}
        while not conn.execute(
            text("SELECT pg_try_advisory_lock(hashtextextended(:k, 0))"), args
        ).scalar_one():
            conn.commit()
            if should_stop is not None and should_stop():
                raise Stopped
            time.sleep(POLL_S)
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(hashtextextended(:k, 0))"), args)
            conn.commit()


def load(
    engine: Engine, key: str, db_ids: Sequence[int], digests: Sequence[str], dim: int
) -> dict[int, np.ndarray]:
    """Cached vectors by row index, for the rows whose item has one made of the same content."""
    if not db_ids:
        return {}
    row_of = {(int(i), d): r for r, (i, d) in enumerate(zip(db_ids, digests, strict=True))}
    out: dict[int, np.ndarray] = {}
    with engine.connect() as conn:
        result = conn.execute(
            text(
                "SELECT item_id, digest, vector FROM embeddings "
                "WHERE encoder = :k AND item_id = ANY(:ids)"
            ),
            {"k": key, "ids": list(map(int, db_ids))},
        )
        for item_id, digest, vector in result:
            row = row_of.get((int(item_id), digest))
            if row is not None and len(vector) == dim:
                out[row] = np.asarray(vector, dtype=np.float32)
    return out


def store(
    engine: Engine, key: str, db_ids: Sequence[int], digests: Sequence[str], vectors: np.ndarray
) -> None:
    """Keep these rows' vectors (replacing an item's older one for the same encoder)."""
    for start in range(0, len(db_ids), STORE_BATCH):
        stop = start + STORE_BATCH
        with engine.begin() as conn:
            conn.execute(
                text(
                    """
                    INSERT INTO embeddings (item_id, encoder, digest, vector)
                    SELECT s.item_id, :k, s.digest, s.vector
                    FROM jsonb_to_recordset(CAST(:rows AS jsonb))
                        AS s(item_id bigint, digest text, vector real[])
                    JOIN items i ON i.id = s.item_id  -- an item deleted meanwhile is skipped
                    ON CONFLICT (item_id, encoder) DO UPDATE
                        SET digest = EXCLUDED.digest, vector = EXCLUDED.vector, created_at = now()
                    """
                ),
                {
                    "k": key,
                    "rows": _rows_json(
                        db_ids[start:stop], digests[start:stop], vectors[start:stop]
                    ),
                },
            )


def _rows_json(db_ids: Sequence[int], digests: Sequence[str], vectors: np.ndarray) -> str:
    # float32 -> Python float -> JSON -> real: exact, as a float32 round-trips through float64.
    return json.dumps(
        [
            {"item_id": int(i), "digest": d, "vector": v.tolist()}
            for i, d, v in zip(db_ids, digests, np.asarray(vectors, np.float32), strict=True)
        ]
    )
