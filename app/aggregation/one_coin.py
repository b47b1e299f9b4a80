"""One-coin Dawid-Skene: one accuracy per worker, errors spread uniformly over the other classes.

Worker w gives the true class with probability s_w and each of the K - 1 other classes with
probability (1 - s_w) / (K - 1); fitted by EM like Dawid-Skene, with s_w re-estimated as the
posterior probability mass on the worker's own labels. This is crowd-kit's OneCoinDawidSkene.

Y. Zhang, X. Chen, D. Zhou and M. I. Jordan (2016). "Spectral Methods Meet EM: A Provably
Optimal Algorithm for Crowdsourcing." Journal of Machine Learning Research 17(102), 1-44.
"""

from __future__ import annotations

import math

import numpy as np

from app.aggregation.params import ParamSpec, validate_params
from app.aggregation.worker_models import (
    EPS,
    Convergence,
    Params,
    SortedVotes,
    VoteArrays,
    WorkerMethod,
    WorkerModelFit,
    grow,
    max_iter_spec,
    posteriors_from_log,
    register,
    single_class_fit,
    tol_spec,
    vote_fractions,
    warm_array,
)

NAME = "one-coin"

PARAMS: dict[str, ParamSpec] = {
    "max_iter": max_iter_spec(100),
    "tol": tol_spec(1e-5),
    "smoothing": ParamSpec(
        name="smoothing",
        type=float,
        default=0.0,
        doc="pseudo-votes added to each worker's correct and to their incorrect expected counts "
        "(MAP under a Beta(1 + smoothing, 1 + smoothing) prior on accuracy); 0 = maximum "
        "likelihood",
        check=lambda v: 0.0 <= v < math.inf,
        rule="a finite number >= 0",
    ),
}


def _m_step(sv: SortedVotes, post: np.ndarray, smoothing: float) -> tuple[np.ndarray, np.ndarray]:
    """Class prior and per-worker accuracy: the mean posterior of the worker's own labels."""
    k = sv.n_classes
    hit = sv.label_posterior(post)
    correct = sv.worker_sum(hit) + smoothing
    n = sv.worker_votes + 2.0 * smoothing
    skill = np.divide(correct, n, out=np.full(sv.n_workers, 1.0 / k), where=n > 0)
    if sv.voted.size:
        prior = np.maximum(post[sv.voted].mean(axis=0), EPS)
        prior /= prior.sum()
    else:
        prior = np.full(k, 1.0 / k)
    return prior, skill


def _log_rates(skill: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """log P(label = true class) and log P(label = a given other class), clipped as crowd-kit.

    Both probabilities are clipped to [EPS, 1 - EPS], so a worker with accuracy 0 or 1 keeps
    finite logs (and can never fully overrule every other vote on an item).
    """
    right = np.clip(skill, EPS, 1.0 - EPS)
    wrong = np.clip((1.0 - skill) / (k - 1), EPS, 1.0 - EPS)
    return np.log(right), np.log(wrong)


def _e_step(sv: SortedVotes, prior: np.ndarray, skill: np.ndarray) -> tuple[np.ndarray, float]:
    # log P(votes on i | class c) = sum_v log_wrong[w_v] + sum_{v: label_v = c} (log_right -
    # log_wrong)[w_v]: two passes over the votes whatever K is.
    log_right, log_wrong = _log_rates(skill, sv.n_classes)
    base = sv.item_sum(log_wrong[sv.worker])
    bonus = sv.item_label_sum((log_right - log_wrong)[sv.worker])
    post, log_norm = posteriors_from_log(bonus + np.log(prior) + base[:, None])
    return post, float(log_norm.sum())


def _confusion(skill: np.ndarray, k: int) -> np.ndarray:
    right, wrong = np.exp(_log_rates(skill, k))
    conf = np.repeat(wrong[:, None, None], k, axis=1).repeat(k, axis=2)
    idx = np.arange(k)
    conf[:, idx, idx] = right[:, None]
    return conf


def fit(votes: VoteArrays, params: Params, warm: WorkerModelFit | None = None) -> WorkerModelFit:
    """One-coin EM over the sparse vote list.

    Initialization: per-item vote fractions (majority-vote posteriors), then one M-step, as in
    crowd-kit's OneCoinDawidSkene. Each iteration is an E-step then an M-step; `probs` come
    from the last E-step, `state` ("skill", "class_prior") from the M-step after it.

    Warm start: the stored skills and class prior replace the initialization; new workers
    start at the old workers' mean skill. A warm start with a different K is ignored.

    Robustness: the accuracy and the per-class error rate are clipped to [1e-10, 1 - 1e-10]
    before taking logs (as crowd-kit), so unanimous or always-wrong workers stay finite.

    Caveat (the model's, crowd-kit behaves identically): one coin cannot describe a worker who
    always gives the same label. Such a worker looks accurate on items of that class, and with
    a few of them on a skewed project EM can drift to calling every item that class (seen on a
    simulation with 10% constant-label spammers; `smoothing` does not prevent it). Prefer
    Dawid-Skene or MACE when such workers are likely.

    `worker_skill`: the accuracy s_w (clipped as above); `confusion` is the implied K x K
    matrix (s_w on the diagonal, (1 - s_w) / (K - 1) elsewhere).
    """
    p = validate_params(NAME, PARAMS, params)
    max_iter, tol, smoothing = int(p["max_iter"]), float(p["tol"]), float(p["smoothing"])
    k = votes.n_classes
    if k == 1:
        return single_class_fit(votes)
    sv = SortedVotes.build(votes)

    old_skill = warm_array(warm, "skill")
    old_prior = warm_array(warm, "class_prior")
    post: np.ndarray | None = None
    if old_skill is not None and old_skill.size and old_prior is not None and old_prior.size == k:
        skill = grow(old_skill, votes.n_workers, float(old_skill.mean()))
        assert skill is not None
        prior = old_prior / old_prior.sum()
    else:
        post = vote_fractions(sv)
        prior, skill = _m_step(sv, post, smoothing)

    conv = Convergence(tol, sv.n_votes)
    n_iter, converged = 0, False
    for _ in range(max_iter):
        post, loglik = _e_step(sv, prior, skill)
        n_iter += 1
        prior, skill = _m_step(sv, post, smoothing)
        if conv.update(loglik):
            converged = True
            break
    if post is None:  # warm start with max_iter = 0
        post, _ = _e_step(sv, prior, skill)

    empty = np.ones(votes.n_items, dtype=bool)
    empty[sv.voted] = False
    post[empty] = prior
    clipped = np.clip(skill, EPS, 1.0 - EPS)
    return WorkerModelFit(
        probs=post,
        worker_skill=clipped,
        confusion=_confusion(skill, k),
        class_prior=prior,
        n_iter=n_iter,
        converged=converged,
        state={"skill": skill, "class_prior": prior},
    )


METHOD = register(
    WorkerMethod(
        name=NAME,
        params=PARAMS,
        summary="one accuracy per worker, errors uniform over the other classes, fitted by EM",
        source="Zhang, Chen, Zhou & Jordan (2016), JMLR 17(102); one-coin special case of "
        "Dawid & Skene (1979)",
        fit=fit,
    )
)
