"""Held-out metrics for ordinal and multi-label models, in numpy (metrics.py has the
single-label ones, which ordinal models report too).

Ordinal (distributions over the levels of a scale, in the scale's values v_1 < ... < v_K):
- mae: mean over gold items of |E_p[v] - v_gold|, the absolute error of the expected level.
- mae_human: mean over voted items of |E_p[v] - E_h[v]|, against the mean human rating.
- wasserstein_human: mean over voted items of W1(p, h) = sum_{k<K} |F_p(k) - F_h(k)| (v_{k+1}
  - v_k), the Wasserstein-1 (earth mover's) distance between the model's and the human
  distributions on the line (Vallender 1974: W1 in one dimension is the L1 distance of the
  CDFs), LeWiDi 2025's soft-label metric for ordinal tasks (Leonardelli et al., NLPerspectives
  at EMNLP 2025). Equals scipy.stats.wasserstein_distance(v, v, p, h).
- rps_human: mean over voted items of sum_k (F_p(k) - F_h(k))^2, the ranked probability score
  (E. Epstein, "A scoring system for probability forecasts of ranked categories", J. Applied
  Meteorology 1969; unnormalized, levels one step apart) against the human distribution: the
  squared EMD of Hou et al. as a figure. Unlike W1 it is proper: its mean over an item's
  voters is RPS(p, h) plus a term free of p, so the voters' own distribution scores best,
  where W1 to a few voters rewards piling the mass on their median level.
- anad, annotator_error_rate: each annotator's view (LeWiDi 2025's perspectivist task, scored
  as its baseline does when a model gives one answer for every annotator of an item): the
  model's answer is the median level of p (anad: |median - the annotator's level| / (K - 1),
  in level steps) and its most probable level (annotator_error_rate: the share of annotators
  who answered otherwise); per item over its voters, then over items, as LeWiDi averages.

Multi-label (K probabilities per item that each class applies; h_k = share of the item's voters
who ticked class k; y_k = [h_k > 0.5], the majority of the voters, a tie being no majority;
multi-label items carry no gold, so the held-out voters are the reference):
- brier: mean over items and classes of (p_k - y_k)^2 (Brier 1950, per class as a binary
  forecast); per_class_brier: the K per-class means.
- macro_f1: [p_k > 0.5] against y_k, F1 per class over the items, averaged over the classes
  that are ticked by a majority or predicted somewhere in the split (as metrics.macro_f1;
  scikit-learn's f1_score(average="macro") on those labels); per_class_f1 (None: neither).
- bce_human, kl_human: mean over items and classes of -[h log p + (1-h) log(1-p)] and of the
  binary KL(h || p) = h log(h/p) + (1-h) log((1-h)/(1-p)) (0 log 0 = 0).
- manhattan_human: mean over items of sum_k |h_k - p_k|, LeWiDi 2025's Manhattan distance on
  the per-class probabilities. Not proper: with a few voters per item, |h - p| is smallest at
  the median of h, so a confident 0 or 1 can beat the true rate (see the sweep's default).
- mer: LeWiDi 2025's multi-label error rate for each annotator's view: the model ticks class k
  when p_k > 0.5, and per item, the share of (voter, class) pairs whose tick it gets wrong,
  sum_k (h_k if not ticked else 1 - h_k) / K, averaged over items.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from app.aggregation.scores import median_index
from app.training.metrics import EvalSet, _safe_log

ORDINAL_KEYS = (
    "mae",
    "mae_human",
    "wasserstein_human",
    "rps_human",
    "anad",
    "annotator_error_rate",
)
MULTI_LABEL_KEYS = (
    "brier",
    "per_class_brier",
    "macro_f1",
    "per_class_f1",
    "bce_human",
    "kl_human",
    "manhattan_human",
    "mer",
    "n_eval",
    "n_train",
)


def cdf_l1(p: np.ndarray, q: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(n,) W1 between rows of p and q, distributions over levels at `values` (increasing)."""
    gaps = np.diff(values)
    diff = np.abs(np.cumsum(p, axis=1) - np.cumsum(q, axis=1))[:, :-1]
    return np.asarray(diff @ gaps)


@dataclass(frozen=True, eq=False)
class OrdinalEvalSet:
    """The single-label figures (EvalSet) and the scale's own."""

    base: EvalSet
    values: np.ndarray  # (K,) the levels' values

    @classmethod
    def build(cls, counts: np.ndarray, gold: np.ndarray, values: np.ndarray) -> OrdinalEvalSet:
        return cls(EvalSet.build(counts, gold), np.asarray(values, np.float64))

    def per_item(self, metric: str, probs: np.ndarray) -> np.ndarray:
        """(n,) values whose mean (NaN: the item does not count) is `metric`."""
        b = self.base
        out = np.full(b.n, np.nan)
        expected = np.asarray(probs, np.float64) @ self.values
        if metric == "mae":
            out[b.gold_rows] = np.abs(expected[b.gold_rows] - self.values[b.gold])
        elif metric == "mae_human":
            out[b.voted_rows] = np.abs(expected[b.voted_rows] - b.human @ self.values)
        elif metric == "wasserstein_human":
            out[b.voted_rows] = cdf_l1(probs[b.voted_rows], b.human, self.values)
        elif metric == "rps_human":
            gap = np.cumsum(probs[b.voted_rows], axis=1) - np.cumsum(b.human, axis=1)
            out[b.voted_rows] = (gap**2).sum(axis=1)
        elif metric == "anad":
            k = len(self.values)
            median = median_index(probs[b.voted_rows])
            dist = np.abs(np.arange(k)[None, :] - median[:, None]) / max(k - 1, 1)
            out[b.voted_rows] = (b.human * dist).sum(axis=1)
        elif metric == "annotator_error_rate":
            mode = np.argmax(probs[b.voted_rows], axis=1)
            out[b.voted_rows] = 1.0 - b.human[np.arange(len(mode)), mode]
        else:
            raise KeyError(metric)
        return out

    def metrics(self, probs: np.ndarray, *, n_train: int) -> dict[str, Any]:
        out = self.base.metrics(probs, n_train=n_train)
        for key in ORDINAL_KEYS:
            values = self.per_item(key, np.asarray(probs, np.float64))
            counted = values[~np.isnan(values)]
            out[key] = float(counted.mean()) if len(counted) else None
        return out


@dataclass(frozen=True, eq=False)
class MultiLabelEvalSet:
    n: int
    voted_rows: np.ndarray
    human: np.ndarray  # (n_voted, K) share of voters who ticked each class
    majority: np.ndarray  # (n_voted, K) bool, ticked by more than half of them

    @classmethod
    def build(cls, ticks: np.ndarray, n_voters: np.ndarray) -> MultiLabelEvalSet:
        ticks = np.asarray(ticks, np.float64)
        voters = np.asarray(n_voters, np.float64)
        voted = np.flatnonzero(voters > 0)
        human = ticks[voted] / voters[voted, None]
        return cls(len(ticks), voted, human, human > 0.5)

    def per_item(self, metric: str, probs: np.ndarray) -> np.ndarray:
        """(n,) values whose mean is `metric` (NaN where an item has no voter); empty for
        macro_f1, which is not a mean over items."""
        out = np.full(self.n, np.nan)
        p, h = np.asarray(probs, np.float64)[self.voted_rows], self.human
        if metric == "brier":
            out[self.voted_rows] = ((p - self.majority) ** 2).mean(axis=1)
        elif metric == "bce_human":
            out[self.voted_rows] = _bce(h, p).mean(axis=1)
        elif metric == "kl_human":
            out[self.voted_rows] = (_bce(h, p) - _bce(h, h)).mean(axis=1)
        elif metric == "manhattan_human":
            out[self.voted_rows] = np.abs(h - p).sum(axis=1)
        elif metric == "mer":
            out[self.voted_rows] = np.where(p > 0.5, 1.0 - h, h).mean(axis=1)
        elif metric == "macro_f1":
            return np.zeros(0)
        else:
            raise KeyError(metric)
        return out

    def metrics(self, probs: np.ndarray, *, n_train: int) -> dict[str, Any]:
        probs = np.asarray(probs, dtype=np.float64)
        if len(probs) != self.n:
            raise ValueError(f"probs has {len(probs)} rows, the eval split {self.n}")
        out: dict[str, Any] = dict.fromkeys(MULTI_LABEL_KEYS)
        out["n_eval"], out["n_train"] = self.n, int(n_train)
        if not len(self.voted_rows):
            return out
        for key in ("brier", "bce_human", "kl_human", "manhattan_human", "mer"):
            out[key] = float(np.mean(self.per_item(key, probs)[self.voted_rows]))
        out["kl_human"] = max(out["kl_human"], 0.0)  # clamp rounding below 0 only
        p = probs[self.voted_rows]
        out["per_class_brier"] = ((p - self.majority) ** 2).mean(axis=0).tolist()
        out["macro_f1"], out["per_class_f1"] = multilabel_f1(p > 0.5, self.majority)
        return out


def _bce(h: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Elementwise -[h log p + (1-h) log(1-p)], with 0 log 0 = 0 (so _bce(h, h) is the
    entropy of h and KL(h || p) = _bce(h, p) - _bce(h, h))."""
    pos = np.where(h > 0, h * _safe_log(p), 0.0)
    neg = np.where(h < 1, (1 - h) * _safe_log(1 - p), 0.0)
    return np.asarray(-(pos + neg))


def multilabel_f1(pred: np.ndarray, ref: np.ndarray) -> tuple[float | None, list[float | None]]:
    """Macro F1 of (n, K) boolean predictions against references, over the classes present in
    either; F1_k = 2 TP / (2 TP + FP + FN)."""
    tp = (pred & ref).sum(axis=0).astype(np.float64)
    denom = pred.sum(axis=0) + ref.sum(axis=0)  # = 2 TP + FP + FN
    per = [None if d == 0 else float(2 * t / d) for t, d in zip(tp, denom, strict=True)]
    present = [f for f in per if f is not None]
    return (float(np.mean(present)) if present else None), per


AnyEvalSet = EvalSet | OrdinalEvalSet | MultiLabelEvalSet


def eval_set(
    task_type: str,
    counts: np.ndarray,
    gold: np.ndarray,
    n_voters: np.ndarray | None = None,
    scale: np.ndarray | None = None,
) -> AnyEvalSet:
    """The label side of an eval split for a project of `task_type`: `counts` are vote counts
    (ticks per class for multi-label, with `n_voters`), `scale` an ordinal project's values."""
    if task_type == "multi_label":
        if n_voters is None:
            raise ValueError("a multi-label eval split needs n_voters")
        return MultiLabelEvalSet.build(counts, n_voters)
    if task_type == "ordinal":
        k = np.shape(counts)[1]
        values = np.arange(k, dtype=np.float64) if scale is None else scale
        return OrdinalEvalSet.build(counts, gold, values)
    return EvalSet.build(counts, gold)


# The metrics a sweep can rank recipes of each task type by, the default first: accuracy for
# single-label projects (as before task types); for the others a proper score against the
# human labels (the voters' own distribution scores best), not LeWiDi 2025's W1 or Manhattan
# distance, which with ~3 voters per item reward confident predictions over faithful ones.
SWEEP_METRICS: dict[str, tuple[str, ...]] = {
    "single": (
        "accuracy",
        "macro_f1",
        "nll",
        "brier",
        "ece",
        "accuracy_majority",
        "ce_human",
        "kl_human",
        "manhattan_human",
    ),
    "multi_label": ("bce_human", "kl_human", "manhattan_human", "mer", "macro_f1", "brier"),
}
SWEEP_METRICS["ordinal"] = (
    "rps_human",
    "wasserstein_human",
    "mae_human",
    "mae",
    "anad",
    "annotator_error_rate",
    *SWEEP_METRICS["single"],
)
DEFAULT_SWEEP_METRIC = {task: metrics[0] for task, metrics in SWEEP_METRICS.items()}
SWEEP_METRIC_NOTE = {
    "single": "accuracy against gold (the default for single-label projects)",
    "ordinal": "rps_human: ranked probability score against the human distribution, sum over "
    "levels of the squared CDF gap (the default for ordinal projects: order-aware and proper; "
    "wasserstein_human, LeWiDi 2025's, rewards piling the mass on the voters' median)",
    "multi_label": "bce_human: mean per-class binary cross-entropy to the share of voters who "
    "ticked the class (the default for multi-label projects: proper; manhattan_human, LeWiDi "
    "2025's, rewards confident 0s and 1s when an item has few voters)",
}
