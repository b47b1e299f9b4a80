"""Simulated crowds with known truth, shaped like the crowds where worker models go wrong.

Used by tests/test_robust_fits.py and benchmarks/worker_models.py. Each shape mixes worker types:

- good: own confusion matrix with accuracy drawn from a range (errors spread by a Dirichlet, or
  onto neighbouring classes for ordinal scales such as relevance grades);
- uniform spammers (a random label), constant spammers (always the same label);
- adversarial flippers (systematically answer class c as c + 1 mod K);
- colluders: a group that, on each item, copies one shared answer (right with a low
  probability), so their votes are correlated, which every model here assumes they are not.

Workers are drawn per item with probability proportional to a Zipf-like activity weight, so a
few workers give many votes and most give a handful, as on real crowdsourcing platforms.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from app.aggregation.base import VoteArrays

KINDS = ("good", "uniform", "constant", "flipper", "colluder")


@dataclass(frozen=True)
class CrowdShape:
    name: str
    n_items: int
    n_workers: int
    k: int
    per_item: int  # votes per item (distinct workers)
    class_prior: tuple[float, ...]
    mix: dict[str, float]  # worker kind -> share of workers
    accuracy: tuple[float, float] = (0.6, 0.95)  # good workers' accuracy range
    ordinal: bool = False  # good workers' errors go to neighbouring classes
    activity: float = 1.0  # Zipf exponent of worker activity (0 = uniform)
    collusion_accuracy: float = 0.3
    note: str = field(default="")


SHAPES: dict[str, CrowdShape] = {
    s.name: s
    for s in (
        CrowdShape(
            "sparse-binary",
            n_items=2000,
            n_workers=180,
            k=2,
            per_item=3,
            class_prior=(0.7, 0.3),
            mix={"good": 0.7, "uniform": 0.15, "constant": 0.1, "flipper": 0.05},
            accuracy=(0.6, 0.95),
            note="binary, 3 votes per item, 180 workers, imbalanced classes",
        ),
        CrowdShape(
            "relevance-4",
            n_items=2500,
            n_workers=300,
            k=4,
            per_item=4,
            class_prior=(0.45, 0.3, 0.15, 0.1),
            mix={"good": 0.55, "uniform": 0.15, "constant": 0.25, "flipper": 0.05},
            accuracy=(0.45, 0.85),
            ordinal=True,
            note="4 ordinal grades, many constant-label spammers, MV barely above half",
        ),
        CrowdShape(
            "many-few",
            n_items=2000,
            n_workers=2000,
            k=5,
            per_item=3,
            class_prior=(0.3, 0.25, 0.2, 0.15, 0.1),
            mix={"good": 0.8, "uniform": 0.1, "constant": 0.1},
            accuracy=(0.5, 0.9),
            activity=0.3,
            note="2,000 workers with about 3 votes each",
        ),
        CrowdShape(
            "adversarial",
            n_items=1500,
            n_workers=60,
            k=3,
            per_item=5,
            class_prior=(0.5, 0.3, 0.2),
            mix={"good": 0.7, "flipper": 0.3},
            accuracy=(0.55, 0.9),
            note="30% of workers systematically answer c as c + 1",
        ),
        CrowdShape(
            "colluding",
            n_items=1500,
            n_workers=80,
            k=3,
            per_item=5,
            class_prior=(0.4, 0.35, 0.25),
            mix={"good": 0.75, "colluder": 0.25},
            accuracy=(0.55, 0.9),
            note="a quarter of the workers copy one shared, mostly wrong, answer per item",
        ),
    )
}


def _good_confusion(rng: np.random.Generator, k: int, acc: float, ordinal: bool) -> np.ndarray:
    conf = np.empty((k, k))
    for c in range(k):
        if ordinal:
            w = 1.0 / (1.0 + np.abs(np.arange(k) - c)) ** 2
            w[c] = 0.0
            off = w / w.sum() * (1 - acc)
        else:
            off = np.insert(rng.dirichlet(np.ones(k - 1)) * (1 - acc), c, 0.0)
        off[c] = acc
        conf[c] = off
    return conf


def simulate(shape: CrowdShape | str, seed: int = 0) -> tuple[VoteArrays, np.ndarray]:
    """Votes and the true class of every item for one crowd of `shape`."""
    s = SHAPES[shape] if isinstance(shape, str) else shape
    rng = np.random.default_rng(seed)
    k, w_n = s.k, s.n_workers
    truth = rng.choice(k, size=s.n_items, p=np.asarray(s.class_prior) / sum(s.class_prior))
    kinds = list(s.mix)
    kind = rng.choice(
        len(kinds), size=w_n, p=np.asarray([s.mix[x] for x in kinds]) / sum(s.mix.values())
    )
    conf = np.empty((w_n, k, k))
    for w in range(w_n):
        name = kinds[kind[w]]
        if name == "good":
            conf[w] = _good_confusion(rng, k, rng.uniform(*s.accuracy), s.ordinal)
        elif name == "uniform":
            conf[w] = 1.0 / k
        elif name == "constant":
            conf[w] = np.eye(k)[rng.integers(k)]
        elif name == "flipper":
            conf[w] = np.roll(np.eye(k), 1, axis=1)  # c -> c + 1
        else:  # colluder: filled per item below
            conf[w] = 1.0 / k
    colluder = np.asarray([kinds[x] == "colluder" for x in kind])

    activity = 1.0 / np.arange(1, w_n + 1) ** s.activity
    activity = rng.permutation(activity / activity.sum())
    # Gumbel top-k: per item, per_item distinct workers drawn proportionally to activity.
    keys = np.log(activity)[None, :] + rng.gumbel(size=(s.n_items, w_n))
    chosen = np.argpartition(-keys, s.per_item - 1, axis=1)[:, : s.per_item]
    item = np.repeat(np.arange(s.n_items), s.per_item)
    worker = chosen.reshape(-1)
    cum = np.cumsum(conf[worker, truth[item]], axis=1)
    label = np.minimum((rng.random(item.size)[:, None] > cum).sum(axis=1), k - 1)
    if colluder.any():
        right = rng.random(s.n_items) < s.collusion_accuracy
        wrong = (truth + rng.integers(1, k, size=s.n_items)) % k
        shared = np.where(right, truth, wrong)
        mask = colluder[worker]
        label[mask] = shared[item[mask]]
    return VoteArrays(item, worker, label, s.n_items, w_n, k), truth


def majority_accuracy(votes: VoteArrays, truth: np.ndarray) -> float:
    """Accuracy of majority vote with ties broken uniformly at random, in expectation."""
    counts = np.bincount(
        votes.item * votes.n_classes + votes.label, minlength=votes.n_items * votes.n_classes
    )
    counts = counts.reshape(votes.n_items, votes.n_classes)
    voted = counts.sum(axis=1) > 0
    top = counts == counts.max(axis=1, keepdims=True)
    hit = top[np.arange(votes.n_items), truth] / top.sum(axis=1)
    return float(hit[voted].mean())


def accuracy(probs: np.ndarray, truth: np.ndarray, votes: VoteArrays) -> float:
    """Argmax accuracy over the items with votes."""
    voted = np.bincount(votes.item, minlength=votes.n_items) > 0
    return float((probs.argmax(axis=1) == truth)[voted].mean())
