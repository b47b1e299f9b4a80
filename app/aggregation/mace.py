"""MACE: per-worker spamming probability and spamming strategy, variational-Bayes EM.

On each item, worker w either knows the answer and gives the true class, or spams (with
probability 1 - theta_w) and draws a label from their own strategy distribution xi_w. The true
class is uniform. Variational Bayes with a Beta(alpha, beta) prior on the spam/know split and a
symmetric Dirichlet(strategy_prior) prior on xi (the M-step uses geometric means
exp(digamma(count + prior) - digamma(total)) instead of normalized counts), with random restarts.

D. Hovy, T. Berg-Kirkpatrick, A. Vaswani and E. Hovy (2013). "Learning Whom to Trust with MACE."
Proceedings of NAACL-HLT 2013, 1120-1130.
"""

from __future__ import annotations

import math

import numpy as np

from app.aggregation.params import ParamSpec, validate_params
from app.aggregation.worker_models import (
    SEED,
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
    warm_array,
)

NAME = "mace"


def _positive(name: str, default: float, doc: str) -> ParamSpec:
    return ParamSpec(
        name=name,
        type=float,
        default=default,
        doc=doc,
        check=lambda v: 0.0 < v <= 1e6,
        rule="a number in (0, 1e6]",
    )


PARAMS: dict[str, ParamSpec] = {
    "n_restarts": ParamSpec(
        name="n_restarts",
        type=int,
        default=10,
        doc="random restarts; the one with the highest log marginal likelihood is kept",
        check=lambda v: 1 <= v <= 1000,
        rule="an integer in [1, 1000]",
    ),
    "max_iter": max_iter_spec(50),
    "tol": tol_spec(1e-5),
    "alpha": _positive("alpha", 0.5, "Beta prior pseudo-count on spamming"),
    "beta": _positive("beta", 0.5, "Beta prior pseudo-count on knowing (not spamming)"),
    "strategy_prior": _positive(
        "strategy_prior", 10.0, "symmetric Dirichlet pseudo-count on each spam-strategy label"
    ),
    "seed": SEED,
}

# crowd-kit draws every initial weight from U(1, 1 + default_noise) with default_noise = 0.5,
# then normalizes.
_INIT_LOW, _INIT_WIDTH = 1.0, 1.5


def digamma(x: np.ndarray) -> np.ndarray:
    """psi(x) for x > 0: recurrence psi(x) = psi(x + 1) - 1/x up to x >= 10, then the asymptotic
    series through x^-10 (truncation error < 3e-14 there)."""
    x = np.array(x, dtype=np.float64)
    out = np.zeros_like(x)
    small = x < 10.0
    while small.any():
        out[small] -= 1.0 / x[small]
        x[small] += 1.0
        small = x < 10.0
    inv2 = 1.0 / (x * x)
    series = inv2 * (1 / 12 - inv2 * (1 / 120 - inv2 * (1 / 252 - inv2 * (1 / 240 - inv2 / 132))))
    return out + np.log(x) - 0.5 / x - series


def _log_geometric_mean(counts: np.ndarray, prior: np.ndarray | float) -> np.ndarray:
    """log E_q[log-probability] weights of VB: digamma(count + prior) - digamma(row total)."""
    c = counts + prior
    return digamma(c) - digamma(c.sum(axis=1, keepdims=True))


def _initial(seed: int, restart: int, n_workers: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Random normalized (spam, know) and strategy weights, as logs.

    Restart 0 reproduces crowd-kit exactly: both arrays come from a fresh
    RandomState(seed). crowd-kit reuses that same seed for every restart, which makes its
    restarts identical; restart r > 0 here draws from RandomState([r, seed]) instead.
    """

    def draw(shape: tuple[int, int]) -> np.ndarray:
        rs = np.random.RandomState(seed if restart == 0 else [restart, seed])
        w = rs.uniform(0.0, 1.0, shape) * _INIT_WIDTH + _INIT_LOW
        return np.log(w / w.sum(axis=1, keepdims=True))

    return draw((n_workers, 2)), draw((n_workers, k))


def _e_step(
    sv: SortedVotes, log_spam: np.ndarray, log_strategy: np.ndarray
) -> tuple[np.ndarray, float, np.ndarray]:
    """Posteriors (I, K), log marginal likelihood, and each vote's posterior P(knew).

    P(label l | true c) = spam_w * xi_w[l] + know_w * [l == c], so per item the log-likelihood
    of class c is sum_v log(spam xi) + sum_{v: label_v = c} (log(spam xi + know) - log(spam xi)).
    Every per-vote factor depends only on (worker, label): it is computed on (W, K) tables and
    gathered, so no per-vote log or exp is needed.
    """
    k = sv.n_classes
    log_sx = log_spam[:, :1] + log_strategy  # (W, K)
    log_any = np.logaddexp(log_sx, log_spam[:, 1:])
    wl = sv.worker_label
    base = sv.item_sum(log_sx.reshape(-1)[wl])
    bonus = sv.item_label_sum((log_any - log_sx).reshape(-1)[wl])
    post, log_norm = posteriors_from_log(bonus + base[:, None] - math.log(k))
    # P(knew | data) = P(true = label | data) * know / (spam xi + know)
    share_know = np.exp(log_spam[:, 1:] - log_any).reshape(-1)
    knew = sv.label_posterior(post) * share_know[wl]
    return post, float(log_norm.sum()), knew


def _m_step(sv: SortedVotes, knew: np.ndarray, p: Params) -> tuple[np.ndarray, np.ndarray]:
    spammed = 1.0 - knew
    k = sv.n_classes
    counts = np.empty((sv.n_workers, 2))
    counts[:, 0] = sv.worker_sum(spammed)
    counts[:, 1] = sv.worker_sum(knew)
    strategy = np.bincount(sv.worker_label, weights=spammed, minlength=sv.n_workers * k).reshape(
        sv.n_workers, k
    )
    log_spam = _log_geometric_mean(counts, np.array([p["alpha"], p["beta"]]))
    log_strategy = _log_geometric_mean(strategy, float(p["strategy_prior"]))
    return log_spam, log_strategy


def _run(
    sv: SortedVotes, log_spam: np.ndarray, log_strategy: np.ndarray, p: Params
) -> tuple[np.ndarray, float, np.ndarray, np.ndarray, int, bool]:
    """One chain: E-step, then (M-step, E-step) until max_iter M-steps or convergence."""
    conv = Convergence(float(p["tol"]), sv.n_votes)
    post, loglik, knew = _e_step(sv, log_spam, log_strategy)
    conv.update(loglik)
    n_iter, converged = 0, False
    for _ in range(int(p["max_iter"])):
        log_spam, log_strategy = _m_step(sv, knew, p)
        post, loglik, knew = _e_step(sv, log_spam, log_strategy)
        n_iter += 1
        if conv.update(loglik):
            converged = True
            break
    return post, loglik, log_spam, log_strategy, n_iter, converged


def fit(votes: VoteArrays, params: Params, warm: WorkerModelFit | None = None) -> WorkerModelFit:
    """MACE with variational-Bayes EM and random restarts.

    Initialization: for each restart, (spam, know) and strategy weights drawn from U(1, 2.5) and
    normalized per worker (crowd-kit's scheme; restart 0 is bit-identical to crowd-kit's with
    random_state = seed). Each chain runs an E-step, then up to `max_iter` (M-step, E-step)
    pairs, like crowd-kit; `n_iter` counts M-steps. The chain with the highest log marginal
    likelihood wins; its final E-step gives `probs`, and `state` holds the parameters that
    E-step used.

    Departures from crowd-kit 1.4.2 (documented and asserted in tests/test_worker_models.py):
    - restarts differ from each other (crowd-kit reseeds every restart with the same seed);
    - the E-step is in log space, and restarts are ranked by the exact log marginal likelihood
      (crowd-kit multiplies probabilities, which underflows beyond a few hundred votes per item,
      and ranks by sum(log(marginal + 1e-8)));
    - crowd-kit's strategy counts are grouped in sorted worker / label order but indexed in
      order of first appearance, which scrambles strategies unless the two orders agree;
      here they are indexed by worker and class.
    - `tol` (default 1e-5) can end a chain early; crowd-kit always runs all iterations.

    Warm start: the stored "log_spam" (W, 2) and "log_strategy" (W, K) weights replace the
    random restarts (one chain); new workers start at spam = know = 0.5 and a uniform strategy.

    Robustness: all weights are kept as logs; digamma arguments are >= the priors (> 0), so every
    quantity is finite for one-vote workers, unanimous workers and unused classes.

    `worker_skill`: the probability of knowing, know / (spam + know), from the VB weights.
    `confusion[w, c, l]` = spam_w * xi_w[l] + know_w * [l == c] with normalized weights.
    """
    p = validate_params(NAME, PARAMS, params)
    k = votes.n_classes
    if k == 1:
        return single_class_fit(votes)
    sv = SortedVotes.build(votes)
    w = votes.n_workers

    warm_spam = grow(warm_array(warm, "log_spam"), w, np.log([0.5, 0.5]))
    warm_strategy = grow(warm_array(warm, "log_strategy"), w, np.full(k, -math.log(k)))
    if warm_spam is not None and warm_strategy is not None:
        starts = [(warm_spam, warm_strategy)]
    else:
        starts = [_initial(int(p["seed"]), r, w, k) for r in range(int(p["n_restarts"]))]

    best: tuple[np.ndarray, float, np.ndarray, np.ndarray, int, bool] | None = None
    for log_spam0, log_strategy0 in starts:
        run = _run(sv, log_spam0, log_strategy0, p)
        if best is None or run[1] > best[1]:
            best = run
    assert best is not None
    post, _, log_spam, log_strategy, n_iter, converged = best

    spam = np.exp(log_spam)
    spam /= spam.sum(axis=1, keepdims=True)
    strategy = np.exp(log_strategy)
    strategy /= strategy.sum(axis=1, keepdims=True)
    conf = np.repeat((spam[:, 0:1] * strategy)[:, None, :], k, axis=1)
    idx = np.arange(k)
    conf[:, idx, idx] += spam[:, 1:2]
    return WorkerModelFit(
        probs=post,
        worker_skill=spam[:, 1].copy(),
        confusion=conf,
        class_prior=np.full(k, 1.0 / k),
        n_iter=n_iter,
        converged=converged,
        state={"log_spam": log_spam, "log_strategy": log_strategy},
    )


METHOD = register(
    WorkerMethod(
        name=NAME,
        params=PARAMS,
        summary="per-worker spamming probability and spam strategy (MACE), variational EM",
        source="Hovy, Berg-Kirkpatrick, Vaswani & Hovy (2013), NAACL-HLT, 1120-1130",
        fit=fit,
    )
)
