"""[5. trained] Using a trained model: its stored checkpoint, a small cache of loaded models,
and the feature vectors of stored items to predict on.

The API builds one ModelCache per process (create_app's lifespan) and reaches it through a
dependency; torch is imported only when a model is first loaded, so the API starts without it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, text


def checkpoint_bytes(conn: Connection, job_id: int) -> bytes | None:
    blob = conn.execute(
        text("SELECT checkpoint FROM training_artifacts WHERE job_id = :j"), {"j": job_id}
    ).scalar_one_or_none()
    return None if blob is None else bytes(blob)


def item_features(
    conn: Connection, project_id: int, external_ids: Sequence[str]
) -> dict[str, list[float] | None]:
    """Stored feature vectors by item id (None: the item has none); missing items are absent."""
    result = conn.execute(
        text(
            "SELECT external_id, features FROM items WHERE project_id = :p "
            "AND external_id = ANY(CAST(:ids AS text[]))"
        ),
        {"p": project_id, "ids": list(external_ids)},
    )
    return {ext: feats for ext, feats in result}


class ModelCache:
    """The last few models used for prediction, so a burst of predict calls loads once.

    Per process: a checkpoint never changes once its job succeeded, so replicas caching the same
    model independently can never disagree.
    """

    def __init__(self, size: int = 8) -> None:
        self.size, self.models, self.lock = size, OrderedDict[int, Any](), threading.Lock()

    def get(self, job_id: int, load: Callable[[], bytes]) -> tuple[Any, dict[str, Any]]:
        with self.lock:
            if job_id in self.models:
                self.models.move_to_end(job_id)
                return self.models[job_id]  # type: ignore[no-any-return]
        from app.training.trainer import load_checkpoint  # torch: imported on first use only

        model, _, ckpt = load_checkpoint(load())
        with self.lock:
            self.models[job_id] = (model, ckpt)
            while len(self.models) > self.size:
                self.models.popitem(last=False)
        return model, ckpt
