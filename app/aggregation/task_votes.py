"""Input checks and per-item / per-worker sums shared by the multi-label and ordinal methods.

Those methods take plain numpy vote arrays (item, worker and the vote's content: a row of ticks
for multi-label tasks, a level index for ordinal ones). Sums over the votes of each item or of
each worker are products with a sparse 0/1 incidence matrix, so they cost O(votes) and work on
a 2-D per-vote array at once (np.bincount only takes 1-D weights).

Deliberately independent of `base.py` (which is being reshaped into the method protocol): only
numpy and scipy here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

EPS = 1e-10  # probability floor before a log: the same floor the single-label models use


def check(condition: bool, message: str) -> None:
    """Raise ValueError(message) unless `condition` holds (hyperparameter and input checks)."""
    if not condition:
        raise ValueError(message)


def index_array(name: str, values: np.ndarray, bound: int) -> np.ndarray:
    """`values` as a contiguous int64 vector with every entry in [0, bound)."""
    out = np.ascontiguousarray(values, dtype=np.int64)
    check(out.ndim == 1, f"{name} must be a 1-D array")
    check(
        out.size == 0 or (out.min() >= 0 and out.max() < bound), f"{name} must be in [0, {bound})"
    )
    return out


def incidence(index: np.ndarray, n_rows: int) -> sparse.csr_matrix:
    """(n_rows, n_votes) 0/1 matrix M, M[index[v], v] = 1: M @ x sums x over each row's votes."""
    n = index.size
    return sparse.csr_matrix(
        (np.ones(n), (index, np.arange(n))), shape=(n_rows, n), dtype=np.float64
    )


@dataclass(frozen=True)
class VoteIndex:
    """Validated item and worker indices of a vote list, with their incidence matrices."""

    item: np.ndarray  # (n_votes,) int64
    worker: np.ndarray  # (n_votes,) int64
    n_items: int
    n_workers: int
    by_item: sparse.csr_matrix  # (n_items, n_votes)
    by_worker: sparse.csr_matrix  # (n_workers, n_votes)

    @classmethod
    def build(cls, item: np.ndarray, worker: np.ndarray, n_items: int, n_workers: int) -> VoteIndex:
        check(n_items >= 0 and n_workers >= 0, "n_items and n_workers must be >= 0")
        it = index_array("item", item, n_items)
        wk = index_array("worker", worker, n_workers)
        check(it.size == wk.size, "item and worker must have the same length")
        return cls(it, wk, n_items, n_workers, incidence(it, n_items), incidence(wk, n_workers))

    @property
    def n_votes(self) -> int:
        return int(self.item.size)

    def per_item(self, x: np.ndarray) -> np.ndarray:
        """Sum of a per-vote array (n_votes,) or (n_votes, K) over each item's votes."""
        return np.asarray(self.by_item @ x)

    def per_worker(self, x: np.ndarray) -> np.ndarray:
        """Sum of a per-vote array (n_votes,) or (n_votes, K) over each worker's votes."""
        return np.asarray(self.by_worker @ x)

    @property
    def voters(self) -> np.ndarray:
        """(n_items,) number of votes per item."""
        return np.bincount(self.item, minlength=self.n_items).astype(np.float64)

    @property
    def votes_per_worker(self) -> np.ndarray:
        return np.bincount(self.worker, minlength=self.n_workers).astype(np.float64)
