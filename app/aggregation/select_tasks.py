"""`method=auto` for multi-label and ordinal projects: every method of the project's type scored
on held-out votes, the best fitted on all votes.

The split is select.py's (a share of each item's votes held out, never an item's last); every
candidate is fitted on the rest and scored by the mean log probability it gives the held-out
votes, under the predictive distribution of *that worker's* answer on that item:

- a worker model predicts it through the worker's own parameters, the perspectivist prediction
  (app/aggregation/perspectivist.py): multi-label, P(w ticks k) = q_ik sens_w + (1 - q_ik)
  (1 - spec_w); ordinal, P(w answers level l) = sum_c post[i, c] kernel[w, c, l] (Dawid-Skene's
  confusion, or the rater model's answer kernel);
- a count method has no worker parameters: it predicts every worker to answer like its soft
  label (each class ticked with the item's probability that it applies, independently; a level
  drawn from the item's distribution over levels).

A held-out multi-label vote scores sum_k log P(tick_k as given), the log probability of the
whole set (classes taken as independent given the item, as every multi-label method here
assumes); an ordinal vote scores log P(its level). Probabilities are floored at EPS before the
log, so a count method that puts zero mass on an answer (vote shares without smoothing) is
penalized by log(1e-10) per such vote rather than made -inf.

Unlike single-choice auto there is no gold criterion: a multi-label item's gold is not one class,
and an ordinal item's gold would be scored by accuracy, which ignores the scale. Ties are judged
as in select.py (within TIE_SE paired standard errors of the best: `decided` false).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from app.aggregation.base import (
    Aggregator,
    CountsAggregator,
    WorkerAggregator,
    WorkerModelFit,
)
from app.aggregation.dawid_skene import DawidSkene
from app.aggregation.methods import Normalized, Softmax
from app.aggregation.multilabel import tick_counts
from app.aggregation.ordinal import level_counts
from app.aggregation.perspectivist import answer_distribution, tick_probabilities
from app.aggregation.select import (
    WORK_PER_VOTE,
    Holdout,
    HoldoutSeed,
    paired_scores,
    split_votes,
)
from app.aggregation.task_methods import (
    DistanceSmoothed,
    RaterBias,
    TickBinaryRelevance,
    TickCountsAggregator,
    TickNormalized,
    TickPropensity,
    TickSoftmax,
    tick_votes,
)
from app.aggregation.votes import EPS, TickVotes, VoteArrays

TICKS_CRITERION = "held-out tick log-likelihood"
LEVELS_CRITERION = "held-out level log-likelihood"

# Every method of the type, in the registry's order (a test checks that none is missing).
MULTI_LABEL_CANDIDATES: tuple[type[Aggregator], ...] = (
    TickNormalized,
    TickSoftmax,
    TickBinaryRelevance,
    TickPropensity,
)
ORDINAL_CANDIDATES: tuple[type[Aggregator], ...] = (
    Normalized,
    Softmax,
    DistanceSmoothed,
    DawidSkene,
    RaterBias,
)


def subset(votes: VoteArrays, keep: np.ndarray) -> VoteArrays:
    """The votes `keep` selects (a mask, or positions in the order wanted), with the same item
    and worker indices (ticks kept for TickVotes)."""
    v = votes
    if isinstance(v, TickVotes):
        return TickVotes(
            v.item[keep], v.worker[keep], v.label[keep], v.n_items, v.n_workers, v.n_classes,
            None, ticks=v.ticks[keep],
        )  # fmt: skip
    return VoteArrays(
        v.item[keep], v.worker[keep], v.label[keep], v.n_items, v.n_workers, v.n_classes, v.gold
    )


def fit_method(method: Aggregator, votes: VoteArrays) -> WorkerModelFit:
    """Any method of the type as a WorkerModelFit. A count method's has its soft labels, no
    worker parameters (skill NaN: the API shows null) and, as the prior for items newer than
    the fit, the mean soft label of the voted items."""
    if isinstance(method, WorkerAggregator):
        return method.fit(votes).result_
    if isinstance(method, TickCountsAggregator):
        tc, nv = tick_counts(votes.item, tick_votes(votes).ticks, votes.n_items)
        probs = method.compute(tc, nv)
    elif isinstance(method, CountsAggregator):
        counts = level_counts(votes.item, votes.label, votes.n_items, votes.n_classes)
        probs = method.fit(counts).probas_
    else:
        raise TypeError(f"{type(method).__name__} cannot be a candidate of auto")
    voted = np.bincount(votes.item, minlength=votes.n_items) > 0
    k = votes.n_classes
    prior = probs[voted].mean(axis=0) if voted.any() else np.full(k, 1.0 / k)
    return WorkerModelFit(
        probs=probs,
        worker_skill=np.full(votes.n_workers, np.nan),
        confusion=None,
        class_prior=prior,
        n_iter=0,
        converged=True,
    )


def predicted_answers(fit: WorkerModelFit, item: np.ndarray, worker: np.ndarray) -> np.ndarray:
    """(m, K) each worker's predicted answer on each item: per-class tick probabilities
    (multi-label) or a distribution over levels; the item's soft label without a worker model."""
    st = fit.state
    if "sensitivity" in st and "specificity" in st:
        return tick_probabilities(fit.probs, st["sensitivity"], st["specificity"], item, worker)
    if fit.confusion is not None:
        return answer_distribution(fit.probs, fit.confusion, item, worker)
    return fit.probs[item]


def held_out_log_likelihood(fit: WorkerModelFit, votes: VoteArrays, held: np.ndarray) -> np.ndarray:
    """Per held-out vote, log P(the answer given) under `fit` (see the module doc)."""
    p = predicted_answers(fit, votes.item[held], votes.worker[held])
    if isinstance(votes, TickVotes):
        t = votes.ticks[held]
        return np.log(np.maximum(np.where(t, p, 1.0 - p), EPS)).sum(axis=1)  # type: ignore[no-any-return]
    return np.log(np.maximum(p[np.arange(held.size), votes.label[held]], EPS))  # type: ignore[no-any-return]


def score_methods(
    votes: VoteArrays, candidates: tuple[type[Aggregator], ...], holdout: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(score per candidate, standard error of its difference to the best), NaN where a
    candidate's fit gave non-finite probabilities or no vote could be held out.

    The votes are put in (item, worker) order first: the split draws one random key per vote
    by position, and the database returns votes in storage order, which a vacuum or an update
    can change; sorted, the same votes always give the same split and the same choice."""
    votes = subset(votes, np.lexsort((votes.worker, votes.item)))
    _, held = split_votes(votes, holdout, seed)
    keep = np.ones(votes.n_votes, dtype=bool)
    keep[held] = False
    train = subset(votes, keep)
    units: list[np.ndarray | None] = []
    for method in candidates:
        u = None
        if held.size:
            f = fit_method(method(), train)
            ll = held_out_log_likelihood(f, votes, held)
            u = ll if np.isfinite(ll).all() else None
        units.append(u)
    return paired_scores(units)


class TaskAuto(WorkerAggregator):
    """Every method of the type scored (module doc), the best fitted on all votes. The result
    is the chosen method's fit, its state extended with the candidates' scores (read by
    select.describe, as for single-choice auto)."""

    name = "auto"
    source = "model selection by held-out predictive likelihood; candidates cite their own"
    fits_one_class = True  # its state records the candidates' scores even then
    candidates: ClassVar[tuple[type[Aggregator], ...]]
    criterion: ClassVar[str]

    holdout: Holdout = 0.2
    seed: HoldoutSeed = 0

    def work(self, n_votes: int) -> float:
        return float(n_votes) * WORK_PER_VOTE

    def _fit(self, votes: VoteArrays, warm: WorkerModelFit | None) -> WorkerModelFit:
        scores, std_err = score_methods(votes, self.candidates, self.holdout, self.seed)
        finite = np.where(np.isfinite(scores), scores, -np.inf)
        choice = int(np.argmax(finite)) if np.isfinite(scores).any() else 0
        result = fit_method(self.candidates[choice](), votes)
        result.state = {
            **result.state,
            "auto_methods": np.asarray([c.name for c in self.candidates], dtype=str),
            "auto_scores": scores,
            "auto_std_err": std_err,
            "auto_choice": np.asarray(choice),
            "auto_criterion": np.asarray(self.criterion, dtype=str),
        }
        return result


class MultiLabelAuto(TaskAuto):
    summary = (
        "the multi-label method whose held-out votes (sets of ticks) are best predicted; see "
        "GET .../methods/compare"
    )
    task_type = "multi_label"
    candidates = MULTI_LABEL_CANDIDATES
    criterion = TICKS_CRITERION


class OrdinalAuto(TaskAuto):
    summary = (
        "the ordinal method whose held-out votes (levels) are best predicted; see "
        "GET .../methods/compare"
    )
    task_type = "ordinal"
    candidates = ORDINAL_CANDIDATES
    criterion = LEVELS_CRITERION


PREDICTS = {
    "worker": "the held-out worker's answer through the worker's own model (perspectivist)",
    "item": "the item's soft label (no worker model: every worker answers like the crowd)",
}


def predicts(method: type[Aggregator]) -> str:
    """How a candidate predicts a held-out vote: "worker" or "item" (PREDICTS says what)."""
    return "worker" if issubclass(method, WorkerAggregator) else "item"
