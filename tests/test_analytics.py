"""Worker-model soft labels, stats, worker estimates and routing, over HTTP on real PostgreSQL."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from statsmodels.stats.inter_rater import fleiss_kappa

from app.config import Settings
from app.main import create_app

K = 3
WORKER_METHODS = ["dawid-skene", "one-coin", "glad", "mace", "wawa"]


@pytest.fixture(scope="module")
def crowd(client: TestClient) -> dict:
    """120 items x 5 votes from 8 good workers (90% right) and 2 spammers (uniform)."""
    name = f"crowd-{uuid.uuid4().hex[:8]}"
    client.post("/v1/projects", json={"name": name, "classes": ["x", "y", "z"]})
    rng = np.random.default_rng(1)
    truth = rng.integers(0, K, 120)
    votes = []
    for i in range(120):
        for w in rng.choice(10, size=5, replace=False):
            if w >= 8:
                label = int(rng.integers(K))
            else:
                label = int(truth[i]) if rng.random() < 0.9 else int(rng.integers(K))
            votes.append({"item": f"i{i}", "worker": f"w{w}", "label": label})
    r = client.post(f"/v1/projects/{name}/votes", json={"votes": votes})
    assert r.status_code == 200
    counts = np.zeros((120, K), int)
    for v in votes:
        counts[int(v["item"][1:]), v["label"]] += 1
    return {"name": name, "truth": truth, "votes": votes, "counts": counts}


@pytest.mark.parametrize("method", WORKER_METHODS)
def test_worker_methods_serve_and_export_the_same(client, crowd, method) -> None:
    p = crowd["name"]
    r = client.get(f"/v1/projects/{p}/soft-labels?method={method}&format=jsonl")
    assert r.status_code == 200 and r.headers["x-stale"] == "false"
    rows = [json.loads(line) for line in r.text.splitlines()]
    assert len(rows) == 120
    probs = np.array([row["probs"] for row in rows])
    assert np.isfinite(probs).all() and np.allclose(probs.sum(axis=1), 1)
    by_item = {row["item"]: row["probs"] for row in rows}
    one = client.get(f"/v1/projects/{p}/items/i7/soft-label?method={method}").json()
    assert one["method"] == method and one["stale"] is False
    np.testing.assert_allclose(one["probs"], by_item["i7"], rtol=0, atol=1e-12)
    # Better than chance on this crowd, by a wide margin.
    pred = np.array([np.argmax(by_item[f"i{i}"]) for i in range(120)])
    assert (pred == crowd["truth"]).mean() > 0.85


def test_worker_method_bad_params(client, crowd) -> None:
    p = crowd["name"]
    for query, field in [
        ("method=dawid-skene&max_iter=-1", "max_iter"),
        ("method=dawid-skene&temperature=2", "temperature"),
        ("method=glad&tol=abc", "tol"),
        ("method=nope", "method"),
    ]:
        r = client.get(f"/v1/projects/{p}/items/i0/soft-label?{query}")
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == field, r.text


def test_stats_match_references(client, crowd) -> None:
    s = client.get(f"/v1/projects/{crowd['name']}/stats").json()
    assert (s["items"], s["votes"], s["workers"]) == (120, 600, 10)
    assert s["votes_per_item"] == [{"n_votes": 5, "items": 120}]
    assert s["fleiss_kappa"] == pytest.approx(fleiss_kappa(crowd["counts"]), abs=1e-9)
    import krippendorff

    data = np.full((10, 120), np.nan)
    for v in crowd["votes"]:
        data[int(v["worker"][1:]), int(v["item"][1:])] = v["label"]
    ref = krippendorff.alpha(reliability_data=data, level_of_measurement="nominal")
    assert s["krippendorff_alpha"] == pytest.approx(ref, abs=1e-9)
    p = crowd["counts"] / 5
    ent = -(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0)).sum(axis=1) / np.log(K)
    assert s["mean_normalized_entropy"] == pytest.approx(ent.mean(), abs=1e-12)


def test_fleiss_null_with_reason_for_unequal_votes(client, project) -> None:
    client.post(
        f"/v1/projects/{project}/votes",
        json={
            "votes": [
                {"item": "a", "worker": "1", "label": 0},
                {"item": "a", "worker": "2", "label": 0},
                {"item": "b", "worker": "1", "label": 1},
            ]
        },
    )
    s = client.get(f"/v1/projects/{project}/stats").json()
    assert s["fleiss_kappa"] is None and s["fleiss_kappa_reason"]


def test_workers_flag_spammers_and_rank_skill(client, crowd) -> None:
    r = client.get(f"/v1/projects/{crowd['name']}/workers?method=dawid-skene")
    assert r.status_code == 200
    body = r.json()
    assert body["spammer_rule"]
    by = {w["worker"]: w for w in body["workers"]}
    assert sum(w["n_votes"] for w in by.values()) == 600
    good = [by[f"w{i}"] for i in range(8)]
    spam = [by["w8"], by["w9"]]
    assert all(s["spammer"] for s in spam) and not any(g["spammer"] for g in good)
    assert min(g["skill"] for g in good) > max(s["skill"] for s in spam)
    assert min(g["agreement"] for g in good) > max(s["agreement"] for s in spam)
    one = client.get(f"/v1/projects/{crowd['name']}/workers/w0?method=dawid-skene").json()
    conf = np.array(one["confusion"])
    assert conf.shape == (K, K) and one["confusion_source"] == "model"
    np.testing.assert_allclose(conf.sum(axis=1), 1, atol=1e-9)
    assert one["class_accuracy"] == pytest.approx(np.diag(conf).tolist())
    glad = client.get(f"/v1/projects/{crowd['name']}/workers/w9?method=glad").json()
    assert glad["confusion_source"] == "empirical"
    assert client.get(f"/v1/projects/{crowd['name']}/workers/nobody").status_code == 404
    r = client.get(f"/v1/projects/{crowd['name']}/workers?method=normalized")
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "method"


def test_next_items_routing(client, project) -> None:
    votes = [
        {"item": "split", "worker": "a", "label": 0},
        {"item": "split", "worker": "b", "label": 1},
        {"item": "sure", "worker": "a", "label": 2},
        {"item": "sure", "worker": "b", "label": 2},
        {"item": "one", "worker": "c", "label": 0},
    ]
    client.post(f"/v1/projects/{project}/votes", json={"votes": votes})
    client.post(f"/v1/projects/{project}/items", json={"items": [{"id": "fresh"}]})
    url = f"/v1/projects/{project}/items/next"
    got = client.get(url).json()["items"]
    assert [g["item"] for g in got][:2] == ["fresh", "split"]  # no votes ranks first
    assert got[-1]["item"] in ("sure", "one") and got[0]["uncertainty"] == 1.0
    assert [g["item"] for g in client.get(url, params={"worker": "a"}).json()["items"]] == [
        "fresh",
        "one",
    ]
    assert {g["item"] for g in client.get(url, params={"max_votes": 2}).json()["items"]} == {
        "fresh",
        "one",
    }
    fewest = client.get(url, params={"strategy": "fewest-votes", "limit": 2}).json()["items"]
    assert [g["item"] for g in fewest] == ["fresh", "one"]
    margin = client.get(url, params={"strategy": "margin", "limit": 2}).json()["items"]
    assert margin[1]["item"] == "split" and margin[1]["uncertainty"] == pytest.approx(1.0)
    assert client.get(url, params={"strategy": "random"}).status_code == 422


@pytest.mark.slow
def test_large_project_reads_never_wait_on_a_fit(
    settings: Settings, isolated_database_url: str, tmp_path: Path
) -> None:
    """Past the size threshold, a read answers 503 fit_pending (no fit yet) or the last fit
    marked stale, while a worker refits."""
    from tests.helpers import Workers

    database_url = isolated_database_url  # the worker must see only this test's jobs
    big = settings.model_copy(update={"fit_sync_max_votes": 0, "database_url": database_url})
    workers = Workers(database_url, tmp_path)
    with TestClient(create_app(big)) as c:
        c.headers.update(_auth_headers(settings))
        name = f"big-{uuid.uuid4().hex[:8]}"
        c.post("/v1/projects", json={"name": name, "classes": ["a", "b"]})
        votes = [
            {"item": f"i{i}", "worker": f"w{w}", "label": (i + w) % 2}
            for i in range(30)
            for w in range(3)
        ]
        c.post(f"/v1/projects/{name}/votes", json={"votes": votes})
        url = f"/v1/projects/{name}/items/i0/soft-label?method=dawid-skene"
        r = c.get(url)
        assert r.status_code == 503 and r.json()["error"] == "fit_pending"
        assert r.headers["retry-after"]
        workers.start()
        try:
            first = _poll(c, url, lambda b: b.get("stale") is False)
            c.post(
                f"/v1/projects/{name}/votes",
                json={"votes": [{"item": "i0", "worker": "w9", "label": 1}]},
            )
            stale = c.get(url).json()
            assert stale["stale"] is True and stale["as_of"] == first["as_of"]
            fresh = _poll(c, url, lambda b: b.get("stale") is False)
            assert fresh["as_of"] == first["as_of"] + 1 and fresh["n_votes"] == 4
        finally:
            workers.stop_all()


def _auth_headers(settings: Settings) -> dict[str, str]:
    key = settings.admin_key.get_secret_value() if getattr(settings, "admin_key", None) else None
    return {"Authorization": f"Bearer {key}"} if key else {}


def _poll(c: TestClient, url: str, ok, timeout: float = 60) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = c.get(url)
        if r.status_code == 200 and ok(r.json()):
            return r.json()
        time.sleep(0.2)
    raise AssertionError(f"never ready: {r.status_code} {r.text}")
