"""Training jobs end to end: real PostgreSQL, real worker processes, over HTTP."""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.db.functions import ingest_votes
from app.main import create_app
from tests.helpers import Workers, db_rows, migrated_database

pytestmark = pytest.mark.slow  # starts worker processes


# This module runs real workers, which take every queued job in their database: it gets a
# database of its own, so jobs other test modules queue (and never mean to run) are not in it.
@pytest.fixture(scope="module")
def database_url(server_url: str) -> Iterator[str]:
    with migrated_database(server_url, prefix="softlabels_jobs") as url:
        yield url


@pytest.fixture(scope="module")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(DATABASE_URL=database_url, data_dir=tmp_path_factory.mktemp("jobs"), auth=False)


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


TERMINAL = {"succeeded", "failed", "cancelled"}


@pytest.fixture
def workers(database_url: str, tmp_path: Path) -> Iterator[Workers]:
    w = Workers(database_url, tmp_path)
    yield w
    w.stop_all()


@pytest.fixture(scope="module")
def trainable(client: TestClient) -> str:
    return make_trainable(client)


def make_trainable(client: TestClient) -> str:
    """300 items, 6 features, 3 classes, 5 noisy votes each, gold on every item."""
    name = f"train-{uuid.uuid4().hex[:8]}"
    assert (
        client.post("/v1/projects", json={"name": name, "classes": ["a", "b", "c"]}).status_code
        == 201
    )
    rng = np.random.default_rng(0)
    n = 300
    gold = rng.integers(0, 3, n)
    centers = rng.normal(0, 2, (3, 6))
    x = centers[gold] + rng.normal(0, 1, (n, 6))
    items = [{"id": f"i{i}", "features": x[i].tolist(), "gold": int(gold[i])} for i in range(n)]
    assert client.post(f"/v1/projects/{name}/items", json={"items": items}).status_code == 200
    votes = [
        {
            "item": f"i{i}",
            "worker": f"w{w}",
            "label": int(gold[i]) if rng.random() < 0.75 else int(rng.integers(0, 3)),
        }
        for i in range(n)
        for w in range(5)
    ]
    assert client.post(f"/v1/projects/{name}/votes", json={"votes": votes}).status_code == 200
    return name


SMALL = {"epochs": 15, "model": {"kind": "mlp", "hidden": [16], "dropout": 0.0}, "batch_size": 32}


def wait_for(client: TestClient, job_id: int, statuses: set[str], timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/training-jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never reached {statuses}: {job}")


def submit(client: TestClient, project: str, config: dict) -> int:
    r = client.post(f"/v1/projects/{project}/training-jobs", json=config)
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "queued"
    return int(r.json()["id"])


def test_lifecycle(client: TestClient, trainable: str, workers: Workers) -> None:
    workers.start()
    job_id = submit(client, trainable, SMALL)
    job = wait_for(client, job_id, TERMINAL)
    assert job["status"] == "succeeded", job
    m = job["metrics"]
    ev = m["test"]
    for key in (
        "accuracy",
        "nll",
        "ece",
        "accuracy_majority",
        "ce_human",
        "kl_human",
        "n_eval",
        "n_train",
    ):
        assert key in ev
    assert sum(m["splits"][s] for s in ("train", "validation", "test")) == 300
    assert ev["n_eval"] == m["splits"]["test"] and m["validation"]["n_eval"] > 0
    assert ev["accuracy"] > 0.6  # three separable clusters; chance is 1/3
    assert 0 <= ev["ece"] <= 1 and ev["kl_human"] >= 0
    assert len(m["history"]) == 15 and m["history"][-1]["epoch"] == 15
    assert job["progress"]["epoch"] == 15
    assert job["data_hash"] and job["attempts"] == 1
    assert job["started_at"] and job["finished_at"]
    # the model file rebuilds a model that predicts like the endpoint
    blob = client.get(f"/v1/training-jobs/{job_id}/model")
    assert blob.status_code == 200 and "softlabels-job" in blob.headers["content-disposition"]
    from app.training.trainer import load_checkpoint, predict_probs

    model, cfg, _ = load_checkpoint(blob.content)
    assert cfg.epochs == 15
    by_items = client.post(f"/v1/training-jobs/{job_id}/predict", json={"items": ["i0", "i1"]})
    assert by_items.status_code == 200
    feats = db_rows_features(client, trainable, ["i0", "i1"])
    np.testing.assert_allclose(predict_probs(model, feats), by_items.json()["probs"], atol=1e-6)
    by_feats = client.post(f"/v1/training-jobs/{job_id}/predict", json={"features": feats.tolist()})
    np.testing.assert_allclose(by_feats.json()["probs"], by_items.json()["probs"], atol=1e-6)
    bad = client.post(f"/v1/training-jobs/{job_id}/predict", json={"features": [[1.0, 2.0]]})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "features"
    missing = client.post(f"/v1/training-jobs/{job_id}/predict", json={"items": ["nope"]})
    assert missing.status_code == 422 and missing.json()["errors"][0]["index"] == 0
    # Features the model overflows on: a 422 naming the rows, never null probabilities.
    big = 3.4e38
    huge = [feats[0].tolist(), [big, -big] * 3, [big] * 6, [-big, big] * 3, [-big] * 6]
    r = client.post(f"/v1/training-jobs/{job_id}/predict", json={"features": huge})
    if r.status_code == 200:  # this model kept every row finite
        assert all(p is not None and np.isfinite(p).all() for p in r.json()["probs"]), r.text
    else:
        assert r.status_code == 422, r.text
        assert 0 not in [e["index"] for e in r.json()["errors"]]
    r = client.post(f"/v1/training-jobs/{job_id}/predict", json={"features": [[1e39] * 6]})
    assert r.status_code == 422 and r.json()["errors"][0]["index"] == 0
    listed = client.get(f"/v1/projects/{trainable}/training-jobs").json()["jobs"]
    assert listed[0]["id"] >= job_id and [j["id"] for j in listed] == sorted(
        (j["id"] for j in listed), reverse=True
    )


def db_rows_features(client: TestClient, project: str, ids: list[str]) -> np.ndarray:
    rows = db_rows(
        client.app.state.services.settings.database_url,
        "SELECT i.external_id, i.features FROM items i JOIN projects p "
        "ON p.id = i.project_id WHERE p.name = %s",
        project,
    )
    by_id = dict(rows)
    return np.asarray([by_id[i] for i in ids], dtype=np.float32)


def test_identical_configs_give_identical_metrics(client, trainable, workers) -> None:
    workers.start()
    a = submit(client, trainable, {**SMALL, "seed": 3})
    b = submit(client, trainable, {**SMALL, "seed": 3})
    ja, jb = wait_for(client, a, TERMINAL), wait_for(client, b, TERMINAL)
    assert ja["status"] == jb["status"] == "succeeded"
    assert ja["data_hash"] == jb["data_hash"]
    assert ja["metrics"]["test"] == jb["metrics"]["test"]
    assert [h["train_loss"] for h in ja["metrics"]["history"]] == [
        h["train_loss"] for h in jb["metrics"]["history"]
    ]


def test_two_workers_never_run_a_job_twice(client, trainable, workers, database_url) -> None:
    workers.start()
    workers.start()
    ids = [submit(client, trainable, {**SMALL, "epochs": 3, "seed": s}) for s in range(8)]
    jobs = [wait_for(client, i, TERMINAL) for i in ids]
    assert all(j["status"] == "succeeded" and j["attempts"] == 1 for j in jobs)
    rows = db_rows(
        database_url,
        "SELECT args->>'job_id', count(*) FROM procrastinate_jobs "
        "WHERE (args->>'job_id')::bigint = ANY(%s) GROUP BY 1",
        ids,
    )
    assert sorted(int(r[0]) for r in rows) == sorted(ids) and all(r[1] == 1 for r in rows)


def test_cancel_queued_and_running(client, trainable, workers) -> None:
    queued = submit(client, trainable, SMALL)  # no worker yet: stays queued
    r = client.post(f"/v1/training-jobs/{queued}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert client.post(f"/v1/training-jobs/{queued}/cancel").status_code == 409
    workers.start()
    long = submit(client, trainable, {**SMALL, "epochs": 5000, "early_stopping": None})
    job = wait_for(client, long, {"running"})
    while (job.get("progress") or {}).get("epoch", 0) < 2:
        job = client.get(f"/v1/training-jobs/{long}").json()
        time.sleep(0.05)
    client.post(f"/v1/training-jobs/{long}/cancel")
    at_cancel = client.get(f"/v1/training-jobs/{long}").json()["progress"]["epoch"]
    job = wait_for(client, long, TERMINAL, timeout=30)
    assert job["status"] == "cancelled"
    assert job["progress"]["epoch"] <= at_cancel + 2  # stops within about an epoch
    assert client.get(f"/v1/training-jobs/{long}/model").status_code == 409
    # The cancelled-while-queued job is never picked up.
    assert client.get(f"/v1/training-jobs/{queued}").json()["attempts"] == 0


def test_killed_worker_is_retried_then_failed(client, trainable, workers) -> None:
    config = {**SMALL, "epochs": 10000, "early_stopping": None}
    job_id = submit(client, trainable, config)
    for attempt in (1, 2):
        proc = workers.start()
        job = wait_for(client, job_id, {"running"}, timeout=60)
        while job["attempts"] < attempt or not job.get("progress"):
            job = client.get(f"/v1/training-jobs/{job_id}").json()
            time.sleep(0.05)
        proc.kill()  # SIGKILL: no chance to clean up; the next worker's sweep finds it
        proc.wait()
    survivor = workers.start()
    job = wait_for(client, job_id, TERMINAL, timeout=60)
    assert job["status"] == "failed" and job["attempts"] == 2
    assert "stopped responding" in job["error"]
    survivor.send_signal(signal.SIGTERM)


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"labels": {"method": "nope"}}, "labels.method"),
        ({"labels": {"method": "softmax", "alpha": 1}}, "labels.alpha"),
        ({"labels": {"method": "softmax", "temperature": 0}}, "labels.temperature"),
        ({"lr": -0.1}, "lr"),
        ({"epochs": 0}, "epochs"),
        ({"loss": "mse"}, "loss"),
        ({"model": {"kind": "cnn"}}, "model"),
        ({"model": {"kind": "mlp", "dropout": 1.5}}, "model.mlp.dropout"),
        ({"eval_fraction": 1.0}, "eval_fraction"),
        ({"lwr": {"k": 50, "tau": 2}, "epochs": 10}, "lwr.k"),
        (
            {"distill": {"teacher_job": 10**9, "temperature": 2, "alpha": 0.5}},
            "distill.teacher_job",
        ),
        ({"unknown": 1}, "unknown"),
    ],
)
def test_invalid_configs_are_422(client, trainable, config, field) -> None:
    r = client.post(f"/v1/projects/{trainable}/training-jobs", json=config)
    assert r.status_code == 422, r.text
    fields = [e["field"] for e in r.json()["errors"]]
    assert any(f == field or f.startswith(field) for f in fields), fields


def test_no_features_is_422(client: TestClient, project: str) -> None:
    client.post(
        f"/v1/projects/{project}/votes",
        json={"votes": [{"item": "a", "worker": "w", "label": "cat"}]},
    )
    r = client.post(f"/v1/projects/{project}/training-jobs", json={})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "features"


def test_teacher_must_have_succeeded_in_same_project(client, trainable, project) -> None:
    queued = submit(client, trainable, SMALL)
    r = client.post(
        f"/v1/projects/{trainable}/training-jobs",
        json={"distill": {"teacher_job": queued, "temperature": 2, "alpha": 0.5}},
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "distill.teacher_job"
    client.post(f"/v1/training-jobs/{queued}/cancel")
    client.post(f"/v1/projects/{project}/items", json={"items": [{"id": "x", "features": [1.0]}]})
    client.post(
        f"/v1/projects/{project}/votes", json={"votes": [{"item": "x", "worker": "w", "label": 0}]}
    )
    r = client.post(
        f"/v1/projects/{project}/training-jobs",
        json={"distill": {"teacher_job": queued, "temperature": 2, "alpha": 0.5}},
    )
    assert r.status_code == 422 and "no training job" in r.json()["errors"][0]["reason"]


def test_distilled_and_lwr_jobs_succeed(client, trainable, workers) -> None:
    workers.start()
    teacher = submit(client, trainable, SMALL)
    assert wait_for(client, teacher, TERMINAL)["status"] == "succeeded"
    student = submit(
        client,
        trainable,
        {**SMALL, "distill": {"teacher_job": teacher, "temperature": 4, "alpha": 0.5}},
    )
    lwr = submit(client, trainable, {**SMALL, "lwr": {"k": 5, "tau": 4}})
    for j in (student, lwr):
        job = wait_for(client, j, TERMINAL)
        assert job["status"] == "succeeded", job
        assert job["metrics"]["test"]["accuracy"] > 0.5


def test_unknown_job_is_404(client: TestClient) -> None:
    r = client.get("/v1/training-jobs/999999999")
    assert r.status_code == 404 and r.json()["error"] == "not_found"


def test_worker_model_labels_train(client, trainable, workers) -> None:
    workers.start()
    job_id = submit(client, trainable, {**SMALL, "labels": {"method": "dawid-skene"}})
    job = wait_for(client, job_id, TERMINAL)
    assert job["status"] == "succeeded", job
    assert job["config"]["labels"]["method"] == "dawid-skene"
    assert job["metrics"]["test"]["accuracy"] > 0.6


def test_worker_model_job_succeeds_while_votes_keep_arriving(client, workers, database_url) -> None:
    """A crowd still labeling: a vote lands every few milliseconds, so a fit made outside the
    job's snapshot is always a version behind it. The job fits on the snapshot's own votes
    (app/training/snapshot.py) instead of failing with "votes kept changing"."""
    project = make_trainable(client)
    pid = db_rows(database_url, "SELECT id FROM projects WHERE name = %s", project)[0][0]
    stop = threading.Event()
    written = 0

    def keep_voting() -> None:
        nonlocal written
        with psycopg.connect(database_url, autocommit=True) as conn:
            while not stop.is_set():
                ingest_votes(
                    conn,
                    project_id=pid,
                    classes=["a", "b", "c"],
                    items=[f"i{written % 300}"],
                    workers=[f"late{written}"],
                    labels=[0],
                )
                written += 1
                time.sleep(0.002)

    writer = threading.Thread(target=keep_voting)
    writer.start()
    try:
        workers.start()
        job_id = submit(client, project, {**SMALL, "labels": {"method": "dawid-skene"}})
        job = wait_for(client, job_id, TERMINAL)
    finally:
        stop.set()
        writer.join()
    assert written > 100, written  # the votes really kept changing during the job
    assert job["status"] == "succeeded", job
    # Its labels are the stored fit for the version it read: the API serves them for it.
    version = job["metrics"]["targets"]["votes_version"]
    fits = db_rows(
        database_url,
        "SELECT votes_version FROM label_fits f JOIN projects p ON p.id = f.project_id"
        " WHERE p.name = %s AND f.method = 'dawid-skene'",
        project,
    )
    assert fits and fits[0][0] >= version


def test_a_job_asking_for_a_gpu_waits_for_a_gpu_worker(client, trainable, workers, database_url):
    """A CPU worker never takes a job whose config asks for device "cuda": it waits in its own
    queue for a worker started with `--device cuda` (one more host against the same database),
    while CPU jobs queued after it run."""
    gpu_job = submit(client, trainable, {**SMALL, "device": "cuda"})
    cpu_job = submit(client, trainable, SMALL)
    queues = dict(
        db_rows(
            database_url,
            "SELECT t.id, q.queue_name FROM training_jobs t "
            "JOIN procrastinate_jobs q ON q.id = t.queue_job_id WHERE t.id = ANY(%s)",
            [gpu_job, cpu_job],
        )
    )
    assert queues == {gpu_job: "training-cuda", cpu_job: "training"}
    workers.start()
    assert wait_for(client, cpu_job, TERMINAL)["status"] == "succeeded"
    time.sleep(2)  # a few more polls of the worker: it still does not take the GPU job
    job = client.get(f"/v1/training-jobs/{gpu_job}").json()
    assert (job["status"], job["attempts"]) == ("queued", 0)
    client.post(f"/v1/training-jobs/{gpu_job}/cancel")
