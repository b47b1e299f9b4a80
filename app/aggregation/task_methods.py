"""The multi-label and ordinal methods as aggregator classes (base.py's protocol), so that the
registry, the API's parameter parsing and the fit cache treat them as they treat the
single-label methods.

The numerics stay in multilabel.py and ordinal.py (plain numpy, tested there against crowd-kit
and hand computations); each class here declares the parameters as validated fields and maps
the result onto the protocol's shapes:

- multi-label count methods (`TickCountsAggregator`) read an item's tick counts and its number
  of voters, `compute(ticks_count, n_voters)`: per class the probability that it applies;
- multi-label worker models read a `TickVotes` list; their fit keeps the per-worker sensitivity
  and specificity in `state` (each annotator's view: perspectivist.tick_probabilities);
- ordinal methods are single-label ones on level indices, plus `distance-smoothed` (counts) and
  `rater-bias` (a worker model whose K x K answer kernel is stored as its `confusion`, so each
  annotator's view is the same marginalization as Dawid-Skene's).
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import Field, PrivateAttr

from app.aggregation import multilabel, ordinal
from app.aggregation.base import (
    Aggregator,
    CountsAggregator,
    NotFitted,
    WorkerAggregator,
    WorkerModelFit,
)
from app.aggregation.methods import Temperature
from app.aggregation.params import NonNegative, Positive, Tol
from app.aggregation.votes import TickVotes, VoteArrays

# These EM loops start from the vote shares and have no "0 iterations" result to return.
MaxIter = Annotated[
    int, Field(ge=1, le=1000, description="maximum number of EM iterations (E-step and M-step)")
]

# ----- multi-label ------------------------------------------------------------------------------


class TickCountsAggregator(Aggregator):
    """A multi-label method of per-item counts: `ticks_count[i, k]` voters of item i ticked
    class k, out of `n_voters[i]`. Rows are K separate probabilities, not a distribution."""

    task_type = "multi_label"

    _probas: np.ndarray | None = PrivateAttr(default=None)

    def compute(self, ticks_count: np.ndarray, n_voters: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def fit(self, ticks_count: np.ndarray, n_voters: np.ndarray) -> TickCountsAggregator:
        self._probas = self.compute(ticks_count, n_voters)
        return self

    @property
    def probas_(self) -> np.ndarray:
        if self._probas is None:
            raise NotFitted(f"{type(self).__name__} is not fitted yet: call fit first")
        return self._probas


class TickNormalized(TickCountsAggregator):
    name = multilabel.MultiLabelNormalized.name
    summary = multilabel.MultiLabelNormalized.summary
    source = multilabel.MultiLabelNormalized.source

    alpha: Annotated[
        NonNegative,
        Field(description="pseudo-count added to both outcomes of every class (ticked or not)"),
    ] = 0.0

    def compute(self, ticks_count: np.ndarray, n_voters: np.ndarray) -> np.ndarray:
        fit = multilabel.MultiLabelNormalized(alpha=self.alpha).fit_counts(ticks_count, n_voters)
        return fit.probas_


class TickSoftmax(TickCountsAggregator):
    name = multilabel.MultiLabelSoftmax.name
    summary = multilabel.MultiLabelSoftmax.summary
    source = multilabel.MultiLabelSoftmax.source

    temperature: Temperature = 1.0

    def compute(self, ticks_count: np.ndarray, n_voters: np.ndarray) -> np.ndarray:
        fit = multilabel.MultiLabelSoftmax(temperature=self.temperature)
        return fit.fit_counts(ticks_count, n_voters).probas_


def tick_votes(votes: VoteArrays) -> TickVotes:
    if not isinstance(votes, TickVotes):
        raise TypeError("a multi-label method needs TickVotes (each vote's set of ticks)")
    return votes


def _tick_fit(
    fit: multilabel.BinaryRelevance | multilabel.TickPropensity,
) -> WorkerModelFit:
    """The protocol's shapes: `worker_skill` is the balanced accuracy (sensitivity +
    specificity) / 2, averaged over classes where the rates are per class."""
    sens, spec = np.asarray(fit.sensitivity_), np.asarray(fit.specificity_)
    skill = (sens + spec) / 2
    return WorkerModelFit(
        probs=fit.probas_,
        worker_skill=skill.mean(axis=1) if skill.ndim == 2 else skill,
        confusion=None,
        class_prior=fit.class_prior_,
        n_iter=fit.n_iter_,
        converged=fit.converged_,
        state={"sensitivity": sens, "specificity": spec},
    )


class TickBinaryRelevance(WorkerAggregator):
    """See multilabel.BinaryRelevance. `worker_skill`: balanced accuracy averaged over classes."""

    name = multilabel.BinaryRelevance.name
    summary = multilabel.BinaryRelevance.summary
    source = multilabel.BinaryRelevance.source
    task_type = "multi_label"

    max_iter: MaxIter = 100
    tol: Tol = 1e-5
    smoothing: Annotated[
        NonNegative, Field(description="Beta pseudo-count added to each expected count")
    ] = 0.0

    def work(self, n_votes: int) -> float:
        return float(n_votes * self.max_iter)

    def _fit(self, votes: VoteArrays, warm: WorkerModelFit | None) -> WorkerModelFit:
        tv = tick_votes(votes)
        fit = multilabel.BinaryRelevance(
            max_iter=self.max_iter, tol=self.tol, smoothing=self.smoothing
        ).fit(tv.item, tv.worker, tv.ticks, tv.n_items, tv.n_workers)
        return _tick_fit(fit)


PseudoVotes = Annotated[
    NonNegative,
    Field(
        description="pseudo-votes per worker at the crowd's pooled rates: a worker with few "
        "votes is read as an average worker"
    ),
]
PriorCount = Annotated[
    NonNegative, Field(description="pseudo-count per outcome on each class or level prior")
]


class TickPropensity(WorkerAggregator):
    """See multilabel.TickPropensity. `worker_skill`: balanced accuracy, (sens + spec) / 2."""

    name = multilabel.TickPropensity.name
    summary = multilabel.TickPropensity.summary
    source = multilabel.TickPropensity.source
    task_type = "multi_label"

    pseudo_votes: PseudoVotes = 2.0
    prior_count: PriorCount = 1.0
    max_iter: MaxIter = 200
    tol: Tol = 1e-7

    def work(self, n_votes: int) -> float:
        return float(n_votes * self.max_iter)

    def _fit(self, votes: VoteArrays, warm: WorkerModelFit | None) -> WorkerModelFit:
        tv = tick_votes(votes)
        fit = multilabel.TickPropensity(
            pseudo_votes=self.pseudo_votes,
            prior_count=self.prior_count,
            max_iter=self.max_iter,
            tol=self.tol,
        ).fit(tv.item, tv.worker, tv.ticks, tv.n_items, tv.n_workers)
        return _tick_fit(fit)


# ----- ordinal ----------------------------------------------------------------------------------


class DistanceSmoothed(CountsAggregator):
    name = ordinal.OrdinalSmoothed.name
    summary = ordinal.OrdinalSmoothed.summary
    source = ordinal.OrdinalSmoothed.source
    task_type = "ordinal"

    bandwidth: Annotated[
        NonNegative,
        Field(description="h, in levels: how far a vote spreads; 0 = vote proportions"),
    ] = 1.0

    def compute(self, counts: np.ndarray) -> np.ndarray:
        return ordinal.OrdinalSmoothed(bandwidth=self.bandwidth).fit_counts(counts).probas_


class RaterBias(WorkerAggregator):
    """See ordinal.RaterModel (its default M-step, by likelihood). The answer kernel
    P(answer k | true level c) is stored as `confusion`; `state` keeps each worker's `bias` and
    `spread` in levels. `worker_skill`: the probability of answering the true level, under the
    level prior, sum_c prior[c] * kernel[w, c, c]."""

    name = ordinal.RaterModel.name
    summary = ordinal.RaterModel.summary
    source = ordinal.RaterModel.source
    task_type = "ordinal"

    pseudo_votes: Annotated[
        NonNegative,
        Field(
            description="precision of the priors pulling a worker's bias toward 0 and spread "
            "toward the pool"
        ),
    ] = 2.0
    min_spread: Annotated[Positive, Field(description="floor of a worker's spread, in levels")] = (
        0.25
    )
    prior_count: PriorCount = 1.0
    max_iter: MaxIter = 200
    tol: Tol = 1e-6

    def work(self, n_votes: int) -> float:
        # Each iteration is a few Newton steps per worker besides the E-step.
        return float(n_votes * self.max_iter * 3)

    def _fit(self, votes: VoteArrays, warm: WorkerModelFit | None) -> WorkerModelFit:
        fit = ordinal.RaterModel(
            pseudo_votes=self.pseudo_votes,
            min_spread=self.min_spread,
            prior_count=self.prior_count,
            max_iter=self.max_iter,
            tol=self.tol,
        ).fit(
            votes.item, votes.worker, votes.label, votes.n_items, votes.n_workers, votes.n_classes
        )
        diag = np.einsum("wcc->wc", fit.kernel_)
        return WorkerModelFit(
            probs=fit.probas_,
            worker_skill=diag @ fit.level_prior_,
            confusion=fit.kernel_,
            class_prior=fit.level_prior_,
            n_iter=fit.n_iter_,
            converged=fit.converged_,
            state={"bias": fit.worker_bias_, "spread": fit.worker_spread_},
        )
