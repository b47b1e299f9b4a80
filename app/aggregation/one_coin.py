"""One-coin Dawid-Skene: one accuracy per worker, errors spread uniformly over the other classes.

Worker w gives the true class with probability s_w and each of the K - 1 other classes with
probability (1 - s_w) / (K - 1); fitted by EM like Dawid-Skene, with s_w re-estimated as the
posterior probability mass on the worker's own labels. This is crowd-kit's OneCoinDawidSkene.

Y. Zhang, X. Chen, D. Zhou and M. I. Jordan (2016). "Spectral Methods Meet EM: A Provably
Optimal Algorithm for Crowdsourcing." Journal of Machine Learning Research 17(102), 1-44.
"""

from __future__ import annotations

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


def _log_rates(skill: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """log P(label = true class) and log P(label = a given other class), clipped as crowd-kit.

    Both probabilities are clipped to [EPS, 1 - EPS], so a worker with accuracy 0 or 1 keeps
    finite logs (and can never fully overrule every other vote on an item).
    """
    right = np.clip(skill, EPS, 1.0 - EPS)
    wrong = np.clip((1.0 - skill) / (k - 1), EPS, 1.0 - EPS)
    return np.log(right), np.log(wrong)


class OneCoinEM(EMModel):
    def __init__(self, sv: SortedVotes, smoothing: float, constant_at_chance: bool = True) -> None:
        self.sv, self.smoothing = sv, smoothing
        self.constant = sv.constant_workers if constant_at_chance else np.zeros(0, np.int64)

    def m_step(self, post: np.ndarray, state: State | None) -> State:
        """Class prior and per-worker accuracy: the mean posterior of the worker's own labels."""
        sv = self.sv
        correct = sv.worker_sum(sv.label_posterior(post)) + self.smoothing
        n = sv.worker_votes + 2.0 * self.smoothing
        skill = np.divide(correct, n, out=np.full(sv.n_workers, 1.0 / sv.n_classes), where=n > 0)
        # A constant-label worker gets the chance accuracy 1/K, at which their votes weigh
        # nothing (see SortedVotes.constant_workers): left free, they look accurate on every
        # item of their label, and on a skewed crowd EM drifts to calling everything that label.
        skill[self.constant] = 1.0 / sv.n_classes
        return {"class_prior": class_prior(sv, post), "skill": skill}

    def e_step(self, state: State) -> tuple[np.ndarray, float]:
        # log P(votes on i | class c) = sum_v log_wrong[w_v] + sum_{v: label_v = c} (log_right -
        # log_wrong)[w_v]: two passes over the votes whatever K is.
        sv = self.sv
        log_right, log_wrong = _log_rates(state["skill"], sv.n_classes)
        base = sv.item_sum(log_wrong[sv.worker])
        bonus = sv.item_label_sum((log_right - log_wrong)[sv.worker])
        post, log_norm = posteriors_from_log(bonus + np.log(state["class_prior"]) + base[:, None])
        return post, float(log_norm.sum())


def _confusion(skill: np.ndarray, k: int) -> np.ndarray:
    right, wrong = np.exp(_log_rates(skill, k))
    conf = np.repeat(wrong[:, None, None], k, axis=1).repeat(k, axis=2)
    idx = np.arange(k)
    conf[:, idx, idx] = right[:, None]
    return conf


class OneCoin(WorkerAggregator):
    """One-coin EM over the sparse vote list.

    Initialization: per-item vote fractions (majority-vote posteriors), then one M-step, as in
    crowd-kit's OneCoinDawidSkene. Each iteration is an E-step then an M-step; `probs` come
    from the last E-step, `state` ("skill", "class_prior") from the M-step after it.

    Warm start: the stored skills and class prior replace the initialization; new workers
    start at the old workers' mean skill. A warm start with a different K is ignored.

    Robustness: the accuracy and the per-class error rate are clipped to [1e-10, 1 - 1e-10]
    before taking logs (as crowd-kit), so unanimous or always-wrong workers stay finite.

    Departure from crowd-kit: one coin cannot describe a worker who always gives the same
    label. Such a worker looks accurate on items of that class, and with a few of them on a
    skewed project EM drifts to calling every item that class (crowd-kit does; accuracy fell to
    0.18 on the simulator's relevance-4 crowd, seed 1). Workers whose labels are constant
    beyond chance (`SortedVotes.constant_workers`) are held at accuracy 1/K, where their
    votes carry no weight.

    `worker_skill`: the accuracy s_w (clipped as above); `confusion` is the implied K x K
    matrix (s_w on the diagonal, (1 - s_w) / (K - 1) elsewhere).
    """

    name = "one-coin"
    summary = "one accuracy per worker, errors uniform over the other classes, fitted by EM"
    source = (
        "Zhang, Chen, Zhou & Jordan (2016), JMLR 17(102); one-coin special case of "
        "Dawid & Skene (1979)"
    )

    max_iter: MaxIter = 100
    tol: Tol = 1e-5
    smoothing: Annotated[
        NonNegative,
        Field(
            description="pseudo-votes added to each worker's correct and to their incorrect "
            "expected counts (MAP under a Beta(1 + smoothing, 1 + smoothing) prior on accuracy); "
            "0 = maximum likelihood"
        ),
    ] = 0.0
    n_starts: NStarts = 2
    constant_at_chance: Annotated[
        bool,
        Field(
            description="true: workers who gave one label only, beyond chance, are held at "
            "accuracy 1/K (their votes carry no weight); false: crowd-kit's update"
        ),
    ] = True
    use_gold: UseGold = False

    def work(self, n_votes: int) -> float:
        return em_work(n_votes, self.max_iter, self.n_starts)

    def _fit(self, votes: VoteArrays, warm: WorkerModelFit | None) -> WorkerModelFit:
        k = votes.n_classes
        sv = self.sorted_votes(votes)
        old_skill = warm_array(warm, "skill")
        old_prior = warm_array(warm, "class_prior")
        warm_state = None
        if (
            old_skill is not None
            and old_skill.size
            and old_prior is not None
            and old_prior.size == k
        ):
            skill = grow(old_skill, votes.n_workers, float(old_skill.mean()))
            assert skill is not None
            warm_state = {"skill": skill, "class_prior": old_prior / old_prior.sum()}
        run = multi_start(
            sv,
            OneCoinEM(sv, self.smoothing, self.constant_at_chance),
            max_iter=self.max_iter,
            tol=self.tol,
            warm=warm_state,
            posteriors=posterior_starts(sv, self.n_starts),
        )
        skill, prior = run.state["skill"], run.state["class_prior"]
        return fit_result(
            sv,
            run,
            prior,
            worker_skill=np.clip(skill, EPS, 1.0 - EPS),
            confusion=_confusion(skill, k),
            state={"skill": skill, "class_prior": prior},
        )
