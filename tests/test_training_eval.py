"""Evaluation a reviewer would trust (issue 12): three-way split, new metrics checked against
scikit-learn or by hand, temperature scaling, the gold-only test split."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, log_loss, recall_score

from app.training.config import TrainingConfig
from app.training.data import (
    TEST,
    TRAIN,
    VALIDATION,
    TrainingData,
    build_training_data,
    fold_of,
    split_items,
)
from app.training.metrics import METRIC_KEYS, compute_metrics
from app.training.trainer import fit_temperature, train

IDS = [f"item-{i}" for i in range(4000)]
torch.set_num_threads(1)  # 2 shared cores: more threads only contend


def test_new_metrics_against_sklearn_and_by_hand() -> None:
    rng = np.random.default_rng(3)
    n, k = 200, 4
    logits = rng.normal(0, 2, (n, k))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    gold = rng.integers(0, k - 1, n)  # class 3 never gold: per-class None, and macro-F1 labels
    counts = rng.integers(0, 4, (n, k))
    counts[counts.sum(axis=1) == 0, 0] = 1
    m = compute_metrics(probs, counts, gold, n_train=0)
    pred = probs.argmax(axis=1)
    assert m["macro_f1"] == pytest.approx(f1_score(gold, pred, average="macro"), abs=1e-12)
    assert m["nll"] == pytest.approx(log_loss(gold, probs, labels=range(k)), abs=1e-12)
    recall = recall_score(gold, pred, average=None, labels=range(k - 1))
    assert m["per_class_accuracy"][: k - 1] == pytest.approx(list(recall), abs=1e-12)
    assert m["per_class_accuracy"][k - 1] is None
    brier = np.mean([((probs[i] - np.eye(k)[gold[i]]) ** 2).sum() for i in range(n)])
    assert m["brier"] == pytest.approx(brier, abs=1e-12)
    h = counts / counts.sum(axis=1, keepdims=True)
    assert m["manhattan_human"] == pytest.approx(np.abs(h - probs).sum(axis=1).mean(), abs=1e-12)
    assert tuple(m) == METRIC_KEYS


def test_new_metrics_tiny_hand_example() -> None:
    # p = [0.8, 0.2] gold 0: brier (0.2^2 + 0.2^2) = 0.08; p = [0.4, 0.6] gold 0: 0.36 + 0.36
    probs = np.array([[0.8, 0.2], [0.4, 0.6]])
    counts = np.array([[3, 1], [1, 1]])
    m = compute_metrics(probs, counts, np.array([0, 0]), n_train=0)
    assert m["brier"] == pytest.approx((0.08 + 0.72) / 2)
    # humans [0.75, 0.25] vs [0.8, 0.2]: 0.1; [0.5, 0.5] vs [0.4, 0.6]: 0.2
    assert m["manhattan_human"] == pytest.approx(0.15)
    # predictions 0, 1; gold 0, 0: F1(class 0) = 2*1/(1+2) = 2/3, F1(class 1) = 0
    assert m["macro_f1"] == pytest.approx(1 / 3)
    assert m["per_class_accuracy"] == [0.5, None]


def test_three_way_split_is_deterministic_disjoint_and_sized() -> None:
    s = split_items(IDS, 7, 0.15, 0.2)
    assert np.array_equal(s, split_items(IDS, 7, 0.15, 0.2))
    assert abs((s == TEST).mean() - 0.2) < 0.03 and abs((s == VALIDATION).mean() - 0.15) < 0.03
    # an item keeps its side whatever the other items are
    assert np.array_equal(split_items(IDS[::-1][:500], 7, 0.15, 0.2), s[::-1][:500])
    # growing the test share only moves items into test
    bigger = split_items(IDS, 7, 0.15, 0.3)
    assert ((s == TEST) <= (bigger == TEST)).all()
    assert not np.array_equal(s, split_items(IDS, 8, 0.15, 0.2))
    folds = fold_of(IDS, 7, 5)
    assert set(np.unique(folds)) == set(range(5)) and np.array_equal(folds, fold_of(IDS, 7, 5))
    with pytest.raises(ValueError):
        split_items(IDS[:3], 0, 0.5, 0.5)


def test_config_fractions_validated_and_legacy_eval_fraction() -> None:
    with pytest.raises(ValueError, match="test_fraction"):
        TrainingConfig(validation_fraction=0.6, test_fraction=0.4)
    assert TrainingConfig(eval_fraction=0.2).fractions == (0.1, 0.1)


def test_temperature_scaling_recovers_a_known_temperature() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, (20000, 5))
    p = np.exp(z / 2.5) / np.exp(z / 2.5).sum(axis=1, keepdims=True)
    y = (p.cumsum(axis=1) > rng.random((len(p), 1))).argmax(axis=1)
    t = fit_temperature(z, np.eye(5)[y])
    assert t == pytest.approx(2.5, rel=0.05)


def _blobs(n: int = 600, extra: int = 150, seed: int = 0) -> TrainingData:
    rng = np.random.default_rng(seed)
    k = 3
    truth = rng.integers(0, k, n + extra)
    centers = rng.normal(0, 2.0, (k, 5))
    x = (centers[truth] + rng.normal(0, 1.3, (n + extra, 5))).astype(np.float32)
    counts = np.zeros((n, k), np.int64)
    for i in range(n):
        for _ in range(3):
            lab = truth[i] if rng.random() < 0.7 else rng.integers(0, k)
            counts[i, lab] += 1
    return build_training_data(
        [f"v{i}" for i in range(n)],
        x[:n],
        counts,
        truth[:n],
        {"method": "normalized"},
        extra=([f"g{i}" for i in range(extra)], x[n:], truth[n:], None),
    )


SMALL = {
    "model": {"kind": "linear"},
    "epochs": 40,
    "early_stopping": 5,
    "lr": 0.05,
    "device": "cpu",
}


def test_reported_figures_are_on_test_items_not_the_early_stopping_split() -> None:
    """Defect 1: early stopping picked its epoch on the split the figures were reported on."""
    data = _blobs()
    result = train(TrainingConfig(**SMALL, temperature_scaling=True), data)
    m, p = result.metrics, result.predictions
    val_ids, test_ids = set(p["validation_ids"].tolist()), set(p["test_ids"].tolist())
    assert val_ids and test_ids and not (val_ids & test_ids)
    split = split_items(data.item_ids, 0, 0.15, 0.15)
    assert test_ids == {data.item_ids[i] for i in np.flatnonzero(split == TEST)}
    assert m["splits"]["train"] == int((split == TRAIN).sum())
    rows = [data.item_ids.index(i) for i in p["test_ids"].tolist()]
    again = compute_metrics(p["test_probs"], data.counts[rows], data.gold[rows], n_train=0)
    assert again["accuracy"] == m["test"]["accuracy"] and again["nll"] == m["test"]["nll"]
    # early stopping looked at validation only: the best epoch is the validation minimum
    losses = [h["val_loss"] for h in m["history"]]
    assert m["best_val_loss"] == min(losses)
    assert m["history"][m["best_epoch"] - 1]["n_eval"] == len(val_ids)
    # temperature scaling: fitted on validation, reported beside the raw model
    cal = m["calibrated"]
    assert cal["fitted_on"] == "validation" and cal["temperature"] > 0
    assert cal["validation"]["ce_human"] <= m["validation"]["ce_human"] + 1e-9
    assert cal["test"]["accuracy"] == m["test"]["accuracy"]  # T > 0 keeps the argmax


def test_gold_items_without_votes_form_the_test_gold_split() -> None:
    """Defect 3: items with gold and features but no votes could not be used for evaluation."""
    data = _blobs()
    result = train(TrainingConfig(**SMALL), data)
    m, p = result.metrics, result.predictions
    assert m["splits"]["test_gold"] == 150 and m["test_gold"]["n_eval"] == 150
    assert m["test_gold"]["accuracy"] > 0.6  # separable blobs; chance is 1/3
    acc = float((p["test_gold_probs"].argmax(axis=1) == data.extra_gold).mean())
    assert m["test_gold"]["accuracy"] == pytest.approx(acc)
    assert m["test_gold"]["kl_human"] is None  # no votes there: no human distribution
    off = train(TrainingConfig(**SMALL, gold_test=False), data).metrics
    assert off["test_gold"] is None


def test_no_validation_split_means_no_early_stopping() -> None:
    data = _blobs(200, 0)
    cfg = TrainingConfig(**(SMALL | {"epochs": 5}), validation_fraction=0.0)
    m = train(cfg, data).metrics
    assert m["best_epoch"] is None and m["epochs_run"] == 5 and m["splits"]["validation"] == 0
    assert math.isfinite(m["test"]["accuracy"])
