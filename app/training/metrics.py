"""Held-out metrics for a trained model, in numpy (`app/training/evaluate.py` runs the model).

Keys (always all present; a metric that cannot be computed is None, never a made-up number):

- accuracy, nll, ece: against gold labels, over eval items that have one (gold = -1: none).
  ece is the expected calibration error with 15 equal-width bins on the max probability
  (bins (b/15, (b+1)/15]; Guo, Pleiss, Sun, Weinberger, "On Calibration of Modern Neural
  Networks", ICML 2017): sum_b |B_b| / n * |accuracy(B_b) - mean confidence(B_b)|.
- accuracy_majority: against the majority vote of the human counts (ties: lowest class index),
  over eval items with at least one vote.
- ce_human, kl_human: mean cross-entropy -sum_c h(c) log p(c) and KL(h || p) from the human
  distribution h = counts / counts.sum() to the model's p, over eval items with votes (the
  measure of J. Peterson, R. Battleday, T. Griffiths, O. Russakovsky, "Human uncertainty makes
  classification more robust", ICCV 2019).
- brier: mean over gold items of sum_c (p(c) - [c = gold])^2, the multi-class Brier score
  (G. Brier, "Verification of forecasts expressed in terms of probability", Monthly Weather
  Review 1950); 0 is perfect, 2 the worst.
- macro_f1: unweighted mean of per-class F1 of argmax p against gold, over the classes present in
  gold or predictions (scikit-learn's f1_score(average="macro") convention; a class never
  predicted has F1 0).
- per_class_accuracy: list of K entries, the share of gold items of class c predicted as c
  (per-class recall); None for a class with no gold item in the split.
- manhattan_human: mean over voted items of sum_c |h(c) - p(c)|, the Manhattan (L1) distance
  between the human and the model distributions, LeWiDi 2025's soft-label metric for
  categorical tasks (Leonardelli et al., "LeWiDi-2025 at NLPerspectives: third edition of the
  Learning with Disagreements shared task"); 0 is perfect, 2 the worst.
- n_eval, n_train: size of the split these metrics are on, and of the training split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from app.aggregation.methods import majority_labels

ECE_BINS = 15
METRIC_KEYS = (
    "accuracy",
    "nll",
    "ece",
    "accuracy_majority",
    "ce_human",
    "kl_human",
    "n_eval",
    "n_train",
    "brier",
    "macro_f1",
    "per_class_accuracy",
    "manhattan_human",
)
# log(0) guard: probabilities are floored at the smallest normal float64 (log = -708.4), which
# only matters where softmax underflowed; everywhere else the logs are exact.
_TINY = np.finfo(np.float64).tiny


def _safe_log(p: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(p, _TINY))


def expected_calibration_error(
    probs: np.ndarray, gold: np.ndarray, n_bins: int = ECE_BINS
) -> float:
    """ECE of `probs` (n, K) against labels `gold` (n,), all valid; bins (b/B, (b+1)/B]."""
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == gold).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # right=True: edges[b] < conf <= edges[b+1] -> b; conf > 0 always (max of a distribution).
    bins = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    # Per bin: |B|/n * |acc(B) - conf(B)| = |sum_B correct - sum_B conf| / n (empty bins: 0).
    gap = np.bincount(bins, weights=correct, minlength=n_bins) - np.bincount(
        bins, weights=conf, minlength=n_bins
    )
    return float(np.abs(gap).sum() / len(conf))


def brier_score(probs: np.ndarray, gold: np.ndarray) -> float:
    """Multi-class Brier score: mean_i sum_c (p_ic - [c = gold_i])^2 (all gold valid)."""
    sq = (probs**2).sum(axis=1) - 2.0 * probs[np.arange(len(probs)), gold] + 1.0
    return float(sq.mean())


def macro_f1(pred: np.ndarray, gold: np.ndarray, k: int) -> float:
    """Macro F1 over the classes present in `gold` or `pred` (scikit-learn's default labels)."""
    tp = np.bincount(gold[pred == gold], minlength=k).astype(np.float64)
    n_pred = np.bincount(pred, minlength=k).astype(np.float64)
    n_gold = np.bincount(gold, minlength=k).astype(np.float64)
    present = (n_pred + n_gold) > 0
    denom = n_pred + n_gold  # F1 = 2 tp / (|pred = c| + |gold = c|); 0 where tp = 0
    f1 = np.divide(2.0 * tp, denom, out=np.zeros(k), where=denom > 0)
    return float(f1[present].mean())


def per_class_accuracy(pred: np.ndarray, gold: np.ndarray, k: int) -> list[float | None]:
    right = np.bincount(gold[pred == gold], minlength=k)
    total = np.bincount(gold, minlength=k)
    return [None if t == 0 else float(r / t) for r, t in zip(right, total, strict=True)]


@dataclass(frozen=True, eq=False)
class EvalSet:
    """The label side of an eval split, computed once (it does not change between epochs)."""

    n: int
    gold_rows: np.ndarray  # indices of items with a gold label
    gold: np.ndarray  # their gold labels
    voted_rows: np.ndarray  # indices of items with >= 1 vote
    majority: np.ndarray  # their majority-vote labels (ties: lowest index)
    human: np.ndarray  # their normalized counts h, (n_voted, K)
    human_xlogx: np.ndarray  # sum_c h log h per voted item (0 log 0 = 0): minus the entropy

    @classmethod
    def build(cls, counts: np.ndarray, gold: np.ndarray) -> EvalSet:
        counts = np.asarray(counts)
        gold = np.asarray(gold, dtype=np.int64)
        n_votes = counts.sum(axis=1)
        voted = np.flatnonzero(n_votes > 0)
        human = counts[voted] / n_votes[voted, None].astype(np.float64)
        xlogx = np.where(human > 0, human * _safe_log(human), 0.0).sum(axis=1)
        gold_rows = np.flatnonzero(gold >= 0)
        return cls(
            n=len(counts),
            gold_rows=gold_rows,
            gold=gold[gold_rows],
            voted_rows=voted,
            majority=majority_labels(counts[voted]) if len(voted) else np.zeros(0, np.int64),
            human=human,
            human_xlogx=xlogx,
        )

    def metrics(self, probs: np.ndarray, *, n_train: int) -> dict[str, Any]:
        """All METRIC_KEYS for predictions `probs` (n, K) on this split."""
        probs = np.asarray(probs, dtype=np.float64)
        if len(probs) != self.n:
            raise ValueError(f"probs has {len(probs)} rows, the eval split {self.n}")
        out: dict[str, Any] = dict.fromkeys(METRIC_KEYS)
        out["n_eval"] = self.n
        out["n_train"] = int(n_train)
        if len(self.gold_rows):
            p = probs[self.gold_rows]
            out["accuracy"] = float((p.argmax(axis=1) == self.gold).mean())
            out["nll"] = float(-_safe_log(p[np.arange(len(p)), self.gold]).mean())
            out["ece"] = expected_calibration_error(p, self.gold)
            out["brier"] = brier_score(p, self.gold)
            pred = p.argmax(axis=1)
            out["macro_f1"] = macro_f1(pred, self.gold, p.shape[1])
            out["per_class_accuracy"] = per_class_accuracy(pred, self.gold, p.shape[1])
        if len(self.voted_rows):
            p = probs[self.voted_rows]
            out["accuracy_majority"] = float((p.argmax(axis=1) == self.majority).mean())
            ce = -(self.human * _safe_log(p)).sum(axis=1)
            # KL(h || p) = sum_c h log h - sum_c h log p; the h = 0 terms are 0 in both sums
            # (so p == h gives exactly 0 up to rounding, and a p = 0 where h = 0 costs nothing).
            kl = self.human_xlogx + ce
            out["ce_human"] = float(ce.mean())
            out["kl_human"] = float(max(kl.mean(), 0.0))  # clamp rounding below 0 only
            out["manhattan_human"] = float(np.abs(self.human - p).sum(axis=1).mean())
        return out


def compute_metrics(
    probs: np.ndarray, counts: np.ndarray, gold: np.ndarray, *, n_train: int
) -> dict[str, Any]:
    """All METRIC_KEYS for eval-split predictions `probs` (n, K), `counts` (n, K), `gold` (n,)."""
    return EvalSet.build(counts, gold).metrics(probs, n_train=n_train)


def reliability_bins(
    probs: np.ndarray, gold: np.ndarray, n_bins: int = ECE_BINS
) -> list[dict[str, float | int]]:
    """The reliability diagram behind expected_calibration_error: per confidence bin
    (b/B, (b+1)/B], its item count, mean confidence and accuracy (0 for empty bins).
    Guo, Pleiss, Sun & Weinberger (2017), "On Calibration of Modern Neural Networks", ICML."""
    probs = np.asarray(probs, dtype=np.float64)
    if len(probs) == 0:
        return []
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == np.asarray(gold)).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    safe = np.maximum(count, 1)
    mean_conf = np.bincount(bins, weights=conf, minlength=n_bins) / safe
    acc = np.bincount(bins, weights=correct, minlength=n_bins) / safe
    return [
        {
            "lower": float(edges[b]),
            "upper": float(edges[b + 1]),
            "count": int(count[b]),
            "confidence": float(mean_conf[b]),
            "accuracy": float(acc[b]),
        }
        for b in range(n_bins)
    ]
