"""Multi-label soft labels (app/aggregation/multilabel.py), each annotator's view of them
(perspectivist.py) and LeWiDi's multi-label scores (scores.py), each against an independent
computation: numbers worked by hand on a tiny crowd, loops over the votes for one EM step,
crowd-kit's BinaryRelevance(DawidSkene), simulated crowds with known truth and worker habits,
and the real ConvAbuse type/target crowd on held-out votes. Pure numpy: no database.
"""

from __future__ import annotations

import math
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.aggregation import methods, scores
from app.aggregation import perspectivist as pv
from app.aggregation.multilabel import (
    MULTI_LABEL_METHODS,
    BinaryRelevance,
    MultiLabelNormalized,
    MultiLabelSoftmax,
    TickPropensity,
    tick_counts,
    tick_posteriors,
)
from app.aggregation.task_votes import VoteIndex
from tests.helpers import REPO, require_reference
from tests.task_type_crowds import Crowd, load_real, real_path, simulate_multilabel

CROWDKIT_PYTHON = Path(
    os.environ.get("CROWDKIT_PYTHON", REPO / ".venv-crowdkit" / "bin" / "python")
)

# A tiny crowd, K = 2 classes, 3 workers, 3 items (item 2 has no votes):
#   item 0: w0 ticks {0}, w1 ticks {0, 1}, w2 ticks {}  -> ticks per class t = (2, 1), N = 3
#   item 1: w0 ticks {1}, w1 ticks {}                   -> t = (0, 1), N = 2
ITEM = np.array([0, 0, 0, 1, 1])
WORKER = np.array([0, 1, 2, 0, 1])
TICKS = np.array([[1, 0], [1, 1], [0, 0], [0, 1], [0, 0]], dtype=bool)


def fit(model, crowd: Crowd):
    return model.fit(crowd.item, crowd.worker, crowd.ticks, crowd.n_items, crowd.n_workers)


def test_tick_counts_by_hand() -> None:
    t, n = tick_counts(ITEM, TICKS, 3)
    assert t.tolist() == [[2, 1], [0, 1], [0, 0]]
    assert n.tolist() == [3, 2, 0]


def test_normalized_by_hand() -> None:
    p = MultiLabelNormalized().fit(ITEM, WORKER, TICKS, 3, 3).probas_
    np.testing.assert_allclose(p, [[2 / 3, 1 / 3], [0, 1 / 2], [0.5, 0.5]])
    # alpha = 1: (t + 1) / (N + 2)
    p = MultiLabelNormalized(alpha=1.0).fit(ITEM, WORKER, TICKS, 3, 3).probas_
    np.testing.assert_allclose(p, [[3 / 5, 2 / 5], [1 / 4, 2 / 4], [1 / 2, 1 / 2]])


def test_softmax_by_hand_and_as_two_way_softmax() -> None:
    p = MultiLabelSoftmax().fit(ITEM, WORKER, TICKS, 3, 3).probas_
    # sigmoid(2t - N): item 0 -> sigmoid(1), sigmoid(-1); item 1 -> sigmoid(-2), sigmoid(0)
    sig = [1 / (1 + math.exp(-x)) for x in (1, -1, -2, 0)]
    np.testing.assert_allclose(p, [[sig[0], sig[1]], [sig[2], sig[3]], [0.5, 0.5]])
    np.testing.assert_allclose(p[0], [0.7310585786, 0.2689414214])
    # The same as the single-label softmax of each class's (does not, applies) counts, any T.
    t, n = tick_counts(ITEM, TICKS, 3)
    for temperature in (0.3, 1.0, 4.0):
        q = MultiLabelSoftmax(temperature=temperature).fit_counts(t, n).probas_
        for k in range(2):
            two_way = np.stack([n - t[:, k], t[:, k]], axis=1)
            ref = methods.softmax(two_way, temperature)[:, 1]
            np.testing.assert_allclose(q[:, k], ref, rtol=1e-12)


def test_hyperparameters_are_checked() -> None:
    with pytest.raises(ValueError, match="alpha"):
        MultiLabelNormalized(alpha=-1.0)
    with pytest.raises(ValueError, match="temperature"):
        MultiLabelSoftmax(temperature=0.0)
    with pytest.raises(ValueError, match="max_iter"):
        BinaryRelevance(max_iter=0)
    with pytest.raises(ValueError, match="pseudo_votes"):
        TickPropensity(pseudo_votes=math.inf)
    with pytest.raises(ValueError, match="ticks"):
        TickPropensity().fit(ITEM, WORKER, TICKS[:, 0], 3, 3)
    with pytest.raises(ValueError, match="worker"):
        TickPropensity().fit(ITEM, WORKER, TICKS, 3, 2)
    for cls in MULTI_LABEL_METHODS:
        assert cls.task_type == "multi_label" and cls.name and cls.summary and cls.source


# ----- one EM step, by loops ------------------------------------------------------------------


def loop_e_step(item, worker, ticks, n_items, prior, sens, spec):
    """P(z_ik = 1 | votes), one vote and one class at a time; sens/spec indexed [w][k]."""
    k = ticks.shape[1]
    q = np.zeros((n_items, k))
    for i in range(n_items):
        for c in range(k):
            like1, like0 = prior[c], 1 - prior[c]
            for v in range(item.size):
                if item[v] != i:
                    continue
                s, f = sens[worker[v]][c], spec[worker[v]][c]
                like1 *= s if ticks[v, c] else 1 - s
                like0 *= 1 - f if ticks[v, c] else f
            q[i, c] = like1 / (like1 + like0)
    return q


def test_e_step_equals_loops() -> None:
    rng = np.random.default_rng(5)
    item, worker = rng.integers(0, 6, 40), rng.integers(0, 5, 40)
    ticks = rng.random((40, 3)) < 0.4
    prior = rng.uniform(0.1, 0.9, 3)
    sens, spec = rng.uniform(0.3, 0.95, (5, 3)), rng.uniform(0.4, 0.99, (5, 3))
    votes = VoteIndex.build(item, worker, 7, 5)  # item 6 has no votes: its posterior is the prior
    q, _ = tick_posteriors(votes, ticks.astype(float), prior, sens, spec)
    np.testing.assert_allclose(q, loop_e_step(item, worker, ticks, 7, prior, sens, spec), 1e-10)
    # Shared across classes: (n_workers, 1) rates are the per-class rates repeated.
    q1, _ = tick_posteriors(votes, ticks.astype(float), prior, sens[:, :1], spec[:, :1])
    rep = loop_e_step(
        item, worker, ticks, 7, prior, np.repeat(sens[:, :1], 3, 1), np.repeat(spec[:, :1], 3, 1)
    )
    np.testing.assert_allclose(q1, rep, 1e-10)


def test_binary_relevance_m_step_equals_loops() -> None:
    rng = np.random.default_rng(6)
    item, worker = rng.integers(0, 8, 50), rng.integers(0, 4, 50)
    ticks = rng.random((50, 3)) < 0.3
    q = rng.random((8, 3))
    model = BinaryRelevance(smoothing=0.5)
    prior, sens, spec = model.m_step(VoteIndex.build(item, worker, 8, 4), ticks.astype(float), q)
    for w in range(4):
        for c in range(3):
            hit = miss = rej = fa = 0.0
            for v in range(50):
                if worker[v] != w:
                    continue
                qi = q[item[v], c]
                if ticks[v, c]:
                    hit, fa = hit + qi, fa + 1 - qi
                else:
                    miss, rej = miss + qi, rej + 1 - qi
            hit, miss, rej, fa = (max(x, 1e-10) + 0.5 for x in (hit, miss, rej, fa))
            assert sens[w, c] == pytest.approx(hit / (hit + miss), rel=1e-12)
            assert spec[w, c] == pytest.approx(rej / (rej + fa), rel=1e-12)
    voted = sorted(set(item.tolist()))
    np.testing.assert_allclose(prior, q[voted].mean(axis=0))


def test_tick_propensity_m_step_equals_loops() -> None:
    rng = np.random.default_rng(7)
    item, worker = rng.integers(0, 8, 50), rng.integers(0, 5, 50)
    ticks = rng.random((50, 4)) < 0.3
    q = rng.random((8, 4))
    model = TickPropensity(pseudo_votes=3.0, prior_count=1.5)
    votes = VoteIndex.build(item, worker, 8, 5)
    prior, sens, spec, centre = model.m_step(votes, ticks.astype(float), q, (0.7, 0.8))
    assert centre == (0.7, 0.8)
    for w in range(5):
        hit = pos = rej = neg = 0.0
        for v in range(50):
            if worker[v] == w:
                for c in range(4):
                    qi = q[item[v], c]
                    pos, neg = pos + qi, neg + 1 - qi
                    hit += qi * ticks[v, c]
                    rej += (1 - qi) * (1 - ticks[v, c])
        assert sens[w] == pytest.approx((hit + 3.0 * 0.7) / (pos + 3.0), rel=1e-12)
        assert spec[w] == pytest.approx((rej + 3.0 * 0.8) / (neg + 3.0), rel=1e-12)
    voted = sorted(set(item.tolist()))
    np.testing.assert_allclose(prior, (q[voted].sum(axis=0) + 1.5) / (len(voted) + 3.0))
    # Without a given centre, the centre is the pooled rate over all workers.
    *_, pooled = model.m_step(votes, ticks.astype(float), q, None)
    qv = q[item]
    assert pooled[0] == pytest.approx((qv * ticks).sum() / qv.sum())


def test_binary_relevance_is_separate_binary_fits() -> None:
    """All classes at once equals one class at a time (they share no parameter)."""
    c = simulate_multilabel(11, n_items=300, n_workers=15, n_classes=3).crowd
    joint = BinaryRelevance(tol=1e-12, max_iter=500).fit(
        c.item, c.worker, c.ticks, c.n_items, c.n_workers
    )
    for k in range(3):
        one = BinaryRelevance(tol=1e-12, max_iter=500).fit(
            c.item, c.worker, c.ticks[:, k : k + 1], c.n_items, c.n_workers
        )
        np.testing.assert_allclose(one.probas_[:, 0], joint.probas_[:, k], atol=1e-6)


# ----- simulated crowds -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim():
    return simulate_multilabel(0)


def test_tick_propensity_finds_over_and_under_tickers(sim) -> None:
    m = fit(TickPropensity(), sim.crowd)
    good, over, under = (sim.kind == 0), (sim.kind == 1), (sim.kind == 2)
    # Over-tickers: low specificity, more ticks per vote; under-tickers: low sensitivity.
    assert m.specificity_[over].max() < m.specificity_[good].min()
    assert m.sensitivity_[under].max() < m.sensitivity_[good].min()
    assert m.ticks_per_vote_[over].mean() > 2 * m.ticks_per_vote_[under].mean()
    active = np.bincount(sim.crowd.worker, minlength=sim.crowd.n_workers) >= 30
    assert np.abs(m.sensitivity_ - sim.sensitivity)[active].max() < 0.15
    assert np.abs(m.specificity_ - sim.specificity)[active].max() < 0.1


def test_worker_models_beat_majority_on_simulated_truth(sim) -> None:
    c = sim.crowd
    t, n = tick_counts(c.item, c.ticks, c.n_items)
    majority = (pv.item_tick_majority(t, n, np.arange(c.n_items)) > 0.5) == sim.truth
    tp = (fit(TickPropensity(), c).probas_ > 0.5) == sim.truth
    br = (fit(BinaryRelevance(), c).probas_ > 0.5) == sim.truth
    # measured (seed 0): majority 0.940, binary relevance 0.956, tick-propensity 0.958
    assert tp.mean() > majority.mean() + 0.01
    assert br.mean() > majority.mean() + 0.01
    assert tp.mean() >= br.mean()


def held_out(crowd: Crowd, seed: int = 0) -> dict[str, float]:
    """MER of each annotator's-view prediction on one hidden vote per item (>= 3 votes)."""
    held, keep = pv.hold_out_one(crowd.item, crowd.n_items, seed=seed)
    rest = crowd.subset(keep)
    item, worker, truth = crowd.item[held], crowd.worker[held], crowd.ticks[held]
    t, n = tick_counts(rest.item, rest.ticks, crowd.n_items)
    preds = {
        "item-distribution": pv.item_tick_rate(t, n, item),
        "majority": pv.item_tick_majority(t, n, item),
    }
    for model in (BinaryRelevance(), TickPropensity()):
        preds[model.name] = fit(model, rest).predict_ticks(item, worker)
    return {k: scores.multilabel_error_rate(p > 0.5, truth) for k, p in preds.items()}


def test_annotators_view_beats_baselines_on_simulated_crowd(sim) -> None:
    er = held_out(sim.crowd)
    # measured (seed 0): baselines 0.208 (both), binary relevance 0.170, tick-propensity 0.160
    for model in ("binary-relevance", "tick-propensity"):
        assert er[model] < er["item-distribution"] - 0.02
        assert er[model] < er["majority"] - 0.02


def test_tick_probabilities_by_hand() -> None:
    q = np.array([[0.8, 0.1]])
    p = pv.tick_probabilities(q, np.array([0.9, 0.5]), np.array([0.95, 0.6]), [0, 0], [0, 1])
    # worker 0: 0.8 * 0.9 + 0.2 * 0.05 = 0.73; 0.1 * 0.9 + 0.9 * 0.05 = 0.135
    # worker 1: 0.8 * 0.5 + 0.2 * 0.4 = 0.48;  0.1 * 0.5 + 0.9 * 0.4 = 0.41
    np.testing.assert_allclose(p, [[0.73, 0.135], [0.48, 0.41]])


# ----- properties -----------------------------------------------------------------------------


@st.composite
def crowds(draw):
    n_items = draw(st.integers(1, 6))
    n_workers = draw(st.integers(1, 4))
    k = draw(st.integers(1, 3))
    n_votes = draw(st.integers(0, 15))
    item = np.array(
        draw(st.lists(st.integers(0, n_items - 1), min_size=n_votes, max_size=n_votes)),
        dtype=np.int64,
    )
    worker = np.array(
        draw(st.lists(st.integers(0, n_workers - 1), min_size=n_votes, max_size=n_votes)),
        dtype=np.int64,
    )
    bits = draw(st.lists(st.booleans(), min_size=n_votes * k, max_size=n_votes * k))
    ticks = np.array(bits, dtype=bool).reshape(n_votes, k)
    return Crowd("h", item, worker, n_items, n_workers, ticks=ticks)


# Fixed iteration counts, so that a renumbering cannot move a stopping test by rounding.
FIXED = (
    MultiLabelNormalized(),
    MultiLabelSoftmax(),
    BinaryRelevance(tol=0.0, max_iter=30),
    TickPropensity(tol=0.0, max_iter=30),
)


@settings(max_examples=40, deadline=None)
@given(crowds(), st.randoms(use_true_random=False))
def test_rows_in_unit_interval_and_permutation_invariant(crowd, rnd) -> None:
    item_perm = np.array(rnd.sample(range(crowd.n_items), crowd.n_items))
    worker_perm = np.array(rnd.sample(range(crowd.n_workers), crowd.n_workers))
    for model in FIXED:
        p = fit(model, crowd).probas_
        assert p.shape == (crowd.n_items, crowd.ticks.shape[1])
        assert np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()
        # Renumber items and workers: every item keeps its soft label.
        renumbered = Crowd(
            "r",
            item_perm[crowd.item],
            worker_perm[crowd.worker],
            crowd.n_items,
            crowd.n_workers,
            ticks=crowd.ticks,
        )
        q = fit(model, renumbered).probas_
        np.testing.assert_allclose(q[item_perm], p, atol=1e-7)


# ----- scores ---------------------------------------------------------------------------------


def test_lewidi_multilabel_scores_by_hand_and_by_their_definition() -> None:
    p = np.array([[0.8, 0.1, 0.5], [0.0, 1.0, 0.3]])
    t = np.array([[1.0, 0.0, 0.5], [0.0, 0.5, 1.0]])
    # per class: 2|p - t| -> (0.4, 0.2, 0) mean 0.2; (0, 1.0, 1.4) mean 0.8
    np.testing.assert_allclose(scores.multilabel_manhattan_distance(p, t), [0.2, 0.8])

    def lewidi_mamd(targets, predictions):  # the notebook's definition: (1 - x, x) per label
        per_sample = []
        for tg, pr in zip(targets, predictions, strict=True):
            per_label = [abs((1 - a) - (1 - b)) + abs(a - b) for a, b in zip(pr, tg, strict=True)]
            per_sample.append(sum(per_label) / len(per_label))
        return sum(per_sample) / len(per_sample)

    assert scores.multilabel_manhattan_distance(p, t).mean() == pytest.approx(lewidi_mamd(t, p))
    pred = np.array([[1, 0, 0], [0, 1, 1]], dtype=bool)
    true = np.array([[1, 1, 0], [0, 1, 0]], dtype=bool)
    assert scores.multilabel_error_rate(pred, true) == pytest.approx(2 / 6)


# ----- crowd-kit ------------------------------------------------------------------------------


@pytest.mark.slow
def test_binary_relevance_agrees_with_crowdkit(tmp_path: Path) -> None:
    if not CROWDKIT_PYTHON.exists():
        require_reference(False, f"crowd-kit venv at {CROWDKIT_PYTHON}")
    c = simulate_multilabel(3, n_items=800, n_workers=30, n_classes=5, per_item=4).crowd
    np.savez(tmp_path / "v.npz", item=c.item, worker=c.worker, ticks=c.ticks, n_items=c.n_items)
    script = REPO / "tests" / "crowdkit_multilabel_reference.py"
    cmd = [str(CROWDKIT_PYTHON), str(script), str(tmp_path / "v.npz"), str(tmp_path / "o.npy")]
    subprocess.run(cmd, check=True, timeout=600)
    ref = np.load(tmp_path / "o.npy")
    ours = fit(BinaryRelevance(), c).probas_
    voted = ~np.isnan(ref[:, 0])
    # measured: 0.998 of the 4,000 (item, class) hard labels agree, mean |diff| 0.003. Both stop
    # EM at tol 1e-5, crowd-kit on its ELBO per class, ours on the likelihood of all classes.
    agree = ((ours[voted] > 0.5) == (ref[voted] > 0.5)).mean()
    assert agree >= 0.98
    assert np.abs(ours[voted] - ref[voted]).mean() < 0.01


# ----- the real crowd -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def convabuse() -> Crowd:
    path = real_path("convabuse_type_target")
    require_reference(path.exists(), str(path))
    return load_real("convabuse_type_target")


def test_convabuse_each_method_under_a_second(convabuse: Crowd) -> None:
    assert convabuse.ticks.shape == (12411, 10)
    for cls in MULTI_LABEL_METHODS:
        start = time.perf_counter()
        p = fit(cls(), convabuse).probas_
        assert time.perf_counter() - start < 1.0, cls.name
        assert p.shape == (4185, 10) and (p >= 0).all() and (p <= 1).all()


def test_convabuse_binary_relevance_beats_baselines(convabuse: Crowd) -> None:
    er = held_out(convabuse)
    # measured (seed 0): item-distribution and majority 0.0166, binary relevance 0.0149
    assert er["binary-relevance"] < er["item-distribution"]
    assert er["binary-relevance"] < er["majority"]


@pytest.mark.xfail(
    strict=True,
    reason="known limit: a latent-truth model reads ConvAbuse's disagreement as worker noise; "
    "specificities near 0.999 make one tick near-proof that a class applies, so where 1 of 2 "
    "ticked it predicts a tick (358 held-out cases, of which 47% ticked), and rates shared across "
    "classes drop 176 ticks the baselines keep (56% ticked): MER 0.0178 vs 0.0166 (seed 0)",
)
def test_convabuse_tick_propensity_beats_baselines(convabuse: Crowd) -> None:
    er = held_out(convabuse)
    assert er["tick-propensity"] < min(er["item-distribution"], er["majority"])
