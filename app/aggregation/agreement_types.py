"""Agreement for ordinal and multi-label votes: Krippendorff's alpha with the metric the answers
call for, each worker's agreement with the other votes on the same items and a screen for
workers who agree no more than chance, and the uncertainty of multi-label soft labels.

Krippendorff's alpha is 1 - D_o / D_e, observed over expected disagreement, for any distance
between two answers (K. Krippendorff, "Computing Krippendorff's Alpha-Reliability", 2011, and
*Content Analysis*, 4th ed., 2019, ch. 12):

- ordinal scales: the ordinal metric, delta^2(c, k) = (sum_{g=c..k} n_g - (n_c + n_k) / 2)^2
  with n_g the pairable votes for level g, so a disagreement counts by how many votes lie
  between the two levels, not by their numeric distance;
- multi-label sets: the Jaccard distance 1 - |A & B| / |A | B| (0 for two empty sets: both said
  "none apply"), the set distance of Passonneau's alpha for set-valued annotation (R.
  Passonneau, "Measuring agreement on set-valued items (MASI) for semantic and pragmatic
  annotation", LREC 2006; MASI weights Jaccard further by monotonicity, which we leave out).

Votes are grouped into cells, one per (item, answer) with its count, so every sum over pairs of
votes on an item is a sum over pairs of cells: O(sum over items of distinct answers squared),
whatever the number of votes per item. The expected disagreement of sets sums over pairs of
distinct sets in the project, in blocks, so its memory stays bounded (and past _REFERENCE
distinct sets, against a fixed sample: see there).

Like app/aggregation/agreement.py: pure numpy, None where a statistic is undefined, never NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.aggregation.agreement import _as_counts

_BLOCK = 1024  # rows of the distinct-set x distinct-set distance matrix computed at once
# Sums over every pair of answers in the project run over distinct answers, exactly up to this
# many; past it (thousands of classes, or sets nobody repeats: 500,000 random sets of 20 classes
# took 40 s exactly), each distinct answer is compared with a fixed sample of this many votes
# (seeded, so a figure does not move between calls) weighted up to the whole project: an
# unbiased estimate whose relative error is about 1 / sqrt(_REFERENCE) of the spread.
_REFERENCE = 4096


def krippendorff_alpha_ordinal(counts: np.ndarray) -> float | None:
    """Krippendorff's alpha with the ordinal metric, from (n_items, K) level counts (levels in
    scale order). None when undefined: fewer than 2 pairable votes, or all on one level."""
    arr = _as_counts(counts)
    m = arr.sum(axis=1)
    pairable = arr[m >= 2].astype(np.float64)
    if pairable.shape[0] == 0:
        return None
    m_p = m[m >= 2].astype(np.float64)
    n_c = pairable.sum(axis=0)
    n = n_c.sum()
    if np.count_nonzero(n_c) < 2:
        return None
    # Coincidences o_ck = sum_u n_uc (n_uk - [c == k]) / (m_u - 1).
    weighted = pairable / (m_p - 1)[:, None]
    coincidence = weighted.T @ pairable - np.diag(weighted.sum(axis=0))
    cum = np.concatenate([[0.0], np.cumsum(n_c)])
    c, k = np.meshgrid(np.arange(n_c.size), np.arange(n_c.size), indexing="ij")
    lo, hi = np.minimum(c, k), np.maximum(c, k)
    delta2 = (cum[hi + 1] - cum[lo] - (n_c[c] + n_c[k]) / 2.0) ** 2
    observed = float((coincidence * delta2).sum())
    expected = float((np.outer(n_c, n_c) * delta2).sum()) / (n - 1)
    return 1.0 - observed / expected


def _popcount(x: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 (np.bitwise_count from numpy 2; a byte table before)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x).astype(np.int64)  # type: ignore[no-any-return]
    table = np.array([bin(b).count("1") for b in range(256)], dtype=np.int64)
    return table[x[..., None].view(np.uint8)].sum(axis=-1)  # type: ignore[no-any-return]


def encode(answer: np.ndarray) -> np.ndarray:
    """Answers as integer rows: (n, K) ticks packed 64 classes to a uint64 word, (n, W); level
    indices as (n, 1) int64. Grouping and comparing words is far cheaper than boolean rows."""
    ans = np.asarray(answer)
    if ans.ndim == 1:
        return ans.astype(np.int64).reshape(-1, 1)
    n, k = ans.shape
    words = -(-k // 64) or 1
    padded = np.zeros((n, words * 64), dtype=bool)
    padded[:, :k] = ans
    packed = np.packbits(padded.reshape(n, words, 64), axis=2, bitorder="little")
    return packed.view("<u8").reshape(n, words)


def distance(a: np.ndarray, b: np.ndarray, sets: bool, n_levels: int) -> np.ndarray:
    """Element-wise distance between encoded answers of broadcastable shapes (..., W): Jaccard
    between sets (0 for two empty sets), |a - b| / (K - 1) between levels; in [0, 1]."""
    if sets:
        inter = _popcount(a & b).sum(axis=-1)
        union = _popcount(a | b).sum(axis=-1)
        return np.where(union > 0, 1.0 - inter / np.maximum(union, 1), 0.0)  # type: ignore[no-any-return]
    return np.abs(a[..., 0] - b[..., 0]) / max(n_levels - 1, 1)  # type: ignore[no-any-return]


def _group(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """np.unique(rows, axis=0) with inverse and counts, by a lexsort of the columns (several
    times faster on integer rows); the groups in lexicographic order of the rows."""
    order = np.lexsort(rows.T[::-1])
    srt = rows[order]
    new = np.ones(len(srt), dtype=bool)
    new[1:] = (srt[1:] != srt[:-1]).any(axis=1)
    group = np.cumsum(new) - 1
    inverse = np.empty(len(rows), dtype=np.int64)
    inverse[order] = group
    return srt[new], inverse, np.bincount(group)


@dataclass(frozen=True)
class Cells:
    """The votes grouped by (item, answer): `answer[j]` the encoded answer of cell j, `item[j]`
    its item, `count[j]` its votes; `of_vote[v]` is vote v's cell. Sorted by item."""

    item: np.ndarray
    answer: np.ndarray
    count: np.ndarray
    of_vote: np.ndarray

    @classmethod
    def build(cls, item: np.ndarray, code: np.ndarray) -> Cells:
        # Packed words viewed as int64 beside the item (a uint64 column would make the stack
        # float64), viewed back after grouping.
        key = np.column_stack([np.asarray(item, np.int64), code.view(np.int64)])
        uniq, of_vote, count = _group(key)
        return cls(uniq[:, 0], np.ascontiguousarray(uniq[:, 1:]).view(code.dtype), count, of_vote)


def _cell_pairs(cells: Cells) -> tuple[np.ndarray, np.ndarray]:
    """Every ordered pair (a, b), a != b, of cells on the same item."""
    n = np.bincount(cells.item)
    size = n[cells.item]
    start = np.cumsum(n) - n
    a = np.repeat(np.arange(cells.item.size), size)
    j = np.arange(a.size) - np.repeat(np.cumsum(size) - size, size)
    b = start[cells.item[a]] + j
    keep = a != b
    return a[keep], b[keep]


def _reference(distinct: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What each distinct answer is compared with to sum over every vote in the project: the
    distinct answers with their counts, or past _REFERENCE of them a seeded sample of votes,
    each standing for n.sum() / _REFERENCE votes (see _REFERENCE)."""
    if distinct.shape[0] <= _REFERENCE:
        return distinct, n.astype(np.float64)
    total = float(n.sum())
    drawn = np.random.default_rng(0).choice(distinct.shape[0], size=_REFERENCE, p=n / total)
    which, times = np.unique(drawn, return_counts=True)
    return distinct[which], times * (total / _REFERENCE)


def _distance_to_all(code: np.ndarray, sets: bool, n_levels: int) -> tuple[np.ndarray, ...]:
    """Per distinct answer: its summed distance to every answer in the project (through the
    reference, in blocks); with the distinct answers, each vote's index among them and their
    counts."""
    distinct, of_vote, n = _group(code)
    ref, weight = _reference(distinct, n)
    total = np.empty(distinct.shape[0])
    for lo in range(0, distinct.shape[0], _BLOCK):
        d = distance(distinct[lo : lo + _BLOCK, None, :], ref[None, :, :], sets, n_levels)
        total[lo : lo + _BLOCK] = d @ weight
    return total, of_vote, n


def krippendorff_alpha_sets(item: np.ndarray, ticks: np.ndarray) -> float | None:
    """Krippendorff's alpha with the Jaccard distance over multi-label votes: `ticks` (n_votes,
    K) booleans, one row per vote of item `item[v]`. None when undefined: fewer than 2 pairable
    votes, or every pairable vote the same set."""
    it = np.asarray(item, dtype=np.int64)
    if it.size == 0:
        return None
    pairable = np.bincount(it)[it] >= 2
    if pairable.sum() < 2:
        return None
    code = encode(np.asarray(ticks, dtype=bool)[pairable])
    cells = Cells.build(it[pairable], code)
    a, b = _cell_pairs(cells)
    m = np.bincount(cells.item, weights=cells.count)[cells.item]
    d = distance(cells.answer[a], cells.answer[b], True, 0)
    observed = float((cells.count[a] * cells.count[b] * d / (m[a] - 1)).sum())
    # Expected: over every pair of pairable votes, through the distinct sets and their counts.
    total, _, n_set = _distance_to_all(code, True, 0)
    if n_set.size < 2:
        return None
    expected = float(n_set @ total) / (pairable.sum() - 1)
    return 1.0 - observed / expected


def pairwise_agreement(
    item: np.ndarray, answer: np.ndarray, n_levels: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per vote: its mean similarity (1 - distance) to the other votes on its item (Jaccard for
    rows of ticks, 1 - |a - b| / (K - 1) for level indices); whether it is scored (votes alone
    on their item are not: similarity 0 there); and its chance agreement, the mean similarity
    to the votes on *other* items, what a worker who answers without reading the item gets
    given how the crowd answers (NaN when every vote is on one item)."""
    it = np.asarray(item, dtype=np.int64)
    sim = np.zeros(it.size)
    if it.size == 0:
        return sim, np.zeros(0, dtype=bool), np.zeros(0)
    sets = np.asarray(answer).ndim == 2
    code = encode(answer)
    cells = Cells.build(it, code)
    a, b = _cell_pairs(cells)
    # Per cell: sum over the other cells of the item of count * similarity; the cell's own
    # other votes are identical answers (similarity 1).
    near = cells.count[b] * (1.0 - distance(cells.answer[a], cells.answer[b], sets, n_levels))
    s = np.bincount(a, weights=near, minlength=cells.item.size) + cells.count - 1
    n_item = np.bincount(it)[it]
    others = n_item - 1
    scored = others > 0
    np.divide(s[cells.of_vote], others, out=sim, where=scored)
    # Chance: every vote's similarity sum minus its own item's (itself included), exact.
    far, of_vote, _ = _distance_to_all(code, sets, n_levels)
    rest = it.size - n_item
    outside = (it.size - far[of_vote]) - (s[cells.of_vote] + 1.0)
    chance = np.divide(outside, rest, out=np.full(it.size, np.nan), where=rest > 0)
    return sim, scored, chance


def worker_agreement(
    item: np.ndarray,
    worker: np.ndarray,
    answer: np.ndarray,
    n_workers: int,
    n_levels: int = 0,
    min_votes: int = 10,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per worker: mean similarity of their scored votes to the other votes on the same items
    (`pairwise_agreement`), how many were scored, and a flag for workers with at least
    `min_votes` scored votes whose agreement is not above chance: the mean over their votes of
    (agreement - chance agreement) within two standard errors of 0, the paired analogue of the
    single-choice screen's 1/K + 2 binomial standard errors. A worker who ticks everything, or
    always gives the crowd's most common answer, agrees with others about as often on any
    item as on their own, and is flagged."""
    wk = np.asarray(worker, dtype=np.int64)
    sim, scored, chance = pairwise_agreement(item, answer, n_levels)
    n = np.bincount(wk[scored], minlength=n_workers).astype(np.int64)
    total = np.bincount(wk[scored], weights=sim[scored], minlength=n_workers)
    agree = np.divide(total, n, out=np.zeros(n_workers), where=n > 0)
    usable = scored & np.isfinite(chance)
    diff = (sim - np.nan_to_num(chance))[usable]
    m = np.bincount(wk[usable], minlength=n_workers)
    d_sum = np.bincount(wk[usable], weights=diff, minlength=n_workers)
    d_sq = np.bincount(wk[usable], weights=diff**2, minlength=n_workers)
    mm = np.maximum(m, 1)
    mean = d_sum / mm
    var = np.maximum(d_sq / mm - mean**2, 0.0)
    flag = (m >= min_votes) & (mean <= 2.0 * np.sqrt(var / mm))
    return agree, n, flag


def tick_entropy(probs: np.ndarray) -> np.ndarray:
    """Per item, the mean over classes of the binary entropy of P(class applies), in bits: 0
    when every class is surely in or out, 1 when every class is a coin flip."""
    p = np.clip(np.asarray(probs, dtype=np.float64), 0.0, 1.0)
    if p.shape[0] == 0 or p.shape[1] == 0:
        return np.zeros(p.shape[0])
    q = 1.0 - p
    h = -(p * np.log2(p, out=np.zeros_like(p), where=p > 0)) - q * np.log2(
        q, out=np.zeros_like(q), where=q > 0
    )
    return np.clip(h.mean(axis=1), 0.0, 1.0)  # type: ignore[no-any-return]


def tick_margin_uncertainty(probs: np.ndarray) -> np.ndarray:
    """Per item, 1 - the smallest per-class margin |P(in) - P(out)| = 1 - min_k |2 p_k - 1|: the
    item's least settled class decides whether it needs another vote."""
    p = np.clip(np.asarray(probs, dtype=np.float64), 0.0, 1.0)
    if p.shape[0] == 0 or p.shape[1] == 0:
        return np.zeros(p.shape[0])
    return 1.0 - np.abs(2.0 * p - 1.0).min(axis=1)  # type: ignore[no-any-return]
