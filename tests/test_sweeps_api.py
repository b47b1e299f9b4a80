"""Issue 12 over HTTP with real workers: same labels in export and jobs, sweeps, and the model
back in labeling (out-of-sample job, crowdlab, activelab routing, /items/suspect, model export)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from app.training.snapshot import targets_hash
from tests.test_training_jobs import TERMINAL, Workers, submit, wait_for

SMALL = {
    "epochs": 15,
    "model": {"kind": "linear"},
    "lr": 0.05,
    "batch_size": 64,
    "device": "cpu",
}


@pytest.fixture
def env(isolated_database_url: str, tmp_path: Path) -> Iterator[tuple[TestClient, Workers]]:
    settings = Settings(DATABASE_URL=isolated_database_url, data_dir=tmp_path, auth=False)
    workers = Workers(isolated_database_url, tmp_path)
    with TestClient(create_app(settings)) as client:
        yield client, workers
    workers.stop_all()


def make_project(
    client: TestClient, n: int = 300, unlabeled: int = 40, planted: int = 0, seed: int = 0
) -> tuple[str, list[str]]:
    """Blobs in 6-D, 3 classes, 3 votes per item from 8 workers of mixed skill; `unlabeled`
    more items with features (gold on half) and no votes; `planted` items voted all wrong."""
    name = f"loop-{uuid.uuid4().hex[:8]}"
    assert (
        client.post("/v1/projects", json={"name": name, "classes": ["a", "b", "c"]}).status_code
        == 201
    )
    rng = np.random.default_rng(seed)
    total = n + unlabeled
    gold = rng.integers(0, 3, total)
    x = rng.normal(0, 2.2, (3, 6))[gold] + rng.normal(0, 1, (total, 6))
    items = [
        {"id": f"i{i}", "features": x[i].tolist()}
        | ({"gold": int(gold[i])} if i < n or i % 2 else {})
        for i in range(total)
    ]
    assert client.post(f"/v1/projects/{name}/items", json={"items": items}).status_code == 200
    skill = np.linspace(0.45, 0.9, 8)
    bad = set(range(planted))
    votes = []
    for i in range(n):
        for w in rng.choice(8, 3, replace=False):
            if i in bad:
                label = int((gold[i] + 1) % 3)
            else:
                label = int(gold[i]) if rng.random() < skill[w] else int(rng.integers(0, 3))
            votes.append({"item": f"i{i}", "worker": f"w{w}", "label": label})
    assert client.post(f"/v1/projects/{name}/votes", json={"votes": votes}).status_code == 200
    return name, [f"i{i}" for i in range(planted)]


def export_rows(client: TestClient, project: str, **params: object) -> list[dict]:
    r = client.get(f"/v1/projects/{project}/soft-labels", params=params)
    assert r.status_code == 200, r.text
    return [json.loads(line) for line in r.text.splitlines()]


@pytest.mark.slow
def test_job_trains_on_the_labels_the_api_exports(env) -> None:
    """Defect 2: a job refitted the worker model from scratch while the API served a fit warm-
    started from the previous votes; EM could end elsewhere. Now the job uses the served fit
    and records a hash of its targets, which must equal the export's for that votes_version."""
    client, workers = env
    project, _ = make_project(client, n=200, unlabeled=0)
    export_rows(client, project, method="dawid-skene")  # the API fits (votes_version v)
    extra = [{"item": f"i{i}", "worker": "w-late", "label": i % 3} for i in range(0, 200, 3)]
    client.post(f"/v1/projects/{project}/votes", json={"votes": extra})
    exported = export_rows(client, project, method="dawid-skene")  # warm-started at v + 1
    version = client.get(
        f"/v1/projects/{project}/items/i0/soft-label", params={"method": "dawid-skene"}
    ).json()["as_of"]
    workers.start()
    jobs = {
        method: submit(client, project, {**SMALL, "labels": {"method": method}})
        for method in ("dawid-skene", "normalized")
    }
    for method, job_id in jobs.items():
        job = wait_for(client, job_id, TERMINAL)
        assert job["status"] == "succeeded", job
        targets = job["metrics"]["targets"]
        assert targets["votes_version"] == job["votes_version"] == version
        rows = exported if method == "dawid-skene" else export_rows(client, project, method=method)
        ids = [r["item"] for r in rows]
        probs = np.asarray([r["probs"] for r in rows])
        assert targets["hash"] == targets_hash(ids, probs), method
        assert targets["n_items"] == len(rows)


@pytest.mark.slow
def test_sweep_end_to_end_and_validation(env) -> None:
    client, workers = env
    project, _ = make_project(client, n=240, unlabeled=60)
    bad = client.post(
        f"/v1/projects/{project}/training-sweeps",
        json={"labels": [{"method": "normalized"}, {"method": "softmax", "alpha": 1}]},
    )
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "labels[1].alpha"
    fixed = client.post(f"/v1/projects/{project}/training-sweeps", json={"base": {"seed": 3}})
    assert fixed.status_code == 422 and fixed.json()["errors"][0]["field"] == "base.seed"
    assert client.get(f"/v1/projects/{project}/training-jobs").json()["jobs"] == []  # none queued
    body = {
        "labels": [{"method": "normalized"}, {"method": "dawid-skene"}],
        "losses": ["soft-ce"],
        "seeds": [0, 1],
        "base": SMALL,
        "metric": "accuracy",
        "n_boot": 200,
    }
    r = client.post(f"/v1/projects/{project}/training-sweeps", json=body)
    assert r.status_code == 202, r.text
    sweep = r.json()
    assert len(sweep["cells"]) == 6  # 2 methods x 1 loss x 2 seeds + the baseline's 2 seeds
    assert sweep["status"] == "running"
    workers.start()
    workers.start()
    deadline = time.monotonic() + 120
    while sweep["status"] != "done" and time.monotonic() < deadline:
        time.sleep(0.5)
        sweep = client.get(f"/v1/projects/{project}/training-sweeps/{sweep['id']}").json()
    assert sweep["status"] == "done" and sweep["jobs"] == {"succeeded": 6}, sweep["jobs"]
    rep = sweep["report"]
    assert rep["split"] == "test_gold"  # the 30 gold items with no votes
    # the recommendation is the recipe with the best mean test metric, from the jobs themselves
    means: dict[str, list[float]] = {}
    for cell in sweep["cells"]:
        job = client.get(f"/v1/training-jobs/{cell['job_id']}").json()
        means.setdefault(cell["name"], []).append(job["metrics"]["test_gold"]["accuracy"])
        assert job["metrics"]["test_gold"]["n_eval"] == 30
    best = max(means, key=lambda k: (np.mean(means[k]), k))
    assert rep["recommended"]["name"] == rep["ranking"][0]["name"]
    assert np.mean(means[rep["recommended"]["name"]]) == pytest.approx(np.mean(means[best]))
    assert rep["recommended"]["reason"]
    for row in rep["ranking"]:
        assert row["mean"] == pytest.approx(np.mean(means[row["name"]]))
        if not row["baseline"]:
            d = row["vs_baseline"]
            assert d["low"] <= d["mean"] <= d["high"] and d["n_items"] == 30
    assert client.get(f"/v1/projects/{project}/training-sweeps/999999").status_code == 404


@pytest.mark.slow
def test_model_in_the_loop(env) -> None:
    client, workers = env
    project, planted = make_project(client, n=300, unlabeled=40, planted=25)
    r = client.get(f"/v1/projects/{project}/items/suspect")
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "job"
    early = client.post(
        f"/v1/projects/{project}/training-jobs", json={"labels": {"method": "crowdlab"}}
    )
    assert early.status_code == 422 and early.json()["errors"][0]["field"] == "labels.job"
    workers.start()
    cfg = {**SMALL, "oos_folds": 4, "predict_unlabeled": True}
    job_id = submit(client, project, cfg)
    job = wait_for(client, job_id, TERMINAL, timeout=120)
    assert job["status"] == "succeeded", job

    suspect = client.get(f"/v1/projects/{project}/items/suspect", params={"limit": 25}).json()
    assert suspect["job"] == job_id and len(suspect["items"]) == 25
    found = {s["item"] for s in suspect["items"]} & set(planted)
    assert len(found) >= 15, (len(found), suspect["items"][:5])  # precision@25 >= 0.6

    crowd = export_rows(client, project, method="crowdlab")
    assert len(crowd) == 300 and all(abs(sum(r["probs"]) - 1) < 1e-9 for r in crowd)
    maj = export_rows(client, project, method="majority")
    gold = {r["item"]: r["gold"] for r in maj}
    acc = {
        name: np.mean([rows["gold"] == "abc"[int(np.argmax(rows["probs"]))] for rows in data])
        for name, data in (("crowdlab", crowd), ("majority", maj))
    }
    assert acc["crowdlab"] >= acc["majority"], acc
    assert all(r["item"] in gold for r in crowd)

    nxt = client.get(
        f"/v1/projects/{project}/items/next",
        params={"strategy": "activelab", "method": "crowdlab", "job": job_id, "limit": 400},
    )
    assert nxt.status_code == 200, nxt.text
    assert len(nxt.json()["items"]) == 340
    assert (
        client.get(
            f"/v1/projects/{project}/items/next", params={"strategy": "activelab"}
        ).status_code
        == 422
    )

    preds = export_rows(client, project, method=f"model:{job_id}")
    assert len(preds) == 40 and all(p["prediction"] is True and p["n_votes"] == 0 for p in preds)
    assert (
        client.get(
            f"/v1/projects/{project}/soft-labels",
            params={"method": f"model:{job_id}", "format": "csv"},
        ).headers["x-predictions"]
        == "true"
    )
    assert (
        client.get(
            f"/v1/projects/{project}/soft-labels", params={"method": "model:999999"}
        ).status_code
        == 404
    )

    # a job can train on the crowdlab labels of that job
    student = submit(client, project, {**SMALL, "labels": {"method": "crowdlab", "job": job_id}})
    done = wait_for(client, student, TERMINAL)
    assert done["status"] == "succeeded", done
    assert done["metrics"]["targets"]["method"] == "crowdlab"
