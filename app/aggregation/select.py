"""`method=auto`: pick, per project, the worker model that best explains the project's votes.

Two criteria:
- held-out votes (default): a fraction of each item's votes (at least one, never the item's
  last) is held out; every candidate is fitted on the rest, and scored by the mean log
  probability it gives the held-out votes, P(label | item, worker) = sum_c q(c | item) *
  P(label | c, worker) under the candidate's own worker model. This rewards a model for
  predicting what a worker says on an item it has not seen that worker's vote on, which is
  what a good posterior plus a good worker model should do;
- gold accuracy: with at least `MIN_GOLD` gold items that have votes, every candidate is
  fitted on all votes (gold not clamped) and scored by its accuracy on them.

The chosen method is then fitted on all votes (with `use_gold` if asked) and returned; its
state records every candidate's score, so the choice can be shown (GET .../methods/compare).

When the criterion cannot tell: each candidate's score is a mean over held-out votes (or gold
items), so it has a sampling error. For every candidate the standard error of its difference
to the best one is computed over the same votes (paired, so what the two share cancels); a
candidate within `TIE_SE` standard errors of the best is reported as indistinguishable from it,
and the response says so instead of presenting the pick as decided. On the crowds with truth in
benchmarks/robust_crowds.py, held-out likelihood ranks methods only loosely as accuracy does
(see docs/worker-models.md for the measured rank agreement).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, ClassVar

import numpy as np
from pydantic import Field

from app.aggregation.base import WorkerAggregator, WorkerModelFit
from app.aggregation.dawid_skene import DawidSkene
from app.aggregation.dawid_skene_clustered import DawidSkeneClustered
from app.aggregation.glad import Glad
from app.aggregation.mace import Mace
from app.aggregation.one_coin import OneCoin
from app.aggregation.params import Seed, UseGold
from app.aggregation.votes import EPS, VoteArrays
from app.aggregation.wawa import Wawa

MIN_GOLD = 30
# Two standard errors: a difference smaller than that is within what another held-out split
# (or another sample of gold items) could reverse about 1 time in 20.
TIE_SE = 2.0
# auto (and /methods/compare) fits every worker model twice (held-out split, then the winner):
# about this many vote-iterations per vote with the methods' defaults (see WorkerAggregator.work).
WORK_PER_VOTE = 4000

# The worker models auto chooses among, in the registry's order (a test checks that every
# worker model is here).
CANDIDATES: tuple[type[WorkerAggregator], ...] = (
    DawidSkene,
    DawidSkeneClustered,
    OneCoin,
    Glad,
    Mace,
    Wawa,
)

CRITERIA = ("held-out vote log-likelihood", "accuracy on gold items")


def split_votes(votes: VoteArrays, fraction: float, seed: int) -> tuple[VoteArrays, np.ndarray]:
    """Training votes, and the indices of the held-out ones: per item with n >= 2 votes,
    max(1, floor(fraction * n)) of them at random (never all)."""
    rng = np.random.default_rng(seed)
    key = rng.random(votes.n_votes)
    order = np.lexsort((key, votes.item))
    item_sorted = votes.item[order]
    n = np.bincount(votes.item, minlength=votes.n_items)
    first = np.searchsorted(item_sorted, item_sorted, side="left")
    rank = np.arange(votes.n_votes) - first
    n_hold = np.where(n >= 2, np.maximum(1, np.floor(fraction * n)), 0).astype(np.int64)
    n_hold = np.minimum(n_hold, n - 1)
    held = order[rank < n_hold[item_sorted]]
    keep = np.ones(votes.n_votes, dtype=bool)
    keep[held] = False
    v = votes
    train = VoteArrays(
        v.item[keep], v.worker[keep], v.label[keep], v.n_items, v.n_workers, v.n_classes, v.gold
    )
    return train, held


def vote_probability(
    fit: WorkerModelFit, item: np.ndarray, worker: np.ndarray, label: np.ndarray, k: int
) -> np.ndarray:
    """P(label | item, worker) under a fit: sum_c probs[item, c] * P(label | c, worker)."""
    q = fit.probs[item]  # (V, K)
    if fit.confusion is not None:
        return np.einsum("vc,vc->v", q, fit.confusion[worker, :, label])
    q_label = q[np.arange(item.size), label]
    if "alpha" in fit.state and "beta" in fit.state:  # GLAD: P(correct) = sigmoid(a_w e^b_i)
        x = fit.state["alpha"][worker] * np.exp(fit.state["beta"][item])
        right = 0.5 * (1.0 + np.tanh(0.5 * x))
    else:  # one accuracy per worker (Wawa's agreement weight)
        right = np.clip(fit.worker_skill[worker], 0.0, 1.0)
    return q_label * right + (1.0 - q_label) * (1.0 - right) / max(k - 1, 1)


def score_candidates(
    votes: VoteArrays,
    candidates: Sequence[type[WorkerAggregator]],
    holdout: float,
    seed: int,
) -> tuple[str, np.ndarray, np.ndarray]:
    """(criterion, score per candidate, standard error of each score's difference to the best
    score); NaN where a candidate failed to give a finite fit.

    The score is a mean of per-unit values (log-probability of each held-out vote, or 0/1
    correctness on each gold item); the standard error of candidate j's difference to the best
    b is std(u_b - u_j) / sqrt(n) over the same units."""
    n = len(candidates)
    gold = votes.gold
    voted = np.bincount(votes.item, minlength=votes.n_items) > 0
    gold_items = np.flatnonzero((gold >= 0) & voted) if gold is not None else np.zeros(0, int)
    units: list[np.ndarray | None] = [None] * n
    if gold is not None and gold_items.size >= MIN_GOLD:
        criterion = CRITERIA[1]
        for j, method in enumerate(candidates):
            f = method().fit(votes).result_
            if np.isfinite(f.probs).all():
                hit = f.probs[gold_items].argmax(axis=1) == gold[gold_items]
                units[j] = hit.astype(np.float64)
    else:
        criterion = CRITERIA[0]
        train, held = split_votes(votes, holdout, seed)
        if held.size:
            for j, method in enumerate(candidates):
                f = method().fit(train).result_
                p = vote_probability(
                    f, votes.item[held], votes.worker[held], votes.label[held], votes.n_classes
                )
                if np.isfinite(p).all():
                    units[j] = np.log(np.maximum(p, EPS))
    scores, std_err = paired_scores(units)
    return criterion, scores, std_err


def paired_scores(units: Sequence[np.ndarray | None]) -> tuple[np.ndarray, np.ndarray]:
    """Each candidate's score (the mean of its per-unit values; NaN for None, a failed fit)
    and the standard error of its difference to the best score over the same units."""
    scores = np.array([np.nan if u is None else float(u.mean()) for u in units])
    std_err = np.full(len(units), np.nan)
    if np.isfinite(scores).any():
        best = units[int(np.nanargmax(scores))]
        assert best is not None
        for j, u in enumerate(units):
            if u is not None:
                std_err[j] = float(np.std(best - u) / math.sqrt(max(u.size, 1)))
    return scores, std_err


def indistinguishable(scores: np.ndarray, std_err: np.ndarray, choice: int) -> np.ndarray:
    """Candidates other than `choice` whose score is within TIE_SE standard errors of it."""
    gap = scores[choice] - scores
    close = np.isfinite(gap) & (gap <= TIE_SE * np.nan_to_num(std_err, nan=0.0))
    close[choice] = False
    return close


# The held-out split's parameters, shared by every type's `auto`.
Holdout = Annotated[
    float,
    Field(
        gt=0,
        lt=1,
        description="share of each item's votes held out to score the candidates (items "
        "with one vote keep it)",
    ),
]
HoldoutSeed = Annotated[Seed, Field(description="seed of the held-out split")]


class Auto(WorkerAggregator):
    """Every candidate scored (see the module doc), the best fitted on all votes.

    The result is the chosen method's fit (with `use_gold` if asked), its state extended with
    every candidate's score ("auto_methods", "auto_scores", "auto_std_err", "auto_choice",
    "auto_criterion"; read by `describe`). `warm` is not used: the choice may change."""

    name = "auto"
    summary = (
        "the worker model whose held-out votes are best predicted (or, with at least "
        f"{MIN_GOLD} gold items, the most accurate on gold); see GET .../methods/compare"
    )
    source = "model selection by held-out predictive likelihood; candidates cite their own"
    fits_one_class = True  # its state records the candidates' scores even then
    candidates: ClassVar[tuple[type[WorkerAggregator], ...]] = CANDIDATES

    holdout: Holdout = 0.2
    seed: HoldoutSeed = 0
    use_gold: Annotated[
        UseGold,
        Field(description="true: the chosen method is fitted with gold items clamped"),
    ] = False

    @property
    def uses_gold(self) -> bool:
        return True  # with enough gold items, they decide the choice

    def work(self, n_votes: int) -> float:
        return float(n_votes) * WORK_PER_VOTE

    def _fit(self, votes: VoteArrays, warm: WorkerModelFit | None) -> WorkerModelFit:
        criterion, scores, std_err = score_candidates(
            votes, self.candidates, self.holdout, self.seed
        )
        finite = np.where(np.isfinite(scores), scores, -math.inf)
        choice = int(np.argmax(finite)) if np.isfinite(scores).any() else 0
        method = self.candidates[choice]
        gold = {"use_gold": self.use_gold} if "use_gold" in method.model_fields else {}
        chosen = method(**gold)
        result = chosen.fit(votes).result_
        result.state = {
            **result.state,
            "auto_methods": np.asarray([c.name for c in self.candidates], dtype=str),
            "auto_scores": scores,
            "auto_std_err": std_err,
            "auto_choice": np.asarray(choice),
            "auto_criterion": np.asarray(criterion, dtype=str),
        }
        return result


def describe(fit: WorkerModelFit) -> dict[str, object] | None:
    """What an auto fit chose and every candidate's score (None for other fits)."""
    st = fit.state
    if "auto_methods" not in st:
        return None
    names = [str(n) for n in st["auto_methods"]]
    raw = np.asarray(st["auto_scores"], dtype=np.float64)
    # Fits stored before standard errors were recorded: no tie can be shown.
    se = np.asarray(st.get("auto_std_err", np.full(raw.size, np.nan)), dtype=np.float64)
    choice = int(st["auto_choice"])
    tied = indistinguishable(raw, se, choice) if np.isfinite(raw).any() else np.zeros(0, bool)
    tied_names = [names[j] for j in np.flatnonzero(tied)]
    criterion = str(st["auto_criterion"])
    note = None
    if tied_names:
        # Multi-label and ordinal auto (select_tasks.py) name their own held-out criterion.
        what = {CRITERIA[0]: "held-out vote likelihood", CRITERIA[1]: "accuracy on gold"}.get(
            criterion, criterion
        )
        note = (
            f"{what} cannot tell {', '.join(tied_names)} from {names[choice]}: the differences "
            f"are within {TIE_SE:g} standard errors, so another held-out split could reverse "
            "them, and their accuracies may differ"
            + (
                f"; add at least {MIN_GOLD} gold items to choose by accuracy"
                if criterion == CRITERIA[0]
                else ""
            )
        )
    return {
        "chosen": names[choice],
        "criterion": criterion,
        "decided": not tied_names,
        "indistinguishable": tied_names,
        "note": note,
        "candidates": [
            {
                "method": n,
                "score": None if not np.isfinite(s) else float(s),
                "std_err": None if not np.isfinite(e) else float(e),
            }
            for n, s, e in zip(names, raw, se, strict=True)
        ],
    }
