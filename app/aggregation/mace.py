"""MACE: per-worker spamming probability and spamming strategy, variational-Bayes EM.

On each item, worker w either knows the answer and gives the true class, or spams (with
probability 1 - theta_w) and draws a label from their own strategy distribution xi_w. The paper
draws the true class uniformly; here its distribution pi is learned by default (the
maximum-likelihood update of Dawid & Skene, the mean posterior), because a uniform pi on a skewed
crowd turns items with a split vote toward the minority class: on the product-matching crowd
of Zheng et al. (88% of items are class 0) the uniform prior gave 0.828 accuracy, the learned one
0.933, with a higher marginal likelihood (see docs/worker-models.md).

Variational Bayes with a Beta(alpha, beta) prior on the spam/know split and a symmetric
Dirichlet(strategy_prior) prior on xi (the M-step uses geometric means
exp(digamma(count + prior) - digamma(total)) instead of normalized counts), with random restarts.

D. Hovy, T. Berg-Kirkpatrick, A. Vaswani and E. Hovy (2013). "Learning Whom to Trust with MACE."
Proceedings of NAACL-HLT 2013, 1120-1130.
"""

from __future__ import annotations

import math
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
from app.aggregation.params import MaxIter, Seed, Tol, UseGold
from app.aggregation.votes import SortedVotes, VoteArrays, class_prior, grow, posteriors_from_log

# A Beta or Dirichlet pseudo-count: positive, and bounded so digamma's recurrence stays short.
PseudoCount = Annotated[float, Field(gt=0, le=1e6)]

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


class MaceEM(EMModel):
    """State: "log_spam" (W, 2) log (spam, know) weights, "log_strategy" (W, K) and
    "log_class_prior" (K,) (uniform unless `learn_class_prior`)."""

    def __init__(self, sv: SortedVotes, mace: Mace) -> None:
        self.sv, self.mace = sv, mace
        self.learn_prior = mace.learn_class_prior

    def e_step(self, state: State) -> tuple[np.ndarray, float]:
        """Posteriors (I, K) and the log marginal likelihood under VB's weights as they are.

        P(label l | true c) = spam_w * xi_w[l] + know_w * [l == c], so per item the
        log-likelihood of class c is sum_v log(spam xi) + sum_{v: label_v = c} (log(spam xi +
        know) - log(spam xi)). Every per-vote factor depends only on (worker, label): it is
        computed on (W, K) tables and gathered, so no per-vote log or exp is needed.
        """
        return self._posteriors(state["log_spam"], state["log_strategy"], _prior(state, self.sv))

    def score(self, state: State, objective: float) -> float:
        """Runs are ranked by the log marginal likelihood under normalized weights: VB's
        geometric means sum to less than 1, so the E-step's own value (crowd-kit's) is not a
        likelihood and is not comparable between restarts."""
        log_spam = state["log_spam"] - np.logaddexp(
            state["log_spam"][:, :1], state["log_spam"][:, 1:]
        )
        log_strategy = state["log_strategy"] - _logsumexp_rows(state["log_strategy"])
        return self._posteriors(log_spam, log_strategy, _prior(state, self.sv))[1]

    def _posteriors(
        self, log_spam: np.ndarray, log_strategy: np.ndarray, log_prior: np.ndarray
    ) -> tuple[np.ndarray, float]:
        sv = self.sv
        log_sx = log_spam[:, :1] + log_strategy  # (W, K)
        log_any = np.logaddexp(log_sx, log_spam[:, 1:])
        wl = sv.worker_label
        base = sv.item_sum(log_sx.reshape(-1)[wl])
        bonus = sv.item_label_sum((log_any - log_sx).reshape(-1)[wl])
        post, log_norm = posteriors_from_log(bonus + base[:, None] + log_prior)
        return post, float(log_norm[sv.voted].sum())

    def m_step(self, post: np.ndarray, state: State | None) -> State:
        """VB M-step from each vote's posterior probability of having been given knowingly,
        P(knew) = P(true = label) * know / (spam xi + know); from posteriors alone (a start),
        every vote that matches the posterior is taken as known."""
        sv, k, p = self.sv, self.sv.n_classes, self.mace
        hit = sv.label_posterior(post)
        if state is None:
            knew = hit
        else:
            log_sx = state["log_spam"][:, :1] + state["log_strategy"]
            share = np.exp(
                state["log_spam"][:, 1:] - np.logaddexp(log_sx, state["log_spam"][:, 1:])
            )
            knew = hit * share.reshape(-1)[sv.worker_label]
        spammed = 1.0 - knew
        counts = np.empty((sv.n_workers, 2))
        counts[:, 0] = sv.worker_sum(spammed)
        counts[:, 1] = sv.worker_sum(knew)
        strategy = np.bincount(
            sv.worker_label, weights=spammed, minlength=sv.n_workers * k
        ).reshape(sv.n_workers, k)
        uniform = np.full(k, -math.log(k))
        log_prior = np.log(class_prior(sv, post)) if self.learn_prior else uniform
        return {
            "log_spam": _log_geometric_mean(counts, np.array([p.alpha, p.beta])),
            "log_strategy": _log_geometric_mean(strategy, p.strategy_prior),
            "log_class_prior": log_prior,
        }


def _prior(state: State, sv: SortedVotes) -> np.ndarray:
    """The state's log class prior; uniform for a state without one (a random restart's start,
    a warm start from a fit stored before the prior was learned)."""
    prior = state.get("log_class_prior")
    if prior is None or prior.shape != (sv.n_classes,):
        return np.full(sv.n_classes, -math.log(sv.n_classes))
    return prior


def _logsumexp_rows(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=1, keepdims=True)
    return m + np.log(np.exp(x - m).sum(axis=1, keepdims=True))


class Mace(WorkerAggregator):
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

    Class prior: with `learn_class_prior` (default) pi is re-estimated in each M-step as the
    mean posterior over items with votes (floored at 1e-10); random restarts start from a
    uniform pi. With it off, pi stays uniform as in the paper and crowd-kit.

    Warm start: the stored "log_spam" (W, 2) and "log_strategy" (W, K) weights replace the
    random restarts (one chain); new workers start at spam = know = 0.5 and a uniform strategy.

    Robustness: all weights are kept as logs; digamma arguments are >= the priors (> 0), so every
    quantity is finite for one-vote workers, unanimous workers and unused classes.

    `worker_skill`: the probability of knowing, know / (spam + know), from the VB weights.
    `confusion[w, c, l]` = spam_w * xi_w[l] + know_w * [l == c] with normalized weights.
    """

    name = "mace"
    summary = "per-worker spamming probability and spam strategy (MACE), variational EM"
    source = "Hovy, Berg-Kirkpatrick, Vaswani & Hovy (2013), NAACL-HLT, 1120-1130"

    n_restarts: Annotated[
        int,
        Field(
            ge=1,
            le=100,
            description="random restarts; the one with the highest log marginal likelihood is kept",
        ),
    ] = 10
    max_iter: MaxIter = 50
    tol: Tol = 1e-5
    alpha: Annotated[PseudoCount, Field(description="Beta prior pseudo-count on spamming")] = 0.5
    beta: Annotated[
        PseudoCount, Field(description="Beta prior pseudo-count on knowing (not spamming)")
    ] = 0.5
    strategy_prior: Annotated[
        PseudoCount,
        Field(description="symmetric Dirichlet pseudo-count on each spam-strategy label"),
    ] = 10.0
    seed: Seed = 0
    n_starts: Annotated[
        int,
        Field(
            ge=0,
            le=2,
            description="deterministic starts added to the random restarts: 0 = none "
            "(crowd-kit), 1 = an M-step from vote fractions, 2 = also from majority vote; see "
            "app/aggregation/em.py",
        ),
    ] = 2
    learn_class_prior: Annotated[
        bool,
        Field(
            description="true: the distribution of the true class is estimated (mean posterior, "
            "as in Dawid-Skene); false: uniform, as in the paper and crowd-kit"
        ),
    ] = True
    use_gold: UseGold = False

    def work(self, n_votes: int) -> float:
        return em_work(n_votes, self.max_iter, self.n_restarts + self.n_starts)

    def _fit(self, votes: VoteArrays, warm: WorkerModelFit | None) -> WorkerModelFit:
        k = votes.n_classes
        sv = self.sorted_votes(votes)
        w = votes.n_workers
        model = MaceEM(sv, self)

        warm_spam = grow(warm_array(warm, "log_spam"), w, np.log([0.5, 0.5]))
        warm_strategy = grow(warm_array(warm, "log_strategy"), w, np.full(k, -math.log(k)))
        warm_state = None
        if warm_spam is not None and warm_strategy is not None:
            warm_state = {"log_spam": warm_spam, "log_strategy": warm_strategy}
            warm_prior = warm_array(warm, "log_class_prior")
            if warm_prior is not None and warm_prior.shape == (k,):
                warm_state["log_class_prior"] = warm_prior
        restarts = []
        for r in range(self.n_restarts):
            log_spam0, log_strategy0 = _initial(self.seed, r, w, k)
            restarts.append(
                (f"random restart {r}", {"log_spam": log_spam0, "log_strategy": log_strategy0})
            )
        run = multi_start(
            sv,
            model,
            max_iter=self.max_iter,
            tol=self.tol,
            warm=warm_state,
            states=restarts,
            posteriors=posterior_starts(sv, self.n_starts) if self.n_starts else [],
            final_e_step=True,
        )
        log_spam, log_strategy = run.state["log_spam"], run.state["log_strategy"]
        log_prior = _prior(run.state, sv)
        prior = np.exp(log_prior)
        prior /= prior.sum()
        spam = np.exp(log_spam)
        spam /= spam.sum(axis=1, keepdims=True)
        strategy = np.exp(log_strategy)
        strategy /= strategy.sum(axis=1, keepdims=True)
        conf = np.repeat((spam[:, 0:1] * strategy)[:, None, :], k, axis=1)
        idx = np.arange(k)
        conf[:, idx, idx] += spam[:, 1:2]
        return fit_result(
            sv,
            run,
            prior,
            worker_skill=spam[:, 1].copy(),
            confusion=conf,
            state={
                "log_spam": log_spam,
                "log_strategy": log_strategy,
                "log_class_prior": log_prior,
            },
        )
