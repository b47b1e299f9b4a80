"""Per-item figures of a job's stored predictions: the values whose mean is a metric, which the
sweep's paired bootstrap resamples (app/training/sweeps.py), for every task type."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.training.task_metrics import ORDINAL_KEYS, AnyEvalSet, eval_set


@dataclass(frozen=True, eq=False)
class Rows:
    """One job's stored predictions on one split's items (in some order), and the label side
    its task type's metrics need."""

    task_type: str
    probs: np.ndarray
    counts: np.ndarray
    gold: np.ndarray
    voters: np.ndarray | None  # multi-label: voters per item
    scale: np.ndarray | None  # ordinal: the levels' values

    def take(self, idx: np.ndarray) -> Rows:
        v = None if self.voters is None else self.voters[idx]
        p, c, g = self.probs[idx], self.counts[idx], self.gold[idx]
        return Rows(self.task_type, p, c, g, v, self.scale)

    def labels(self) -> AnyEvalSet:
        return eval_set(self.task_type, self.counts, self.gold, self.voters, self.scale)

    def per_item(self, metric: str) -> np.ndarray:
        if self.task_type == "multi_label" or metric in ORDINAL_KEYS:
            return self.labels().per_item(metric, self.probs)  # type: ignore[union-attr]
        return single_label_per_item(metric, self.probs, self.counts, self.gold)


def single_label_per_item(
    metric: str, probs: np.ndarray, counts: np.ndarray, gold: np.ndarray
) -> np.ndarray:
    """Per-item values whose mean is `metric` (NaN where the item does not count), or an
    empty array for metrics that are not means over items (ece, macro_f1): single-label
    projects' metrics, which ordinal projects report too."""
    n, k = probs.shape if probs.ndim == 2 else (0, 0)
    tiny = np.finfo(np.float64).tiny
    out = np.full(n, np.nan)
    g = gold >= 0
    nv = counts.sum(axis=1)
    v = nv > 0
    if metric == "accuracy":
        out[g] = probs[g].argmax(axis=1) == gold[g]
    elif metric == "nll":
        out[g] = -np.log(np.maximum(probs[g, gold[g]], tiny))
    elif metric == "brier":
        onehot = np.eye(k)[gold[g]]
        out[g] = ((probs[g] - onehot) ** 2).sum(axis=1)
    elif metric in ("accuracy_majority", "ce_human", "kl_human", "manhattan_human"):
        h = counts[v] / nv[v, None]
        p = probs[v]
        if metric == "accuracy_majority":
            out[v] = p.argmax(axis=1) == counts[v].argmax(axis=1)
        elif metric == "manhattan_human":
            out[v] = np.abs(h - p).sum(axis=1)
        else:
            ce = -(h * np.log(np.maximum(p, tiny))).sum(axis=1)
            hlogh = np.where(h > 0, h * np.log(np.maximum(h, tiny)), 0.0).sum(axis=1)
            out[v] = ce if metric == "ce_human" else ce + hlogh
    else:
        return np.zeros(0)
    return out
