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

The fitted encoder travels in the checkpoint (`checkpoint_entry`: its state and version), so
`restore_encoder` in another process (the API's predict) encodes new content as the job did.

Pure: no database. The worker's path (app/training/content_job.py) shares these pieces and adds
the embedding cache and the fetching of images.
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
from app.training.encoders import (
    Content,
    Encoder,
    EncoderUnavailableError,
    Progress,
    build_encoder,
    take,
)
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
    check_modality(encoder, content)
    voted_content = take(content, voted)
    fit_on_training_split(cfg, encoder, ids, voted_content)
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
        checkpoint_extra=checkpoint_entry(encoder),
    )
    n_encoded = len(voted_content) + len(extra_ids)
    result.metrics["encoder"] = encoder_metrics(encoder, seconds, computed=n_encoded)
    result.encoder = encoder
    return result


def fit_on_training_split(
    cfg: TrainingConfig, encoder: Encoder, voted_ids: Sequence[str], voted_content: Content
) -> None:
    """encoder.fit on the training part of the split train() will compute (by item id and
    split seed), so no validation or test content shapes the embedding."""
    if encoder.fits_on_data:
        split = split_items(voted_ids, cfg.effective_split_seed, *cfg.fractions)
        encoder.fit(take(voted_content, split == TRAIN))


def encoder_metrics(
    encoder: Encoder, seconds: float, *, computed: int, **more: Any
) -> dict[str, Any]:
    """metrics["encoder"]: what encoded, and how fast (`computed` items in `seconds`, which
    count the fit and loading the weights too)."""
    return {
        "name": encoder.name,
        "version": encoder.version,
        "dim": int(encoder.dim),
        "end_to_end": encoder.end_to_end,
        "seconds": round(seconds, 3),
        "items_per_second": round(computed / seconds, 1) if computed and seconds > 0 else None,
        "computed": computed,
        **more,
    }


def checkpoint_entry(encoder: Encoder) -> dict[str, Any]:
    """The checkpoint's "encoder" entry: what fit() learned, and the version it encodes as."""
    return {"encoder": {"version": encoder.version, "state": encoder.state()}}


def restore_encoder(cfg: TrainingConfig, ckpt: dict[str, Any], device: str = "cpu") -> Encoder:
    """The encoder a content job's checkpoint was trained with, ready to encode new content.
    Pretrained weights are loaded from their path again: if they (or the libraries) are not
    the job's any more, the version differs and this raises EncoderUnavailableError."""
    entry = ckpt.get("encoder")
    if cfg.encoder.name == "features" or entry is None:
        raise ValueError("the checkpoint has no encoder (a job trained on features)")
    encoder = build_encoder(cfg.encoder, device)
    encoder.load_state(entry["state"])
    if encoder.version != entry["version"]:
        raise EncoderUnavailableError(
            f"encoder {encoder.name!r} here encodes as {encoder.version}, the job as "
            f"{entry['version']}: its weights or library versions changed since it trained"
        )
    return encoder


def predict_content(result: TrainResult, content: Content) -> np.ndarray:
    """(n, K) class probabilities of a train_on_content result's model on new content."""
    if result.encoder is None:
        raise ValueError("not a train_on_content result (no encoder)")
    return predict_probs(result.model, result.encoder.encode(content))


def check_modality(encoder: Encoder, content: Content) -> None:
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
