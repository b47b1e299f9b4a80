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


def confusion_of(emission: np.ndarray, k: int) -> np.ndarray:
    """(W * K, K) P(label | class) at [worker * K + label, class] -> (W, K, K) confusions
    [worker, true class, label]."""
    return np.ascontiguousarray(emission.reshape(-1, k, k).transpose(0, 2, 1))


def emission_of(confusion: np.ndarray) -> np.ndarray:
    """The inverse of `confusion_of`."""
    k = confusion.shape[1]
    return np.ascontiguousarray(confusion.transpose(0, 2, 1)).reshape(-1, k)


class DawidSkeneEM(EMModel):
    """State: "class_prior" (K,), "emission" (W * K, K) P(label | true class) at row
    worker * K + label, and with shrinkage "pooled" (K, K) [label, class], the prior's centre."""

    def __init__(self, sv: SortedVotes, smoothing: float, shrinkage: float = 0.0) -> None:
        self.sv, self.smoothing, self.shrinkage = sv, smoothing, shrinkage
        self._table: np.ndarray | None = None

    @cached_property
    def observed(self) -> np.ndarray:
        """(worker, label) pairs that occur: the unsmoothed M-step floors only these."""
        sv = self.sv
        return np.bincount(sv.worker_label, minlength=sv.n_workers * sv.n_classes) > 0

    def m_step(self, post: np.ndarray, state: State | None) -> State:
        """Expected confusion counts, normalized per (worker, true class), and the class prior.

        Unsmoothed, this is crowd-kit 1.4.2's M-step: expected counts of the observed (worker,
        label) pairs are floored at EPS and normalized over the worker's observed labels, so a
        label the worker never gave has probability exactly 0."""
        counts = np.asarray(self.sv.wl_by_item @ post)  # [worker * K + label, class]
        k = self.sv.n_classes
        if self.shrinkage > 0:
            if state is None or "pooled" not in state:
                # The prior's centre is fixed for the run (set at its start), so that each
                # run is MAP EM under one prior and its objective can only rise.
                pooled = counts.reshape(-1, k, k).sum(axis=0)  # [label, class]
                pooled /= np.maximum(pooled.sum(axis=0, keepdims=True), EPS)
            else:
                pooled = state["pooled"]
            c3 = counts.reshape(-1, k, k)  # a view: added in place
            c3 += self.shrinkage * pooled + (self.smoothing + EPS)
        elif self.smoothing > 0:
            counts += self.smoothing + EPS
        else:
            counts[self.observed] = np.maximum(counts[self.observed], EPS)
        out = {
            "class_prior": class_prior(self.sv, post),
            "emission": normalize_emission(counts, k),
        }
        if self.shrinkage > 0:
            out["pooled"] = pooled
        return out

    def e_step(self, state: State) -> tuple[np.ndarray, float]:
        # Zero cells are labels the worker never gave (never looked up): EPS only keeps them
        # finite.
        emission = state["emission"]
        if self._table is None or self._table.shape != emission.shape:
            self._table = np.empty_like(emission)  # reused: the table lives one E-step
        table = np.maximum(emission, EPS, out=self._table)
        np.log(table, out=table)
        log_joint = np.asarray(self.sv.item_by_wl @ table)
        log_joint += np.log(state["class_prior"])
        post, log_norm = posteriors_from_log(log_joint, inplace=True)
        # Items without votes contribute log(sum(prior)) = 0. With shrinkage the objective is
        # the MAP one: plus the log Dirichlet prior density (up to a constant).
        objective = float(log_norm.sum())
        if self.shrinkage > 0 and "pooled" in state:
            k = self.sv.n_classes
            pseudo = self.shrinkage * state["pooled"]  # [label, class]
            per_cell = np.ones(self.sv.n_workers) @ table.reshape(-1, k * k)  # summed over workers
            objective += float(per_cell @ pseudo.reshape(-1))
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
        run = multi_start(
            sv,
            DawidSkeneEM(sv, self.smoothing, self.shrinkage),
            max_iter=self.max_iter,
            tol=self.tol,
            warm=warm_state(warm, votes),
            posteriors=posterior_starts(sv, self.n_starts),
            race=True,
        )
        prior = run.state["class_prior"]
        conf = confusion_of(run.state["emission"], votes.n_classes)
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
