"""Training per task type end to end: multi-label and ordinal projects over HTTP, a real worker
process, real PostgreSQL. Losses and metrics by hand: tests/test_task_type_training_metrics.py."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from app.training.snapshot import targets_hash
from tests.helpers import Workers, migrated_database
from tests.test_training_jobs import TERMINAL, wait_for

pytestmark = pytest.mark.slow  # starts a worker process

TINY = {"epochs": 20, "model": {"kind": "linear"}, "batch_size": 16, "lr": 0.05}


# Workers take every job queued in their database: this module has one of its own.
@pytest.fixture(scope="module")
def database_url(server_url: str) -> Iterator[str]:
    with migrated_database(server_url, prefix="softlabels_types_train") as url:
        yield url


@pytest.fixture(scope="module")
def client(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(
        DATABASE_URL=database_url, data_dir=tmp_path_factory.mktemp("types"), auth=False
    )
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture(scope="module")
def worker(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    w = Workers(database_url, tmp_path_factory.mktemp("worker"))
    w.start()
    yield w
    w.stop_all()


def post(client: TestClient, path: str, body: dict, status: int = 200) -> dict:
    r = client.post(path, json=body)
    assert r.status_code == status, r.text
    return dict(r.json())


def make_project(client: TestClient, task_type: str, classes: list[str]) -> str:
    name = f"{task_type}-{uuid.uuid4().hex[:8]}"
    post(client, "/v1/projects", {"name": name, "task_type": task_type, "classes": classes}, 201)
    return name


@pytest.fixture(scope="module")
def topics(client: TestClient) -> str:
    """120 items, 3 features; class k applies when feature k > 0, and each of 3 voters ticks it
    with probability .8 then (.1 otherwise); some voters tick nothing."""
    name = make_project(client, "multi_label", ["sports", "politics", "tech"])
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (120, 3))
    items = [{"id": f"i{i}", "features": x[i].tolist()} for i in range(120)]
    post(client, f"/v1/projects/{name}/items", {"items": items})
    classes = ["sports", "politics", "tech"]
    rate = np.where(x > 0, 0.8, 0.1)
    votes = [
        {
            "item": f"i{i}",
            "worker": f"w{w}",
            "label": [c for k, c in enumerate(classes) if rng.random() < rate[i, k]],
        }
        for i in range(120)
        for w in range(3)
    ]
    post(client, f"/v1/projects/{name}/votes", {"votes": votes})
    return name


@pytest.fixture(scope="module")
def severity(client: TestClient) -> str:
    """120 items on a 1-5 scale, the level round(1.5 x + 2) + 1; 3 voters each, off by one
    level two times in three; gold (that level) on every item."""
    name = make_project(client, "ordinal", ["1", "2", "3", "4", "5"])
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (120, 2))
    level = np.clip(np.round(1.5 * x[:, 0] + 2), 0, 4).astype(int)
    items = [
        {"id": f"s{i}", "features": x[i].tolist(), "gold": str(level[i] + 1)} for i in range(120)
    ]
    post(client, f"/v1/projects/{name}/items", {"items": items})
    votes = [
        {"item": f"s{i}", "worker": f"r{w}", "label": str(np.clip(level[i] + d, 0, 4) + 1)}
        for i in range(120)
        for w, d in enumerate(rng.integers(-1, 2, 3))
    ]
    post(client, f"/v1/projects/{name}/votes", {"votes": votes})
    return name


def run_job(client: TestClient, project: str, config: dict) -> dict:
    job = post(client, f"/v1/projects/{project}/training-jobs", config, 202)
    done = wait_for(client, job["id"], TERMINAL)
    assert done["status"] == "succeeded", done
    return done


def test_multi_label_job_trains_per_class_sigmoids(
    client: TestClient, topics: str, worker: Workers
) -> None:
    job = run_job(client, topics, {**TINY, "labels": {"method": "binary-relevance"}})
    assert job["config"]["loss"] == "soft-bce"  # the type's soft loss: none was named
    assert job["config"]["labels"]["max_iter"] == 100  # resolved as the multi-label method
    test = job["metrics"]["test"]
    for key in ("brier", "macro_f1", "bce_human", "kl_human", "manhattan_human"):
        assert isinstance(test[key], float), key
    assert len(test["per_class_f1"]) == 3 and test["macro_f1"] > 0.6
    assert job["metrics"]["test_gold"] is None and "accuracy" not in test

    # Same labels everywhere: the job's targets are the export's per-class probabilities.
    r = client.get(f"/v1/projects/{topics}/soft-labels", params={"method": "binary-relevance"})
    rows = {row["item"]: row["probs"] for row in map(json.loads, r.text.splitlines())}
    ids = list(rows)  # the export's order is the job's: the items' database ids
    expected = targets_hash(ids, np.asarray([rows[i] for i in ids]))
    assert job["metrics"]["targets"]["hash"] == expected

    pred = post(client, f"/v1/training-jobs/{job['id']}/predict", {"items": ["i0", "i1", "i2"]})
    probs = np.asarray(pred["probs"])
    assert pred["task_type"] == "multi_label" and probs.shape == (3, 3)
    assert ((probs > 0) & (probs < 1)).all() and not np.allclose(probs.sum(axis=1), 1.0)
    # A feature vector pointing at sports only: its sigmoid is high, the others low.
    pred = post(client, f"/v1/training-jobs/{job['id']}/predict", {"features": [[3, -3, -3]]})
    assert pred["probs"][0][0] > 0.7 and max(pred["probs"][0][1:]) < 0.3


def test_hard_bce_is_the_thresholded_baseline(
    client: TestClient, topics: str, worker: Workers
) -> None:
    soft = run_job(client, topics, {**TINY, "loss": "soft-bce"})["metrics"]["test"]
    hard = run_job(client, topics, {**TINY, "loss": "hard-bce"})["metrics"]["test"]
    # Trained on 0/1 targets, the sigmoids move away from the voters' 1/3 and 2/3 shares.
    assert soft["bce_human"] < hard["bce_human"]


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"loss": "soft-ce"}, "loss"),
        ({"loss": "squared-emd"}, "loss"),
        ({"labels": {"method": "majority"}}, "labels.method"),
        ({"labels": {"method": "tick-propensity", "pseudo_votes": -1}}, "labels.pseudo_votes"),
        ({"lwr": {"k": 2}}, "lwr"),
        ({"temperature_scaling": True}, "temperature_scaling"),
        ({"oos_folds": 3}, "oos_folds"),
    ],
)
def test_multi_label_configs_that_cannot_train_are_422(
    client: TestClient, topics: str, config: dict, field: str
) -> None:
    r = client.post(f"/v1/projects/{topics}/training-jobs", json=config)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "validation_error"
    assert r.json()["errors"][0]["field"] == field, r.json()


def test_ordinal_job_with_squared_emd(client: TestClient, severity: str, worker: Workers) -> None:
    job = run_job(
        client,
        severity,
        {**TINY, "loss": "squared-emd", "labels": {"method": "distance-smoothed"}},
    )
    test = job["metrics"]["test"]
    for key in ("wasserstein_human", "rps_human", "mae_human", "mae", "accuracy", "kl_human"):
        assert isinstance(test[key], float), key
    assert test["mae"] < 0.6 and test["wasserstein_human"] < 0.8
    pred = post(client, f"/v1/training-jobs/{job['id']}/predict", {"items": ["s0"]})
    assert pred["task_type"] == "ordinal" and sum(pred["probs"][0]) == pytest.approx(1.0)
    # squared-emd is for scales only; an ordinal method on an ordinal project only.
    single = make_project(client, "single", ["a", "b"])
    r = client.post(f"/v1/projects/{single}/training-jobs", json={"loss": "squared-emd"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "loss", r.text
    r = client.post(
        f"/v1/projects/{single}/training-jobs", json={"labels": {"method": "rater-bias"}}
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "labels.method", r.text


def sweep(client: TestClient, project: str, body: dict) -> dict:
    created = post(client, f"/v1/projects/{project}/training-sweeps", body, 202)
    for job_id in (c["job_id"] for c in created["cells"]):
        assert wait_for(client, job_id, TERMINAL, timeout=180)["status"] == "succeeded"
    r = client.get(f"/v1/projects/{project}/training-sweeps/{created['id']}")
    assert r.status_code == 200 and r.json()["status"] == "done", r.text
    return dict(r.json())


def test_sweeps_rank_recipes_by_the_types_metric(
    client: TestClient, topics: str, severity: str, worker: Workers
) -> None:
    base = {"base": TINY, "seeds": [0], "n_boot": 200}
    multi = sweep(client, topics, {**base, "labels": [{"method": "normalized"}]})
    rep = multi["report"]
    assert rep["metric"] == "bce_human" and not rep["higher_is_better"]
    assert "bce_human" in rep["metric_note"]
    assert multi["config"]["losses"] == ["soft-bce", "hard-bce"]
    assert rep["baseline"] == "hard-bce on normalized"
    means = [r["mean"] for r in rep["ranking"]]
    assert means == sorted(means) and len(means) == 2
    soft = next(r for r in rep["ranking"] if not r["baseline"])
    assert soft["name"] == "soft-bce on normalized" and soft["vs_baseline"]["n_items"] > 5
    assert set(soft["other_metrics"]) == {"kl_human", "manhattan_human", "mer", "macro_f1", "brier"}

    # A baseline given in part: the rest is the type's (hard-ce), and its cells join the grid.
    body = {**base, "labels": [{"method": "normalized"}]}
    scale = sweep(client, severity, {**body, "baseline": {"labels": {"method": "rater-bias"}}})
    rep = scale["report"]
    assert rep["metric"] == "rps_human" and rep["baseline"] == "hard-ce on rater-bias"
    assert sorted(r["name"] for r in rep["ranking"]) == [
        "hard-ce on normalized",
        "hard-ce on rater-bias",
        "soft-ce on normalized",
        "squared-emd on normalized",
    ]
    assert all(r["vs_baseline"] is not None for r in rep["ranking"] if not r["baseline"])
    # A metric, loss or baseline that does not fit the project's type is a 422 naming it.
    r = client.post(
        f"/v1/projects/{severity}/training-sweeps", json={**base, "metric": "bce_human"}
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "metric", r.text
    r = client.post(f"/v1/projects/{topics}/training-sweeps", json={**base, "losses": ["soft-ce"]})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "losses", r.text
    r = client.post(
        f"/v1/projects/{topics}/training-sweeps",
        json={**base, "baseline": {"labels": {"method": "majority"}, "loss": "hard-bce"}},
    )
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == "baseline.labels.method", r.text


def test_a_method_name_is_resolved_in_the_projects_type(client: TestClient, topics: str) -> None:
    """ "auto" is a method of every type, with other parameters per type: the request body is
    parsed before the project is known, and the job must get the multi-label one."""
    job = post(client, f"/v1/projects/{topics}/training-jobs", {"labels": {"method": "auto"}}, 202)
    assert set(job["config"]["labels"]) == {"method", "holdout", "seed"}, job["config"]
    client.post(f"/v1/training-jobs/{job['id']}/cancel")  # queued or running: either ends it
