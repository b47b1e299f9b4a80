"""Tests for app.aggregation.agreement (pure numpy, no database)."""

from __future__ import annotations

import csv
import math

import krippendorff
import numpy as np
import pytest
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa

from app.aggregation.agreement import (
    fleiss_kappa,
    krippendorff_alpha_nominal,
    leave_one_out_agreement,
    margin_uncertainty,
    normalized_entropy,
    spammer_flags,
    votes_per_item_histogram,
)
from tests.helpers import SHARED_DATA, require_reference

TRUTH_INFERENCE = SHARED_DATA / "truth-inference"


# ---------------------------------------------------------------- helpers


def random_votes(
    seed: int, n_items: int, n_workers: int, k: int, p_vote: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each (item, worker) votes with probability p_vote; labels lean to a per-item class."""
    rng = np.random.default_rng(seed)
    mask = rng.random((n_items, n_workers)) < p_vote
    item, worker = np.nonzero(mask)
    truth = rng.integers(0, k, n_items)
    noisy = rng.random(item.size) < 0.4
    label = np.where(noisy, rng.integers(0, k, item.size), truth[item])
    return item.astype(np.int64), worker.astype(np.int64), label.astype(np.int64)


def counts_from_votes(item: np.ndarray, label: np.ndarray, n_items: int, k: int) -> np.ndarray:
    return np.bincount(item * k + label, minlength=n_items * k).reshape(n_items, k)


def reliability_matrix(
    item: np.ndarray, worker: np.ndarray, label: np.ndarray, n_items: int, n_workers: int
) -> np.ndarray:
    """The krippendorff package's coders x units layout, NaN for a missing vote."""
    data = np.full((n_workers, n_items), np.nan)
    data[worker, item] = label
    return data


def reference_alpha(data: np.ndarray) -> float | None:
    """krippendorff package, mapping its 'undefined' signals (raise / NaN) to None."""
    try:
        value = krippendorff.alpha(reliability_data=data, level_of_measurement="nominal")
    except ValueError:
        return None
    return None if not np.isfinite(value) else float(value)


def brute_force_loo(
    item: np.ndarray,
    worker: np.ndarray,
    label: np.ndarray,
    n_items: int,
    n_workers: int,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    agree = np.zeros(n_workers)
    scored = np.zeros(n_workers, dtype=np.int64)
    for v in range(item.size):
        others = [int(label[u]) for u in range(item.size) if item[u] == item[v] and u != v]
        if not others:
            continue
        tally = [others.count(c) for c in range(k)]
        best = max(tally)
        scored[worker[v]] += 1
        if tally[label[v]] == best:
            agree[worker[v]] += 1
    rate = np.divide(agree, scored, out=np.zeros(n_workers), where=scored > 0)
    return rate, scored


# ---------------------------------------------------------------- Krippendorff's alpha


def test_alpha_hand_example() -> None:
    # Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: nominal data,
    # 4 coders x 12 units with missing values; published alpha = 0.743.
    nan = np.nan
    data = np.array(
        [
            [1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],
            [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
            [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],
            [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan],
        ]
    )
    k = 6
    counts = np.zeros((data.shape[1], k), dtype=np.int64)
    for c in range(k):
        counts[:, c] = (data == c).sum(axis=0)
    ours = krippendorff_alpha_nominal(counts)
    assert ours is not None
    assert ours == pytest.approx(0.743, abs=5e-4)
    assert ours == pytest.approx(reference_alpha(data), abs=1e-9)


def test_alpha_tiny_by_hand() -> None:
    # Two units, two votes each: (0, 0) and (0, 1). Pairable values n = 4, n_0 = 3, n_1 = 1.
    # D_o = (1/4) * (0 + 2) = 1/2;  D_e = (16 - 10) / (4 * 3) = 1/2;  alpha = 0.
    assert krippendorff_alpha_nominal(np.array([[2, 0], [1, 1]])) == pytest.approx(0.0, abs=1e-12)
    # Perfect agreement with two classes in use: alpha = 1.
    assert krippendorff_alpha_nominal(np.array([[3, 0], [0, 2]])) == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("k", "p_vote"), [(2, 0.3), (3, 0.5), (5, 0.15), (12, 0.6)])
def test_alpha_matches_krippendorff_package(seed: int, k: int, p_vote: float) -> None:
    n_items, n_workers = 60, 9
    item, worker, label = random_votes(seed, n_items, n_workers, k, p_vote)
    counts = counts_from_votes(item, label, n_items, k)
    # Low p_vote must give singletons and empty items, so that the drop-out path is exercised.
    if p_vote <= 0.15:
        assert (counts.sum(axis=1) == 1).any()
    expected = reference_alpha(reliability_matrix(item, worker, label, n_items, n_workers))
    got = krippendorff_alpha_nominal(counts)
    if expected is None:
        assert got is None
    else:
        assert got is not None
        assert got == pytest.approx(expected, abs=1e-9)


def test_alpha_ignores_single_vote_items() -> None:
    base = np.array([[2, 1, 0], [0, 3, 0], [1, 1, 1]])
    with_singletons = np.vstack([base, [[0, 0, 1], [1, 0, 0], [0, 0, 0]]])
    assert krippendorff_alpha_nominal(with_singletons) == pytest.approx(
        krippendorff_alpha_nominal(base), abs=1e-15
    )


def test_alpha_accepts_float_counts_of_whole_numbers() -> None:
    counts = np.array([[2, 1], [0, 3]])
    assert krippendorff_alpha_nominal(counts.astype(float)) == krippendorff_alpha_nominal(counts)
    with pytest.raises(ValueError):
        krippendorff_alpha_nominal(np.array([[0.5, 1.0]]))
    with pytest.raises(ValueError):
        krippendorff_alpha_nominal(np.array([[-1, 2]]))
    with pytest.raises(ValueError):
        krippendorff_alpha_nominal(np.array([1, 2]))


@pytest.mark.parametrize("dataset", ["d_sentiment", "s4_Dog_data"])
def test_alpha_on_real_crowd_data(dataset: str) -> None:
    path = TRUTH_INFERENCE / dataset / "answers.csv"
    where = "../shared/data/truth-inference beside the clone"
    require_reference(path.exists(), f"{path} ({where})")
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    items = {v: i for i, v in enumerate(sorted({r["item"] for r in rows}))}
    workers = {v: i for i, v in enumerate(sorted({r["worker"] for r in rows}))}
    labels = {v: i for i, v in enumerate(sorted({r["label"] for r in rows}))}
    item = np.array([items[r["item"]] for r in rows])
    worker = np.array([workers[r["worker"]] for r in rows])
    label = np.array([labels[r["label"]] for r in rows])
    k = len(labels)
    counts = counts_from_votes(item, label, len(items), k)
    expected = reference_alpha(reliability_matrix(item, worker, label, len(items), len(workers)))
    got = krippendorff_alpha_nominal(counts)
    assert expected is not None and got is not None
    assert got == pytest.approx(expected, abs=1e-9)
    # Leave-one-out agreement runs on real data and matches a cheap invariant: every vote is on
    # an item with other votes in these data sets, so all votes are scored.
    agreement, n_scored = leave_one_out_agreement(item, worker, label, len(items), len(workers), k)
    multi = counts.sum(axis=1)[item] >= 2
    assert n_scored.sum() == multi.sum()
    assert ((agreement >= 0) & (agreement <= 1)).all()


# ---------------------------------------------------------------- Fleiss' kappa


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("k", "n"), [(2, 2), (3, 5), (7, 4), (20, 10)])
def test_fleiss_matches_statsmodels(seed: int, k: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    n_items = 40
    probs = rng.dirichlet(np.full(k, 0.5), size=n_items)
    counts = np.stack([rng.multinomial(n, p) for p in probs])
    kappa, reason = fleiss_kappa(counts)
    assert reason is None and kappa is not None
    assert kappa == pytest.approx(float(sm_fleiss_kappa(counts, method="fleiss")), abs=1e-9)


def test_fleiss_hand_example() -> None:
    # Fleiss (1971) style check worked by hand: 2 items x 2 classes, 2 votes each.
    # Items (2,0) and (1,1): P = (1, 0), P_bar = 1/2, p = (3/4, 1/4), P_e = 10/16,
    # kappa = (1/2 - 10/16) / (1 - 10/16) = -1/3.
    kappa, reason = fleiss_kappa(np.array([[2, 0], [1, 1]]))
    assert reason is None
    assert kappa == pytest.approx(-1.0 / 3.0)


def test_fleiss_unequal_votes_gives_reason() -> None:
    kappa, reason = fleiss_kappa(np.array([[2, 1], [1, 1], [0, 4]]))
    assert kappa is None
    assert isinstance(reason, str) and "same number of votes" in reason
    assert "2 and 4" in reason


def test_fleiss_ignores_unvoted_items() -> None:
    counts = np.array([[2, 1], [1, 2], [3, 0]])
    with_empty = np.vstack([counts, [[0, 0]]])
    assert fleiss_kappa(with_empty) == fleiss_kappa(counts)


def test_fleiss_undefined_cases() -> None:
    kappa, reason = fleiss_kappa(np.array([[1, 0], [0, 1]]))
    assert kappa is None and reason is not None and "at least 2" in reason
    kappa, reason = fleiss_kappa(np.array([[3, 0, 0], [3, 0, 0]]))
    assert kappa is None and reason is not None and "chance agreement is 1" in reason
    kappa, reason = fleiss_kappa(np.zeros((3, 2), dtype=int))
    assert kappa is None and reason is not None
    kappa, reason = fleiss_kappa(np.zeros((0, 4), dtype=int))
    assert kappa is None and reason is not None


# ---------------------------------------------------------------- edge cases


def _check_all_finite(
    item: np.ndarray, worker: np.ndarray, label: np.ndarray, n_items: int, n_workers: int, k: int
) -> None:
    counts = counts_from_votes(item, label, n_items, k)
    alpha = krippendorff_alpha_nominal(counts)
    assert alpha is None or math.isfinite(alpha)
    kappa, reason = fleiss_kappa(counts)
    assert (kappa is None) != (reason is None)
    assert kappa is None or math.isfinite(kappa)
    totals = counts.sum(axis=1, keepdims=True)
    probs = np.divide(counts, totals, out=np.full(counts.shape, 1.0 / k), where=totals > 0)
    for values in (normalized_entropy(probs), margin_uncertainty(probs)):
        assert values.shape == (n_items,)
        assert np.isfinite(values).all() and (values >= 0).all() and (values <= 1).all()
    agreement, n_scored = leave_one_out_agreement(item, worker, label, n_items, n_workers, k)
    assert np.isfinite(agreement).all()
    assert ((agreement >= 0) & (agreement <= 1)).all()
    assert agreement[n_scored == 0].tolist() == [0.0] * int((n_scored == 0).sum())
    flags = spammer_flags(agreement, n_scored, k, min_votes=1)
    assert flags.dtype == bool and flags.shape == (n_workers,)
    hist = votes_per_item_histogram(counts.sum(axis=1))
    assert sum(f for _, f in hist) == n_items


def test_one_worker() -> None:
    item = np.arange(10)
    worker = np.zeros(10, dtype=np.int64)
    label = np.arange(10) % 3
    _check_all_finite(item, worker, label, 10, 1, 3)
    counts = counts_from_votes(item, label, 10, 3)
    assert krippendorff_alpha_nominal(counts) is None
    assert fleiss_kappa(counts)[0] is None
    agreement, n_scored = leave_one_out_agreement(item, worker, label, 10, 1, 3)
    assert n_scored.tolist() == [0] and agreement.tolist() == [0.0]


def test_single_vote_items_and_unused_classes() -> None:
    item = np.array([0, 0, 1, 2, 2, 2])
    worker = np.array([0, 1, 0, 0, 1, 2])
    label = np.array([1, 1, 3, 1, 3, 1])  # classes 0, 2, 4 never used
    _check_all_finite(item, worker, label, 4, 3, 5)
    counts = counts_from_votes(item, label, 4, 5)
    expected = reference_alpha(reliability_matrix(item, worker, label, 4, 3))
    got = krippendorff_alpha_nominal(counts)
    assert expected is not None and got == pytest.approx(expected, abs=1e-9)


def test_everybody_votes_the_same_class() -> None:
    n_items, n_workers, k = 8, 4, 3
    item, worker = (a.ravel() for a in np.meshgrid(np.arange(n_items), np.arange(n_workers)))
    label = np.full(item.size, 2)
    _check_all_finite(item, worker, label, n_items, n_workers, k)
    counts = counts_from_votes(item, label, n_items, k)
    assert krippendorff_alpha_nominal(counts) is None  # D_e = 0, documented as undefined
    kappa, reason = fleiss_kappa(counts)
    assert kappa is None and reason is not None
    agreement, n_scored = leave_one_out_agreement(item, worker, label, n_items, n_workers, k)
    assert (agreement == 1.0).all() and (n_scored == n_items).all()
    # Perfect agreement is never "no better than chance".
    assert not spammer_flags(agreement, n_scored, k, min_votes=1).any()


def test_k_equals_one() -> None:
    item = np.array([0, 0, 1, 1, 1])
    worker = np.array([0, 1, 0, 1, 2])
    label = np.zeros(5, dtype=np.int64)
    _check_all_finite(item, worker, label, 2, 3, 1)
    assert normalized_entropy(np.ones((2, 1))).tolist() == [0.0, 0.0]
    assert margin_uncertainty(np.ones((2, 1))).tolist() == [0.0, 0.0]
    assert not spammer_flags(np.ones(3), np.full(3, 50), 1).any()


@pytest.mark.parametrize("k", [2, 1000])
def test_extreme_k(k: int) -> None:
    n_items, n_workers = 50, 7
    item, worker, label = random_votes(k, n_items, n_workers, k, 0.5)
    _check_all_finite(item, worker, label, n_items, n_workers, k)
    counts = counts_from_votes(item, label, n_items, k)
    expected = reference_alpha(reliability_matrix(item, worker, label, n_items, n_workers))
    got = krippendorff_alpha_nominal(counts)
    assert (got is None) == (expected is None)
    if got is not None:
        assert got == pytest.approx(expected, abs=1e-9)
    got_loo = leave_one_out_agreement(item, worker, label, n_items, n_workers, k)
    want_loo = brute_force_loo(item, worker, label, n_items, n_workers, k)
    np.testing.assert_allclose(got_loo[0], want_loo[0], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(got_loo[1], want_loo[1])


def test_empty_inputs() -> None:
    assert krippendorff_alpha_nominal(np.zeros((0, 3), dtype=int)) is None
    assert normalized_entropy(np.zeros((0, 3))).shape == (0,)
    assert margin_uncertainty(np.zeros((0, 3))).shape == (0,)
    assert votes_per_item_histogram(np.array([], dtype=int)) == []
    empty = np.array([], dtype=np.int64)
    agreement, n_scored = leave_one_out_agreement(empty, empty, empty, 3, 2, 4)
    assert agreement.tolist() == [0.0, 0.0] and n_scored.tolist() == [0, 0]


# ---------------------------------------------------------------- entropy / margin


def test_normalized_entropy_by_hand() -> None:
    probs = np.array(
        [
            [1.0, 0.0, 0.0, 0.0],
            [0.25, 0.25, 0.25, 0.25],
            [0.5, 0.5, 0.0, 0.0],
            [0.7, 0.1, 0.1, 0.1],
        ]
    )
    want = [
        0.0,
        1.0,
        math.log(2) / math.log(4),
        -(0.7 * math.log(0.7) + 3 * 0.1 * math.log(0.1)) / math.log(4),
    ]
    np.testing.assert_allclose(normalized_entropy(probs), want, rtol=0, atol=1e-12)


def test_normalized_entropy_no_warnings_on_zeros() -> None:
    with np.errstate(all="raise"):
        out = normalized_entropy(np.array([[0.0, 1.0], [0.0, 0.0]]))
    assert out.tolist() == [0.0, 0.0]


def test_margin_uncertainty_by_hand() -> None:
    probs = np.array(
        [
            [1.0, 0.0, 0.0],
            [0.5, 0.5, 0.0],
            [0.2, 0.6, 0.2],
            [0.1, 0.3, 0.6],
            [1 / 3, 1 / 3, 1 / 3],
        ]
    )
    want = [0.0, 1.0, 0.6, 0.7, 1.0]
    np.testing.assert_allclose(margin_uncertainty(probs), want, rtol=0, atol=1e-12)


def test_probs_shape_is_checked() -> None:
    with pytest.raises(ValueError):
        normalized_entropy(np.array([0.5, 0.5]))
    with pytest.raises(ValueError):
        margin_uncertainty(np.array([[np.nan, 1.0]]))


# ---------------------------------------------------------------- histogram


def test_votes_per_item_histogram() -> None:
    hist = votes_per_item_histogram(np.array([3, 1, 3, 0, 5, 3, 1]))
    assert hist == [(0, 1), (1, 2), (3, 3), (5, 1)]
    assert all(type(a) is int and type(b) is int for a, b in hist)


# ---------------------------------------------------------------- leave-one-out agreement


def test_loo_small_by_hand() -> None:
    # Item 0: votes A=0, B=0, C=1. A and B each see others {0, 1}: a tie with 0 among the top,
    #   so both agree. C sees {0, 0}: disagree.
    # Item 1: votes A=2, C=2. Each sees {2}: agree.
    # Item 2: only B votes: not scored.
    item = np.array([0, 0, 0, 1, 1, 2])
    worker = np.array([0, 1, 2, 0, 2, 1])
    label = np.array([0, 0, 1, 2, 2, 1])
    agreement, n_scored = leave_one_out_agreement(item, worker, label, 3, 3, 3)
    assert n_scored.tolist() == [2, 1, 2]
    np.testing.assert_allclose(agreement, [1.0, 1.0, 0.5])
    assert agreement.dtype == np.float64 and n_scored.dtype == np.int64


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize(("k", "p_vote"), [(2, 0.4), (3, 0.25), (4, 0.7), (9, 0.5)])
def test_loo_matches_brute_force(seed: int, k: int, p_vote: float) -> None:
    n_items, n_workers = 25, 8
    item, worker, label = random_votes(seed, n_items, n_workers, k, p_vote)
    # Shuffle so the function cannot rely on votes arriving grouped by item.
    order = np.random.default_rng(seed + 100).permutation(item.size)
    item, worker, label = item[order], worker[order], label[order]
    got = leave_one_out_agreement(item, worker, label, n_items, n_workers, k)
    want = brute_force_loo(item, worker, label, n_items, n_workers, k)
    np.testing.assert_allclose(got[0], want[0], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(got[1], want[1])


def test_loo_rejects_bad_input() -> None:
    ok = np.array([0, 1])
    with pytest.raises(ValueError):
        leave_one_out_agreement(np.array([0, 0]), np.array([1, 1]), ok, 2, 2, 2)  # duplicate pair
    with pytest.raises(ValueError):
        leave_one_out_agreement(np.array([0, 2]), ok, ok, 2, 2, 2)  # item out of range
    with pytest.raises(ValueError):
        leave_one_out_agreement(ok, ok, np.array([0, 2]), 2, 2, 2)  # label out of range
    with pytest.raises(ValueError):
        leave_one_out_agreement(ok, ok, np.array([0]), 2, 2, 2)  # length mismatch


# ---------------------------------------------------------------- spammer flags


def test_spammer_flags_rule() -> None:
    k = 4  # chance 0.25; with n = 100 the bound is 0.25 + 2 * sqrt(0.1875 / 100) = 0.3366...
    bound = 0.25 + 2 * math.sqrt(0.25 * 0.75 / 100)
    agreement = np.array([0.30, bound, bound + 1e-9, 0.9, 0.1, 0.1])
    n_scored = np.array([100, 100, 100, 100, 9, 10])
    flags = spammer_flags(agreement, n_scored, k, min_votes=10)
    assert flags.tolist() == [True, True, False, False, False, True]


def test_spammer_flags_separates_random_from_good_workers() -> None:
    rng = np.random.default_rng(7)
    n_items, k = 400, 3
    truth = rng.integers(0, k, n_items)
    rows = []
    for w in range(10):
        spam = w < 2
        for i in range(n_items):
            if rng.random() < 0.5:
                lab = rng.integers(0, k) if spam or rng.random() < 0.15 else truth[i]
                rows.append((i, w, lab))
    item, worker, label = (np.array(c) for c in zip(*rows, strict=True))
    agreement, n_scored = leave_one_out_agreement(item, worker, label, n_items, 10, k)
    flags = spammer_flags(agreement, n_scored, k)
    assert flags.tolist() == [True, True] + [False] * 8
