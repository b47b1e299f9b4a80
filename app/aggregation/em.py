"""The EM driver shared by the worker-model methods: several starts, the best run kept by the
model's own objective, and checks that catch label switching and collapse.

Why several starts: EM only finds a local optimum, and on sparse crowds (about three votes per
item, many workers with a handful of votes) the vote-fraction start that crowd-kit uses can slide
into a solution in which a group of workers explains the data "inverted" (label switching) or
one class absorbs the others (collapse). A majority-vote start (hard posteriors) breaks the
symmetry differently; the run with the higher objective wins unless `fit_warnings` finds it
switched or collapsed, in which case a healthy run is preferred, and if none is healthy the
problem is reported in `WorkerModelFit.warnings`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from app.aggregation import budget
from app.aggregation.base import WorkerModelFit
from app.aggregation.votes import (
    Convergence,
    SortedVotes,
    majority_posteriors,
    vote_fractions,
)

# ----- fit diagnostics ------------------------------------------------------------------------


def fit_warnings(sv: SortedVotes, probs: np.ndarray) -> list[str]:
    """Signs that a fit has switched labels or collapsed, as sentences for the API.

    Three checks, each model-agnostic (they look only at the posteriors and the votes):
    - worse than chance: the votes agree with the fit's posteriors less often than they would
      with labels drawn independently of them (sum_c fit share of c * vote share of c): the
      fit describes the crowd as adversarial on average, which is what label switching looks
      like;
    - disagreement with clear majorities: among items with at least 2 votes for the top label and
      at least twice the runner-up's, on which the fit is confident (max posterior >= 0.9),
      the fit contradicts the majority on more than half;
    - collapse: a class that is the clear majority on at least 10% of those items gets under 1%
      of the fit's labels there.
    """
    k = sv.n_classes
    if k < 2 or sv.voted.size == 0:
        return []
    out: list[str] = []
    post = probs[sv.voted]
    hit = sv.mean_label_posterior(probs)
    label_share = sv.label_share
    chance = float(post.mean(axis=0) @ label_share)
    if hit < chance - 1e-9:
        out.append(
            f"worse than chance: the votes agree with this fit {hit:.2f} of the time, less than "
            f"labels independent of the fit would ({chance:.2f}); the fit has likely switched "
            "labels"
        )
    clear_items, mv = sv.clear_majority
    n_clear = int(clear_items.size)
    if n_clear >= 10:
        fit = probs[clear_items].argmax(axis=1)
        confident = probs[clear_items].max(axis=1) >= 0.9
        if confident.sum() >= 10:
            share = float((fit[confident] != mv[confident]).mean())
            if share > 0.5:
                out.append(
                    f"label switching: on {share:.0%} of the items where the fit is confident "
                    "and the votes have a clear majority, the fit contradicts that majority"
                )
        mv_share = np.bincount(mv, minlength=k) / n_clear
        fit_share = np.bincount(fit, minlength=k) / n_clear
        gone = np.flatnonzero((mv_share >= 0.1) & (fit_share < 0.01))
        if gone.size:
            out.append(
                "collapse: class index(es) "
                + ", ".join(str(int(c)) for c in gone)
                + " win a clear majority on "
                + ", ".join(f"{mv_share[c]:.0%}" for c in gone)
                + " of the items but this fit gives them (almost) none"
            )
    return out


# ----- the EM driver shared by the methods ----------------------------------------------------

State = dict[str, np.ndarray]


class EMModel:
    """What a method supplies to the driver: an E-step and an M-step over its own parameters.

    `e_step(state)` returns (I, K) posteriors and the objective the method maximizes (log
    marginal likelihood of the votes, plus a log prior where the method has one);
    `m_step(post, state)` returns new parameters from posteriors (`state` is None when starting
    from posteriors).
    """

    def e_step(self, state: State) -> tuple[np.ndarray, float]:
        raise NotImplementedError

    def m_step(self, post: np.ndarray, state: State | None) -> State:
        raise NotImplementedError

    def score(self, state: State, objective: float) -> float:
        """The number runs are ranked by (default: the E-step's objective)."""
        return objective


@dataclass
class Run:
    start: str
    probs: np.ndarray
    state: State
    objective: float
    n_iter: int
    converged: bool
    start_state: State
    probs0: np.ndarray | None = None
    warnings: list[str] = field(default_factory=list)
    # The last iterate `fit_warnings` had nothing against (only with track_healthy).
    healthy: Run | None = None
    duplicate_of: str | None = None


# Two runs have reached the same basin when fewer than SAME_BASIN_SHARE of the items differ by
# more than SAME_BASIN_DIFF in any class probability: the later run stops and takes the earlier
# one's result (continuing would only refine the same optimum).
SAME_BASIN_DIFF = 0.05
SAME_BASIN_SHARE = 0.001


def same_basin(a: np.ndarray, b: np.ndarray) -> bool:
    far = (np.abs(a - b) > SAME_BASIN_DIFF).any(axis=1)
    return bool(far.mean() < SAME_BASIN_SHARE) if far.size else True


class EMRun:
    """One EM run from `state`, advanced a step at a time: `run_em` takes one to its end,
    `multi_start` with `race` advances several in lockstep.

    An iteration is an E-step (posteriors and objective; gold items clamped) then an M-step;
    the run is finished when the per-vote objective changed by less than `tol` between two
    E-steps (the M-step after that E-step still runs) or after `max_iter` iterations.
    `history` holds the per-vote objective of every E-step.
    """

    def __init__(
        self,
        sv: SortedVotes,
        model: EMModel,
        state: State,
        *,
        max_iter: int,
        tol: float,
        start: str,
        final_e_step: bool = False,
        probs0: np.ndarray | None = None,
        track_healthy: bool = False,
    ) -> None:
        self.sv, self.model, self.max_iter, self.start = sv, model, max_iter, start
        self.final_e_step, self.probs0, self.track_healthy = final_e_step, probs0, track_healthy
        self.state = self.start_state = state
        self.conv = Convergence(tol, sv.n_votes)
        self.post: np.ndarray | None = None
        self.objective = -math.inf
        self.n_iter, self.converged, self.pending = 0, False, False
        self.history: list[float] = []
        self.healthy: Run | None = None
        if track_healthy and probs0 is not None and not fit_warnings(sv, probs0):
            self.healthy = Run(start, probs0, state, -math.inf, 0, False, state)

    @property
    def finished(self) -> bool:
        return self.converged or (self.n_iter >= self.max_iter and not self.pending)

    def e_step(self) -> np.ndarray:
        budget.check()  # an API fit past its time budget stops here (app/labels/fits.py)
        post, self.objective = self.model.e_step(self.state)
        self.post = self.sv.clamp(post)
        self.pending = True
        self.history.append(self.objective * self.conv.scale)
        if self.track_healthy and not fit_warnings(self.sv, post):
            score = self.model.score(self.state, self.objective)
            self.healthy = Run(self.start, post, self.state, score, self.n_iter, False, self.state)
        return post

    def m_step(self) -> None:
        assert self.post is not None and self.pending
        self.n_iter += 1
        self.state = self.model.m_step(self.post, self.state)
        self.pending = False
        self.converged = self.conv.update(self.objective)

    def run(self) -> Run:
        """To the end (finishing a pending iteration first), as a Run."""
        while not self.finished:
            if not self.pending:
                self.e_step()
            self.m_step()
        return self.result()

    def result(self) -> Run:
        post, objective = self.post, self.objective
        if post is None or self.final_e_step:
            post, objective = self.model.e_step(self.state)
            self.sv.clamp(post)
            if self.n_iter == 0 and self.probs0 is not None:
                post = self.probs0
        run = Run(
            self.start,
            post,
            self.state,
            0.0,
            self.n_iter,
            self.converged,
            self.start_state,
            self.probs0,
            healthy=self.healthy,
        )
        run.objective = self.model.score(self.state, objective)
        return run

    def as_duplicate_of(self, other: Run) -> Run:
        """This run stopped in `other`'s basin: `other`'s result under this start's name."""
        return Run(
            self.start,
            other.probs,
            other.state,
            other.objective,
            other.n_iter,
            other.converged,
            self.start_state,
            self.probs0,
            duplicate_of=other.start,
        )


def run_em(
    sv: SortedVotes,
    model: EMModel,
    state: State,
    *,
    max_iter: int,
    tol: float,
    start: str,
    final_e_step: bool = False,
    probs0: np.ndarray | None = None,
    track_healthy: bool = False,
    others: list[Run] | None = None,
) -> Run:
    """EM from `state`: up to `max_iter` (E-step, M-step) pairs, stopping when the per-vote
    objective changes by less than `tol`. Gold items (if any) are clamped after each E-step.

    `probs` come from the last E-step and `state` from the M-step after it; with
    `final_e_step` (MACE, as crowd-kit) one more E-step follows the last M-step and `state` is
    the one it used. With `max_iter` = 0, `probs0` (the starting posteriors, if any) are
    returned as they are. A run whose posteriors reach the basin of a finished run in
    `others` stops there and returns that run's result (marked `duplicate_of`).
    """
    run = EMRun(
        sv,
        model,
        state,
        max_iter=max_iter,
        tol=tol,
        start=start,
        final_e_step=final_e_step,
        probs0=probs0,
        track_healthy=track_healthy,
    )
    while not run.finished:
        post = run.e_step()
        if others and run.n_iter >= 1:
            for other in others:
                if same_basin(post, other.probs):
                    return run.as_duplicate_of(other)
        run.m_step()
    return run.result()


# Racing (`multi_start(race=True)`): the starts advance in lockstep, one iteration each per
# round. From its RACE_FROM-th iteration on (RACE_FROM + 1 E-steps), a run whose per-vote
# objective trails the best other run's (at the same round, or finished) by more than
# RACE_MIN_GAP and by more than RACE_MARGIN times its own last increase is set aside: at its
# current pace it would need over RACE_MARGIN more iterations just to draw level, while EM's
# increases shrink and the leader still climbs. A set-aside run is resumed only if every
# finished run has warnings (so `best_run` still sees a healthy run when one exists). The
# constants were chosen on recorded EM traces (both Dawid-Skene starts run to convergence on
# the simulator's crowds, the real ones and the 511k benchmark, under six shrinkage/smoothing
# settings): no run that ended higher by more than 1e-5 per vote would have been set aside.
RACE_FROM = 2
RACE_MARGIN = 10.0
RACE_MIN_GAP = 3e-3


def race_runs(runs: list[EMRun]) -> tuple[list[Run], list[EMRun]]:
    """Advance `runs` in lockstep to their ends, racing them (see RACE_FROM): the finished
    runs (a later start that reaches an earlier start's finished posteriors stops there, as
    in `run_em`), and the runs set aside."""
    done: dict[int, Run] = {}
    aside: list[EMRun] = []
    active = list(range(len(runs)))
    for i in range(len(runs)):
        if runs[i].finished:  # max_iter = 0
            done[i] = runs[i].result()
            active.remove(i)
    while active:
        for i in active:
            runs[i].e_step()
        for i in list(active):
            r = runs[i]
            if r.n_iter < 1:
                continue
            assert r.post is not None
            post = r.post
            earlier = next(
                (done[j] for j in sorted(done) if j < i and same_basin(post, done[j].probs)), None
            )
            if earlier is not None:
                done[i] = r.as_duplicate_of(earlier)
                active.remove(i)
        for i in list(active):
            h = runs[i].history
            if len(h) <= RACE_FROM:
                continue
            others = [runs[j].history[-1] for j in active if j != i]
            others += [runs[j].history[-1] for j, d in done.items() if d.duplicate_of is None]
            if not others:
                continue
            gap = max(others) - h[-1]
            pace = h[-1] - h[-2]
            if gap > max(RACE_MARGIN * pace, RACE_MIN_GAP):
                aside.append(runs[i])
                active.remove(i)
        for i in active:
            runs[i].m_step()
        for i in list(active):
            if runs[i].finished:
                done[i] = runs[i].result()
                active.remove(i)
    return [done[i] for i in sorted(done)], aside


def posterior_starts(sv: SortedVotes, n_starts: int) -> list[tuple[str, np.ndarray]]:
    """Starting posteriors: vote fractions (crowd-kit's), then majority vote (ties shared)."""
    starts = [("vote fractions", sv.clamp(vote_fractions(sv)))]
    if n_starts >= 2:
        starts.append(("majority vote", sv.clamp(majority_posteriors(sv))))
    return starts


def best_run(
    sv: SortedVotes,
    model: EMModel,
    runs: list[Run],
    *,
    max_iter: int,
    tol: float,
    final_e_step: bool,
    checked: bool = False,
) -> Run:
    """The run with the highest objective among those `fit_warnings` finds nothing wrong with
    (`checked`: the runs' `warnings` are already set).

    If every run ends with warnings, EM drifted into a degenerate optimum the model prefers
    (one-coin did with constant-label spammers before they were held at chance): the best run
    is replayed to find its last healthy iterate, which is returned with a warning that EM was
    stopped early. If no iterate was ever healthy, the highest-objective run is returned with
    its warnings."""
    if not checked:
        for r in runs:
            r.warnings = fit_warnings(sv, r.probs)
    clean = [r for r in runs if not r.warnings]
    if clean:
        return max(clean, key=lambda r: r.objective)
    top = max(runs, key=lambda r: r.objective)
    replay = run_em(
        sv,
        model,
        top.start_state,
        max_iter=max_iter,
        tol=tol,
        start=top.start,
        final_e_step=final_e_step,
        probs0=top.probs0,
        track_healthy=True,
    )
    if replay.healthy is None:
        return top
    best = replay.healthy
    best.warnings = [
        f"stopped early: EM went on to a degenerate fit ({top.warnings[0].split(':')[0]}) "
        f"after iteration {best.n_iter}; the last healthy iterate is returned"
    ]
    return best


def multi_start(
    sv: SortedVotes,
    model: EMModel,
    *,
    max_iter: int,
    tol: float,
    warm: State | None = None,
    states: list[tuple[str, State]] | None = None,
    posteriors: list[tuple[str, np.ndarray]] | None = None,
    final_e_step: bool = False,
    race: bool = False,
) -> Run:
    """EM from a warm start alone when that run is healthy; otherwise from every start in
    `states` (parameters) and `posteriors` (an M-step first), keeping `best_run`. A start that
    reaches the basin of an earlier one stops there (see run_em), so extra starts cost little
    when they agree. With `race` the starts run in lockstep and one clearly behind is set
    aside (see RACE_FROM), so extra starts cost little when they disagree too."""
    runs: list[Run] = []

    def go(name: str, state: State, probs0: np.ndarray | None = None) -> None:
        runs.append(
            run_em(
                sv,
                model,
                state,
                max_iter=max_iter,
                tol=tol,
                start=name,
                final_e_step=final_e_step,
                probs0=probs0,
                others=[r for r in runs if r.duplicate_of is None],
            )
        )

    def pick(checked: bool = False) -> Run:
        return best_run(
            sv, model, runs, max_iter=max_iter, tol=tol, final_e_step=final_e_step, checked=checked
        )

    if warm is not None:
        go("warm", warm)
        best = pick()
        if not best.warnings:
            return best
        runs.clear()
    if race:
        starts: list[tuple[str, State, np.ndarray | None]] = [
            (name, state, None) for name, state in states or []
        ]
        starts += [(name, model.m_step(post, None), post) for name, post in posteriors or []]
        ems = [
            EMRun(
                sv,
                model,
                state,
                max_iter=max_iter,
                tol=tol,
                start=name,
                final_e_step=final_e_step,
                probs0=post,
            )
            for name, state, post in starts
        ]
        finished, aside = race_runs(ems)
        runs.extend(finished)
        for r in runs:
            r.warnings = fit_warnings(sv, r.probs)
        if aside and all(r.warnings for r in runs):
            for em_run in aside:
                runs.append(em_run.run())
                runs[-1].warnings = fit_warnings(sv, runs[-1].probs)
        return pick(checked=True)
    for name, state in states or []:
        go(name, state)
    for name, post in posteriors or []:
        go(name, model.m_step(post, None), post)
    return pick()


def fill_empty(sv: SortedVotes, probs: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Items without votes get the class prior (gold items their gold class, when clamped)."""
    empty = np.ones(sv.n_items, dtype=bool)
    empty[sv.voted] = False
    probs[empty] = prior
    return sv.clamp(probs)


def em_work(n_votes: int, max_iter: int, starts: int, rounds: int = 1) -> float:
    """An EM fit's cost estimate: votes x iterations x starts (x inner rounds per M-step)."""
    return float(n_votes) * max(1, max_iter) * max(1, starts) * rounds


def fit_result(
    sv: SortedVotes,
    run: Run,
    prior: np.ndarray,
    *,
    worker_skill: np.ndarray,
    confusion: np.ndarray | None,
    state: State,
) -> WorkerModelFit:
    """The chosen run as a fit: items without votes get `prior` (also the fit's class prior);
    iterations, convergence and warnings are the run's."""
    return WorkerModelFit(
        probs=fill_empty(sv, run.probs, prior),
        worker_skill=worker_skill,
        confusion=confusion,
        class_prior=prior,
        n_iter=run.n_iter,
        converged=run.converged,
        state=state,
        warnings=run.warnings,
    )
