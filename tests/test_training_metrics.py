"""Held-out metrics on hand examples, and the deterministic eval split."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from app.training.data import TrainingData, build_training_data, split_eval
from app.training.evaluate import evaluate
from app.training.metrics import METRIC_KEYS, EvalSet, compute_metrics

# Four gold-labelled items (K = 2) plus one without gold (-1), which gold metrics must skip.
PROBS = np.array([[0.9, 0.1], [0.75, 0.25], [0.3, 0.7], [0.72, 0.28], [0.5, 0.5]])
GOLD = np.array([0, 1, 1, 1, -1])
COUNTS = np.array([[3, 0], [1, 2], [0, 4], [2, 2], [1, 1]])


def test_ece_bins_by_hand() -> None:
    # Confidence (max prob) and bin b with b/15 < conf <= (b+1)/15:
    #   0.90 -> 13.5 -> bin 13, correct    0.75 -> 11.25 -> bin 11, wrong (gold 1)
    #   0.70 -> 10.5 -> bin 10, correct    0.72 -> 10.8  -> bin 10, wrong (gold 1)
    # bin 13: 1/4 * |1 - 0.90|                 = 0.025
    # bin 11: 1/4 * |0 - 0.75|                 = 0.1875
    # bin 10: 2/4 * |1/2 - (0.70 + 0.72) / 2|  = 0.5 * 0.21 = 0.105
    # ECE = 0.3175
    m = compute_metrics(PROBS, COUNTS, GOLD, n_train=7)
    assert m["ece"] == pytest.approx(0.3175, abs=1e-12)


def test_accuracy_and_nll_by_hand() -> None:
    m = compute_metrics(PROBS, COUNTS, GOLD, n_train=7)
    assert m["accuracy"] == 0.5  # items 0 and 2 right, 1 and 3 wrong; item 4 has no gold
    # nll = -(ln 0.9 + ln 0.25 + ln 0.7 + ln 0.28) / 4
    #     = (0.105361 + 1.386294 + 0.356675 + 1.272966) / 4 = 0.780324
    nll = -(math.log(0.9) + math.log(0.25) + math.log(0.7) + math.log(0.28)) / 4
    assert m["nll"] == pytest.approx(nll, abs=1e-12)
    assert nll == pytest.approx(0.780324, abs=1e-6)
    assert m["n_eval"] == 5
    assert m["n_train"] == 7


def test_accuracy_majority_by_hand() -> None:
    # majority of the counts: 0, 1, 1, 0 (2-2 tie -> lowest index), 0 (tie)
    # predictions:            0, 0, 1, 0, 0   -> 4 of 5 agree
    m = compute_metrics(PROBS, COUNTS, GOLD, n_train=7)
    assert m["accuracy_majority"] == pytest.approx(4 / 5)


def test_human_metrics_zero_kl_when_model_equals_humans() -> None:
    counts = np.array([[3, 1], [2, 2], [5, 0]])
    probs = counts / counts.sum(axis=1, keepdims=True)
    m = compute_metrics(probs, counts, np.full(3, -1), n_train=0)
    assert m["kl_human"] == 0.0
    # ce = entropy of the humans: H(3/4, 1/4) = 0.562335, H(1/2, 1/2) = ln 2, H(1, 0) = 0
    h1 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert m["ce_human"] == pytest.approx((h1 + math.log(2) + 0.0) / 3, abs=1e-12)


def test_human_metrics_by_hand() -> None:
    # humans [1, 0] vs model [1/2, 1/2]: CE = -ln(1/2) = ln 2, KL = 1 * ln(1 / (1/2)) = ln 2
    # humans [1/4, 3/4] vs model [1/2, 1/2]: CE = ln 2,
    #   KL = 1/4 ln(1/2) + 3/4 ln(3/2) = -0.173287 + 0.304099 = 0.130812
    counts = np.array([[2, 0], [1, 3]])
    probs = np.array([[0.5, 0.5], [0.5, 0.5]])
    m = compute_metrics(probs, counts, np.array([-1, -1]), n_train=1)
    assert m["ce_human"] == pytest.approx(math.log(2), abs=1e-12)
    kl2 = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    assert m["kl_human"] == pytest.approx((math.log(2) + kl2) / 2, abs=1e-12)


def test_log_of_zero_probability_is_finite() -> None:
    m = compute_metrics(np.array([[1.0, 0.0]]), np.array([[0, 3]]), np.array([1]), n_train=1)
    assert all(math.isfinite(m[k]) for k in ("nll", "ce_human", "kl_human"))
    assert m["nll"] > 700  # floored at the smallest normal float: -log(2.2e-308) = 708.4


def test_no_gold_gives_none_not_omitted() -> None:
    m = compute_metrics(PROBS, COUNTS, np.full(5, -1), n_train=3)
    assert tuple(m) == METRIC_KEYS
    assert m["accuracy"] is None and m["nll"] is None and m["ece"] is None
    assert m["accuracy_majority"] is not None and m["kl_human"] is not None


def test_empty_split_gives_none() -> None:
    m = compute_metrics(np.zeros((0, 2)), np.zeros((0, 2), int), np.zeros(0, int), n_train=3)
    assert m == dict.fromkeys(METRIC_KEYS) | {"n_eval": 0, "n_train": 3}


def test_evaluate_runs_model_in_eval_mode_without_grad() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.9))
    model.train()
    x = torch.randn(4, 2, requires_grad=True)
    labels = EvalSet.build(COUNTS[:4], GOLD[:4])
    a = evaluate(model, x, labels, n_train=1)
    b = evaluate(model, x, labels, n_train=1)
    assert a == b  # dropout off during evaluation
    assert model.training  # mode restored
    assert tuple(a) == METRIC_KEYS
    targets = torch.eye(2)[[0, 1, 1, 1]]
    c = evaluate(model, x, labels, n_train=1, loss_targets=targets)
    with torch.no_grad():
        model.eval()
        expected = torch.nn.functional.cross_entropy(model(x), targets).item()
    assert c["loss"] == pytest.approx(expected)
    assert torch.is_grad_enabled()  # no_grad applied inside evaluate only
    probs = torch.softmax(model(x).double(), dim=1).detach().numpy()
    assert a == compute_metrics(probs, COUNTS[:4], GOLD[:4], n_train=1)


def test_evaluate_empty_split() -> None:
    labels = EvalSet.build(np.zeros((0, 2), int), np.zeros(0, int))
    out = evaluate(nn.Linear(2, 2), torch.zeros(0, 2), labels, n_train=5, loss_targets=None)
    assert out == dict.fromkeys(METRIC_KEYS) | {"n_eval": 0, "n_train": 5}


# ---- the eval split ----

IDS = [f"item-{i}" for i in range(5000)]


def test_split_eval_deterministic_and_near_fraction() -> None:
    a = split_eval(IDS, seed=7, eval_fraction=0.2)
    assert a.dtype == bool and a.shape == (5000,)
    assert np.array_equal(a, split_eval(IDS, seed=7, eval_fraction=0.2))
    # Binomial(5000, 0.2): sd = sqrt(5000 * 0.2 * 0.8) = 28.3 items, i.e. 0.0057; allow ~5 sd.
    assert abs(a.mean() - 0.2) < 0.03
    assert abs(split_eval(IDS, seed=7, eval_fraction=0.5).mean() - 0.5) < 0.035


def test_split_eval_per_item_and_seed() -> None:
    a = split_eval(IDS, seed=1, eval_fraction=0.3)
    # An item's side depends on (item id, seed) only: a subset or reordering keeps it.
    assert np.array_equal(split_eval(IDS[::-1][:100], 1, 0.3), a[::-1][:100])
    b = split_eval(IDS, seed=2, eval_fraction=0.3)
    assert not np.array_equal(a, b)
    assert 0.2 < (a != b).mean() < 0.6  # independent splits disagree on ~2 * 0.3 * 0.7 = 42%
    # A larger fraction only adds items (same hash, higher threshold).
    assert not (a & ~split_eval(IDS, seed=1, eval_fraction=0.4)).any()


@pytest.mark.slow
def test_split_eval_same_in_another_process() -> None:
    code = (
        "from app.training.data import split_eval; import sys; "
        "sys.stdout.write(''.join('1' if v else '0' "
        "for v in split_eval([f'item-{i}' for i in range(200)], 3, 0.25)))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # str hashes differ; blake2b must not
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    here = "".join("1" if v else "0" for v in split_eval(IDS[:200], 3, 0.25))
    assert out.stdout == here


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_split_eval_rejects_bad_fraction(fraction: float) -> None:
    with pytest.raises(ValueError):
        split_eval(IDS[:3], 0, fraction)


# ---- TrainingData ----


def test_build_training_data_drops_items_without_votes() -> None:
    counts = np.array([[1, 3], [0, 0], [2, 2]])
    data = build_training_data(
        ["a", "b", "c"], np.ones((3, 4)), counts, np.array([1, 0, -1]), {"method": "normalized"}
    )
    assert data.item_ids == ["a", "c"]
    assert data.features.dtype == np.float32 and data.features.shape == (2, 4)
    np.testing.assert_allclose(data.targets, [[0.25, 0.75], [0.5, 0.5]])
    assert data.gold.tolist() == [1, -1]


def test_training_data_validates_shapes() -> None:
    with pytest.raises(ValueError, match="features"):
        TrainingData(["a"], np.ones((2, 3)), np.ones((1, 2)), np.full((1, 2), 0.5), np.zeros(1))
    with pytest.raises(ValueError, match="vote"):
        TrainingData(["a"], np.ones((1, 3)), np.zeros((1, 2)), np.full((1, 2), 0.5), np.zeros(1))
