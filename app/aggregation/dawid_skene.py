"""Dawid-Skene: one K x K confusion matrix per worker plus class priors, fitted by EM.

A. P. Dawid and A. M. Skene (1979). "Maximum Likelihood Estimation of Observer Error-Rates Using
the EM Algorithm." Journal of the Royal Statistical Society, Series C 28(1), 20-28.
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
    register,
    single_class_fit,
    tol_spec,
    vote_fractions,
    warm_array,
)

NAME = "dawid-skene"

PARAMS: dict[str, ParamSpec] = {
    "max_iter": max_iter_spec(100),
    "tol": tol_spec(1e-5),
    "smoothing": ParamSpec(
        name="smoothing",
        type=float,
        default=0.0,
        doc="pseudo-count added to every cell of every worker's confusion counts (MAP under a "
        "symmetric Dirichlet(1 + smoothing) prior); 0 = maximum likelihood, as in the paper",
        check=lambda v: 0.0 <= v < math.inf,
        rule="a finite number >= 0",
    ),
}


def _m_step(
    sv: SortedVotes, observed: np.ndarray, post_t: np.ndarray, smoothing: float
) -> tuple[np.ndarray, np.ndarray]:
    """Class prior (K,) and confusions (W, K, K) from posteriors stored class-major (K, I).

    Unsmoothed, this is crowd-kit 1.4.2's M-step: expected counts of the observed (worker,
    label) pairs are floored at EPS and normalized over the worker's observed labels, so a label
    the worker never gave has probability exactly 0 (and is never looked up).
    """
    k, w = sv.n_classes, sv.n_workers
    counts = np.empty((k, w * k))  # counts[c, worker * K + label]
    for c in range(k):
        # One weighted bincount per class beat np.add.at on (V, K) blocks and a key-sorted
        # reduceat (whose 10M-vote argsort costs more than it saves) in benchmarks.
        counts[c] = np.bincount(sv.worker_label, weights=post_t[c][sv.item], minlength=w * k)
    if smoothing > 0:
        counts += smoothing
    else:
        counts[:, observed] = np.maximum(counts[:, observed], EPS)
    conf = counts.reshape(k, w, k).transpose(1, 0, 2)  # (W, true class, label)
    total = conf.sum(axis=2, keepdims=True)
    # A worker without votes (only possible unsmoothed) gets a uniform confusion.
    conf = np.divide(conf, total, out=np.full_like(conf, 1.0 / k), where=total > 0)
    if sv.voted.size:
        prior = np.maximum(post_t[:, sv.voted].mean(axis=1), EPS)
        prior /= prior.sum()
    else:
        prior = np.full(k, 1.0 / k)
    return prior, np.ascontiguousarray(conf)


def _e_step(sv: SortedVotes, prior: np.ndarray, conf: np.ndarray) -> tuple[np.ndarray, float]:
    """Posteriors (K, I) class-major and the log marginal likelihood of all votes."""
    k, w = sv.n_classes, sv.n_workers
    # log_conf[c, worker * K + label]; zero cells are labels the worker never gave, so their
    # value is never gathered: EPS only keeps the table finite.
    log_conf = np.log(np.maximum(conf.transpose(1, 0, 2).reshape(k, w * k), EPS))
    log_prior = np.log(prior)
    log_post = np.empty((k, sv.n_items))
    for c in range(k):
        log_post[c] = log_prior[c] + sv.item_sum(log_conf[c][sv.worker_label])
    m = log_post.max(axis=0)
    post = np.exp(log_post - m)
    s = post.sum(axis=0)
    post /= s
    # Items without votes contribute log(sum(prior)) = 0.
    return post, float((m + np.log(s)).sum())


def _warm_start(warm: WorkerModelFit | None, votes: VoteArrays) -> tuple[np.ndarray, np.ndarray]:
    k = votes.n_classes
    old_conf = warm_array(warm, "confusion")
    old_prior = warm_array(warm, "class_prior")
    if old_conf is None or old_prior is None or old_prior.shape != (k,) or old_conf.shape[0] == 0:
        raise LookupError
    conf = grow(old_conf, votes.n_workers, old_conf.mean(axis=0))
    if conf is None:
        raise LookupError
    return old_prior / old_prior.sum(), conf


def fit(votes: VoteArrays, params: Params, warm: WorkerModelFit | None = None) -> WorkerModelFit:
    """Dawid-Skene EM over the sparse vote list.

    Initialization: per-item vote fractions (majority-vote posteriors), followed by one M-step,
    exactly as crowd-kit's DawidSkene. Each iteration is an E-step (posteriors from confusions
    and class prior) followed by an M-step (expected counts, normalized); the returned `probs`
    come from the last E-step and `state` holds the parameters of the M-step after it.

    Warm start: `warm.state["confusion"]` and `["class_prior"]` replace the initialization;
    workers beyond the old fit's start from the mean of the old workers' confusions. A warm
    start with a different K is ignored.

    Robustness: expected counts are floored at 1e-10 before normalizing (crowd-kit does the
    same), so every log is finite; a worker with one vote or constant labels gets a degenerate
    but finite confusion matrix. Use `smoothing` > 0 to shrink such workers toward uniform.

    `worker_skill`: expected accuracy under the class prior, sum_c prior[c] * confusion[w, c, c].
    """
    p = validate_params(NAME, PARAMS, params)
    max_iter, tol, smoothing = int(p["max_iter"]), float(p["tol"]), float(p["smoothing"])
    if votes.n_classes == 1:
        return single_class_fit(votes)
    sv = SortedVotes.build(votes)
    # (worker, label) pairs that occur: the unsmoothed M-step floors only these.
    observed = np.bincount(sv.worker_label, minlength=votes.n_workers * votes.n_classes) > 0
    try:
        prior, conf = _warm_start(warm, votes)
        post_t = None
    except LookupError:
        post_t = np.ascontiguousarray(vote_fractions(sv).T)
        prior, conf = _m_step(sv, observed, post_t, smoothing)

    conv = Convergence(tol, sv.n_votes)
    n_iter, converged = 0, False
    for _ in range(max_iter):
        post_t, loglik = _e_step(sv, prior, conf)
        n_iter += 1
        prior, conf = _m_step(sv, observed, post_t, smoothing)
        if conv.update(loglik):
            converged = True
            break
    if post_t is None:  # warm start with max_iter = 0
        post_t, _ = _e_step(sv, prior, conf)

    probs = np.ascontiguousarray(post_t.T)
    empty = np.ones(votes.n_items, dtype=bool)
    empty[sv.voted] = False
    probs[empty] = prior
    diag = np.einsum("wcc->wc", conf)
    return WorkerModelFit(
        probs=probs,
        worker_skill=diag @ prior,
        confusion=conf,
        class_prior=prior,
        n_iter=n_iter,
        converged=converged,
        state={"confusion": conf, "class_prior": prior},
    )


METHOD = register(
    WorkerMethod(
        name=NAME,
        params=PARAMS,
        summary="per-worker K x K confusion matrices and class priors, fitted by EM",
        source="Dawid & Skene (1979), Journal of the Royal Statistical Society C 28(1), 20-28",
        fit=fit,
    )
)
