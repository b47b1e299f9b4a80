"""[5. trained] Using a trained model: its stored checkpoint, a small cache of loaded models,
and the feature vectors or content of stored items to predict on.

The API builds one ModelCache per process (create_app's lifespan) and reaches it through a
dependency; torch (and a content job's encoder library) is imported only when a model is
first loaded, so the API starts without them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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


def item_content(
    conn: Connection, project_id: int, external_ids: Sequence[str]
) -> dict[str, tuple[str | None, bytes | None, str | None, str | None]]:
    """Stored content by item id: (text, image bytes, image_url, source), Nones where the
    item has none; missing items are absent."""
    result = conn.execute(
        text(
            "SELECT i.external_id, c.text, c.image, c.image_url, c.source FROM items i "
            "LEFT JOIN item_content c ON c.item_id = i.id WHERE i.project_id = :p "
            "AND i.external_id = ANY(CAST(:ids AS text[]))"
        ),
        {"p": project_id, "ids": list(external_ids)},
    )
    return {r[0]: (r[1], None if r[2] is None else bytes(r[2]), r[3], r[4]) for r in result}


@dataclass(frozen=True)
class Loaded:
    model: Any  # torch module, eval mode, CPU
    ckpt: dict[str, Any]
    encoder: Any  # a content job's encoder, restored from the checkpoint; None for features


class ModelCache:
    """The last few models used for prediction, so a burst of predict calls loads once.

    Per process: a checkpoint never changes once its job succeeded, so replicas caching the same
    model independently can never disagree.
    """

    def __init__(self, size: int = 8) -> None:
        self.size, self.models, self.lock = size, OrderedDict[int, Any](), threading.Lock()

    def get(self, job_id: int, load: Callable[[], bytes]) -> Loaded:
        """Raises EncoderUnavailableError when a content job's encoder cannot load here."""
        with self.lock:
            if job_id in self.models:
                self.models.move_to_end(job_id)
                return self.models[job_id]  # type: ignore[no-any-return]
        # torch, scikit-learn, transformers...: imported on first use only
        from app.training.content import restore_encoder
        from app.training.trainer import load_checkpoint

        model, cfg, ckpt = load_checkpoint(load())
        encoder = None if cfg.encoder.name == "features" else restore_encoder(cfg, ckpt)
        loaded = Loaded(model, ckpt, encoder)
        with self.lock:
            self.models[job_id] = loaded
            while len(self.models) > self.size:
                self.models.popitem(last=False)
        return loaded
