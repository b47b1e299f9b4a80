"""The sparse vote list, its indexing by item and worker, and the numerical helpers every worker
model shares.

The aggregator classes (`base.py`), the EM driver (`em.py`) and every method module import this
module; it imports nothing of the package.

Worker models look at *who* gave each vote, not only at per-item counts: they estimate how
reliable every worker is and weight the votes accordingly. Each one returns per-item posteriors
over the K classes (the soft labels) plus its per-worker skill estimate.

Everything here is pure numpy and vectorized over the sparse vote list: per-vote values are
gathered by index and reduced per item (`np.add.reduceat` over votes sorted by item) or per
worker (`np.bincount`). Memory is O(votes + workers * K^2 + items * K); no dense
items x workers array is ever built.

Numerical conventions shared by every method:
- Posteriors are computed in log space and normalized with a max-shift (log-sum-exp), so an item
  with thousands of votes neither underflows nor overflows.
- Probabilities that enter a log are floored at `EPS` (1e-10, the floor crowd-kit uses), so a
  worker who labeled everything the same, or a class no one used, gives finite logs.
- Items with no votes get the method's class prior (uniform where the method has none).
- Worker and item indices are stable identities: a warm start from a fit on fewer items or
  workers reuses the stored parameters for indices it knows and initializes the new ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from scipy import sparse

EPS = 1e-10  # probability floor before taking logs (same value as crowd-kit's _EPS)


@dataclass(frozen=True)
class VoteArrays:
    """The sparse vote list: vote v says worker `worker[v]` gave item `item[v]` label `label[v]`.

    One vote per (item, worker) is expected; duplicates are not rejected (checking costs a sort)
    and count as independent votes. Arrays are converted to contiguous int64 on construction and
    their ranges are checked (O(votes)).
    """

    item: np.ndarray
    worker: np.ndarray
    label: np.ndarray
    n_items: int
    n_workers: int
    n_classes: int
    gold: np.ndarray | None = None  # (n_items,) known true class per item, -1 where unknown

    def __post_init__(self) -> None:
        if self.gold is not None:
            g = np.ascontiguousarray(self.gold, dtype=np.int64)
            if g.shape != (self.n_items,) or (
                g.size and (g.min() < -1 or g.max() >= self.n_classes)
            ):
                raise ValueError(f"gold must have shape ({self.n_items},) with values in [-1, K)")
            object.__setattr__(self, "gold", g)
        n = None
        for name, bound in (
            ("item", self.n_items),
            ("worker", self.n_workers),
            ("label", self.n_classes),
        ):
            raw = np.asarray(getattr(self, name))
            if raw.ndim != 1:
                raise ValueError(f"{name} must be a 1-D array, got shape {raw.shape}")
            if raw.size and not np.issubdtype(raw.dtype, np.integer):
                raise ValueError(f"{name} must hold integers, got dtype {raw.dtype}")
            arr = np.ascontiguousarray(raw, dtype=np.int64)
            if n is None:
                n = arr.size
            elif arr.size != n:
                raise ValueError("item, worker and label must have the same length")
            if bound < 0 or (arr.size and (arr.min() < 0 or arr.max() >= bound)):
                raise ValueError(f"{name} values must lie in [0, {bound})")
            object.__setattr__(self, name, arr)
        if self.n_classes < 1:
            raise ValueError("n_classes must be >= 1")

    @property
    def n_votes(self) -> int:
        return int(self.item.size)


@dataclass(frozen=True)
class TickVotes(VoteArrays):
    """A multi-label vote list: vote v is the set of classes worker `worker[v]` ticked on item
    `item[v]`, row v of `ticks` (n_votes, n_classes) booleans, possibly all False. `label` is
    unused (zeros): the single-label methods never receive these votes."""

    ticks: np.ndarray = field(default_factory=lambda: np.zeros((0, 1), dtype=bool))

    def __post_init__(self) -> None:
        super().__post_init__()
        t = np.asarray(self.ticks, dtype=bool)
        if t.shape != (self.n_votes, self.n_classes):
            raise ValueError(f"ticks must have shape ({self.n_votes}, {self.n_classes})")
        object.__setattr__(self, "ticks", t)


# ----- vote indexing --------------------------------------------------------------------------


@dataclass(frozen=True)
class SortedVotes:
    """Votes sorted by item, with the segment boundaries needed for per-item sums.

    Sorting once lets per-item sums use `np.add.reduceat` on contiguous segments, about 3x faster
    than `np.bincount` on 10M votes. Every method is invariant to the order of the votes.
    """

    item: np.ndarray
    worker: np.ndarray
    label: np.ndarray
    n_items: int
    n_workers: int
    n_classes: int
    starts: np.ndarray  # start of each non-empty item's segment
    voted: np.ndarray  # ids of the items that have at least one vote, ascending
    worker_votes: np.ndarray  # (n_workers,) number of votes per worker
    gold_items: np.ndarray | None = None  # items whose posteriors are clamped (use_gold)
    gold_labels: np.ndarray | None = None

    @classmethod
    def build(cls, votes: VoteArrays, use_gold: bool = False) -> SortedVotes:
        item, worker, label = votes.item, votes.worker, votes.label
        if item.size > 1 and np.any(item[1:] < item[:-1]):
            order = np.argsort(item, kind="stable")
            item, worker, label = item[order], worker[order], label[order]
        if item.size:
            first = np.empty(item.size, dtype=bool)
            first[0] = True
            np.not_equal(item[1:], item[:-1], out=first[1:])
            starts = np.flatnonzero(first)
        else:
            starts = np.zeros(0, dtype=np.int64)
        gold_items = None
        if use_gold and votes.gold is not None and (votes.gold >= 0).any():
            gold_items = np.flatnonzero(votes.gold >= 0)
        return cls(
            item=item,
            worker=worker,
            label=label,
            n_items=votes.n_items,
            n_workers=votes.n_workers,
            n_classes=votes.n_classes,
            starts=starts,
            voted=item[starts],
            worker_votes=np.bincount(worker, minlength=votes.n_workers),
            gold_items=gold_items,
            gold_labels=None
            if gold_items is None or votes.gold is None
            else votes.gold[gold_items],
        )

    @property
    def n_votes(self) -> int:
        return int(self.item.size)

    def _flat_index(self, row: np.ndarray, n_rows: int) -> np.ndarray:
        """Per vote: row * K + label, in int32 where every value fits (half the memory
        traffic of int64; numpy indexes and counts with either)."""
        k = self.n_classes
        if n_rows * k < 2**31:
            out = np.multiply(row, k, out=np.empty(row.size, np.int32), casting="unsafe")
            return np.add(out, self.label, out=out, casting="unsafe")
        return row * k + self.label

    @cached_property
    def worker_label(self) -> np.ndarray:
        """Per vote: worker * K + label, the index of (worker, label) in flat (W, K) tables."""
        return self._flat_index(self.worker, self.n_workers)

    @cached_property
    def item_label(self) -> np.ndarray:
        """Per vote: item * K + label, the index of (item, label) in flat (I, K) arrays."""
        return self._flat_index(self.item, self.n_items)

    @cached_property
    def item_by_wl(self) -> sparse.csr_matrix:
        """(n_items, n_workers * K) sparse count of votes by item and (worker, label).

        `item_by_wl @ table` sums a per-(worker, label) table per item (a Dawid-Skene E-step)
        and `wl_by_item @ post` sums item posteriors per (worker, label) (its M-step): one
        sparse product each, about 5x faster than K gathers and bincounts at 511k votes. The
        votes are sorted by item, so this matrix is built as it lies, without a sort."""
        k = self.n_classes
        # int32 indices where they fit, as scipy would choose (it would otherwise scan them).
        index = np.int32 if max(self.n_votes, self.n_workers * k) < 2**31 else np.int64
        indptr = np.empty(self.n_items + 1, dtype=index)
        if self.voted.size == self.n_items:  # every item voted: the segment starts
            indptr[:-1] = self.starts
            indptr[-1] = self.n_votes
        else:
            indptr[0] = 0
            np.cumsum(np.bincount(self.item, minlength=self.n_items), out=indptr[1:])
        return sparse.csr_matrix(
            (np.ones(self.n_votes), self.worker_label.astype(index, copy=False), indptr),
            shape=(self.n_items, self.n_workers * k),
        )

    @cached_property
    def wl_by_item(self) -> sparse.csc_matrix:
        """(n_workers * K, n_items), the transpose of `item_by_wl`: a view of the same arrays
        (column-compressed), whose products cost about what a row-compressed copy's do while
        building that copy costs a few of them."""
        return self.item_by_wl.T

    @cached_property
    def constant_workers(self) -> np.ndarray:
        """Workers who gave one label only, on more votes than a perfect worker plausibly would
        (share of that label among all votes ** n_votes < 1%): they say nothing about the true
        class. Dawid-Skene describes them by itself (a confusion whose rows all point at the
        label); models with one accuracy per worker cannot, and would read them as accurate."""
        k = self.n_classes
        per = np.bincount(self.worker_label, minlength=self.n_workers * k).reshape(-1, k)
        top = per.argmax(axis=1)
        only = per[np.arange(self.n_workers), top] == self.worker_votes
        chance = self.label_share[top] ** self.worker_votes
        return np.flatnonzero(only & (self.worker_votes > 0) & (chance < 0.01))

    @cached_property
    def label_share(self) -> np.ndarray:
        """(K,) share of the votes that give each label."""
        return np.bincount(self.label, minlength=self.n_classes) / max(self.n_votes, 1)

    @cached_property
    def clear_majority(self) -> tuple[np.ndarray, np.ndarray]:
        """Items with a clear majority (>= 2 votes for the top label and at least twice the
        runner-up's), and that label."""
        counts = self.item_label_counts
        top2 = np.sort(counts, axis=1)[:, -2:]
        clear = np.flatnonzero((top2[:, 1] >= 2) & (top2[:, 1] >= 2 * top2[:, 0]))
        return clear, counts[clear].argmax(axis=1)

    @cached_property
    def item_label_counts(self) -> np.ndarray:
        """(n_items, K) float number of votes for each label on each item."""
        k = self.n_classes
        counts = np.bincount(self.item_label, minlength=self.n_items * k)
        return counts.astype(np.float64).reshape(self.n_items, k)

    def item_sum(self, values: np.ndarray) -> np.ndarray:
        """Per-item sums of a per-vote array (in this object's vote order); 0 for empty items."""
        out = np.zeros(self.n_items, dtype=np.float64)
        if self.starts.size:
            # reduceat on an empty segment would return values[start] instead of 0, so it only
            # ever sees the non-empty ones.
            out[self.voted] = np.add.reduceat(values, self.starts)
        return out

    def worker_sum(self, values: np.ndarray) -> np.ndarray:
        # bincount returns int64 for empty weights; callers divide into float arrays.
        return np.bincount(self.worker, weights=values, minlength=self.n_workers).astype(
            np.float64, copy=False
        )

    def item_label_sum(self, values: np.ndarray) -> np.ndarray:
        """(n_items, K) sums of a per-vote array by (item, given label)."""
        k = self.n_classes
        flat = np.bincount(self.item_label, weights=values, minlength=self.n_items * k)
        return flat.astype(np.float64, copy=False).reshape(self.n_items, k)

    def mean_label_posterior(self, post: np.ndarray) -> float:
        """The mean over votes of `label_posterior`, from the (I, K) vote counts (no per-vote
        array)."""
        return float(np.einsum("ik,ik->", self.item_label_counts, post)) / max(self.n_votes, 1)

    def label_posterior(self, post: np.ndarray) -> np.ndarray:
        """Per vote: the posterior (I, K) of the vote's own label on its item."""
        return post.reshape(-1)[self.item_label]

    def clamp(self, post: np.ndarray) -> np.ndarray:
        """Gold items' rows of (I, K) posteriors set to one-hot on their gold class (in place)."""
        if self.gold_items is not None and self.gold_labels is not None:
            post[self.gold_items] = 0.0
            post[self.gold_items, self.gold_labels] = 1.0
        return post


def vote_fractions(sv: SortedVotes) -> np.ndarray:
    """(n_items, K) share of each label among an item's votes (majority-vote posteriors).

    Items without votes get uniform rows. This is crowd-kit's MajorityVote.predict_proba, the
    initialization of Dawid-Skene and one-coin.
    """
    return normalize_rows(sv.item_label_counts)


def class_prior(sv: SortedVotes, post: np.ndarray) -> np.ndarray:
    """Mean posterior over the items with votes, floored at EPS (uniform without votes)."""
    k = sv.n_classes
    if not sv.voted.size:
        return np.full(k, 1.0 / k)
    voted = post if sv.voted.size == sv.n_items else post[sv.voted]
    # einsum: `mean(axis=0)` over (n, K) costs several times more (and see row_sum).
    prior = np.maximum(np.einsum("ij->j", voted) / voted.shape[0], EPS)
    return prior / prior.sum()


def majority_posteriors(sv: SortedVotes) -> np.ndarray:
    """(n_items, K) one-hot on the most-voted label, ties sharing the mass (uniform if no votes)."""
    counts = sv.item_label_counts
    top = (counts == row_max(counts)).astype(np.float64)
    return normalize_rows(top)


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to sum to 1; all-zero rows become uniform (never 0/0)."""
    total = row_sum(x)
    out = np.full_like(x, 1.0 / x.shape[1])
    np.divide(x, total, out=out, where=total > 0)
    return out


def row_max(x: np.ndarray) -> np.ndarray:
    """(n, K) -> (n, 1) row maxima, one column at a time: numpy's reduction over a short last
    axis costs about 5x more than K elementwise maxima of (n,) columns."""
    m = x[:, :1].copy()
    for j in range(1, x.shape[1]):
        np.maximum(m, x[:, j : j + 1], out=m)
    return m


def row_sum(x: np.ndarray) -> np.ndarray:
    """(n, K) -> (n, 1) row sums: einsum's loop is several times faster than `x.sum(axis=1)`
    for small K. (Not a product with a vector of ones: BLAS may hand that to a thread of its
    pool, whose wake-up on a busy machine costs milliseconds; einsum never calls BLAS.)"""
    return np.einsum("ij->i", x)[:, None]


def posteriors_from_log(
    log_post: np.ndarray, inplace: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise softmax of log-joint scores, and each row's log normalizer (log-sum-exp).

    The max-shift makes the largest term exp(0) = 1, so the normalizer is >= 1 and finite even
    for rows whose scores are all around -1e5 (hundreds of confident votes). With `inplace` the
    posteriors are written over `log_post` (no temporary of its size).
    """
    m = row_max(log_post)
    p = np.subtract(log_post, m, out=log_post if inplace else None)
    np.exp(p, out=p)
    s = row_sum(p)
    p /= s
    return p, (m + np.log(s))[:, 0]


def safe_log(x: np.ndarray | float) -> np.ndarray:
    return np.log(np.maximum(x, EPS))


def grow(old: np.ndarray | None, n: int, fill: np.ndarray | float) -> np.ndarray | None:
    """A warm-start array resized to n rows: known rows kept, new rows set to `fill`.

    Returns None when `old` is missing or its trailing shape does not match `fill` (a warm start
    from a project with a different number of classes is ignored).
    """
    if old is None:
        return None
    fill_arr = np.asarray(fill, dtype=np.float64)
    if fill_arr.ndim and old.shape[1:] != fill_arr.shape:
        return None
    out = np.empty((n, *old.shape[1:]), dtype=np.float64)
    keep = min(n, old.shape[0])
    out[:keep] = old[:keep]
    out[keep:] = fill_arr
    return out


class Convergence:
    """Tracks the per-vote objective between E-steps; `tol` = 0 never stops early."""

    def __init__(self, tol: float, n_votes: int) -> None:
        self.tol = tol
        self.scale = 1.0 / max(n_votes, 1)
        self.last = -math.inf

    def update(self, objective: float) -> bool:
        value = objective * self.scale
        done = abs(value - self.last) < self.tol
        self.last = value
        return done
