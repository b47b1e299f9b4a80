"""Ordinal soft labels: per item, a distribution over the K ordered levels of a scale.

A vote is one level index 0..K-1 (`level`); the scale's values (e.g. -5..5, or 0..4) are only
needed for summaries and default to 0..K-1. Every fit sets `probas_` (n_items, K), rows summing to
1, and the per-item summaries in level values: `mean_`, `median_` (the first level where the CDF
reaches 0.5) and `spread_` (standard deviation). Items without votes get the uniform distribution
from the count methods and the level prior from the rater model.

Dawid-Skene on levels is the single-label `dawid-skene` fitted to the level indices (it ignores
the order: a full K x K confusion per worker); no code here. Its confusion matrices give each
annotator's view through `perspectivist.answer_distribution` like the rater model's kernel.

Inputs are plain numpy arrays: `item`, `worker`, `level` (n_votes,), `n_items`, `n_workers`,
`n_levels`; the count methods also take (n_items, K) `counts` (`fit_counts`). Every class has
typed hyperparameters with defaults (checked on construction and on `fit`), `fit(...) -> self`,
results in attributes ending in `_`, and `predict_answers(item, worker)`: the distribution of the
answer that worker would give on that item (for the count methods, the item's own distribution).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal, Self

import numpy as np
from scipy.special import ndtr

from app.aggregation import methods
from app.aggregation.perspectivist import answer_distribution
from app.aggregation.scores import median_index
from app.aggregation.task_votes import EPS, VoteIndex, check, incidence, index_array

UMA_2020 = 'Uma et al. (2020), "A Case for Soft Loss Functions", HCOMP 2020'


def level_counts(item: np.ndarray, level: np.ndarray, n_items: int, n_levels: int) -> np.ndarray:
    """(n_items, K) number of votes for each level."""
    it = np.asarray(item, dtype=np.int64)
    lv = index_array("level", level, n_levels)
    check(lv.size == it.size, "item and level must have the same length")
    counts = np.bincount(it * n_levels + lv, minlength=n_items * n_levels)
    return counts.reshape(n_items, n_levels).astype(np.float64)


def level_values(values: np.ndarray | None, n_levels: int) -> np.ndarray:
    """The scale's values (default 0..K-1), checked to be finite and strictly increasing."""
    if values is None:
        return np.arange(n_levels, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    check(v.shape == (n_levels,), f"values must have one entry per level ({n_levels})")
    check(bool(np.isfinite(v).all() and (np.diff(v) > 0).all()), "values must increase strictly")
    return v


def scale_values(levels: Sequence[str], given: Sequence[float] | None = None) -> np.ndarray:
    """The numeric value of each level of a scale named `levels` (lowest first): `given` when
    the project has them, else the names themselves when they are finite, strictly increasing
    numbers ("1".."5", "-5".."5"), else the level indices 0..K-1."""
    if given is not None:
        return level_values(np.asarray(given, dtype=np.float64), len(levels))
    try:
        named = np.asarray([float(name) for name in levels], dtype=np.float64)
    except ValueError:
        named = None
    if named is not None and np.isfinite(named).all() and (np.diff(named) > 0).all():
        return named
    return np.arange(len(levels), dtype=np.float64)


def ordinal_summary(
    probas: np.ndarray, values: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of (n, K) distributions: mean, median (the value of the first level where the
    CDF reaches 0.5) and spread (standard deviation), in the scale's values."""
    p = np.asarray(probas, dtype=np.float64)
    v = level_values(values, p.shape[1])
    mean = p @ v
    spread = np.sqrt(np.maximum((p * (v - mean[:, None]) ** 2).sum(axis=1), 0.0))
    return mean, v[median_index(p)], spread


class _OrdinalFit:
    task_type: ClassVar[str] = "ordinal"
    name: ClassVar[str]
    summary: ClassVar[str]
    source: ClassVar[str]
    probas_: np.ndarray  # (n_items, K)
    mean_: np.ndarray  # (n_items,) in level values
    median_: np.ndarray
    spread_: np.ndarray

    def _summarize(self, probas: np.ndarray, values: np.ndarray | None) -> None:
        self.probas_ = probas
        self.mean_, self.median_, self.spread_ = ordinal_summary(probas, values)

    def predict_answers(self, item: np.ndarray, worker: np.ndarray) -> np.ndarray:
        """(m, K) distribution of worker[j]'s answer on item[j]; here the same for every worker."""
        return self.probas_[np.asarray(item, dtype=np.int64)]


class _CountsFit(_OrdinalFit):
    def fit(
        self,
        item: np.ndarray,
        worker: np.ndarray,
        level: np.ndarray,
        n_items: int,
        n_workers: int,
        n_levels: int,
        values: np.ndarray | None = None,
    ) -> Self:
        votes = VoteIndex.build(item, worker, n_items, n_workers)
        return self.fit_counts(level_counts(votes.item, level, n_items, n_levels), values)

    def fit_counts(self, counts: np.ndarray, values: np.ndarray | None = None) -> Self:
        c = np.asarray(counts, dtype=np.float64)
        check(c.ndim == 2 and c.shape[1] >= 1 and bool((c >= 0).all()), "counts: (n, K), >= 0")
        self.validate()
        self._summarize(self._probas(c), values)
        return self

    def validate(self) -> None:
        raise NotImplementedError

    def _probas(self, counts: np.ndarray) -> np.ndarray:
        raise NotImplementedError


@dataclass(kw_only=True, eq=False)
class OrdinalNormalized(_CountsFit):
    """(d + alpha) / (N + K alpha): vote shares per level, smoothed; Uma et al. (2020) eq. 3,
    the single-label `normalized` applied to level counts (it ignores the order)."""

    name: ClassVar[str] = "normalized"
    summary: ClassVar[str] = "vote shares per level, (d + alpha) / (N + K alpha)"
    source: ClassVar[str] = f"{UMA_2020}, eq. 3"

    alpha: float = 0.0  # pseudo-count per level: finite, >= 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        check(0.0 <= self.alpha < math.inf, "alpha must be a finite number >= 0")

    def _probas(self, counts: np.ndarray) -> np.ndarray:
        return methods.normalized(counts, self.alpha)


@dataclass(kw_only=True, eq=False)
class OrdinalSoftmax(_CountsFit):
    """softmax(d / T) over the level counts; Uma et al. (2020) eq. 4 (ignores the order)."""

    name: ClassVar[str] = "softmax"
    summary: ClassVar[str] = "softmax of the level counts, softmax(d / T)"
    source: ClassVar[str] = f"{UMA_2020}, eq. 4"

    temperature: float = 1.0  # T: finite, > 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        check(0.0 < self.temperature < math.inf, "temperature must be a finite number > 0")

    def _probas(self, counts: np.ndarray) -> np.ndarray:
        return methods.softmax(counts, self.temperature)


def distance_kernel(n_levels: int, bandwidth: float) -> np.ndarray:
    """(K, K) row-stochastic kernel: row k spreads a vote for level k over the levels j by
    exp(-(j - k)^2 / (2 h^2)), normalized over j; h = 0 is the identity."""
    if bandwidth == 0.0:
        return np.eye(n_levels)
    d = np.arange(n_levels)[:, None] - np.arange(n_levels)[None, :]
    kern = np.exp(-(d**2) / (2.0 * bandwidth**2))
    return kern / kern.sum(axis=1, keepdims=True)


@dataclass(kw_only=True, eq=False)
class OrdinalSmoothed(_CountsFit):
    """Distance-aware smoothing: every vote spreads its unit mass over the levels by a Gaussian
    of the distance in levels, exp(-(j - k)^2 / (2 h^2)) normalized, and each item's sum is
    normalized. A vote for 3 then says "3, or near it", so two votes 2 and 4 make a peak at 3
    rather than two separate spikes.

    The soft ordinal target of Diaz & Marathe (2019), "Soft Labels for Ordinal Regression"
    (SORD), CVPR 2019, pp. 4738-4747 (there softmax(-phi(r_t, r_i)) per true rank; here with
    phi = (j - k)^2 / (2 h^2), averaged over an item's votes). h = 0 is `normalized`."""

    name: ClassVar[str] = "distance-smoothed"
    summary: ClassVar[str] = "each vote spread over nearby levels, exp(-(j - k)^2 / (2 h^2))"
    source: ClassVar[str] = (
        'Diaz & Marathe (2019), "Soft Labels for Ordinal Regression" (SORD), CVPR 2019'
    )

    bandwidth: float = 1.0  # h, in levels: finite, >= 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        check(0.0 <= self.bandwidth < math.inf, "bandwidth must be a finite number >= 0")

    def _probas(self, counts: np.ndarray) -> np.ndarray:
        smoothed = counts @ distance_kernel(counts.shape[1], self.bandwidth)
        return methods.normalized(smoothed)


# ----- the rater model --------------------------------------------------------------------------


def _bounds(bias: np.ndarray, spread: np.ndarray, n_levels: int) -> tuple[np.ndarray, np.ndarray]:
    """(W, K, K) standardized cell bounds: answer k covers the latent interval
    [k - 0.5, k + 0.5) around c + b_w, in units of s_w; the end levels take the tails."""
    k = np.arange(n_levels, dtype=np.float64)
    centre = k[None, :, None] + np.asarray(bias, dtype=np.float64)[:, None, None]  # (W, c, 1)
    s = np.asarray(spread, dtype=np.float64)[:, None, None]
    hi = (k[None, None, :] + 0.5 - centre) / s
    lo = (k[None, None, :] - 0.5 - centre) / s
    hi[:, :, -1] = np.inf
    lo[:, :, 0] = -np.inf
    return lo, hi


def _cell_probabilities(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Phi(hi) - Phi(lo), taken on the side of the normal where both terms are small (by
    symmetry, Phi(-lo) - Phi(-hi) when lo > 0), so far-tail probabilities keep their precision
    instead of cancelling to 0; floored at EPS so that one wild vote stays finite in a log."""
    with np.errstate(invalid="ignore"):  # inf - inf in the branch np.where discards
        p = np.where(lo > 0, ndtr(-lo) - ndtr(-hi), ndtr(hi) - ndtr(lo))
    return np.maximum(p, EPS)


def rater_kernel(bias: np.ndarray, spread: np.ndarray, n_levels: int) -> np.ndarray:
    """(W, K, K) P(worker w answers k | true level c): a normal N(c + b_w, s_w^2) on the latent
    scale, rounded to the nearest level, the two end levels taking the tails:
    Phi((k + 0.5 - c - b_w) / s_w) - Phi((k - 0.5 - c - b_w) / s_w), with k - 0.5 = -inf for
    k = 0 and k + 0.5 = +inf for k = K - 1. Rows renormalized after the EPS floor."""
    p = _cell_probabilities(*_bounds(bias, spread, n_levels))
    return p / p.sum(axis=2, keepdims=True)


def _phi_moments(x: np.ndarray) -> tuple[np.ndarray, ...]:
    """phi(x) * x^j for j = 0..3, as 0 at x = +-inf (where the product's limit is 0)."""
    finite = np.isfinite(x)
    xf = np.where(finite, x, 0.0)
    pdf = np.where(finite, np.exp(-0.5 * xf**2) / math.sqrt(2 * math.pi), 0.0)
    return pdf, xf * pdf, xf**2 * pdf, xf**3 * pdf


def rater_objective(
    counts: np.ndarray, bias: np.ndarray, log_spread: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per worker, sum_{c,k} counts[w, c, k] * log P(k | c; b_w, s_w), with its gradient (W, 2)
    and Hessian (W, 2, 2) in theta = (b, log s).

    With u, l the cell's standardized bounds, P = Phi(u) - Phi(l), du/db = -1/s and
    du/dlog s = -u (same for l), and phi'(x) = -x phi(x):
      P_b = -(phi(u) - phi(l)) / s,            P_r = -(u phi(u) - l phi(l)),
      P_bb = -(u phi(u) - l phi(l)) / s^2,
      P_br = ((phi(u) - phi(l)) - (u^2 phi(u) - l^2 phi(l))) / s,
      P_rr = (u phi(u) - u^3 phi(u)) - (l phi(l) - l^3 phi(l));
    then d log P = dP / P and d2 log P = d2P / P - dP dP^T / P^2."""
    s = np.exp(log_spread)[:, None, None]
    lo, hi = _bounds(bias, np.exp(log_spread), counts.shape[1])
    p = _cell_probabilities(lo, hi)
    f_u, f1_u, f2_u, f3_u = _phi_moments(hi)
    f_l, f1_l, f2_l, f3_l = _phi_moments(lo)
    gb = -(f_u - f_l) / s / p
    gr = -(f1_u - f1_l) / p
    hbb = -(f1_u - f1_l) / s**2 / p - gb**2
    hbr = ((f_u - f_l) - (f2_u - f2_l)) / s / p - gb * gr
    hrr = ((f1_u - f3_u) - (f1_l - f3_l)) / p - gr**2

    def total(x: np.ndarray) -> np.ndarray:
        return (counts * x).sum(axis=(1, 2))

    grad = np.stack([total(gb), total(gr)], axis=1)
    hess = np.stack(
        [np.stack([total(hbb), total(hbr)], axis=1), np.stack([total(hbr), total(hrr)], axis=1)],
        axis=1,
    )
    return total(np.log(p)), grad, hess


def refine_raters(
    counts: np.ndarray,
    bias: np.ndarray,
    spread: np.ndarray,
    strength: float,
    log_spread0: float,
    min_spread: float,
    max_steps: int = 25,
) -> tuple[np.ndarray, np.ndarray]:
    """Per worker, (b_w, s_w) maximizing rater_objective minus the penalty
    strength / 2 * (b^2 + (log s - log_spread0)^2) (normal priors of precision `strength`),
    with s_w >= min_spread; Newton's method from (bias, spread), vectorized over workers.

    Where the Hessian of a worker is not negative definite its negation is shifted up to a
    positive-definite matrix (Levenberg), and every step is halved until the objective does not
    decrease, so each worker's objective is monotone."""
    floor = math.log(min_spread)
    theta = np.stack([bias, np.log(np.maximum(spread, min_spread))], axis=1)
    centre = np.array([0.0, log_spread0])

    def penalized(th: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        f, g, h = rater_objective(counts, th[:, 0], th[:, 1])
        d = th - centre
        return f - 0.5 * strength * (d**2).sum(axis=1), g - strength * d, h - strength * np.eye(2)

    f, g, h = penalized(theta)
    for _ in range(max_steps):
        if np.abs(g).max() < 1e-8 * (1 + np.abs(f).max()):
            break  # stationary: further steps would only fight rounding
        a00, a01, a11 = -h[:, 0, 0], -h[:, 0, 1], -h[:, 1, 1]
        half_trace = (a00 + a11) / 2
        root = np.sqrt(np.maximum(half_trace**2 - (a00 * a11 - a01**2), 0.0))
        low_eig, high_eig = half_trace - root, half_trace + root
        # Condition number at most 1e3: a nearly flat direction would otherwise get a huge step
        # that the halvings below then have to undo.
        shift = np.maximum(1e-3 * np.maximum(high_eig, 0.0) + 1e-6 - low_eig, 0.0)
        a00, a11 = a00 + shift, a11 + shift
        det = a00 * a11 - a01**2
        step = np.stack([a11 * g[:, 0] - a01 * g[:, 1], a00 * g[:, 1] - a01 * g[:, 0]], axis=1)
        step /= det[:, None]
        # A worker held at the spread floor by a step that would lower it further: Newton in b
        # alone (a projected 2-D step would move b for a spread it cannot take).
        held = (theta[:, 1] <= floor) & (step[:, 1] < 0)
        step[held, 0] = g[held, 0] / np.maximum(-h[held, 0, 0], 1e-6)
        step[held, 1] = 0.0
        t = np.ones(theta.shape[0])
        for _ in range(40):  # step halvings, not a loop over data
            cand = theta + t[:, None] * step
            cand[:, 1] = np.maximum(cand[:, 1], floor)
            fc, gc, hc = penalized(cand)
            ok = fc >= f - 1e-12 * (1 + np.abs(f))  # no decrease, up to rounding
            if ok.all():
                break
            t = np.where(ok, t, t / 2)
        else:
            cand = np.where(ok[:, None], cand, theta)
            fc, gc, hc = penalized(cand)
        moved = np.abs(cand - theta).max()
        gain = (fc - f).max()
        theta, f, g, h = cand, fc, gc, hc
        if moved < 1e-9 or gain <= 1e-12 * (1 + np.abs(f).max()):
            break
    return theta[:, 0], np.exp(theta[:, 1])


def expected_answers(votes: VoteIndex, level: np.ndarray, post: np.ndarray) -> np.ndarray:
    """(W, K, K) expected counts [w, c, k]: sum over w's votes for level k of post[item, c]."""
    k = post.shape[1]
    cells = incidence(votes.worker * k + level, votes.n_workers * k)
    return np.asarray(cells @ post[votes.item]).reshape(votes.n_workers, k, k).transpose(0, 2, 1)


@dataclass(kw_only=True, eq=False)
class RaterModel(_OrdinalFit):
    """A rater model for scales: every item has a true level c (prior pi), and worker w reports
    c + b_w + s_w * noise, noise ~ N(0, 1), rounded to the nearest level (ends open; see
    `rater_kernel`). b_w is the worker's bias (a harsh rater answers below the truth, b < 0) and
    s_w their spread (how erratic they are).

    In the spirit of the latent-trait finite mixture of Uebersax & Grove (1993), "A latent trait
    finite mixture model for the analysis of rating agreement", Biometrics 49(3), 823-835 (a
    discretized normal per rater around a latent class), and of Thurstonian crowd models.

    EM: the E-step gives each item's posterior over c. The M-step sets pi to the mean posterior
    (plus `prior_count` per level), and b_w, s_w from the posterior-weighted moments of (k - c)
    over the worker's votes: b_w the mean and s_w^2 the variance less 1/12 (rounding to integers
    adds the variance of a uniform on a unit interval, Sheppard's correction), both shrunk by
    `pseudo_votes` pseudo-votes toward b = 0 and the pooled variance, s_w floored at
    `min_spread`. Stops when the log-likelihood per vote changes by less than `tol`.

    `worker_fit="moments"` stops there. Moments ignore the clipping at the scale's ends (a
    worker whose truths sit at an end gets a bias drawn toward 0) and are pulled by a few far
    answers (a worker who answers 0 mostly and 3 sometimes gets a wide, shifted normal that
    misplaces their usual 0). `worker_fit="likelihood"` (the default) then maximizes the
    expected complete-data log-likelihood over (b_w, log s_w) by Newton's method from the
    moments (`refine_raters`): exact EM, with normal priors of precision `pseudo_votes` toward
    b = 0 and the pooled log spread in place of the pseudo-votes.

    The prior on b is all that fixes the latent scale's origin (the crowd is taken as unbiased
    on average): with many votes per worker it is weak, and on a scale piled up at one end the
    latent levels can settle a fraction of a level off the answers (see the benchmark).
    """

    name: ClassVar[str] = "rater-bias"
    summary: ClassVar[str] = "per worker, a bias and a spread on the latent scale (EM)"
    source: ClassVar[str] = (
        "Uebersax & Grove (1993), Biometrics 49(3), 823-835; Thurstonian rater models"
    )

    pseudo_votes: float = 2.0  # >= 0: shrinkage of b_w toward 0 and of s_w toward the pool
    worker_fit: Literal["moments", "likelihood"] = "likelihood"  # the M-step for b_w, s_w
    min_spread: float = 0.25  # > 0, in levels: floor of s_w
    prior_count: float = 1.0  # >= 0: pseudo-count per level on the prior
    max_iter: int = 200  # >= 1
    tol: float = 1e-6  # >= 0, on the change of the log-likelihood per vote

    worker_bias_: np.ndarray = field(init=False, repr=False)  # (n_workers,) in levels
    worker_spread_: np.ndarray = field(init=False, repr=False)  # (n_workers,) in levels
    level_prior_: np.ndarray = field(init=False, repr=False)  # (K,)
    kernel_: np.ndarray = field(init=False, repr=False)  # (n_workers, K, K) P(answer k | c, w)
    n_iter_: int = field(init=False, repr=False)
    converged_: bool = field(init=False, repr=False)
    log_likelihood_: float = field(init=False, repr=False)  # per vote

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        check(0.0 <= self.pseudo_votes < math.inf, "pseudo_votes must be a finite number >= 0")
        check(0.0 < self.min_spread < math.inf, "min_spread must be a finite number > 0")
        check(0.0 <= self.prior_count < math.inf, "prior_count must be a finite number >= 0")
        check(self.max_iter >= 1, "max_iter must be >= 1")
        check(0.0 <= self.tol < math.inf, "tol must be a finite number >= 0")
        check(self.worker_fit in ("moments", "likelihood"), "worker_fit: moments or likelihood")

    def e_step(
        self, votes: VoteIndex, level: np.ndarray, prior: np.ndarray, kernel: np.ndarray
    ) -> tuple[np.ndarray, float]:
        """Posteriors over the true level (n_items, K) and the total log-likelihood."""
        # log P(vote v | c) for every c: row `level[v]` of the voter's kernel, (n_votes, K).
        per_vote = np.log(kernel)[votes.worker, :, level]
        log_joint = votes.per_item(per_vote) + np.log(np.maximum(prior, EPS))
        top = log_joint.max(axis=1, keepdims=True)
        joint = np.exp(log_joint - top)
        total = joint.sum(axis=1, keepdims=True)
        log_norm = top[:, 0] + np.log(total[:, 0])
        # Items without votes contribute log(sum(prior)) = 0 and get the prior as posterior.
        return joint / total, float(log_norm.sum())

    def m_step(
        self,
        votes: VoteIndex,
        level: np.ndarray,
        post: np.ndarray,
        start: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(prior, bias, spread) from the posteriors, as described in the class docstring.

        With `worker_fit="likelihood"`, Newton's method starts from `start` (the previous
        iteration's (bias, spread)) when given, else from the moments: a few steps from a warm
        start are enough for each iteration to raise the likelihood (generalized EM)."""
        k = np.arange(post.shape[1], dtype=np.float64)
        pv = post[votes.item]
        mean_c, mean_c2 = pv @ k, pv @ k**2
        lv = level.astype(np.float64)
        d1 = votes.per_worker(lv - mean_c)  # sum_v E[k_v - c]
        d2 = votes.per_worker(lv**2 - 2 * lv * mean_c + mean_c2)  # sum_v E[(k_v - c)^2]
        n = votes.votes_per_worker
        m = self.pseudo_votes
        # Squares about each worker's own mean; its pooled average is the centre of shrinkage.
        ss = np.maximum(d2 - np.divide(d1**2, n, out=np.zeros_like(d1), where=n > 0), 0.0)
        pooled = ss.sum() / max(n.sum(), 1.0)
        var = np.divide(ss + m * pooled, n + m, out=np.full(n.shape, pooled), where=n + m > 0)
        bias = np.divide(d1, n + m, out=np.zeros_like(d1), where=n + m > 0)
        spread = np.sqrt(np.maximum(var - 1.0 / 12.0, self.min_spread**2))
        voted = votes.voters > 0
        prior = post[voted].sum(axis=0) + self.prior_count
        total = prior.sum()
        prior = prior / total if total > 0 else np.full(k.size, 1.0 / k.size)
        if self.worker_fit == "likelihood":
            log_spread0 = 0.5 * math.log(max(pooled - 1.0 / 12.0, self.min_spread**2))
            b0, s0 = start if start is not None else (bias, spread)
            bias, spread = refine_raters(
                expected_answers(votes, level, post),
                b0,
                s0,
                self.pseudo_votes,
                log_spread0,
                self.min_spread,
            )
        return prior, bias, spread

    def fit(
        self,
        item: np.ndarray,
        worker: np.ndarray,
        level: np.ndarray,
        n_items: int,
        n_workers: int,
        n_levels: int,
        values: np.ndarray | None = None,
    ) -> Self:
        self.validate()
        check(n_levels >= 1, "n_levels must be >= 1")
        votes = VoteIndex.build(item, worker, n_items, n_workers)
        lv = index_array("level", level, n_levels)
        check(lv.size == votes.n_votes, "item and level must have the same length")
        # Start from the vote shares (uniform for items without votes).
        post = methods.normalized(level_counts(votes.item, lv, n_items, n_levels))
        prior, bias, spread = self.m_step(votes, lv, post)
        prev = -np.inf
        n_votes = max(votes.n_votes, 1)
        for n_iter in range(1, self.max_iter + 1):
            kernel = rater_kernel(bias, spread, n_levels)
            post, ll = self.e_step(votes, lv, prior, kernel)
            ll /= n_votes
            converged = abs(ll - prev) < self.tol
            if converged or n_iter == self.max_iter:
                break
            prev = ll
            prior, bias, spread = self.m_step(votes, lv, post, (bias, spread))
        # probas_ are the E-step posteriors under exactly the parameters reported.
        self._summarize(post, values)
        self.worker_bias_, self.worker_spread_, self.level_prior_ = bias, spread, prior
        self.kernel_, self.n_iter_, self.converged_, self.log_likelihood_ = (
            kernel,
            n_iter,
            converged,
            ll,
        )
        return self

    def predict_answers(self, item: np.ndarray, worker: np.ndarray) -> np.ndarray:
        """sum_c post[i, c] * P(w answers k | c): this worker's bias and spread applied to the
        item's posterior."""
        it = np.asarray(item, dtype=np.int64)
        return answer_distribution(self.probas_, self.kernel_, it, np.asarray(worker, np.int64))


ORDINAL_METHODS: tuple[type[_OrdinalFit], ...] = (
    OrdinalNormalized,
    OrdinalSoftmax,
    OrdinalSmoothed,
    RaterModel,
)
