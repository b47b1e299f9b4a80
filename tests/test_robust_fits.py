"""Worker models on the simulator's crowds (app/aggregation/simulate.py), checked against truth.

Each crowd shape reproduces a way worker models went wrong on real crowds (issue 11): sparse
binary crowds, ordinal grades with constant-label spammers, thousands of workers with a handful
of votes, adversarial flippers, colluding groups. Pure numpy, no database: a few seconds each.
"""

from __future__ import annotations

import numpy as np
import pytest

from app.aggregation.base import WorkerAggregator, WorkerModelFit
from app.aggregation.em import fit_warnings
from app.aggregation.registry import WORKER_METHODS, resolve_method
from app.aggregation.select import describe, indistinguishable, split_votes
from app.aggregation.simulate import SHAPES, accuracy, majority_accuracy, simulate
from app.aggregation.votes import SortedVotes, VoteArrays

SEEDS = (0, 1)

# Known misses, each a strict xfail (the test fails if one starts passing, so the list stays
# true). Colluders copy one shared answer per item; every model here assumes workers err
# independently, so a colluding group that is also among the most active workers (seed 0) reads
# as the most reliable workers. Majority vote (and Wawa) count them as what they are, a few
# votes.
KNOWN_MISSES = {
    ("colluding", 0, "dawid-skene"),
    ("colluding", 0, "one-coin"),
    ("colluding", 0, "glad"),
    ("colluding", 0, "mace"),
    ("colluding", 0, "dawid-skene-clustered"),
}


def fit(method: str, votes: VoteArrays, **params: object) -> WorkerModelFit:
    aggregator = resolve_method(method, params)
    assert isinstance(aggregator, WorkerAggregator)
    return aggregator.fit(votes).result_


CROWDS = {(shape, seed): simulate(shape, seed) for shape in SHAPES for seed in SEEDS}


@pytest.mark.parametrize("method", [m for m in WORKER_METHODS if m != "auto"])
@pytest.mark.parametrize("shape,seed", list(CROWDS))
def test_no_method_falls_more_than_2_points_below_majority_vote(
    shape: str, seed: int, method: str
) -> None:
    votes, truth = CROWDS[shape, seed]
    mv = majority_accuracy(votes, truth)
    if mv <= 1.0 / votes.n_classes + 0.05:
        pytest.skip("majority vote is at chance on this crowd")
    if (shape, seed, method) in KNOWN_MISSES:
        pytest.xfail("known miss, see KNOWN_MISSES")
    acc = accuracy(fit(method, votes).probs, truth, votes)
    print(f"{shape}/{seed} {method}: {acc:.3f} (majority vote {mv:.3f})")
    assert acc >= mv - 0.02


@pytest.mark.parametrize("shape,seed,method", sorted(KNOWN_MISSES))
def test_known_misses_are_still_misses(shape: str, seed: int, method: str) -> None:
    votes, truth = CROWDS[shape, seed]
    acc = accuracy(fit(method, votes).probs, truth, votes)
    assert acc < majority_accuracy(votes, truth) - 0.02


def test_one_coin_no_longer_collapses_on_constant_label_spammers() -> None:
    """The relevance-4 crowd (a quarter constant-label spammers, skewed grades): crowd-kit's
    one-coin start and update drift to calling nearly every item one grade (0.18 here before
    constant workers were held at chance); now it beats majority vote."""
    votes, truth = CROWDS["relevance-4", 1]
    sv = SortedVotes.build(votes)
    assert sv.constant_workers.size > 0.1 * votes.n_workers
    f = fit("one-coin", votes)
    assert accuracy(f.probs, truth, votes) > majority_accuracy(votes, truth) + 0.1
    assert f.warnings == []


def test_collapse_and_switching_are_reported() -> None:
    votes, _ = CROWDS["adversarial", 0]
    sv = SortedVotes.build(votes)
    good = fit("dawid-skene", votes).probs
    assert fit_warnings(sv, good) == []
    switched = good[:, [1, 2, 0]]  # every class renamed: label switching
    assert any(w.startswith("worse than chance") for w in fit_warnings(sv, switched))
    assert any(w.startswith("label switching") for w in fit_warnings(sv, switched))
    collapsed = np.zeros_like(good)
    collapsed[:, 0] = 1.0
    assert any(w.startswith("collapse") for w in fit_warnings(sv, collapsed))


def test_best_start_kept_and_never_worse_than_crowdkit_start() -> None:
    """Several starts keep the best run by the model's objective: never lower than the
    single vote-fraction start (crowd-kit's) on the simulator's crowds."""
    for (shape, seed), (votes, truth) in CROWDS.items():
        for method in ("dawid-skene", "one-coin", "glad"):
            one = fit(method, votes, n_starts=1)
            two = fit(method, votes, n_starts=2)
            if not two.warnings and not one.warnings:
                acc1, acc2 = accuracy(one.probs, truth, votes), accuracy(two.probs, truth, votes)
                assert acc2 >= acc1 - 0.01, (shape, seed, method, acc1, acc2)


@pytest.mark.parametrize("method", list(WORKER_METHODS))
def test_degenerate_inputs_stay_finite(method: str) -> None:
    cases = [
        VoteArrays(np.zeros(0, int), np.zeros(0, int), np.zeros(0, int), 3, 2, 3),
        VoteArrays(np.array([0]), np.array([0]), np.array([1]), 1, 1, 3),
        VoteArrays(np.arange(20), np.zeros(20, int), np.zeros(20, int), 20, 1, 2),
        VoteArrays(np.repeat(np.arange(10), 2), np.tile([0, 1], 10), np.tile([0, 1], 10), 10, 2, 2),
        VoteArrays(
            np.arange(5),
            np.arange(5),
            np.full(5, 2),
            6,
            5,
            4,
            gold=np.array([2, -1, -1, -1, -1, 0]),
        ),
    ]
    for votes in cases:
        for extra in ({}, {"use_gold": "true"}) if method != "wawa" else ({},):
            f = fit(method, votes, **extra)
            assert np.isfinite(f.probs).all() and np.allclose(f.probs.sum(axis=1), 1.0)
            assert np.isfinite(f.worker_skill).all()


# Dawid-Skene with gold clamped ends 1 to 2.5 points lower on the other items of the crowds
# whose workers give few votes each or include many constant-label spammers; the cause is not
# found yet (suspected: a worker's few gold votes make their matrix overconfident).
# `dawid-skene-clustered` is the method for such crowds, and gold does not hurt it.
# MACE joined this list on relevance-4 when it started learning the class prior (like
# Dawid-Skene): without gold it gained 4 and 2 points (0.751 -> 0.789, 0.670 -> 0.691 on the
# non-gold items), with gold it gains less (0.760 -> 0.771, 0.669 -> 0.665), and the learned
# prior of class 0 rises from 0.45 to 0.53-0.57 (truth 0.45). Suspected, as for Dawid-Skene:
# constant-label spammers of class 0 look reliable on the gold items of that class.
GOLD_MISSES = {
    ("relevance-4", 0, "mace"),
    ("relevance-4", 1, "mace"),
    ("relevance-4", 0, "dawid-skene"),
    ("relevance-4", 1, "dawid-skene"),
    ("many-few", 0, "dawid-skene"),
    ("many-few", 1, "dawid-skene"),
}
GOLD_METHODS = ["dawid-skene", "one-coin", "glad", "mace"]


def with_gold(votes: VoteArrays, truth: np.ndarray, seed: int) -> VoteArrays:
    """10% of the items get their true class as gold."""
    gold = np.where(np.random.default_rng(seed).random(votes.n_items) < 0.1, truth, -1)
    v = votes
    return VoteArrays(v.item, v.worker, v.label, v.n_items, v.n_workers, v.n_classes, gold=gold)


@pytest.mark.parametrize("method", GOLD_METHODS)
@pytest.mark.parametrize("shape,seed", list(CROWDS))
def test_gold_anchoring_never_lowers_accuracy(shape: str, seed: int, method: str) -> None:
    """Accuracy on the items without gold, with and without `use_gold` (gold items themselves
    are clamped, so they would only flatter the anchored fit)."""
    votes, truth = CROWDS[shape, seed]
    gv = with_gold(votes, truth, seed)
    rest = gv.gold is not None and gv.gold < 0
    plain = (fit(method, gv).probs.argmax(1) == truth)[rest].mean()
    anchored_fit = fit(method, gv, use_gold="true")
    assert gv.gold is not None
    gold_items = gv.gold >= 0
    assert (anchored_fit.probs[gold_items].argmax(1) == truth[gold_items]).all()
    anchored = (anchored_fit.probs.argmax(1) == truth)[rest].mean()
    print(f"{shape}/{seed} {method}: {plain:.3f} -> {anchored:.3f} with gold")
    if (shape, seed, method) in GOLD_MISSES:
        assert anchored < plain  # still a miss: move it out of GOLD_MISSES
    else:
        assert anchored >= plain - 0.01  # 1 point: EM on sparse crowds is that noisy


def test_gold_rescues_a_colluding_crowd() -> None:
    votes, truth = CROWDS["colluding", 0]
    gv = with_gold(votes, truth, 0)
    for method in ("one-coin", "glad", "mace"):
        acc = accuracy(fit(method, gv, use_gold=1).probs, truth, votes)
        assert acc > majority_accuracy(votes, truth) + 0.1, method


# Held-out vote likelihood is a proxy for accuracy: where two models predict the held-out
# votes about equally well, it can pick the less accurate one (sparse-binary, seed 1: the
# clustered model by 0.007 nats per vote, 2.5 points less accurate than one-coin). The colluding
# crowd fools every model's likelihood alike (see KNOWN_MISSES).
AUTO_MISSES = {("sparse-binary", 1), ("colluding", 0)}


@pytest.mark.slow
@pytest.mark.parametrize("shape,seed", list(CROWDS))
def test_auto_within_1_point_of_the_best_method(shape: str, seed: int) -> None:
    votes, truth = CROWDS[shape, seed]
    auto = fit("auto", votes)
    info = describe(auto)
    assert info is not None and info["criterion"] == "held-out vote log-likelihood"
    candidates = info["candidates"]
    assert isinstance(candidates, list)
    assert {c["method"] for c in candidates} == set(WORKER_METHODS) - {"auto"}
    accs = {m: accuracy(fit(m, votes).probs, truth, votes) for m in WORKER_METHODS if m != "auto"}
    acc = accuracy(auto.probs, truth, votes)
    print(f"{shape}/{seed}: auto chose {info['chosen']} {acc:.3f}; best {max(accs.values()):.3f}")
    assert acc == pytest.approx(accs[str(info["chosen"])], abs=1e-9)
    if (shape, seed) in AUTO_MISSES:
        assert acc < max(accs.values()) - 0.01  # still a miss: move it out of AUTO_MISSES
    else:
        assert acc >= max(accs.values()) - 0.01


def test_auto_says_when_held_out_likelihood_cannot_tell() -> None:
    """sparse-binary, seed 1 (an AUTO_MISSES crowd): the pick beats Dawid-Skene by less than
    2 paired standard errors, so the response says the choice is not decided, and why."""
    votes, _ = CROWDS["sparse-binary", 1]
    info = describe(fit("auto", votes))
    assert info is not None and info["decided"] is False
    assert "dawid-skene" in info["indistinguishable"]  # type: ignore[operator]
    assert "cannot tell" in str(info["note"]) and "gold" in str(info["note"])
    by_method = {c["method"]: c for c in info["candidates"]}  # type: ignore[attr-defined]
    assert by_method[info["chosen"]]["std_err"] == 0.0


def test_indistinguishable_is_within_two_standard_errors() -> None:
    scores = np.array([-0.50, -0.52, -0.60, np.nan])
    std_err = np.array([0.0, 0.011, 0.03, np.nan])
    assert indistinguishable(scores, std_err, 0).tolist() == [False, True, False, False]


def test_auto_uses_gold_when_there_is_enough() -> None:
    votes, truth = CROWDS["colluding", 0]
    gv = with_gold(votes, truth, 0)
    info = describe(fit("auto", gv))
    assert info is not None and info["criterion"] == "accuracy on gold items"
    # On gold, the independent-worker models' failure on this crowd shows: Wawa wins.
    assert info["chosen"] == "wawa"


def test_held_out_split_keeps_every_item_voted() -> None:
    votes, _ = CROWDS["sparse-binary", 0]
    train, held = split_votes(votes, 0.2, 0)
    assert train.n_votes + held.size == votes.n_votes
    before = np.bincount(votes.item, minlength=votes.n_items)
    after = np.bincount(train.item, minlength=votes.n_items)
    assert ((after >= 1) | (before == 0)).all()
    assert held.size >= (before >= 2).sum()
