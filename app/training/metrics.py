"""Held-out metrics for a trained model (numpy; `evaluate` runs the model under no_grad).

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
- n_eval, n_train: item counts of the two splits.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

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


def compute_metrics(
    probs: np.ndarray, counts: np.ndarray, gold: np.ndarray, *, n_train: int
) -> dict[str, Any]:
    """All METRIC_KEYS for eval-split predictions `probs` (n, K), `counts` (n, K), `gold` (n,)."""
    probs = np.asarray(probs, dtype=np.float64)
    counts = np.asarray(counts)
    gold = np.asarray(gold, dtype=np.int64)
    out: dict[str, Any] = dict.fromkeys(METRIC_KEYS)
    out["n_eval"] = len(probs)
    out["n_train"] = int(n_train)

    has_gold = gold >= 0
    if has_gold.any():
        p, g = probs[has_gold], gold[has_gold]
        out["accuracy"] = float((p.argmax(axis=1) == g).mean())
        out["nll"] = float(-_safe_log(p[np.arange(len(g)), g]).mean())
        out["ece"] = expected_calibration_error(p, g)

    n_votes = counts.sum(axis=1)
    voted = n_votes > 0
    if voted.any():
        p, c = probs[voted], counts[voted]
        out["accuracy_majority"] = float((p.argmax(axis=1) == majority_labels(c)).mean())
        human = c / n_votes[voted, None].astype(np.float64)
        log_p = _safe_log(p)
        ce = -(human * log_p).sum(axis=1)
        # KL summed term by term (not ce - entropy) so that p == h gives exactly 0; h = 0 terms
        # contribute 0 (0 * log 0 = 0).
        kl = np.where(human > 0, human * (_safe_log(human) - log_p), 0.0).sum(axis=1)
        out["ce_human"] = float(ce.mean())
        out["kl_human"] = float(kl.mean())
    return out


@torch.no_grad()
def predict_logits(
    model: nn.Module, features: torch.Tensor, batch_size: int = 65536
) -> torch.Tensor:
    """Logits in eval mode (dropout off), in chunks; the model's train/eval mode is restored."""
    was_training = model.training
    model.eval()
    try:
        if len(features) <= batch_size:
            return model(features)
        return torch.cat([model(chunk) for chunk in features.split(batch_size)])
    finally:
        model.train(was_training)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    features: torch.Tensor,
    counts: np.ndarray,
    gold: np.ndarray,
    *,
    n_train: int,
    loss_targets: torch.Tensor | None = None,
) -> dict[str, Any]:
    """METRIC_KEYS on the eval split; with `loss_targets` (n, K) also "loss", the soft
    cross-entropy against them (None when the split is empty)."""
    logits = predict_logits(model, features) if len(features) else None
    if logits is None:
        probs = np.zeros((0, counts.shape[1]))
    else:
        probs = torch.softmax(logits.double(), dim=1).cpu().numpy()
    out = compute_metrics(probs, counts, gold, n_train=n_train)
    if loss_targets is not None:
        out["loss"] = (
            None
            if logits is None
            else float(torch.nn.functional.cross_entropy(logits, loss_targets))
        )
    return out
