"""Each annotator's view: for item i and worker w, the distribution of the answer w would give.

The perspectivist paradigm of LeWiDi 2025 (Leonardelli et al., NLPerspectives at EMNLP 2025)
scores a system by how well it predicts each annotator's own answer, not the crowd's. A worker
model already holds what it needs: a posterior over the item's true label and, per worker, the
probability of each answer given the truth. The prediction marginalizes the truth out:

- single-label and ordinal: P(w answers k on i) = sum_c post[i, c] * kernel[w, c, k], where
  kernel is Dawid-Skene's confusion matrix (Dawid & Skene 1979) or the rater model's discretized
  normal (app/aggregation/ordinal.py);
- multi-label, per class: P(w ticks k on i) = q_ik * sens_w + (1 - q_ik) * (1 - spec_w), with
  per-worker (or per worker and class) sensitivity and specificity.

Baselines: the item's own vote distribution (every worker predicted to answer like the crowd) and
its majority. `hold_out_one` builds the evaluation split: one vote per item with enough votes,
predicted from a fit on the remaining votes.
"""

from __future__ import annotations

import numpy as np


def answer_distribution(
    post: np.ndarray, kernel: np.ndarray, item: np.ndarray, worker: np.ndarray
) -> np.ndarray:
    """(m, K) P(answer | item[j], worker[j]) = post[item] @ kernel[worker].

    post: (n_items, K) posteriors over the true level/class; kernel: (n_workers, K, K) with
    kernel[w, c, k] = P(w answers k | truth c)."""
    return np.einsum("mc,mck->mk", post[item], kernel[worker])


def tick_probabilities(
    q: np.ndarray,
    sensitivity: np.ndarray,
    specificity: np.ndarray,
    item: np.ndarray,
    worker: np.ndarray,
) -> np.ndarray:
    """(m, K) P(worker[j] ticks class k on item[j]).

    q: (n_items, K) probability that each class applies; sensitivity, specificity: (n_workers,)
    shared across classes, or (n_workers, K) per class (binary relevance)."""
    sens = np.asarray(sensitivity, float)[worker]
    spec = np.asarray(specificity, float)[worker]
    if sens.ndim == 1:
        sens, spec = sens[:, None], spec[:, None]
    qi = q[item]
    return qi * sens + (1.0 - qi) * (1.0 - spec)


def item_distribution(counts: np.ndarray, item: np.ndarray) -> np.ndarray:
    """Baseline: the item's own vote proportions (uniform for an item without votes)."""
    c = np.asarray(counts, float)[item]
    n = c.sum(axis=1, keepdims=True)
    return np.divide(c, n, out=np.full(c.shape, 1.0 / c.shape[1]), where=n > 0)


def item_majority(counts: np.ndarray, item: np.ndarray) -> np.ndarray:
    """Baseline: one-hot on the item's most-voted answer; tied answers share the mass."""
    c = np.asarray(counts, float)[item]
    top = c == c.max(axis=1, keepdims=True)
    return top / top.sum(axis=1, keepdims=True)


def item_tick_rate(ticks_count: np.ndarray, n_voters: np.ndarray, item: np.ndarray) -> np.ndarray:
    """Multi-label baseline: the share of the item's voters who ticked each class (0.5 without
    voters)."""
    t = np.asarray(ticks_count, float)[item]
    n = np.asarray(n_voters, float)[item][:, None]
    return np.divide(t, n, out=np.full(t.shape, 0.5), where=n > 0)


def item_tick_majority(
    ticks_count: np.ndarray, n_voters: np.ndarray, item: np.ndarray
) -> np.ndarray:
    """Multi-label baseline: 1 where more than half the item's voters ticked the class, 0 where
    fewer, 0.5 on a tie."""
    return np.sign(item_tick_rate(ticks_count, n_voters, item) - 0.5) * 0.5 + 0.5


def hold_out_one(
    item: np.ndarray, n_items: int, min_votes: int = 3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """One vote drawn at random from every item with at least `min_votes` votes.

    Returns (held, keep): the held-out vote indices (one per such item, in item order) and the
    boolean mask of the votes left to fit on. Each held-out answer is then predicted from the
    others, so every item keeps >= min_votes - 1 votes to predict from."""
    item = np.asarray(item, dtype=np.int64)
    n_votes = np.bincount(item, minlength=n_items)
    order = np.random.default_rng(seed).permutation(item.size)
    # The first vote of each item in the shuffled order is a uniform draw among its votes.
    items, first = np.unique(item[order], return_index=True)
    held = order[first[n_votes[items] >= min_votes]]  # np.unique sorts: in item order
    keep = np.ones(item.size, dtype=bool)
    keep[held] = False
    return held, keep
