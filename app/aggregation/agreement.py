"""Inter-annotator agreement, per-item uncertainty and per-worker quality screens.

Pure numpy: no database and no web framework, so the API, the CLI and the training worker all
compute these numbers the same way. Every function is vectorized over votes and items (at most a
loop over classes), so it stays fast on hundreds of thousands of votes.

Two input shapes are used:

* ``counts``: an ``(n_items, K)`` array of non-negative integers, ``counts[i, c]`` being how many
  votes item ``i`` got for class ``c``;
* parallel 1-D vote arrays ``item``, ``worker``, ``label`` (one vote per ``(item, worker)``), with
  ``item`` in ``0..n_items-1``, ``worker`` in ``0..n_workers-1`` and ``label`` in ``0..K-1``.

Functions return ``None`` (with a reason where the signature has room for one) when a statistic is
undefined, never NaN, so callers can serialize the result to JSON without special cases.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "fleiss_kappa",
    "krippendorff_alpha_nominal",
    "leave_one_out_agreement",
    "margin_uncertainty",
    "normalized_entropy",
    "spammer_flags",
    "votes_per_item_histogram",
]


def _as_counts(counts: np.ndarray) -> np.ndarray:
    """Validate a counts matrix and return it as int64 (exact sums of squares, no float drift)."""
    arr = np.asarray(counts)
    if arr.ndim != 2:
        raise ValueError(f"counts must be a 2-D (n_items, K) array, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        as_int = arr.astype(np.int64)
        if not np.array_equal(as_int, arr):
            raise ValueError("counts must hold whole numbers")
        arr = as_int
    arr = arr.astype(np.int64, copy=False)
    if arr.size and arr.min() < 0:
        raise ValueError("counts must be non-negative")
    return arr


def _as_probs(probs: np.ndarray) -> np.ndarray:
    arr = np.asarray(probs, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"probs must be a 2-D (n_items, K) array, got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise ValueError("probs must have at least one class column")
    if arr.size and not np.isfinite(arr).all():
        raise ValueError("probs must be finite")
    return arr


def krippendorff_alpha_nominal(counts: np.ndarray) -> float | None:
    """Krippendorff's alpha for nominal data, computed from the coincidence matrix.

    With ``n_uc`` the votes of unit (item) ``u`` for class ``c`` and ``m_u = sum_c n_uc``, only
    units with ``m_u >= 2`` are *pairable*; the others carry no agreement information and drop
    out. Over pairable units the coincidences are
    ``o_ck = sum_u n_uc * (n_uk - [c == k]) / (m_u - 1)``, the class margins ``n_c = sum_u n_uc``
    and ``n = sum_c n_c``. For the nominal metric (disagreement 1 between different classes)::

        D_o = (1 / n) * sum_u (m_u**2 - sum_c n_uc**2) / (m_u - 1)
        D_e = (n**2 - sum_c n_c**2) / (n * (n - 1))
        alpha = 1 - D_o / D_e

    Returns ``None`` when alpha is undefined:

    * fewer than 2 pairable values (no item has 2 or more votes), or
    * ``D_e == 0``: every pairable value is the same class (this includes ``K == 1``). Alpha is
      0/0 there; the ``krippendorff`` package raises or returns NaN in this case.

    Sources: K. Krippendorff, "Computing Krippendorff's Alpha-Reliability", University of
    Pennsylvania, 2011 (https://repository.upenn.edu/asc_papers/43); K. Krippendorff, *Content
    Analysis: An Introduction to Its Methodology*, 4th ed., Sage, 2019, ch. 12.
    """
    arr = _as_counts(counts)
    m = arr.sum(axis=1)
    pairable = arr[m >= 2]
    if pairable.shape[0] == 0:
        return None
    m_p = m[m >= 2]
    n_c = pairable.sum(axis=0)
    n = int(n_c.sum())
    if n < 2:
        return None
    # Integer numerator of D_e: exact, so "all values identical" is detected without a tolerance.
    expected_num = n * n - int((n_c * n_c).sum())
    if expected_num == 0:
        return None
    within = m_p * m_p - (pairable * pairable).sum(axis=1)
    observed = float((within / (m_p - 1)).sum())
    # 1 - D_o/D_e with the n's cancelled: 1 - (n - 1) * sum_u(...) / (n^2 - sum n_c^2).
    return 1.0 - (n - 1) * observed / expected_num


def fleiss_kappa(counts: np.ndarray) -> tuple[float | None, str | None]:
    """Fleiss' kappa for ``N`` items each rated by the same number ``n >= 2`` of workers.

    With ``p_j = sum_i n_ij / (N * n)``, ``P_i = (sum_j n_ij**2 - n) / (n * (n - 1))``,
    ``P_bar = mean_i P_i`` and chance agreement ``P_e = sum_j p_j**2``::

        kappa = (P_bar - P_e) / (1 - P_e)

    Items with no votes at all are ignored (they hold no ratings; otherwise a single unvoted
    item would make kappa undefined for the whole project). The workers rating each item need
    not be the same people, as in Fleiss' original design.

    Returns ``(kappa, None)`` when defined, else ``(None, reason)`` with a one-sentence reason:
    no voted items, unequal vote counts across items, fewer than 2 votes per item, or
    ``P_e == 1`` (all votes in one class, kappa is 0/0).

    Source: J. L. Fleiss, "Measuring nominal scale agreement among many raters", *Psychological
    Bulletin* 76(5):378-382, 1971. Matches ``statsmodels.stats.inter_rater.fleiss_kappa``.
    """
    arr = _as_counts(counts)
    m = arr.sum(axis=1)
    voted = m > 0
    arr, m = arr[voted], m[voted]
    if arr.shape[0] == 0:
        return None, "Fleiss' kappa is undefined: no item has any votes."
    lo, hi = int(m.min()), int(m.max())
    if lo != hi:
        return None, (
            "Fleiss' kappa needs the same number of votes on every item; "
            f"items have between {lo} and {hi} votes (use Krippendorff's alpha instead)."
        )
    n = lo
    if n < 2:
        return None, "Fleiss' kappa needs at least 2 votes per item; every item has 1 vote."
    totals = arr.sum(axis=0)
    if np.count_nonzero(totals) <= 1:
        return None, (
            "Fleiss' kappa is undefined when chance agreement is 1: "
            "every vote is for the same class."
        )
    n_items = arr.shape[0]
    p_j = totals / (n_items * n)
    p_e = float((p_j * p_j).sum())
    p_bar = float(((arr * arr).sum(axis=1) - n).sum()) / (n_items * n * (n - 1))
    return (p_bar - p_e) / (1.0 - p_e), None


def normalized_entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy of each row divided by ``log(K)``, so it lies in ``[0, 1]``.

    ``0 * log(0)`` is taken as 0. Rows are used as given (not renormalized). With ``K == 1``
    there is no uncertainty and the result is 0. Output is clipped to ``[0, 1]`` to absorb
    rounding. Source: C. E. Shannon, "A Mathematical Theory of Communication", *Bell System
    Technical Journal* 27:379-423, 1948.
    """
    p = _as_probs(probs)
    k = p.shape[1]
    if k == 1 or p.shape[0] == 0:
        return np.zeros(p.shape[0], dtype=np.float64)
    positive = p > 0
    # log only where p > 0, so no RuntimeWarning and 0*log0 contributes exactly 0.
    logs = np.log(p, out=np.zeros_like(p), where=positive)
    h = -(p * logs).sum(axis=1) / np.log(k)
    return np.clip(h, 0.0, 1.0)


def margin_uncertainty(probs: np.ndarray) -> np.ndarray:
    """``1 - (p_top1 - p_top2)`` per row, in ``[0, 1]``: 0 for a certain label, 1 for a tie.

    With ``K == 1`` the second probability is taken as 0. Source: margin sampling, B. Settles,
    "Active Learning Literature Survey", Computer Sciences Technical Report 1648, University of
    Wisconsin-Madison, 2009, section 3.1 (after Scheffer, Decomain and Wrobel, 2001).
    """
    p = _as_probs(probs)
    if p.shape[0] == 0:
        return np.zeros(0, dtype=np.float64)
    if p.shape[1] == 1:
        top1, top2 = p[:, 0], np.zeros(p.shape[0])
    else:
        # partition is O(K) per row, cheaper than a full sort for K = 1000.
        part = np.partition(p, p.shape[1] - 2, axis=1)
        top1, top2 = part[:, -1], part[:, -2]
    return np.clip(1.0 - (top1 - top2), 0.0, 1.0)


def votes_per_item_histogram(n_votes: np.ndarray) -> list[tuple[int, int]]:
    """``(n_votes, n_items)`` pairs sorted by ``n_votes``; only vote counts that occur appear.

    Items with 0 votes are included if ``n_votes`` lists them. Plain ``int`` values so the result
    is JSON-serializable.
    """
    arr = np.asarray(n_votes)
    if arr.ndim != 1:
        raise ValueError(f"n_votes must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        return []
    if not np.issubdtype(arr.dtype, np.integer):
        as_int = arr.astype(np.int64)
        if not np.array_equal(as_int, arr):
            raise ValueError("n_votes must hold whole numbers")
        arr = as_int
    if arr.min() < 0:
        raise ValueError("n_votes must be non-negative")
    values, freq = np.unique(arr, return_counts=True)
    return [(int(v), int(f)) for v, f in zip(values, freq, strict=True)]


def _check_votes(
    item: np.ndarray,
    worker: np.ndarray,
    label: np.ndarray,
    n_items: int,
    n_workers: int,
    k: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if k < 1:
        raise ValueError(f"K must be at least 1, got {k}")
    if n_items < 0 or n_workers < 0:
        raise ValueError("n_items and n_workers must be non-negative")
    arrays = []
    for name, values, upper in (
        ("item", item, n_items),
        ("worker", worker, n_workers),
        ("label", label, k),
    ):
        arr = np.asarray(values)
        if arr.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{name} must be an integer array, got dtype {arr.dtype}")
        arr = arr.astype(np.int64, copy=False)
        if arr.size and (arr.min() < 0 or arr.max() >= upper):
            raise ValueError(f"{name} values must lie in 0..{upper - 1}")
        arrays.append(arr)
    it, wk, lb = arrays
    if not (it.shape == wk.shape == lb.shape):
        raise ValueError("item, worker and label must have the same length")
    # A duplicated (item, worker) vote would count as "another vote" agreeing with itself.
    # Sort and compare neighbours: np.unique was ~40x slower on millions of int64 keys.
    pair = np.sort(it * max(n_workers, 1) + wk)
    if pair.size > 1 and (pair[1:] == pair[:-1]).any():
        raise ValueError("each (item, worker) pair may vote only once")
    return it, wk, lb


def leave_one_out_agreement(
    item: np.ndarray,
    worker: np.ndarray,
    label: np.ndarray,
    n_items: int,
    n_workers: int,
    K: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-worker agreement with the majority of the *other* votes on the same items.

    A vote on an item that has at least one other vote is *scored*: it agrees when its class is
    among the most-voted classes of the other votes on that item (a tie for the top counts as
    agreement if the vote's class is one of the tied classes). Votes on items with no other vote
    are not scored. Leaving the vote out keeps a worker from agreeing with themselves, which
    would otherwise inflate everyone's score on items with few votes.

    Returns ``(agreement, n_scored)``: ``agreement[w]`` (float64) is the fraction of worker
    ``w``'s scored votes that agree, and ``n_scored[w]`` (int64) how many were scored. Where
    ``n_scored[w] == 0`` the agreement is reported as 0.0 (never NaN); read it with the count.

    Only (item, class) cells that received votes are materialized, so memory is O(votes), not
    O(n_items * K). Raises ``ValueError`` for out-of-range ids, mismatched lengths or a repeated
    (item, worker) pair.
    """
    it, wk, lb = _check_votes(item, worker, label, n_items, n_workers, K)
    agreement = np.zeros(n_workers, dtype=np.float64)
    n_scored = np.zeros(n_workers, dtype=np.int64)
    if it.size == 0:
        return agreement, n_scored

    # Sparse counts: one cell per (item, class) that got a vote; `cell` maps votes to cells.
    # Run-length encode the sorted keys by hand: several times faster than np.unique with
    # return_inverse on millions of votes.
    keys = it * K + lb
    order = np.argsort(keys)
    sorted_keys = keys[order]
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    cell_count = np.diff(np.r_[starts, sorted_keys.size])
    cell = np.empty_like(order)
    cell[order] = np.repeat(np.arange(starts.size), cell_count)
    cell_item = sorted_keys[starts] // K

    # Per item: top count, how many classes share it, and the best count strictly below it.
    top1 = np.zeros(n_items, dtype=np.int64)
    np.maximum.at(top1, cell_item, cell_count)
    is_top = cell_count == top1[cell_item]
    n_top = np.bincount(cell_item[is_top], minlength=n_items)
    below = np.zeros(n_items, dtype=np.int64)
    np.maximum.at(below, cell_item[~is_top], cell_count[~is_top])
    total = np.bincount(it, minlength=n_items)

    own = cell_count[cell]  # votes for this vote's class on this item, itself included
    v_item_top1 = top1[it]
    # Removing this vote lowers only its own class by one. If that class was the sole top class,
    # the others' maximum is the larger of (top1 - 1) and the runner-up; otherwise it is top1.
    sole_top = (own == v_item_top1) & (n_top[it] == 1)
    others_max = np.where(sole_top, np.maximum(v_item_top1 - 1, below[it]), v_item_top1)
    agrees = own - 1 == others_max
    scored = total[it] >= 2

    n_scored = np.bincount(wk[scored], minlength=n_workers).astype(np.int64)
    n_agree = np.bincount(wk[scored & agrees], minlength=n_workers)
    np.divide(n_agree, n_scored, out=agreement, where=n_scored > 0)
    return agreement, n_scored


def spammer_flags(
    agreement: np.ndarray,
    n_scored: np.ndarray,
    K: int,
    min_votes: int = 10,
) -> np.ndarray:
    """Flag workers whose leave-one-out agreement is no better than random guessing.

    Rule: worker ``w`` is flagged when ``n_scored[w] >= min_votes`` and::

        agreement[w] <= 1/K + 2 * sqrt((1/K) * (1 - 1/K) / n_scored[w])

    i.e. their agreement is within two binomial standard errors (normal approximation) of the
    ``1/K`` a uniform random guesser would get. Workers with fewer than ``min_votes`` scored
    votes are never flagged (too little evidence). With ``K == 1`` nobody is flagged: every vote
    agrees by construction, so agreement cannot separate workers.

    Caveats: ``1/K`` is the chance rate only under balanced classes; a worker who always answers
    the majority class beats it, and since ties count as agreement in
    :func:`leave_one_out_agreement` a random guesser on items with few votes scores somewhat above
    ``1/K``. The screen therefore errs towards not flagging. For a model-based alternative see
    V. C. Raykar and S. Yu, "Eliminating Spammers and Ranking Annotators for Crowdsourced
    Labeling Tasks", *JMLR* 13:491-518, 2012.
    """
    if K < 1:
        raise ValueError(f"K must be at least 1, got {K}")
    if min_votes < 1:
        raise ValueError(f"min_votes must be at least 1, got {min_votes}")
    agr = np.asarray(agreement, dtype=np.float64)
    cnt = np.asarray(n_scored)
    if agr.shape != cnt.shape or agr.ndim != 1:
        raise ValueError("agreement and n_scored must be 1-D arrays of the same length")
    if K == 1:
        return np.zeros(agr.shape, dtype=bool)
    chance = 1.0 / K
    enough = cnt >= min_votes
    # Guard the division for workers below min_votes; their flag is False regardless.
    se = np.sqrt(chance * (1.0 - chance) / np.maximum(cnt, 1))
    return enough & (agr <= chance + 2.0 * se)
