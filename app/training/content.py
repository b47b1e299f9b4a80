"""Train on what the items are (texts, images) rather than on feature vectors.

`train_on_content` mirrors the feature path, `build_training_data` + `trainer.train`, with one
step before: the job's encoder (cfg.encoder, app/training/encoders) turns the content into
model inputs. Everything after is the feature path itself: the same soft labels, loss, split,
seeds, early stopping, metrics and checkpoint.

- A frozen encoder's embeddings become the features the configured linear/MLP head trains on.
- An encoder that learns from data (TF-IDF, hashing + SVD) is fitted on the training split
  only, the split `train` computes (same item ids, same split seed), so no validation or test
  text shapes the embedding.
- The small CNN's encode gives pixel rows and the model gets its trunk: trained end to end.

Pure: no database. The worker calls it in phase 2 of issue 22 with a snapshot's content.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from app.training.config import TrainingConfig
from app.training.data import TRAIN, build_training_data, split_items
from app.training.encoders import Content, Encoder, Progress, build_encoder, take
from app.training.errors import JobError
from app.training.trainer import TrainResult, predict_probs, resolve_device, train


def train_on_content(
    cfg: TrainingConfig,
    item_ids: Sequence[str],
    content: Content,
    counts: np.ndarray,
    gold: np.ndarray | None = None,
    *,
    targets: np.ndarray | None = None,
    extra: tuple[Sequence[str], Content, np.ndarray | None] | None = None,
    teacher: nn.Module | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    checkpoint_path: Path | None = None,
    on_encode: Progress | None = None,
) -> TrainResult:
    """Train cfg on items' content: row i of `content` is item_ids[i], with vote `counts`
    (n, K), `gold` (n,) class or -1, and optionally precomputed soft `targets` (n, K), else
    cfg.labels' method on the counts (as build_training_data). Items with no votes are dropped.

    `content`: a list of texts, or images as an (n, H, W, C) uint8 array or a list of encoded
    bytes / uint8 arrays (see encoders/images.py). `extra` = (ids, content, gold or None) of
    items with no votes: tested on when they have gold (test_gold), scored with
    cfg.predict_unlabeled. on_encode(done, total) reports encoding progress; the other
    arguments are train()'s. result.metrics["encoder"] says what encoded (name, version,
    dim, seconds, items per second) and result.encoder can encode new content.
    """
    if cfg.encoder.name == "features":
        raise JobError('encoder "features" trains on feature vectors: use trainer.train')
    if len(content) != len(item_ids):
        raise JobError(f"{len(content)} content rows for {len(item_ids)} items")
    counts = np.asarray(counts)
    voted = counts.sum(axis=1) > 0
    ids = [i for i, v in zip(item_ids, voted, strict=True) if v]
    device = resolve_device(cfg.device)  # before any loading: a missing CUDA fails first

    started = time.perf_counter()
    encoder = build_encoder(cfg.encoder, str(device))
    _check_modality(encoder, content)
    # The split train() will compute (by item id and split seed): fit on its training part.
    split = split_items(ids, cfg.effective_split_seed, *cfg.fractions)
    voted_content = take(content, voted)
    encoder.fit(take(voted_content, split == TRAIN))
    extra_ids, extra_content, extra_gold = extra if extra is not None else ([], [], None)
    features, extra_features = _encode(encoder, [voted_content, extra_content], on_encode)
    seconds = time.perf_counter() - started

    data = build_training_data(
        ids,
        features,
        counts[voted],
        None if gold is None else np.asarray(gold)[voted],
        cfg.labels,
        None if targets is None else np.asarray(targets)[voted],
        extra=(
            list(extra_ids),
            extra_features,
            np.full(len(extra_ids), -1) if extra_gold is None else np.asarray(extra_gold),
            None,
        ),
    )
    result = train(
        cfg,
        data,
        teacher=teacher,
        on_epoch=on_epoch,
        should_stop=should_stop,
        checkpoint_path=checkpoint_path,
    )
    n_encoded = len(voted_content) + len(extra_ids)
    result.metrics["encoder"] = {
        "name": encoder.name,
        "version": encoder.version,
        "dim": int(features.shape[1]),
        "end_to_end": encoder.end_to_end,
        "seconds": round(seconds, 3),  # fit + encode (+ loading the weights)
        "items_per_second": round(n_encoded / seconds, 1) if seconds > 0 else None,
    }
    result.encoder = encoder
    return result


def predict_content(result: TrainResult, content: Content) -> np.ndarray:
    """(n, K) class probabilities of a train_on_content result's model on new content."""
    if result.encoder is None:
        raise ValueError("not a train_on_content result (no encoder)")
    return predict_probs(result.model, result.encoder.encode(content))


def _check_modality(encoder: Encoder, content: Content) -> None:
    texts = not isinstance(content, np.ndarray) and all(isinstance(c, str) for c in content)
    if encoder.modality == "text" and not texts:
        raise JobError(f"encoder {encoder.name!r} reads texts; these items are not texts")
    if encoder.modality == "image" and texts and len(content):
        raise JobError(f"encoder {encoder.name!r} reads images; these items are texts")


def _encode(encoder: Encoder, parts: list[Content], progress: Progress | None) -> list[np.ndarray]:
    """encoder.encode of each part, with progress counted over all of them."""
    total, offset = sum(len(p) for p in parts), 0
    out = []
    for part in parts:
        if len(part) == 0:
            out.append(np.zeros((0, 0), np.float32))
            continue
        base = offset
        report = None if progress is None else (lambda d, _t, b=base: progress(b + d, total))
        out.append(encoder.encode(part, progress=report))
        offset += len(part)
    return out
