"""The EM driver's racing of starts and Dawid-Skene's incremental M-step (app/aggregation/em.py,
app/aggregation/dawid_skene.py): the speed-ups must not change which fit is returned.

Pure numpy, no database, no crowd-kit: a few seconds.
"""

from __future__ import annotations

import numpy as np
import pytest

from app.aggregation import em
from app.aggregation.dawid_skene import STALE_TOL, DawidSkene, DawidSkeneEM
from app.aggregation.simulate import SHAPES, simulate
from app.aggregation.votes import SortedVotes, VoteArrays, majority_posteriors, vote_fractions
from tests.test_worker_models import simulate as simulate_project

CROWDS = [(shape, seed) for shape in SHAPES for seed in (0, 1)]


@pytest.mark.parametrize("shrinkage,smoothing", [(2.0, 0.0), (0.0, 0.0), (2.0, 1.0)])
@pytest.mark.parametrize("shape,seed", CROWDS)
def test_racing_never_keeps_a_lower_objective(
    shape: str, seed: int, shrinkage: float, smoothing: float
) -> None:
    """Racing the starts (lockstep, a start far behind set aside) keeps a run whose objective
    is at least the sequential driver's choice. The sequential driver can keep less: a later
    start that reaches an earlier start's basin takes the earlier start's result even when its
    own run would end higher (the prior's centre differs between starts)."""
    votes, _ = simulate(shape, seed)
    sv = SortedVotes.build(votes)
    model = DawidSkeneEM(sv, smoothing, shrinkage)
    kw = {"max_iter": 100, "tol": 1e-5, "posteriors": em.posterior_starts(sv, 2)}
    sequential = em.multi_start(sv, model, **kw)  # type: ignore[arg-type]
    raced = em.multi_start(sv, model, race=True, **kw)  # type: ignore[arg-type]
    if sequential.warnings or raced.warnings:
        pytest.skip("a degenerate fit: the last healthy iterate is compared elsewhere")
    assert raced.objective >= sequential.objective - 1e-9 * sv.n_votes
    if raced.start == sequential.start and sequential.duplicate_of is None:
        np.testing.assert_allclose(raced.probs, sequential.probs, atol=1e-9)


class ScriptedEM(em.EMModel):
    """Two starts with scripted objectives and posteriors: "ahead" climbs fast to a collapsed
    fit (every item one class), "behind" trails far behind but stays healthy."""

    def __init__(self, sv: SortedVotes, healthy: np.ndarray) -> None:
        self.sv, self.healthy = sv, healthy

    def m_step(self, post: np.ndarray, state: em.State | None) -> em.State:
        if state is None:  # the start: which one is told by its posteriors
            ahead = bool(np.allclose(post[:, 0], 1.0))
            return {"ahead": np.array(ahead), "t": np.array(0)}
        return {"ahead": state["ahead"], "t": state["t"] + 1}

    def e_step(self, state: em.State) -> tuple[np.ndarray, float]:
        t = int(state["t"])
        if bool(state["ahead"]):
            post = np.zeros_like(self.healthy)
            post[:, 0] = 1.0
            return post, (-1.0 + 0.5 * (1 - 0.5**t)) * self.sv.n_votes
        return self.healthy.copy(), (-5.0 + 1e-3 * (1 - 0.5**t)) * self.sv.n_votes


def test_a_set_aside_start_is_resumed_when_every_finished_run_has_warnings() -> None:
    rng = np.random.default_rng(0)
    truth = rng.integers(2, size=200)
    item = np.repeat(np.arange(200), 5)
    label = np.repeat(truth, 5)
    votes = VoteArrays(item, rng.integers(20, size=item.size), label, 200, 20, 2)
    sv = SortedVotes.build(votes)
    healthy = np.eye(2)[truth]
    collapsed = np.zeros_like(healthy)
    collapsed[:, 0] = 1.0
    assert em.fit_warnings(sv, collapsed) and not em.fit_warnings(sv, healthy)
    model = ScriptedEM(sv, healthy)
    starts = [("ahead", collapsed), ("behind", healthy)]
    runs, aside = em.race_runs(
        [
            em.EMRun(sv, model, model.m_step(p, None), max_iter=30, tol=1e-9, start=name)
            for name, p in starts
        ]
    )
    assert [r.start for r in runs] == ["ahead"] and [r.start for r in aside] == ["behind"]
    best = em.multi_start(sv, model, max_iter=30, tol=1e-9, posteriors=starts, race=True)
    assert best.start == "behind" and not best.warnings


@pytest.mark.parametrize("n_starts", [1, 2])
def test_max_iter_zero_runs_no_iteration(n_starts: int) -> None:
    votes, _ = simulate("sparse-binary", 0)
    f = DawidSkene(max_iter=0, n_starts=n_starts).fit(votes).result_
    assert f.n_iter == 0 and not f.converged


def test_incremental_counts_stay_within_the_tolerance_of_a_full_recount() -> None:
    """Dawid-Skene's M-step adds only the moved items' changes to the previous counts; on a
    project with many votes per item most items stop moving, and the counts must stay those
    of posteriors within STALE_TOL of the current ones."""
    votes, _ = simulate_project(3, n_items=400, n_workers=40, k=4, per_item=25)
    sv = SortedVotes.build(votes)
    for post0 in (majority_posteriors(sv), vote_fractions(sv)):
        model = DawidSkeneEM(sv, 0.0, 2.0)
        state = model.m_step(post0, None)
        incremental = 0
        for _ in range(15):
            post, _ = model.e_step(state)
            state = model.m_step(post, state)
            full = np.asarray(sv.wl_by_item @ post)
            votes_per_row = np.asarray(sv.wl_by_item.sum(axis=1))
            bound = STALE_TOL * votes_per_row + 1e-12 * np.abs(full)
            assert (np.abs(state["raw_counts"] - full) <= bound).all()
            incremental += not np.array_equal(state["raw_post"], post)
        assert incremental > 0  # the incremental path was taken


def test_confusions_and_warm_state_come_from_the_counts() -> None:
    votes, _ = simulate_project(4, n_items=300, n_workers=30, k=3, per_item=6)
    f = DawidSkene().fit(votes).result_
    assert f.confusion is not None
    np.testing.assert_allclose(f.confusion.sum(axis=2), 1.0)
    assert set(f.state) == {"confusion", "class_prior", "pooled"}
    warm = DawidSkene().fit(votes, f).result_
    np.testing.assert_allclose(warm.probs, f.probs, atol=0.05)
