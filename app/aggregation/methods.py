"""Count-based soft-label methods: an (n, K) vote-count matrix in, (n, K) distributions out.

Row i of `counts` is item i's vote-count vector d over the project's K classes, N = sum(d).
Every method is vectorized over rows and is pure numpy (no database, no web framework).

Rows with N = 0 (no votes yet) get the uniform distribution 1/K. Callers report such items as
`probs: null`; the uniform row only guarantees that no function here ever produces NaN.

Source: A. Uma, T. Fornaciari, D. Hovy, S. Paun, B. Plank, M. Poesio (2020). "A Case for Soft
Loss Functions." Proceedings of HCOMP 2020, 8(1), 173-177.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from app.aggregation.base import CountsMethod
from app.aggregation.params import ParamError, ParamSpec, validate_params

Params = Mapping[str, float]

UMA_2020 = 'Uma et al. (2020), "A Case for Soft Loss Functions", HCOMP 2020'

ALPHA = ParamSpec(
    name="alpha",
    type=float,
    default=0.0,
    doc="pseudo-count added to every class (additive smoothing); 0 = plain proportions",
    check=lambda v: 0.0 <= v < math.inf,
    rule="a finite number >= 0",
)

TEMPERATURE = ParamSpec(
    name="temperature",
    type=float,
    default=1.0,
    doc="softmax temperature T: small T sharpens toward the majority, large T flattens",
    check=lambda v: 0.0 < v < math.inf,
    rule="a finite number > 0",
)


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


def normalized(counts: np.ndarray, params: Params) -> np.ndarray:
    """(d + alpha) / (N + K * alpha): vote proportions, optionally additively smoothed.

    Uma et al. (2020), eq. 3 ("standard normalization"); alpha > 0 is additive (Laplace /
    Lidstone) smoothing. With alpha = 0 this is exactly counts / counts.sum(axis=1), which is
    how the published CIFAR-10H soft labels were made. alpha -> infinity tends to uniform.
    """
    alpha = float(params.get("alpha", 0.0))
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


def softmax(counts: np.ndarray, params: Params) -> np.ndarray:
    """softmax(d / T) over the raw counts.

    Uma et al. (2020), eq. 4 (T = 1 is the softmax of raw counts). Depends on absolute counts:
    an item with 30 votes is far sharper than one with 3 at the same proportions. T -> 0 tends to
    `majority` (ties shared); T -> infinity tends to uniform.
    """
    return _softmax_rows(counts.astype(np.float64), float(params.get("temperature", 1.0)))


def softmax_normalized(counts: np.ndarray, params: Params) -> np.ndarray:
    """softmax((d / N) / T): the "softmax of normalized counts" variant.

    Beware that at T = 1 the result is nearly uniform: the inputs lie in [0, 1], so no class can
    get more than e times the mass of another (for K = 10, a unanimous item gets about 0.23).
    Use a small T (e.g. 0.1) for a useful distribution. Rows with N = 0 are uniform.
    """
    return _softmax_rows(normalized(counts, {"alpha": 0.0}), float(params.get("temperature", 1.0)))


def majority(counts: np.ndarray, params: Params) -> np.ndarray:
    """One-hot on the most-voted class; classes tied for the top count share the mass equally.

    The hard-label (majority vote) baseline, written as a distribution. Rows with N = 0 are a
    K-way tie and so come out uniform. See `majority_labels` for a single index per item.
    """
    top = counts == counts.max(axis=1, keepdims=True)
    return top / top.sum(axis=1, keepdims=True, dtype=np.float64)


COUNT_METHODS: dict[str, CountsMethod] = {
    m.name: m
    for m in (
        CountsMethod(
            name="normalized",
            params={"alpha": ALPHA},
            compute=normalized,
            summary="vote proportions (d + alpha) / (N + K alpha); alpha > 0 smooths",
            source=f"{UMA_2020}, eq. 3",
        ),
        CountsMethod(
            name="softmax",
            params={"temperature": TEMPERATURE},
            compute=softmax,
            summary="softmax of raw vote counts, softmax(d / T)",
            source=f"{UMA_2020}, eq. 4",
        ),
        CountsMethod(
            name="softmax-normalized",
            params={"temperature": TEMPERATURE},
            compute=softmax_normalized,
            summary="softmax of vote proportions, softmax((d / N) / T); near uniform at T = 1",
            source=f'"softmax of normalized counts" variant of {UMA_2020}, eq. 4',
        ),
        CountsMethod(
            name="majority",
            params={},
            compute=majority,
            summary="one-hot on the most-voted class; ties share the mass equally",
            source="majority vote (hard-label baseline)",
        ),
    )
}


def resolve(
    method: str, raw_params: Mapping[str, Any]
) -> tuple[CountsMethod, dict[str, int | float]]:
    """Look up a method by name and validate its parameters (defaults filled).

    Raw values may be strings (query parameters) or numbers. An unknown method raises
    ParamError(field="method"); a parameter the method does not take, or a value out of range,
    raises ParamError(field=<parameter name>).
    """
    spec = COUNT_METHODS.get(method)
    if spec is None:
        known = ", ".join(COUNT_METHODS)
        raise ParamError("method", f"unknown method {method!r} (known methods: {known})")
    return spec, validate_params(method, spec.params, raw_params)


def _as_count_matrix(counts: np.ndarray) -> np.ndarray:
    arr = np.asarray(counts)
    if arr.ndim not in (1, 2) or arr.shape[-1] == 0:
        raise ValueError(f"counts must have shape (K,) or (n, K) with K >= 1, got {arr.shape}")
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"counts must be numeric, got dtype {arr.dtype}")
    if arr.size and not (np.isfinite(arr).all() and (arr >= 0).all()):
        raise ValueError("counts must be finite and non-negative")
    return arr.reshape(-1, arr.shape[-1])


def soft_labels(
    counts: np.ndarray, method: str, params: Mapping[str, Any] | None = None
) -> np.ndarray:
    """Soft labels for every row of `counts` by `method` (see COUNT_METHODS).

    `counts` is (n, K) non-negative vote counts (integers in practice); a 1-D (K,) vector is
    accepted and gives a (K,) result. Returns float64 rows that sum to 1; rows with no votes are
    uniform. Raises ParamError for a bad method or parameter, ValueError (TypeError)
    for counts of the wrong shape, sign or dtype.
    """
    spec, values = resolve(method, params or {})
    matrix = _as_count_matrix(counts)
    out = spec.compute(matrix, values)
    return out.reshape(np.shape(counts))


def majority_labels(counts: np.ndarray) -> np.ndarray:
    """(n,) int64 index of each row's most-voted class.

    Ties go to the lowest class index (numpy's argmax keeps the first maximum), so rows with no
    votes get class 0: check N > 0 before trusting the label. A 1-D (K,) vector gives a 0-d array.
    """
    matrix = _as_count_matrix(counts)
    labels = np.argmax(matrix, axis=1).astype(np.int64)
    return labels if np.ndim(counts) == 2 else labels.reshape(())
