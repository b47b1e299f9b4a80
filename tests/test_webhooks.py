"""Outbound webhooks end to end: a real `softlabels worker` delivers to a receiver on 127.0.0.1
that checks every Standard Webhooks signature, answers 500 once (the delivery is retried with
backoff) and records the order; deliveries for one item never overtake each other."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from app.webhooks.signing import BadSignature, verify
from tests.helpers import REPO, db_rows

pytestmark = pytest.mark.slow  # starts worker processes


class Receiver:
    def __init__(self) -> None:
        self.secret = ""
        self.received: list[dict[str, Any]] = []  # accepted deliveries, in arrival order
        self.bad_signatures = 0
        self.fail_next: set[str] = set()  # order keys ("item:a") to answer 500 once
        self.lock = threading.Lock()
        rx = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    verify(rx.secret, headers, raw)
                except BadSignature:
                    rx.bad_signatures += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                event = json.loads(raw)
                key = f"item:{event['data'].get('item')}"
                with rx.lock:
                    if key in rx.fail_next:
                        rx.fail_next.discard(key)
                        code = 500
                    else:
                        code = 200
                        rx.received.append({"id": headers["webhook-id"], **event})
                self.send_response(code)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, n: int, timeout: float = 60) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.received) >= n:
                return self.received
            time.sleep(0.1)
        raise AssertionError(f"got {len(self.received)} deliveries, wanted {n}: {self.received}")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rx = Receiver()
    yield rx
    rx.server.shutdown()


@pytest.fixture
def app_client(isolated_database_url: str, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(DATABASE_URL=isolated_database_url, data_dir=tmp_path, auth=False)
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture
def worker(isolated_database_url: str, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "DATABASE_URL": isolated_database_url, "PYTHONUNBUFFERED": "1"}
    log = (tmp_path / "worker.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker"],
        env=env,
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    yield proc
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def subscribe(client: TestClient, project: str, url: str, **extra: Any) -> dict[str, Any]:
    r = client.post(f"/v1/projects/{project}/webhooks", json={"url": url, **extra})
    assert r.status_code == 201, r.text
    assert r.json()["secret"].startswith("whsec_")
    return r.json()


def test_settled_signed_retried_in_order(
    app_client: TestClient, receiver: Receiver, worker: Any, isolated_database_url: str
) -> None:
    c = app_client
    project = f"wh-{uuid.uuid4().hex[:8]}"
    assert c.post("/v1/projects", json={"name": project, "classes": ["x", "y"]}).status_code == 201
    sub = subscribe(c, project, receiver.url, events=["item.settled"], settle_votes=2)
    receiver.secret = sub["secret"]
    listed = c.get(f"/v1/projects/{project}/webhooks").json()["subscriptions"]
    assert [s["secret"] for s in listed] == [None]  # shown once, at creation
    receiver.fail_next.add("item:a")  # the first delivery for item a gets a 500

    def vote(item: str, worker_id: str, label: str) -> None:
        r = c.post(
            f"/v1/projects/{project}/votes",
            json={"votes": [{"item": item, "worker": worker_id, "label": label}]},
        )
        assert r.status_code == 200, r.text

    vote("a", "w1", "x")  # 1 vote: not settled
    vote("a", "w2", "x")  # settled (2 votes): delivery #1 for a, answered 500, retried
    vote("a", "w3", "y")  # still settled, 3 votes: delivery #2 for a, must wait for #1
    vote("b", "w1", "y")
    vote("b", "w2", "y")  # settled
    # A request that fails (unknown label) records nothing.
    r = c.post(
        f"/v1/projects/{project}/votes",
        json={
            "votes": [
                {"item": "c", "worker": "w1", "label": "x"},
                {"item": "c", "worker": "w2", "label": "nope"},
            ]
        },
    )
    assert r.status_code == 422
    got = receiver.wait_for(3)
    time.sleep(1.0)  # nothing more should come
    assert len(receiver.received) == 3 and receiver.bad_signatures == 0
    per_item = [(e["data"]["item"], e["data"]["n_votes"]) for e in got]
    assert [x for x in per_item if x[0] == "a"] == [("a", 2), ("a", 3)]  # in order, retry kept
    assert ("b", 2) in per_item
    first = got[per_item.index(("a", 2))]
    assert first["type"] == "item.settled" and first["data"]["counts"] == {"x": 2, "y": 0}
    assert first["data"]["project"] == project and first["data"]["entropy"] == 0.0
    log = c.get(f"/v1/projects/{project}/webhooks/{sub['id']}/deliveries").json()["deliveries"]
    assert {d["status"] for d in log} == {"delivered"} and len(log) == 3
    retried = [d for d in log if d["attempts"] == 2]
    assert len(retried) == 1 and retried[0]["last_status_code"] == 200
    assert retried[0]["last_error"] is None
    # Stored events are our own (no tool payload); the id is the one the receiver saw.
    assert {d["msg_id"] for d in log} == {e["id"] for e in got}


def test_training_job_finished(
    app_client: TestClient, receiver: Receiver, worker: Any, isolated_database_url: str
) -> None:
    c = app_client
    project = f"wh-{uuid.uuid4().hex[:8]}"
    assert c.post("/v1/projects", json={"name": project, "classes": ["x", "y"]}).status_code == 201
    sub = subscribe(c, project, receiver.url, events=["training_job.finished"])
    receiver.secret = sub["secret"]
    job_id = db_rows(
        isolated_database_url,
        "INSERT INTO training_jobs (project_id, config) SELECT id, '{}'::jsonb FROM projects "
        "WHERE name = %s RETURNING id",
        project,
    )[0][0]
    r = c.post(f"/v1/training-jobs/{job_id}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    # A job a worker finishes (jobs.finish, the runner's path) fires too.
    job2 = db_rows(
        isolated_database_url,
        "INSERT INTO training_jobs (project_id, config, status, attempts) SELECT id, "
        "'{}'::jsonb, 'running', 1 FROM projects WHERE name = %s RETURNING id",
        project,
    )[0][0]
    from app.db.session import make_engine
    from app.training.jobs import finish

    engine = make_engine(isolated_database_url)
    assert finish(engine, job2, 1, "failed", error="Boom.")
    engine.dispose()
    got = receiver.wait_for(2)
    by_job = {e["data"]["job_id"]: e["data"] for e in got}
    assert by_job[job_id]["status"] == "cancelled"
    assert by_job[job2]["status"] == "failed" and by_job[job2]["error"] == "Boom."
    assert all(e["type"] == "training_job.finished" for e in got)


def test_subscription_validation(app_client: TestClient) -> None:
    c = app_client
    project = f"wh-{uuid.uuid4().hex[:8]}"
    c.post("/v1/projects", json={"name": project, "classes": ["x", "y"]})
    r = c.post(
        f"/v1/projects/{project}/webhooks",
        json={"url": "http://127.0.0.1:1/h", "events": ["item.settled"]},
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "settle_votes"
    r = c.post(
        f"/v1/projects/{project}/webhooks", json={"url": "http://127.0.0.1:1/h", "events": ["nope"]}
    )
    assert r.status_code == 422
    sub = subscribe(c, project, "http://127.0.0.1:1/h", events=["training_job.finished"])
    assert c.delete(f"/v1/projects/{project}/webhooks/{sub['id']}").status_code == 204
    assert c.delete(f"/v1/projects/{project}/webhooks/{sub['id']}").status_code == 404
    assert c.get(f"/v1/projects/{project}/webhooks/{sub['id']}/deliveries").status_code == 404


def test_settled_by_entropy_after_excluding_a_dissenter(
    client: TestClient, database_url: str
) -> None:
    """No worker here: the recorded deliveries are checked. Excluding the only dissenting worker
    drops an item's entropy to 0: it settles."""
    project = f"wh-{uuid.uuid4().hex[:8]}"
    client.post("/v1/projects", json={"name": project, "classes": ["x", "y"]})
    sub = subscribe(
        client, project, "http://127.0.0.1:1/h", events=["item.settled"], settle_entropy=0.5
    )
    votes = [
        {"item": "z", "worker": w, "label": k} for w, k in (("a", "x"), ("b", "x"), ("c", "y"))
    ]
    assert client.post(f"/v1/projects/{project}/votes", json={"votes": votes}).status_code == 200

    def recorded() -> list[tuple]:
        return db_rows(
            database_url,
            "SELECT event, order_key, payload->'data'->'counts' "
            "FROM webhook_deliveries WHERE subscription_id = %s ORDER BY id",
            sub["id"],
        )

    assert recorded() == []  # counts [2, 1]: normalized entropy 0.92, not settled
    assert client.post(f"/v1/projects/{project}/workers/c/exclude").status_code == 200
    assert recorded() == [("item.settled", "item:z", {"x": 2, "y": 0})]
    queued = db_rows(
        database_url,
        "SELECT count(*) FROM procrastinate_jobs WHERE "
        "task_name = 'softlabels.webhook' AND lock = %s",
        f"webhook:{sub['id']}:item:z",
    )
    assert queued == [(1,)]


def test_a_delivery_does_not_wait_behind_a_training_job(
    app_client: TestClient, receiver: Receiver, worker: Any
) -> None:
    """One project's long training job runs while another project's webhook is delivered: the
    worker runs training and background work side by side."""
    c = app_client
    trainer = f"wh-{uuid.uuid4().hex[:8]}"
    assert c.post("/v1/projects", json={"name": trainer, "classes": ["x", "y"]}).status_code == 201
    items = [{"id": f"i{i}", "features": [float(i % 7), float(i % 3)]} for i in range(400)]
    assert c.post(f"/v1/projects/{trainer}/items", json={"items": items}).status_code == 200
    votes = [
        {"item": f"i{i}", "worker": f"w{w}", "label": (i + w) % 2}
        for i in range(400)
        for w in range(3)
    ]
    assert c.post(f"/v1/projects/{trainer}/votes", json={"votes": votes}).status_code == 200
    r = c.post(
        f"/v1/projects/{trainer}/training-jobs",
        json={"epochs": 1000, "batch_size": 1, "labels": {"method": "normalized"}},
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    deadline = time.monotonic() + 60
    while c.get(f"/v1/training-jobs/{job_id}").json()["status"] != "running":
        assert time.monotonic() < deadline, "the training job never started"
        time.sleep(0.2)

    other = f"wh-{uuid.uuid4().hex[:8]}"
    assert c.post("/v1/projects", json={"name": other, "classes": ["x", "y"]}).status_code == 201
    receiver.secret = subscribe(c, other, receiver.url, events=["item.settled"], settle_votes=1)[
        "secret"
    ]
    vote = {"votes": [{"item": "a", "worker": "w1", "label": "x"}]}
    assert c.post(f"/v1/projects/{other}/votes", json=vote).status_code == 200
    try:
        got = receiver.wait_for(1, timeout=30)
        assert got[0]["data"]["item"] == "a"
        assert c.get(f"/v1/training-jobs/{job_id}").json()["status"] == "running"
    finally:
        c.post(f"/v1/training-jobs/{job_id}/cancel")
