"""A content job's model inputs: its snapshot's texts or images through the job's encoder.

What the worker does between the snapshot and `trainer.train` when a job names a content
encoder (train_on_content is the same without a database, for benchmarks and tests):

1. build the encoder (pretrained weights load here; a missing model fails the job in one line);
2. a fitted encoder (TF-IDF, hashing + SVD) learns from the training split's texts only;
3. a cacheable encoder (app/training/embedding_cache.py) takes the vectors the cache holds
   for these items' content, under a lock so a sweep's jobs do not all encode at once;
4. the rest, in chunks of CHUNK items: texts as read, images read from the database or
   fetched from their URLs (app/training/media.py), encoded, and stored in the cache.

Progress goes to the job row as {"stage", "done", "total"} (at most every REPORT_S seconds),
and the job can be cancelled at any of these steps.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Engine

from app.training import embedding_cache
from app.training.config import TrainingConfig
from app.training.content import encoder_metrics, fit_on_training_split
from app.training.data import TrainingData
from app.training.embedding_cache import Stopped, cacheable, encoding_lock
from app.training.encoders import Content, Encoder, build_encoder
from app.training.errors import JobError
from app.training.media import Resolver, fetch_all
from app.training.snapshot import Snapshot
from app.training.stored_content import TEXT, ContentRef, load_images
from app.training.trainer import resolve_device

CHUNK = 256  # items read, fetched and encoded per step: bounds the image bytes held at once
REPORT_S = 0.5

# report(progress) stores the job's progress and says whether to stop (cancelled, or past
# the server's time limit): the runner's, shared with the epochs.
Report = Callable[[dict[str, Any]], bool]


@dataclass
class Encoded:
    data: TrainingData  # the snapshot's, with the encoder's rows as features
    encoder: Encoder
    metrics: dict[str, Any]  # metrics["encoder"]


class _Progress:
    """Throttled reports; remembers a stop so every later check says stop too."""

    def __init__(self, report: Report) -> None:
        self.report, self.last, self.stop = report, 0.0, False

    def __call__(self, stage: str, done: int, total: int, force: bool = False) -> bool:
        now = time.monotonic()
        if force or now - self.last >= REPORT_S or done == total:
            self.last = now
            self.stop = self.report({"stage": stage, "done": done, "total": total}) or self.stop
        return self.stop

    def check(self) -> None:
        if self.stop:
            raise Stopped


def encode_snapshot(
    engine: Engine,
    cfg: TrainingConfig,
    project_id: int,
    snap: Snapshot,
    *,
    resolve: Resolver,
    report: Report,
) -> Encoded:
    stored = snap.content
    if stored is None:
        raise ValueError("not a content snapshot")
    progress = _Progress(report)
    started = time.perf_counter()
    encoder = build_encoder(cfg.encoder, str(resolve_device(cfg.device)))
    if encoder.fits_on_data:  # the text encoders that learn: TF-IDF, hashing + SVD
        fit_on_training_split(
            cfg, encoder, snap.data.item_ids, [r.text or "" for r in stored.voted]
        )
    refs = stored.refs
    features = np.empty((len(refs), encoder.dim), np.float32)
    key = encoder.version if cacheable(encoder) else None
    lock: AbstractContextManager[None] = nullcontext()
    if key is not None:
        waiting = lambda: progress("waiting for another job encoding these items", 0, len(refs))  # noqa: E731
        lock = encoding_lock(engine, project_id, key, waiting)
    cached: dict[int, np.ndarray] = {}
    fetched, read_s, encode_s = 0, 0.0, 0.0
    with lock:
        if key is not None:
            cached = embedding_cache.load(
                engine, key, [r.db_id for r in refs], [r.digest for r in refs], encoder.dim
            )
        for row, vector in cached.items():
            features[row] = vector
        todo = [i for i in range(len(refs)) if i not in cached]
        progress("encoding", 0, len(todo), force=True)
        for start in range(0, len(todo), CHUNK):
            rows = todo[start : start + CHUNK]
            chunk = [refs[i] for i in rows]
            t0 = time.perf_counter()
            on_fetch = lambda d, _t, s=start: progress("fetching images", s + d, len(todo))  # noqa: E731
            content, digests, n_fetched = _content(engine, stored.kind, chunk, resolve, on_fetch)
            progress.check()
            t1 = time.perf_counter()
            features[rows] = encoder.encode(content)
            encode_s += time.perf_counter() - t1
            fetched, read_s = fetched + n_fetched, read_s + t1 - t0
            if key is not None:
                embedding_cache.store(
                    engine, key, [r.db_id for r in chunk], digests, features[rows]
                )
            progress("encoding", start + len(rows), len(todo))
            progress.check()
    n = len(stored.voted)
    data = dataclasses.replace(snap.data, features=features[:n], extra_features=features[n:])
    metrics = encoder_metrics(
        encoder,
        time.perf_counter() - started,
        computed=len(refs) - len(cached),
        cached=len(cached),
        fetched=fetched,
        read_seconds=round(read_s, 3),  # reading stored images, fetching URLs
        encode_seconds=round(encode_s, 3),
        # per second of encoding alone (no weights loading, fit or fetching)
        encode_items_per_second=round((len(refs) - len(cached)) / encode_s, 1)
        if encode_s > 0
        else None,
        lacking_content=stored.lacking,
        cache="embeddings" if key is not None else None,
    )
    return Encoded(data, encoder, metrics)


def _content(
    engine: Engine,
    kind: str,
    refs: Sequence[ContentRef],
    resolve: Resolver,
    on_fetch: Callable[[int, int], Any],
) -> tuple[Content, list[str], int]:
    """(the chunk's texts or image bytes, the digest of each as encoded, images fetched)."""
    if kind == TEXT:
        return [r.text or "" for r in refs], [r.digest for r in refs], 0
    with engine.connect() as conn:
        stored = load_images(conn, refs)
    urls = [r for r in refs if not r.stored_image]
    fetched = iter(
        fetch_all(
            [(r.image_url or "", r.source) for r in urls],
            resolve,
            names=[r.item for r in urls],
            progress=on_fetch,
        )
    )
    images: list[bytes] = []
    digests: list[str] = []
    for r in refs:
        if not r.stored_image:
            images.append(next(fetched))
            digests.append(r.digest)
            continue
        if r.db_id not in stored:
            raise JobError(f"item {r.item!r}'s image was removed while the job ran; run it again")
        image, digest = stored[r.db_id]
        images.append(image)
        digests.append(digest)
    return images, digests, len(urls)
