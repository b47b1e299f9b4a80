"""Count-based soft-label methods: an (n, K) vote-count matrix in, (n, K) distributions out.

Row i of `counts` is item i's vote-count vector d over the project's K classes, N = sum(d).
Every method is vectorized over rows and is pure numpy (no database, no web framework).

Rows with N = 0 (no votes yet) get the uniform distribution 1/K. Callers report such items as
`probs: null`; the uniform row only guarantees that no function here ever produces NaN.

Source: A. Uma, T. Fornaciari, D. Hovy, S. Paun, B. Plank, M. Poesio (2020). "A Case for Soft
Loss Functions." Proceedings of HCOMP 2020, 8(1), 173-177.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import numpy as np
from pydantic import Field

from app.aggregation.base import CountsAggregator, count_matrix
from app.aggregation.params import NonNegative, ParamError, Positive

UMA_2020 = 'Uma et al. (2020), "A Case for Soft Loss Functions", HCOMP 2020'

Temperature = Annotated[
    Positive,
    Field(
        description="softmax temperature T: small T sharpens toward the majority, large T flattens"
    ),
]


def _softmax_rows(x: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(x / T) per row, computed as softmax((x - max x) / T).

    Shifting before dividing keeps every exponent in [-inf, 0], so neither huge x nor tiny T can
    overflow (x / T alone overflows for x = 1e9, T = 1e-300); the row max always contributes
    exp(0) = 1, so the denominator is >= 1 and never 0.
    """
    # (x - max) / T may round to -inf for a tiny T; exp(-inf) = 0 is the right answer there.
    with np.errstate(over="ignore"):
        z = (x - x.max(axis=1, keepdims=True)) / temperature
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def normalized(counts: np.ndarray, alpha: float = 0.0) -> np.ndarray:
    """(d + alpha) / (N + K * alpha): vote proportions, optionally additively smoothed.

    Uma et al. (2020), eq. 3 ("standard normalization"); alpha > 0 is additive (Laplace /
    Lidstone) smoothing. With alpha = 0 this is exactly counts / counts.sum(axis=1), which is
    how the published CIFAR-10H soft labels were made. alpha -> infinity tends to uniform.
    """
    d = counts.astype(np.float64)
    n_votes = d.sum(axis=1, keepdims=True)
    k = d.shape[1]
    if alpha <= 1.0:
        den = n_votes + k * alpha
        with np.errstate(invalid="ignore", divide="ignore"):
            out = (d + alpha) / den
        # Only alpha = 0 with N = 0 reaches 0 / 0 here; those items have no votes at all.
        return np.where(den > 0, out, 1.0 / k)
    # Dividing through by alpha keeps N + K * alpha from overflowing for alpha near float max.
    return (d / alpha + 1.0) / (n_votes / alpha + k)


def softmax(counts: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """softmax(d / T) over the raw counts.

    Uma et al. (2020), eq. 4 (T = 1 is the softmax of raw counts). Depends on absolute counts:
    an item with 30 votes is far sharper than one with 3 at the same proportions. T -> 0 tends to
    `majority` (ties shared); T -> infinity tends to uniform.
    """
    return _softmax_rows(counts.astype(np.float64), temperature)


def softmax_normalized(counts: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """softmax((d / N) / T): the "softmax of normalized counts" variant.

    Beware that at T = 1 the result is nearly uniform: the inputs lie in [0, 1], so no class can
    get more than e times the mass of another (for K = 10, a unanimous item gets about 0.23).
    Use a small T (e.g. 0.1) for a useful distribution. Rows with N = 0 are uniform.
    """
    return _softmax_rows(normalized(counts), temperature)


def majority(counts: np.ndarray) -> np.ndarray:
    """One-hot on the most-voted class; classes tied for the top count share the mass equally.

    The hard-label (majority vote) baseline, written as a distribution. Rows with N = 0 are a
    K-way tie and so come out uniform. See `majority_labels` for a single index per item.
    """
    top = counts == counts.max(axis=1, keepdims=True)
    return top / top.sum(axis=1, keepdims=True, dtype=np.float64)


class Normalized(CountsAggregator):
    name = "normalized"
    summary = "vote proportions (d + alpha) / (N + K alpha); alpha > 0 smooths"
    source = f"{UMA_2020}, eq. 3"

    alpha: Annotated[
        NonNegative,
        Field(
            description="pseudo-count added to every class (additive smoothing); 0 = plain "
            "proportions"
        ),
    ] = 0.0

    def compute(self, counts: np.ndarray) -> np.ndarray:
        return normalized(counts, self.alpha)


class Softmax(CountsAggregator):
    name = "softmax"
    summary = "softmax of raw vote counts, softmax(d / T)"
    source = f"{UMA_2020}, eq. 4"

    temperature: Temperature = 1.0

    def compute(self, counts: np.ndarray) -> np.ndarray:
        return softmax(counts, self.temperature)


class SoftmaxNormalized(CountsAggregator):
    name = "softmax-normalized"
    summary = "softmax of vote proportions, softmax((d / N) / T); near uniform at T = 1"
    source = f'"softmax of normalized counts" variant of {UMA_2020}, eq. 4'

    temperature: Temperature = 1.0

    def compute(self, counts: np.ndarray) -> np.ndarray:
        return softmax_normalized(counts, self.temperature)


class Majority(CountsAggregator):
    name = "majority"
    summary = "one-hot on the most-voted class; ties share the mass equally"
    source = "majority vote (hard-label baseline)"

    def compute(self, counts: np.ndarray) -> np.ndarray:
        return majority(counts)


COUNT_METHODS: dict[str, type[CountsAggregator]] = {
    m.name: m for m in (Normalized, Softmax, SoftmaxNormalized, Majority)
}


def resolve(method: str, raw_params: Mapping[str, Any]) -> CountsAggregator:
    """The count method called `method`, configured from `raw_params` (defaults filled).

    Raw values may be strings (query parameters) or numbers. An unknown method raises
    ParamError(field="method"); a parameter the method does not take, or a value out of range,
    raises ParamError(field=<parameter name>).
    """
    cls = COUNT_METHODS.get(method)
    if cls is None:
        known = ", ".join(COUNT_METHODS)
        raise ParamError("method", f"unknown method {method!r} (known methods: {known})")
    return cls(**raw_params)


def soft_labels(
    counts: np.ndarray, method: str, params: Mapping[str, Any] | None = None
) -> np.ndarray:
    """Soft labels for every row of `counts` by `method` (see COUNT_METHODS).

    `counts` is (n, K) non-negative vote counts (integers in practice); a 1-D (K,) vector is
    accepted and gives a (K,) result. Returns float64 rows that sum to 1; rows with no votes are
    uniform. Raises ParamError for a bad method or parameter, ValueError (TypeError)
    for counts of the wrong shape, sign or dtype.
    """
    aggregator = resolve(method, params or {})
    out = aggregator.compute(count_matrix(counts))
    return out.reshape(np.shape(counts))


def majority_labels(counts: np.ndarray) -> np.ndarray:
    """(n,) int64 index of each row's most-voted class.

    Ties go to the lowest class index (numpy's argmax keeps the first maximum), so rows with no
    votes get class 0: check N > 0 before trusting the label. A 1-D (K,) vector gives a 0-d array.
    """
    matrix = count_matrix(counts)
    labels = np.argmax(matrix, axis=1).astype(np.int64)
    return labels if np.ndim(counts) == 2 else labels.reshape(())
