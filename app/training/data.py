"""The in-memory data a training job works on, and the deterministic eval split.

Pure numpy: the caller (the worker) reads items, features, vote counts and gold labels from the
database and builds a `TrainingData` snapshot with `build_training_data`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.aggregation.base import CountsAggregator
from app.aggregation.methods import soft_labels
from app.aggregation.registry import resolve_method
from app.aggregation.task_methods import TickCountsAggregator


@dataclass(frozen=True, eq=False)  # eq on arrays would be ambiguous
class TrainingData:
    """A frozen snapshot of one project's trainable items (row i = item_ids[i]).

    features: (n, F) float32; counts: (n, K) int vote counts, every row with >= 1 vote;
    targets: (n, K) float64 soft labels of the chosen method (rows sum to 1);
    gold: (n,) int64 gold class, -1 = none.

    task_type "multi_label": counts[i, k] is how many of the item's n_voters[i] voters ticked
    class k (a row may sum to anything, 0 included), targets[i, k] the probability that class
    k applies (K numbers in [0, 1], no distribution), and gold is always -1 (a multi-label
    item's truth is a set; ingest takes no gold there). task_type "ordinal": classes are the
    levels of a scale, lowest first, and `scale` their numeric values (the metrics' units).

    extra_*: items with features and no votes (never trained on): those with gold form the
    `test_gold` split (a classic held-out test set); all of them can be scored by the model.
    db_ids / extra_db_ids: database ids of the rows, when read from the database.
    """

    item_ids: list[str]
    features: np.ndarray
    counts: np.ndarray
    targets: np.ndarray
    gold: np.ndarray
    extra_ids: list[str] = field(default_factory=list)
    extra_features: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    extra_gold: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    db_ids: np.ndarray | None = None
    extra_db_ids: np.ndarray | None = None
    task_type: str = "single"
    n_voters: np.ndarray | None = None  # (n,) multi-label only: voters per item
    scale: np.ndarray | None = None  # (K,) ordinal only: the levels' values

    def __post_init__(self) -> None:
        n = len(self.item_ids)
        multi = self.task_type == "multi_label"
        if multi and (self.n_voters is None or np.shape(self.n_voters) != (n,)):
            raise ValueError(f"a multi-label snapshot needs n_voters of shape ({n},)")
        if self.features.ndim != 2 or len(self.features) != n:
            raise ValueError(f"features must be (n={n}, F), got {self.features.shape}")
        if self.counts.ndim != 2 or len(self.counts) != n or self.counts.shape[1] < 2:
            raise ValueError(f"counts must be (n={n}, K >= 2), got {self.counts.shape}")
        if self.targets.shape != self.counts.shape:
            raise ValueError(f"targets must be {self.counts.shape}, got {self.targets.shape}")
        if self.gold.shape != (n,):
            raise ValueError(f"gold must be ({n},), got {self.gold.shape}")
        if not np.isfinite(self.features).all():
            raise ValueError("features must be finite")
        if n and (self.voters <= 0).any():
            raise ValueError("every item needs at least one vote (drop the others)")
        if multi and n and (self.counts > self.voters[:, None]).any():
            raise ValueError("a class cannot be ticked by more voters than the item has")
        if multi and not ((self.targets >= 0) & (self.targets <= 1)).all():
            raise ValueError("multi-label targets must be probabilities in [0, 1]")
        if not multi and n and not np.allclose(self.targets.sum(axis=1), 1.0, atol=1e-6):
            raise ValueError("targets rows must be probability distributions")
        k = self.counts.shape[1]
        if ((self.gold < -1) | (self.gold >= k)).any():
            raise ValueError(f"gold must be -1 (none) or a class index 0..{k - 1}")
        m = len(self.extra_ids)
        if m and self.extra_features.shape != (m, self.features.shape[1]):
            raise ValueError(f"extra_features must be ({m}, F), got {self.extra_features.shape}")
        if self.extra_gold.shape != (m,) or ((self.extra_gold < -1) | (self.extra_gold >= k)).any():
            raise ValueError(f"extra_gold must be ({m},) in -1..{k - 1}")

    def subset(self, rows: np.ndarray) -> TrainingData:
        """The voted rows `rows` (indices or a mask), without the extra items."""
        idx = np.arange(len(self.item_ids))[rows]
        return TrainingData(
            item_ids=[self.item_ids[i] for i in idx],
            features=self.features[idx],
            counts=self.counts[idx],
            targets=self.targets[idx],
            gold=self.gold[idx],
            db_ids=None if self.db_ids is None else self.db_ids[idx],
            task_type=self.task_type,
            n_voters=None if self.n_voters is None else self.n_voters[idx],
            scale=self.scale,
        )

    @property
    def voters(self) -> np.ndarray:
        """(n,) voters per item: n_voters for multi-label, the vote counts' sums otherwise."""
        return self.counts.sum(axis=1) if self.n_voters is None else self.n_voters

    @property
    def n_classes(self) -> int:
        return int(self.counts.shape[1])

    @property
    def n_features(self) -> int:
        return int(self.features.shape[1])


def build_training_data(
    item_ids: Sequence[str],
    features: np.ndarray,
    counts: np.ndarray,
    gold: np.ndarray | None,
    labels: Mapping[str, Any],
    targets: np.ndarray | None = None,
    *,
    db_ids: np.ndarray | None = None,
    extra: tuple[list[str], np.ndarray, np.ndarray, np.ndarray | None] | None = None,
    task_type: str = "single",
    n_voters: np.ndarray | None = None,
    scale: np.ndarray | None = None,
) -> TrainingData:
    """Snapshot for training: soft labels by `labels` ({"method": ..., params}, as validated in
    TrainingConfig.labels), and items with no votes dropped (they have no human distribution:
    the aggregation methods would give them a uniform row, which is not a label).

    `targets` (n, K), when given, are the labels already computed (worker-model methods need
    the vote list, not the counts: see app/training/snapshot.py). `extra` = (ids, features,
    gold, db ids) of items with features and no votes. `task_type`, `n_voters` (multi-label:
    voters per item) and `scale` (ordinal: the levels' values): see TrainingData."""
    counts = np.asarray(counts)
    n = len(item_ids)
    gold_arr = np.full(n, -1, np.int64) if gold is None else np.asarray(gold, dtype=np.int64)
    voters = counts.sum(axis=1) if n_voters is None else np.asarray(n_voters, np.int64)
    keep = voters > 0
    if targets is None:
        targets = _count_targets(counts[keep], voters[keep], labels, task_type)
    else:
        targets = np.asarray(targets)[keep]
    return TrainingData(
        item_ids=[i for i, k in zip(item_ids, keep, strict=True) if k],
        features=np.ascontiguousarray(np.asarray(features, dtype=np.float32)[keep]),
        counts=counts[keep].astype(np.int64),
        targets=targets.astype(np.float64),
        gold=gold_arr[keep],
        db_ids=None if db_ids is None else np.asarray(db_ids, np.int64)[keep],
        **_extra(extra, np.asarray(features).shape[1] if np.ndim(features) == 2 else 0),
        task_type=task_type,
        n_voters=None if n_voters is None else voters[keep],
        scale=None if scale is None else np.asarray(scale, np.float64),
    )


def _count_targets(
    counts: np.ndarray, voters: np.ndarray, labels: Mapping[str, Any], task_type: str
) -> np.ndarray:
    """A count method's labels, by the project type's table of methods (the worker models'
    come precomputed as `targets`: the snapshot takes them from the project's cached fit)."""
    params = {k: v for k, v in labels.items() if k != "method"}
    if task_type == "single":
        return soft_labels(counts, str(labels["method"]), params)
    method = resolve_method(str(labels["method"]), params, task_type)
    if isinstance(method, TickCountsAggregator):
        return method.compute(counts, voters)
    if isinstance(method, CountsAggregator):
        return method.compute(counts)
    raise ValueError(f"{method.name} needs the vote list: pass its labels as `targets`")


def _extra(
    extra: tuple[list[str], np.ndarray, np.ndarray, np.ndarray | None] | None, n_features: int
) -> dict[str, Any]:
    if extra is None or not len(extra[0]):
        return {"extra_features": np.zeros((0, n_features), np.float32)}
    ids, feats, gold, dbi = extra
    return {
        "extra_ids": list(ids),
        "extra_features": np.ascontiguousarray(np.asarray(feats, dtype=np.float32)),
        "extra_gold": np.asarray(gold, dtype=np.int64),
        "extra_db_ids": None if dbi is None else np.asarray(dbi, np.int64),
    }


TRAIN, VALIDATION, TEST = 0, 1, 2
SPLIT_NAMES = ("train", "validation", "test")


def _unit_hash(item_ids: Sequence[str], seed: int) -> np.ndarray:
    """(n,) float64 in [0, 1): blake2b(item id, keyed by the seed) read as a 64-bit fraction."""
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    key = seed.to_bytes(8, "big")
    out = np.empty(len(item_ids), dtype=np.float64)
    for i, item_id in enumerate(item_ids):
        digest = hashlib.blake2b(str(item_id).encode("utf-8"), digest_size=8, key=key).digest()
        out[i] = int.from_bytes(digest, "big") / 2.0**64
    return out


def split_items(
    item_ids: Sequence[str], seed: int, validation_fraction: float, test_fraction: float
) -> np.ndarray:
    """(n,) int8: TRAIN, VALIDATION or TEST for each item.

    With u = blake2b(item id, keyed by the seed) as a fraction of 2**64: u < test_fraction is
    test, u < test_fraction + validation_fraction validation, the rest train. Like split_eval,
    it depends only on (item id, seed): an item keeps its side as the project grows, and jobs
    with the same split seed share their test items (so their test figures can be paired).
    """
    if not (0.0 <= validation_fraction < 1 and 0.0 <= test_fraction < 1):
        raise ValueError("validation_fraction and test_fraction must be in [0, 1)")
    if validation_fraction + test_fraction >= 1.0:
        raise ValueError("validation_fraction + test_fraction must be below 1")
    u = _unit_hash(item_ids, seed)
    out = np.full(len(item_ids), TRAIN, dtype=np.int8)
    out[u < test_fraction + validation_fraction] = VALIDATION
    out[u < test_fraction] = TEST
    return out


def fold_of(item_ids: Sequence[str], seed: int, k: int) -> np.ndarray:
    """(n,) int64 fold 0..k-1 of each item, by the same keyed hash (seed + 1, so folds do not
    line up with the test split of the same seed)."""
    return np.minimum((_unit_hash(item_ids, (seed + 1) % 2**64) * k).astype(np.int64), k - 1)


def split_eval(item_ids: Sequence[str], seed: int, eval_fraction: float) -> np.ndarray:
    """(n,) bool, True = held out for evaluation.

    Item i is held out when blake2b(item id, keyed by the seed) read as a 64-bit fraction is below
    `eval_fraction`. The decision depends only on (item id, seed), not on the other items or the
    process (no Python hash randomization), so jobs with the same seed share their split and an
    item keeps its side as the project grows.
    """
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    key = seed.to_bytes(8, "big")
    threshold = eval_fraction * 2.0**64
    out = np.empty(len(item_ids), dtype=bool)
    for i, item_id in enumerate(item_ids):
        digest = hashlib.blake2b(str(item_id).encode("utf-8"), digest_size=8, key=key).digest()
        out[i] = int.from_bytes(digest, "big") < threshold
    return out
