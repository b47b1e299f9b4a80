"""Multi-label soft labels: per item and class, the probability that the class applies.

A vote is the SET of classes one worker ticked on one item (possibly empty), given as a row of K
booleans `ticks[v]`. The result `probas_` is (n_items, K) with every entry in [0, 1]: K separate
Bernoulli probabilities, NOT a distribution over classes (a row may sum to anything in [0, K]).
An item without votes gets 0.5 from the count methods and the class prior from the worker models.

Inputs are plain numpy arrays: `item`, `worker` (n_votes,) indices, `ticks` (n_votes, K) bool,
`n_items`, `n_workers`. The count methods also take per-item counts (`fit_counts`): `ticks_count`
(n_items, K), how many voters ticked each class, and `n_voters` (n_items,).

Every class has typed hyperparameters with defaults (checked on construction and on `fit`),
`fit(...) -> self`, results in attributes ending in `_`, and `predict_ticks(item, worker)`: the
probability that that worker ticks each class on that item (the annotator's view; for the count
methods the item's own estimate, whoever the worker).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Self

import numpy as np
from scipy.special import expit

from app.aggregation.perspectivist import tick_probabilities
from app.aggregation.task_votes import EPS, VoteIndex, check

UMA_2020 = 'Uma et al. (2020), "A Case for Soft Loss Functions", HCOMP 2020'


def check_ticks(ticks: np.ndarray, n_votes: int) -> np.ndarray:
    """`ticks` as a (n_votes, K) float 0/1 array, K >= 1."""
    t = np.asarray(ticks)
    check(t.ndim == 2 and t.shape[0] == n_votes and t.shape[1] >= 1, "ticks must be (n_votes, K)")
    check(t.dtype == bool or bool(np.isin(t, (0, 1)).all()), "ticks must be booleans")
    return t.astype(np.float64)


def tick_counts(item: np.ndarray, ticks: np.ndarray, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """(n_items, K) ticks per class and (n_items,) voters per item, from the vote list."""
    it = np.asarray(item, dtype=np.int64)
    t = check_ticks(ticks, it.size)
    k = t.shape[1]
    rows, cols = np.nonzero(t)
    counts = np.bincount(it[rows] * k + cols, minlength=n_items * k).reshape(n_items, k)
    return counts.astype(np.float64), np.bincount(it, minlength=n_items).astype(np.float64)


class _MultiLabelFit:
    task_type: ClassVar[str] = "multi_label"
    name: ClassVar[str]
    summary: ClassVar[str]
    source: ClassVar[str]
    probas_: np.ndarray  # (n_items, K) P(class k applies to item i)

    def predict_ticks(self, item: np.ndarray, worker: np.ndarray) -> np.ndarray:
        """(m, K) P(worker[j] ticks class k on item[j]); here the same for every worker."""
        return self.probas_[np.asarray(item, dtype=np.int64)]


class _CountsFit(_MultiLabelFit):
    def fit(
        self, item: np.ndarray, worker: np.ndarray, ticks: np.ndarray, n_items: int, n_workers: int
    ) -> Self:
        votes = VoteIndex.build(item, worker, n_items, n_workers)
        return self.fit_counts(*tick_counts(votes.item, ticks, n_items))

    def fit_counts(self, ticks_count: np.ndarray, n_voters: np.ndarray) -> Self:
        t = np.asarray(ticks_count, dtype=np.float64)
        n = np.asarray(n_voters, dtype=np.float64)
        check(t.ndim == 2 and n.shape == (t.shape[0],), "ticks_count (n, K), n_voters (n,)")
        check(bool((t >= 0).all() and (t <= n[:, None]).all()), "need 0 <= ticks_count <= n_voters")
        self.validate()
        self.probas_ = self._probas(t, n[:, None])
        return self

    def validate(self) -> None:
        raise NotImplementedError

    def _probas(self, t: np.ndarray, n: np.ndarray) -> np.ndarray:
        raise NotImplementedError


@dataclass(kw_only=True, eq=False)
class MultiLabelNormalized(_CountsFit):
    """(t + alpha) / (N + 2 alpha) per class: the share of voters who ticked it, smoothed.

    Each class is a binary task ("applies" / "does not"), and this is Uma et al. (2020) eq. 3
    on its two counts (t, N - t), with additive (Lidstone) smoothing alpha; alpha = 1 is
    Laplace's rule of succession."""

    name: ClassVar[str] = "normalized"
    summary: ClassVar[str] = "share of voters who ticked each class, (t + alpha) / (N + 2 alpha)"
    source: ClassVar[str] = f"{UMA_2020}, eq. 3, per class as a binary task"

    alpha: float = 0.0  # pseudo-count per outcome: finite, >= 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        check(0.0 <= self.alpha < math.inf, "alpha must be a finite number >= 0")

    def _probas(self, t: np.ndarray, n: np.ndarray) -> np.ndarray:
        den = n + 2.0 * self.alpha
        # Only alpha = 0 on an item without voters reaches 0 / 0: no evidence either way.
        return np.divide(t + self.alpha, den, out=np.full(t.shape, 0.5), where=den > 0)


@dataclass(kw_only=True, eq=False)
class MultiLabelSoftmax(_CountsFit):
    """sigmoid((2t - N) / T) per class: the softmax of the counts of "applies" (t) and "does not"
    (N - t) at temperature T, i.e. Uma et al. (2020) eq. 4 on each class as a binary task.

    Depends on absolute counts (3 of 3 votes gives 0.95 at T = 1, 30 of 30 about 1); T -> 0 tends
    to per-class majority (ties 0.5), T -> infinity to 0.5."""

    name: ClassVar[str] = "softmax"
    summary: ClassVar[str] = "per class, softmax of applies/does-not counts: sigmoid((2t - N) / T)"
    source: ClassVar[str] = f"{UMA_2020}, eq. 4, per class as a binary task"

    temperature: float = 1.0  # T: finite, > 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        check(0.0 < self.temperature < math.inf, "temperature must be a finite number > 0")

    def _probas(self, t: np.ndarray, n: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):  # a tiny T sends the logit to +-inf: expit gives 1 or 0
            return np.asarray(expit((2.0 * t - n) / self.temperature))


# ----- worker models --------------------------------------------------------------------------


def tick_posteriors(
    votes: VoteIndex, t: np.ndarray, prior: np.ndarray, sens: np.ndarray, spec: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """E-step shared by both worker models: q_ik = P(z_ik = 1 | votes) and the per-class log
    marginal likelihood (K,).

    Votes are independent given z: log P(votes of i | z_ik = 1) = sum_v log(sens if ticked else
    1 - sens), and log P(... | z_ik = 0) = sum_v log(1 - spec if ticked else spec). sens and spec
    are (n_workers, K) or (n_workers, 1) (shared across classes). An item without votes gets the
    prior (both sums are empty)."""
    s = np.clip(sens, EPS, 1 - EPS)[votes.worker]
    f = np.clip(spec, EPS, 1 - EPS)[votes.worker]
    log1 = votes.per_item(np.where(t > 0, np.log(s), np.log1p(-s)))
    log0 = votes.per_item(np.where(t > 0, np.log1p(-f), np.log(f)))
    p = np.clip(prior, EPS, 1 - EPS)
    log1 += np.log(p)
    log0 += np.log1p(-p)
    norm = np.logaddexp(log1, log0)
    return np.exp(log1 - norm), norm.sum(axis=0)


@dataclass(kw_only=True, eq=False)
class BinaryRelevance(_MultiLabelFit):
    """Binary relevance: each class is a separate binary task, aggregated by a two-class
    Dawid-Skene model (A. P. Dawid and A. M. Skene 1979, JRSS C 28(1), 20-28), as crowd-kit's
    `BinaryRelevance` wraps a single-label aggregator per class.

    Per class k: prior pi_k = P(z_ik = 1); per worker w and class k, sensitivity
    P(tick | applies) and specificity P(no tick | does not). EM from the per-class vote shares
    (the paper's start), then E-step / M-step until the log-likelihood per vote of every class
    changes by less than `tol`. All K binary problems run at once, vectorized over votes and
    classes; since they share no parameter, this equals K separate fits (up to each one running
    until the slowest converges). `smoothing` adds Beta pseudo-counts to every worker's expected
    counts (0 = maximum likelihood, as in the paper)."""

    name: ClassVar[str] = "binary-relevance"
    summary: ClassVar[str] = "per class, a binary Dawid-Skene model (own sensitivity/specificity)"
    source: ClassVar[str] = (
        "binary relevance over Dawid & Skene (1979), JRSS C 28(1), 20-28 (per class, as crowd-kit)"
    )

    max_iter: int = 100  # >= 1
    tol: float = 1e-5  # >= 0, on the change of the log-likelihood per vote, per class
    smoothing: float = 0.0  # >= 0, Beta pseudo-count added to each expected count

    sensitivity_: np.ndarray = field(init=False, repr=False)  # (n_workers, K) P(tick | applies)
    specificity_: np.ndarray = field(init=False, repr=False)  # (n_workers, K) P(no tick | not)
    class_prior_: np.ndarray = field(init=False, repr=False)  # (K,)
    n_iter_: int = field(init=False, repr=False)
    converged_: bool = field(init=False, repr=False)
    log_likelihood_: float = field(init=False, repr=False)  # per vote, summed over classes

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        check(self.max_iter >= 1, "max_iter must be >= 1")
        check(0.0 <= self.tol < math.inf, "tol must be a finite number >= 0")
        check(0.0 <= self.smoothing < math.inf, "smoothing must be a finite number >= 0")

    def m_step(
        self, votes: VoteIndex, t: np.ndarray, q: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Class prior (mean posterior over voted items) and per-(worker, class) sensitivity and
        specificity from expected counts; counts floored at EPS so that every log stays finite."""
        qv = q[votes.item]
        hit = np.maximum(votes.per_worker(qv * t), EPS) + self.smoothing
        miss = np.maximum(votes.per_worker(qv * (1 - t)), EPS) + self.smoothing
        rej = np.maximum(votes.per_worker((1 - qv) * (1 - t)), EPS) + self.smoothing
        fa = np.maximum(votes.per_worker((1 - qv) * t), EPS) + self.smoothing
        voted = votes.voters > 0
        prior = q[voted].mean(axis=0) if voted.any() else np.full(q.shape[1], 0.5)
        return prior, hit / (hit + miss), rej / (rej + fa)

    def fit(
        self, item: np.ndarray, worker: np.ndarray, ticks: np.ndarray, n_items: int, n_workers: int
    ) -> Self:
        self.validate()
        votes = VoteIndex.build(item, worker, n_items, n_workers)
        t = check_ticks(ticks, votes.n_votes)
        tc, nv = tick_counts(votes.item, t, n_items)
        q = np.divide(tc, nv[:, None], out=np.full(tc.shape, 0.5), where=nv[:, None] > 0)
        params = self.m_step(votes, t, q)
        prev = np.full(t.shape[1], -np.inf)
        n_votes = max(votes.n_votes, 1)
        for n_iter in range(1, self.max_iter + 1):
            q, ll = tick_posteriors(votes, t, *params)
            ll = ll / n_votes
            converged = bool((np.abs(ll - prev) < self.tol).all())
            if converged or n_iter == self.max_iter:
                break
            prev = ll
            params = self.m_step(votes, t, q)
        self.class_prior_, self.sensitivity_, self.specificity_ = params
        self.probas_, self.n_iter_, self.converged_ = q, n_iter, converged
        self.log_likelihood_ = float(ll.sum())
        return self

    def predict_ticks(self, item: np.ndarray, worker: np.ndarray) -> np.ndarray:
        return tick_probabilities(self.probas_, self.sensitivity_, self.specificity_, item, worker)


@dataclass(kw_only=True, eq=False)
class TickPropensity(_MultiLabelFit):
    """A worker model of how readily each worker ticks: one sensitivity (P(tick | the class
    applies)) and one specificity (P(no tick | it does not)) per worker, shared by all classes,
    and a prior per class; latent z_ik in {0, 1} independent across classes.

    A worker who ticks too much has a low specificity, one who ticks too little a low
    sensitivity; sharing the two rates across classes lets a worker's habits be learned from all
    their ticks, where per-class rates (binary relevance) see a handful per rare class. This is
    the "separate" (class-independent) model of Duan, Oyama, Sato and Kurihara (2014), "Separate
    or joint? Estimation of multiple labels from crowdsourced annotations", Expert Systems with
    Applications 41(13), 5723-5732, with Dawid & Skene's (1979) two-class worker model shared
    across classes.

    EM (MAP): E-step as binary relevance; M-step with Beta pseudo-counts: `pseudo_votes`
    observations at the crowd's pooled rates (fixed at the first M-step), so a worker with few
    votes is read as an average worker, and `prior_count` per outcome on every class prior. Stops
    when the objective per vote (log-likelihood plus log prior) changes by less than `tol`."""

    name: ClassVar[str] = "tick-propensity"
    summary: ClassVar[str] = (
        "per worker, one sensitivity and one specificity shared by all classes (over/under-ticking)"
    )
    source: ClassVar[str] = (
        "Duan, Oyama, Sato & Kurihara (2014), Expert Systems with Applications 41(13); "
        "Dawid & Skene (1979), JRSS C 28(1)"
    )

    pseudo_votes: float = 2.0  # >= 0: Beta pseudo-observations per rate, at the pooled rate
    prior_count: float = 1.0  # >= 0: pseudo-count per outcome on each class prior
    max_iter: int = 200  # >= 1
    tol: float = 1e-7  # >= 0, on the change of the objective per vote

    sensitivity_: np.ndarray = field(init=False, repr=False)  # (n_workers,)
    specificity_: np.ndarray = field(init=False, repr=False)  # (n_workers,)
    # (n_workers,) mean number of classes ticked per vote (nan for a worker without votes)
    ticks_per_vote_: np.ndarray = field(init=False, repr=False)
    class_prior_: np.ndarray = field(init=False, repr=False)  # (K,)
    n_iter_: int = field(init=False, repr=False)
    converged_: bool = field(init=False, repr=False)
    objective_: float = field(init=False, repr=False)  # per vote

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        check(0.0 <= self.pseudo_votes < math.inf, "pseudo_votes must be a finite number >= 0")
        check(0.0 <= self.prior_count < math.inf, "prior_count must be a finite number >= 0")
        check(self.max_iter >= 1, "max_iter must be >= 1")
        check(0.0 <= self.tol < math.inf, "tol must be a finite number >= 0")

    def m_step(
        self, votes: VoteIndex, t: np.ndarray, q: np.ndarray, centre: tuple[float, float] | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float]]:
        """(class prior, sensitivity, specificity, pooled centre): expected counts summed over
        each worker's votes and all classes, plus the pseudo-counts."""
        qv = q[votes.item]
        hit = votes.per_worker((qv * t).sum(axis=1))
        pos = votes.per_worker(qv.sum(axis=1))
        rej = votes.per_worker(((1 - qv) * (1 - t)).sum(axis=1))
        neg = votes.per_worker((1 - qv).sum(axis=1))
        if centre is None:
            # The prior's centre is fixed for the run, so each iteration raises one objective.
            centre = (hit.sum() / max(pos.sum(), EPS), rej.sum() / max(neg.sum(), EPS))
        m = self.pseudo_votes
        sens = np.divide(
            hit + m * centre[0], pos + m, out=np.full(hit.shape, centre[0]), where=pos + m > 0
        )
        spec = np.divide(
            rej + m * centre[1], neg + m, out=np.full(hit.shape, centre[1]), where=neg + m > 0
        )
        voted = votes.voters > 0
        den = voted.sum() + 2 * self.prior_count
        prior = (
            (q[voted].sum(axis=0) + self.prior_count) / den if den > 0 else np.full(q.shape[1], 0.5)
        )
        return prior, np.clip(sens, EPS, 1 - EPS), np.clip(spec, EPS, 1 - EPS), centre

    def log_prior(
        self, prior: np.ndarray, sens: np.ndarray, spec: np.ndarray, centre: tuple[float, float]
    ) -> float:
        """log density (up to a constant) of the Beta priors the M-step maximizes."""
        m, c = self.pseudo_votes, self.prior_count
        p = np.clip(prior, EPS, 1 - EPS)
        out = m * (centre[0] * np.log(sens) + (1 - centre[0]) * np.log1p(-sens)).sum()
        out += m * (centre[1] * np.log(spec) + (1 - centre[1]) * np.log1p(-spec)).sum()
        return float(out + c * (np.log(p) + np.log1p(-p)).sum())

    def fit(
        self, item: np.ndarray, worker: np.ndarray, ticks: np.ndarray, n_items: int, n_workers: int
    ) -> Self:
        self.validate()
        votes = VoteIndex.build(item, worker, n_items, n_workers)
        t = check_ticks(ticks, votes.n_votes)
        tc, nv = tick_counts(votes.item, t, n_items)
        q = np.divide(tc, nv[:, None], out=np.full(tc.shape, 0.5), where=nv[:, None] > 0)
        prior, sens, spec, centre = self.m_step(votes, t, q, None)
        prev = -np.inf
        n_votes = max(votes.n_votes, 1)
        for n_iter in range(1, self.max_iter + 1):
            q, ll = tick_posteriors(votes, t, prior, sens[:, None], spec[:, None])
            objective = (float(ll.sum()) + self.log_prior(prior, sens, spec, centre)) / n_votes
            converged = abs(objective - prev) < self.tol
            if converged or n_iter == self.max_iter:
                break
            prev = objective
            prior, sens, spec, _ = self.m_step(votes, t, q, centre)
        self.probas_, self.class_prior_ = q, prior
        self.sensitivity_, self.specificity_ = sens, spec
        per_worker = votes.votes_per_worker
        ticked = votes.per_worker(t.sum(axis=1))
        self.ticks_per_vote_ = np.divide(
            ticked, per_worker, out=np.full(per_worker.shape, np.nan), where=per_worker > 0
        )
        self.n_iter_, self.converged_, self.objective_ = n_iter, converged, objective
        return self

    def predict_ticks(self, item: np.ndarray, worker: np.ndarray) -> np.ndarray:
        return tick_probabilities(self.probas_, self.sensitivity_, self.specificity_, item, worker)


MULTI_LABEL_METHODS: tuple[type[_MultiLabelFit], ...] = (
    MultiLabelNormalized,
    MultiLabelSoftmax,
    BinaryRelevance,
    TickPropensity,
)
