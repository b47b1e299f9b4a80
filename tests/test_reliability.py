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


def test_only_a_lost_connection_is_database_unavailable() -> None:
    """A statement the server cancelled is `database_timeout`; a database error about the
    statement itself is a bug (500 with its traceback logged), never "database unavailable"."""
    import psycopg
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from app.api.error_handlers import install_error_handlers
    from app.logging import RequestContext

    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(RequestContext)

    @app.get("/timeout")
    def timeout() -> None:
        raise psycopg.errors.QueryCanceled("canceling statement due to statement timeout")

    @app.get("/gone")
    def gone() -> None:
        raise psycopg.OperationalError("connection refused")

    @app.get("/lock")
    def lock() -> None:
        raise psycopg.errors.LockNotAvailable("could not obtain lock")

    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/timeout")
        assert (r.status_code, r.json()["error"]) == (503, "database_timeout")
        r = client.get("/gone")
        assert (r.status_code, r.json()["error"]) == (503, "database_unavailable")
        r = client.get("/lock")
        assert (r.status_code, r.json()["error"]) == (500, "internal_error")
