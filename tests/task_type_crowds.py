"""Crowds for the multi-label and ordinal tests and benchmarks/task_types.py.

Real: the shared task-types sets (README in shared/data/task-types; ConvAbuse severity and
type/target, LeWiDi 2025 Paraphrase), loaded into plain index arrays. Simulated: crowds with
known truth and known worker habits, shaped like the ones that defeat vote counting: raters with
a bias who use only part of the scale, workers who tick everything or almost nothing, and
sparse workers (a Zipf-like activity, so most workers give a handful of votes).
"""

from __future__ import annotations

import csv
import gzip
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.helpers import SHARED_DATA

TASK_TYPES = SHARED_DATA / "task-types"


@dataclass(frozen=True)
class Crowd:
    name: str
    item: np.ndarray  # (n_votes,) item index
    worker: np.ndarray  # (n_votes,) worker index
    n_items: int
    n_workers: int
    level: np.ndarray | None = None  # ordinal: (n_votes,) level index
    values: np.ndarray | None = None  # ordinal: (K,) level values
    ticks: np.ndarray | None = None  # multi-label: (n_votes, K) bool
    classes: tuple[str, ...] = ()

    @property
    def n_levels(self) -> int:
        assert self.values is not None
        return int(self.values.size)

    def subset(self, keep: np.ndarray) -> Crowd:
        """The same crowd (same indices) with only the votes where `keep` is True."""
        return Crowd(
            self.name,
            self.item[keep],
            self.worker[keep],
            self.n_items,
            self.n_workers,
            None if self.level is None else self.level[keep],
            self.values,
            None if self.ticks is None else self.ticks[keep],
            self.classes,
        )


def _rows(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    with gzip.open(path, "rt", newline="") as f:
        rows = list(csv.DictReader(f))
    _, item = np.unique([r["item"] for r in rows], return_inverse=True)
    _, worker = np.unique([r["worker"] for r in rows], return_inverse=True)
    return item.astype(np.int64), worker.astype(np.int64), [r["label"] for r in rows]


def load_real(name: str) -> Crowd:
    """`convabuse_severity`, `paraphrase` (ordinal) or `convabuse_type_target` (multi-label).
    The caller checks that the file exists (`real_path`)."""
    meta = json.loads((TASK_TYPES / "labels.json").read_text())[name]
    item, worker, labels = _rows(real_path(name))
    n_items, n_workers = int(item.max()) + 1, int(worker.max()) + 1
    if meta["type"] == "ordinal":
        values = np.asarray(meta["levels"], dtype=np.float64)
        code = {str(int(v)): i for i, v in enumerate(values)}
        level = np.array([code[x.strip()] for x in labels], dtype=np.int64)
        return Crowd(name, item, worker, n_items, n_workers, level=level, values=values)
    classes = tuple(meta["label_order"])
    col = {c: i for i, c in enumerate(classes)}
    ticks = np.zeros((item.size, len(classes)), dtype=bool)
    for v, x in enumerate(labels):
        for c in filter(None, x.split("|")):
            ticks[v, col[c]] = True
    return Crowd(name, item, worker, n_items, n_workers, ticks=ticks, classes=classes)


def real_path(name: str) -> Path:
    return TASK_TYPES / f"{name}_annotations.csv.gz"


def _assign(
    rng: np.random.Generator, n_items: int, n_workers: int, per_item: int, activity: float
) -> tuple[np.ndarray, np.ndarray]:
    """`per_item` distinct workers per item, drawn with Zipf-like weights (1 / rank^activity)."""
    weight = 1.0 / np.arange(1, n_workers + 1) ** activity
    weight = rng.permutation(weight / weight.sum())
    # Gumbel top-k: the per_item largest of log(weight) + Gumbel noise are a draw without
    # replacement proportional to weight, for all items at once.
    keys = np.log(weight)[None, :] + rng.gumbel(size=(n_items, n_workers))
    worker = np.argpartition(-keys, per_item - 1, axis=1)[:, :per_item].ravel()
    return np.repeat(np.arange(n_items), per_item), worker.astype(np.int64)


@dataclass(frozen=True)
class OrdinalTruth:
    crowd: Crowd
    truth: np.ndarray  # (n_items,) true level
    bias: np.ndarray  # (n_workers,)
    spread: np.ndarray  # (n_workers,)


def simulate_ordinal(
    seed: int,
    n_items: int = 1500,
    n_workers: int = 40,
    n_levels: int = 7,
    per_item: int = 4,
    activity: float = 0.8,
) -> OrdinalTruth:
    """Raters who answer truth + bias + spread * N(0, 1), rounded and clipped to the scale.

    A third are harsh or lenient (|bias| 1-2 levels: they use only part of the scale, piling up at
    one end), a third are noisy (spread 1-1.6), the rest good (|bias| < 0.3, spread 0.3-0.6); the
    biases are centred so the crowd as a whole is unbiased. Truth: a bell over the levels."""
    rng = np.random.default_rng(seed)
    shape = np.exp(-0.5 * ((np.arange(n_levels) - (n_levels - 1) / 2) / (n_levels / 4)) ** 2)
    truth = rng.choice(n_levels, size=n_items, p=shape / shape.sum())
    kind = rng.permutation(np.arange(n_workers) % 3)
    bias = np.where(
        kind == 0, rng.choice([-1, 1], n_workers) * rng.uniform(1, 2, n_workers), 0.0
    ) + np.where(kind == 0, 0.0, rng.uniform(-0.3, 0.3, n_workers))
    bias -= bias.mean()
    spread = np.where(kind == 1, rng.uniform(1.0, 1.6, n_workers), rng.uniform(0.3, 0.6, n_workers))
    item, worker = _assign(rng, n_items, n_workers, per_item, activity)
    y = truth[item] + bias[worker] + spread[worker] * rng.standard_normal(item.size)
    level = np.clip(np.rint(y), 0, n_levels - 1).astype(np.int64)
    values = np.arange(n_levels, dtype=np.float64)
    crowd = Crowd("simulated-ordinal", item, worker, n_items, n_workers, level=level, values=values)
    return OrdinalTruth(crowd, truth, bias, spread)


@dataclass(frozen=True)
class MultiLabelTruth:
    crowd: Crowd
    truth: np.ndarray  # (n_items, K) bool
    sensitivity: np.ndarray  # (n_workers,)
    specificity: np.ndarray  # (n_workers,)
    kind: np.ndarray  # (n_workers,) 0 good, 1 over-ticker, 2 under-ticker


def simulate_multilabel(
    seed: int,
    n_items: int = 1500,
    n_workers: int = 40,
    n_classes: int = 8,
    per_item: int = 3,
    activity: float = 0.8,
) -> MultiLabelTruth:
    """Workers tick each class that applies with their sensitivity and each that does not with
    1 - specificity. A quarter over-tick (specificity 0.5-0.7: they tick most classes), a quarter
    under-tick (sensitivity 0.2-0.45), the rest are good (0.8-0.95 / 0.9-0.98). Class rates
    0.1-0.4."""
    rng = np.random.default_rng(seed)
    truth = rng.random((n_items, n_classes)) < rng.uniform(0.1, 0.4, n_classes)
    kind = rng.permutation(np.arange(n_workers) % 4) % 3  # 0 twice as often as 1 or 2
    sens = np.where(kind == 2, rng.uniform(0.2, 0.45, n_workers), rng.uniform(0.8, 0.95, n_workers))
    spec = np.where(kind == 1, rng.uniform(0.5, 0.7, n_workers), rng.uniform(0.9, 0.98, n_workers))
    item, worker = _assign(rng, n_items, n_workers, per_item, activity)
    p_tick = np.where(truth[item], sens[worker][:, None], 1.0 - spec[worker][:, None])
    ticks = rng.random(p_tick.shape) < p_tick
    crowd = Crowd("simulated-multi-label", item, worker, n_items, n_workers, ticks=ticks)
    return MultiLabelTruth(crowd, truth, sens, spec, kind)


def dawid_skene_levels(crowd: Crowd) -> tuple[np.ndarray, np.ndarray]:
    """The single-label `dawid-skene` (default parameters) fitted to level indices: posteriors
    (n_items, K) and confusions (n_workers, K, K) [worker, true, answer]. The one place here that
    calls the single-label method API: adapt it when that API changes."""
    from app.aggregation.base import VoteArrays, WorkerAggregator
    from app.aggregation.registry import resolve_method

    assert crowd.level is not None
    method = resolve_method("dawid-skene", {})
    assert isinstance(method, WorkerAggregator)
    votes = VoteArrays(
        crowd.item, crowd.worker, crowd.level, crowd.n_items, crowd.n_workers, crowd.n_levels
    )
    fit = method.fit(votes)
    assert fit.confusions_ is not None
    return fit.probas_, fit.confusions_
