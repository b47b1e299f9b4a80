"""Scores of soft labels and of per-annotator predictions, as LeWiDi 2025 defines them.

E. Leonardelli, S. Casola, S. Peng, G. Rizzi, V. Basile, E. Fersini, D. Frassinelli, H. Jang,
M. Pavlovic, B. Plank, M. Poesio (2025). "LeWiDi-2025 at NLPerspectives: The Third Edition of the
Learning with Disagreements Shared Task." NLPerspectives workshop, EMNLP 2025. The definitions
follow the task's evaluation notebook (Evaluation_LeWiDi_2025_Metrics.ipynb in the
le-wi-di.github.io repository); where ours differ, the docstring says how.

Soft-label scores return one value per item (the task reports their mean, lower is better);
per-annotator scores return the mean over the (item, annotator) pairs given.
"""

from __future__ import annotations

import numpy as np


def manhattan_distance(p: np.ndarray, t: np.ndarray) -> np.ndarray:
    """sum_k |p_k - t_k| per row: LeWiDi's soft score for categorical tasks, in [0, 2]."""
    return np.abs(np.asarray(p, float) - np.asarray(t, float)).sum(axis=1)


def multilabel_manhattan_distance(p: np.ndarray, t: np.ndarray) -> np.ndarray:
    """LeWiDi's multi-label score (MAMD, VariErr NLI): per class, the Manhattan distance between
    the two-point distributions (1 - p, p) and (1 - t, t), which is 2 |p - t|; averaged over the
    K classes. Inputs are (n, K) per-class probabilities that the class applies; output in [0, 2].
    """
    return 2.0 * np.abs(np.asarray(p, float) - np.asarray(t, float)).mean(axis=1)


def wasserstein_distance(
    p: np.ndarray, t: np.ndarray, values: np.ndarray | None = None
) -> np.ndarray:
    """1-Wasserstein (earth mover's) distance per row between distributions over ordered levels.

    On a line the optimal transport cost is the area between the two CDFs:
    sum_j |CDF_p(j) - CDF_t(j)| * (v_{j+1} - v_j). `values` are the levels' values (default
    0..K-1, LeWiDi's cost |h - k| on level indices; the paraphrase scale -5..5 has spacing 1, so
    both agree there).
    """
    p = np.asarray(p, float)
    t = np.asarray(t, float)
    k = p.shape[1]
    v = np.arange(k, dtype=float) if values is None else np.asarray(values, float)
    gaps = np.diff(v)
    # The last CDF entry is 1 for both rows and carries no cost.
    return np.abs(np.cumsum(p - t, axis=1)[:, :-1]) @ gaps


def median_index(p: np.ndarray) -> np.ndarray:
    """Per row, the first level index where the CDF reaches 0.5: the point prediction that
    minimizes the expected absolute distance. The 1e-12 slack keeps a CDF that is 0.5 up to
    rounding (e.g. 0.1 + 0.4) counted as reaching it."""
    cdf = np.cumsum(np.asarray(p, float), axis=1)
    return np.argmax(cdf >= 0.5 - 1e-12, axis=1)


def error_rate(pred: np.ndarray, true: np.ndarray) -> float:
    """Share of (item, annotator) pairs whose predicted label differs from the annotator's.

    LeWiDi averages per item over its annotators, then over items; with one held-out annotator
    per item (our evaluation) the two averages coincide."""
    pred, true = np.asarray(pred), np.asarray(true)
    return float((pred != true).mean()) if true.size else float("nan")


def multilabel_error_rate(pred: np.ndarray, true: np.ndarray) -> float:
    """LeWiDi's multi-label error rate (MER): per (item, annotator) pair, the share of the K
    classes whose tick is mispredicted, averaged over pairs. pred, true: (m, K) booleans."""
    pred, true = np.asarray(pred, bool), np.asarray(true, bool)
    return float((pred != true).mean()) if true.size else float("nan")


def normalized_absolute_distance(
    pred: np.ndarray, true: np.ndarray, n_levels: int, scale: float | None = None
) -> float:
    """Mean |pred - true| / scale over (item, annotator) pairs, pred and true level indices.

    scale defaults to K - 1, the largest possible distance, so the score lies in [0, 1]. Note:
    LeWiDi's notebook divides by the number of levels instead (11 for the paraphrase scale -5..5,
    6 for sarcasm 1..6); pass scale=n_levels for its figures (ours * (K - 1) / K)."""
    pred = np.asarray(pred, float)
    true = np.asarray(true, float)
    s = float(n_levels - 1) if scale is None else float(scale)
    return float((np.abs(pred - true) / s).mean()) if true.size else float("nan")
