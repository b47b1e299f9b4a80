"""The reliability diagram a training job's metrics carry (shown on the job's dashboard page)."""

from __future__ import annotations

import numpy as np
import pytest

from app.training.metrics import ECE_BINS, expected_calibration_error, reliability_bins


def test_bins_match_the_ece_they_explain() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (500, 4))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    gold = rng.integers(0, 4, 500)
    bins = reliability_bins(probs, gold)
    assert len(bins) == ECE_BINS and sum(b["count"] for b in bins) == 500
    ece = sum(b["count"] * abs(b["accuracy"] - b["confidence"]) for b in bins) / 500
    assert ece == pytest.approx(expected_calibration_error(probs, gold))
    conf = probs.max(1)
    for b in bins:
        inside = (conf > b["lower"]) & (conf <= b["upper"])
        assert b["count"] == inside.sum()
        if b["count"]:
            assert b["confidence"] == pytest.approx(conf[inside].mean())
            assert b["accuracy"] == pytest.approx((probs.argmax(1) == gold)[inside].mean())


def test_perfect_and_empty() -> None:
    probs = np.eye(3)[[0, 1, 2, 0]]
    bins = reliability_bins(probs, np.array([0, 1, 2, 0]))
    top = bins[-1]
    assert top["count"] == 4 and top["accuracy"] == 1.0 and top["confidence"] == 1.0
    assert reliability_bins(np.zeros((0, 3)), np.zeros(0, int)) == []
