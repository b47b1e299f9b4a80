"""A job's per-item predictions, stored as one npz blob beside its checkpoint
(training_artifacts.predictions): the held-out splits (for the sweep report's paired bootstrap),
K-fold out-of-sample predictions (app/training/oos.py) and scores of items with no votes."""

from __future__ import annotations

import io

import numpy as np
from sqlalchemy import Connection, text


def pack(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def unpack(blob: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def load(conn: Connection, job_id: int) -> dict[str, np.ndarray] | None:
    """The job's predictions, or None (no such job, not succeeded, or a job from before)."""
    blob = conn.execute(
        text("SELECT predictions FROM training_artifacts WHERE job_id = :j"), {"j": job_id}
    ).scalar_one_or_none()
    return None if blob is None else unpack(bytes(blob))


def load_many(conn: Connection, job_ids: list[int]) -> dict[int, dict[str, np.ndarray]]:
    rows = conn.execute(
        text(
            "SELECT job_id, predictions FROM training_artifacts "
            "WHERE job_id = ANY(:j) AND predictions IS NOT NULL"
        ),
        {"j": job_ids},
    ).all()
    return {int(r[0]): unpack(bytes(r[1])) for r in rows}
