"""Dawid-Skene: one K x K confusion matrix per worker plus class priors, fitted by EM.

A. P. Dawid and A. M. Skene (1979). "Maximum Likelihood Estimation of Observer Error-Rates Using
the EM Algorithm." Journal of the Royal Statistical Society, Series C 28(1), 20-28.
"""

from __future__ import annotations

from functools import cached_property
from typing import Annotated

import numpy as np
from pydantic import Field

from app.aggregation.base import WorkerAggregator, WorkerModelFit, warm_array
from app.aggregation.em import (
    EMModel,
    State,
    em_work,
    fit_result,
    multi_start,
    posterior_starts,
)
from app.aggregation.params import MaxIter, NonNegative, NStarts, Tol, UseGold
from app.aggregation.votes import (
    EPS,
    SortedVotes,
    VoteArrays,
    class_prior,
    grow,
    posteriors_from_log,
    row_max,
)

SMOOTHING_DOC = (
    "pseudo-count added to every cell of every worker's confusion counts (MAP under a "
    "symmetric Dirichlet(1 + smoothing) prior); 0 = maximum likelihood, as in the paper"
)


def normalize_emission(counts: np.ndarray, k: int) -> np.ndarray:
    """(W * K, K) expected counts indexed [worker * K + label, true class], normalized in place
    over each worker's labels: P(label | true class) in the same layout (what the E-step looks
    up, so no transpose is needed per iteration). A (worker, class) without counts gets a
    uniform row."""
    c3 = counts.reshape(-1, k, k)
    total = np.einsum("wlc->wc", c3)[:, None, :]  # per (worker, true class); einsum is faster
    if (total > 0).all():
        c3 /= total
    else:
        empty = np.broadcast_to(total <= 0, c3.shape)
        np.divide(c3, total, out=c3, where=~empty)
        c3[empty] = 1.0 / k
    return counts


# The M-step's expected counts are updated rather than recomputed (DawidSkeneEM.m_step) from
# the items whose posteriors moved by more than STALE_TOL in some class (a few dozen float64
# ulps of 1), when they are at most INCREMENTAL_SHARE of the items.
STALE_TOL = 1e-14
INCREMENTAL_SHARE = 0.25


def confusion_of(emission: np.ndarray, k: int) -> np.ndarray:
    """(W * K, K) P(label | class) at [worker * K + label, class] -> (W, K, K) confusions
    [worker, true class, label]."""
    return np.ascontiguousarray(emission.reshape(-1, k, k).transpose(0, 2, 1))


def emission_of(confusion: np.ndarray) -> np.ndarray:
    """The inverse of `confusion_of`."""
    k = confusion.shape[1]
    return np.ascontiguousarray(confusion.transpose(0, 2, 1)).reshape(-1, k)


class DawidSkeneEM(EMModel):
    """State: "class_prior" (K,); "raw_counts" (W * K, K), the expected counts
    [worker * K + label, true class] (the posteriors of the items the worker gave that label,
    summed), and "raw_post", the posteriors they were summed from; with shrinkage "pooled"
    (K, K) [label, class], the prior's centre. The confusions are those counts plus the
    pseudo-counts, normalized (`emission`). A warm start's state holds "emission" instead."""

    def __init__(self, sv: SortedVotes, smoothing: float, shrinkage: float = 0.0) -> None:
        self.sv, self.smoothing, self.shrinkage = sv, smoothing, shrinkage
        # Scratch arrays, reused by every step of every run (never part of a state).
        self._table: np.ndarray | None = None
        self._diff: np.ndarray | None = None

    @cached_property
    def observed(self) -> np.ndarray:
        """(worker, label) pairs that occur: the unsmoothed M-step floors only these."""
        sv = self.sv
        return np.bincount(sv.worker_label, minlength=sv.n_workers * sv.n_classes) > 0

    def m_step(self, post: np.ndarray, state: State | None) -> State:
        """Expected confusion counts and the class prior (`emission` normalizes the counts).

        On crowds with many votes per item most items' posteriors stop moving (beyond
        STALE_TOL) after a few iterations: the previous M-step's counts are then updated by
        the moved items' changes, a sparse product over their votes alone, instead of summed
        afresh. The counts are those of posteriors within STALE_TOL of `post` in every cell,
        never further (each item's reference row is the one last added)."""
        sv, k = self.sv, self.sv.n_classes
        raw = raw_post = None
        if state is not None and "raw_post" in state:
            base_post = state["raw_post"]
            if self._diff is None or self._diff.shape != post.shape:
                self._diff = np.empty_like(post)
            diff = np.subtract(post, base_post, out=self._diff)
            moved = np.flatnonzero(row_max(np.abs(diff, out=diff))[:, 0] > STALE_TOL)
            if moved.size <= INCREMENTAL_SHARE * sv.n_items:
                # (diff was overwritten by its absolute value: the moved rows are re-read.)
                delta = post[moved] - base_post[moved]
                raw = np.asarray(sv.item_by_wl[moved].T @ delta)
                raw += state["raw_counts"]
                raw_post = base_post.copy()
                raw_post[moved] = post[moved]
        if raw is None or raw_post is None:
            raw = np.asarray(sv.wl_by_item @ post)
            raw_post = post.copy()
        out = {"class_prior": class_prior(sv, post), "raw_counts": raw, "raw_post": raw_post}
        if self.shrinkage > 0:
            if state is None or "pooled" not in state:
                # The prior's centre is fixed for the run (set at its start), so that each
                # run is MAP EM under one prior and its objective can only rise.
                pooled = raw.reshape(-1, k, k).sum(axis=0)  # [label, class]
                pooled /= np.maximum(pooled.sum(axis=0, keepdims=True), EPS)
                out["pooled"] = pooled
            else:
                out["pooled"] = state["pooled"]
        return out

    def emission(self, state: State, out: np.ndarray | None = None) -> np.ndarray:
        """(W * K, K) P(label | true class) at row worker * K + label: the state's counts
        plus the pseudo-counts, normalized per (worker, true class).

        Unsmoothed, this is crowd-kit 1.4.2's M-step: expected counts of the observed (worker,
        label) pairs are floored at EPS and normalized over the worker's observed labels, so a
        label the worker never gave has probability exactly 0."""
        if "raw_counts" not in state:
            return np.asarray(state["emission"])  # a warm start's
        raw, k = state["raw_counts"], self.sv.n_classes
        counts = np.empty_like(raw) if out is None else out
        if self.shrinkage > 0:
            add = self.shrinkage * state["pooled"] + (self.smoothing + EPS)
            np.add(raw.reshape(-1, k, k), add, out=counts.reshape(-1, k, k))
        elif self.smoothing > 0:
            np.add(raw, self.smoothing + EPS, out=counts)
        else:
            np.copyto(counts, raw)
            counts[self.observed] = np.maximum(counts[self.observed], EPS)
        return normalize_emission(counts, k)

    def e_step(self, state: State) -> tuple[np.ndarray, float]:
        k = self.sv.n_classes
        shape = (self.sv.n_workers * k, k)
        if self._table is None or self._table.shape != shape:
            self._table = np.empty(shape)  # reused: the table lives one E-step
        table = self._table
        emission = self.emission(state, out=table)
        # Zero cells are labels the worker never gave (never looked up): EPS only keeps them
        # finite.
        np.maximum(emission, EPS, out=table)
        np.log(table, out=table)
        log_joint = np.asarray(self.sv.item_by_wl @ table)
        log_joint += np.log(state["class_prior"])
        post, log_norm = posteriors_from_log(log_joint, inplace=True)
        # Items without votes contribute log(sum(prior)) = 0. With shrinkage the objective is
        # the MAP one: plus the log Dirichlet prior density (up to a constant).
        objective = float(log_norm.sum())
        if self.shrinkage > 0 and "pooled" in state:
            pseudo = self.shrinkage * state["pooled"]  # [label, class]
            # einsum, not BLAS (see votes.row_sum)
            objective += float(np.einsum("wlc,lc->", table.reshape(-1, k, k), pseudo))
        return post, objective


def warm_state(warm: WorkerModelFit | None, votes: VoteArrays) -> State | None:
    k = votes.n_classes
    old_conf = warm_array(warm, "confusion")
    old_prior = warm_array(warm, "class_prior")
    if old_conf is None or old_prior is None or old_prior.shape != (k,) or old_conf.shape[0] == 0:
        return None
    conf = grow(old_conf, votes.n_workers, old_conf.mean(axis=0))
    if conf is None:
        return None
    state = {"class_prior": old_prior / old_prior.sum(), "emission": emission_of(conf)}
    pooled = warm_array(warm, "pooled")
    if pooled is not None and pooled.shape == (k, k):
        state["pooled"] = pooled
    return state


class DawidSkene(WorkerAggregator):
    """Dawid-Skene EM over the sparse vote list.

    Starts (`n_starts`): per-item vote fractions followed by one M-step, exactly as crowd-kit's
    DawidSkene, and majority vote (hard posteriors); see app/aggregation/em.py for how the run
    is chosen. Each iteration is an E-step (posteriors from confusions and class prior) then an
    M-step (expected counts, normalized); `probs` come from the last E-step and `state` holds
    the parameters of the M-step after it.

    Warm start: `warm.state["confusion"]` and `["class_prior"]` replace the starts (unless that
    run has warnings); workers beyond the old fit's start from the mean of the old workers'
    confusions. A warm start with a different K is ignored.

    Gold (`use_gold`): gold items' posteriors are clamped to their gold class after every
    E-step, so the confusions are estimated from them as if observed.

    Robustness: expected counts are floored at 1e-10 before normalizing (crowd-kit does the
    same), so every log is finite; a worker with one vote or constant labels gets a degenerate
    but finite confusion matrix. Use `smoothing` > 0 to shrink such workers toward uniform.

    `worker_skill`: expected accuracy under the class prior, sum_c prior[c] * confusion[w, c, c].
    """

    name = "dawid-skene"
    summary = "per-worker K x K confusion matrices and class priors, fitted by EM"
    source = "Dawid & Skene (1979), Journal of the Royal Statistical Society C 28(1), 20-28"

    max_iter: MaxIter = 100
    tol: Tol = 1e-5
    smoothing: Annotated[NonNegative, Field(description=SMOOTHING_DOC)] = 0.0
    shrinkage: Annotated[
        NonNegative,
        Field(
            description="pseudo-votes, per true class, drawn toward the crowd's pooled confusion "
            "matrix (an empirical-Bayes Dirichlet prior centred on the average worker): a worker "
            "with a handful of votes is treated as an average worker rather than as perfect; 0 = "
            "maximum likelihood, as in the paper and crowd-kit"
        ),
    ] = 2.0
    n_starts: NStarts = 2
    use_gold: UseGold = False

    def work(self, n_votes: int) -> float:
        return em_work(n_votes, self.max_iter, self.n_starts)

    def _fit(self, votes: VoteArrays, warm: WorkerModelFit | None) -> WorkerModelFit:
        sv = self.sorted_votes(votes)
        model = DawidSkeneEM(sv, self.smoothing, self.shrinkage)
        run = multi_start(
            sv,
            model,
            max_iter=self.max_iter,
            tol=self.tol,
            warm=warm_state(warm, votes),
            posteriors=posterior_starts(sv, self.n_starts),
            race=True,
        )
        prior = run.state["class_prior"]
        conf = confusion_of(model.emission(run.state), votes.n_classes)
        diag = np.einsum("wcc->wc", conf)
        pooled = {"pooled": run.state["pooled"]} if "pooled" in run.state else {}
        return fit_result(
            sv,
            run,
            prior,
            worker_skill=diag @ prior,
            confusion=conf,
            state={"confusion": conf, "class_prior": prior, **pooled},
        )
