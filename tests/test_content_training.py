"""Training on what items are, end to end: texts and images put through the API (or a Label
Studio webhook), a real worker process encoding and training, predictions on new content from
the API process (which never saw the fitted encoder but in the checkpoint). Offline: images
are PNGs written here, image URLs are served by a thread on loopback.

Synthetic crowds as in tests/test_encoders.py: 5 votes per item, each right with probability
0.7, else a random class; texts of 3 topics; images of noise with a square of the class color.
"""

from __future__ import annotations

import base64
import io
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.helpers import FIXTURES, Workers, db_rows, migrated_database
from tests.test_encoders import COLORS, FILLER, TOPICS
from tests.test_media import TOKEN, Server

pytestmark = pytest.mark.slow  # starts a worker process

TERMINAL = {"succeeded", "failed", "cancelled"}
QUICK = {"device": "cpu", "early_stopping": None, "batch_size": 32}


@pytest.fixture(scope="module")
def database_url(server_url: str) -> Iterator[str]:
    # The worker takes every queued job in its database: this module has its own.
    with migrated_database(server_url, prefix="softlabels_content") as url:
        yield url


@pytest.fixture(scope="module")
def client(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(
        DATABASE_URL=database_url, data_dir=tmp_path_factory.mktemp("content"), auth=False
    )
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture(scope="module", autouse=True)
def worker(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    w = Workers(database_url, tmp_path_factory.mktemp("workers"))
    w.start()
    yield w
    w.stop_all()


@pytest.fixture(scope="module")
def media() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


def new_project(client: TestClient, classes: list[str]) -> str:
    name = f"c-{uuid.uuid4().hex[:10]}"
    assert client.post("/v1/projects", json={"name": name, "classes": classes}).status_code == 201
    return name


def post(client: TestClient, path: str, body: Any, status: int = 200) -> Any:
    r = client.post(path, json=body)
    assert r.status_code == status, r.text
    return r.json()


def crowd_votes(ids: list[str], truth: np.ndarray, k: int, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    return [
        {
            "item": item,
            "worker": f"w{w}",
            "label": int(t) if rng.random() < 0.7 else int(rng.integers(0, k)),
        }
        for item, t in zip(ids, truth.tolist(), strict=True)
        for w in range(5)
    ]


def train(client: TestClient, project: str, config: dict[str, Any], timeout: float = 240) -> dict:
    job_id = post(client, f"/v1/projects/{project}/training-jobs", config, 202)["id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/training-jobs/{job_id}").json()
        if job["status"] in TERMINAL:
            return dict(job)
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def topic_texts(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 3, n)
    words = [t.split() for t in TOPICS]
    docs = [
        " ".join([*rng.choice(words[c], 3), *rng.choice(FILLER.split(), 6)]) for c in truth.tolist()
    ]
    return docs, truth


def square_pngs(n: int, seed: int) -> tuple[list[bytes], np.ndarray]:
    """32x32 noise with a square of the class's color, as PNG files (Pillow)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 3, n)
    out = []
    for c in truth.tolist():
        x = rng.integers(0, 80, (32, 32, 3)).astype(np.uint8)
        s = int(rng.integers(10, 18))
        y0, x0 = rng.integers(0, 32 - s, 2)
        x[y0 : y0 + s, x0 : x0 + s] = np.clip(COLORS[c] + rng.integers(-30, 30, 3), 0, 255)
        buf = io.BytesIO()
        Image.fromarray(x).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out, truth


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_text_project_trains_with_tfidf_and_predicts_new_texts(client: TestClient) -> None:
    p = new_project(client, ["sport", "food", "weather"])
    docs, truth = topic_texts(300, 0)
    ids = [f"t{i}" for i in range(300)]
    items = [{"id": i, "text": d} for i, d in zip(ids, docs, strict=True)]
    post(client, f"/v1/projects/{p}/items", {"items": items})
    post(client, f"/v1/projects/{p}/votes", {"votes": crowd_votes(ids, truth, 3, 1)})
    cfg = {**QUICK, "encoder": {"name": "tfidf-svd", "dim": 16}, "epochs": 30}
    job = train(client, p, cfg)
    assert job["status"] == "succeeded", job
    m = job["metrics"]
    assert m["test"]["accuracy_majority"] > 0.6  # chance: 1/3
    enc = m["encoder"]
    assert enc["name"] == "tfidf-svd" and enc["dim"] == 16 and enc["computed"] == 300
    assert enc["cached"] == 0 and enc["cache"] is None  # fitted on this job's split: not cached
    predict = f"/v1/training-jobs/{job['id']}/predict"
    got = post(client, predict, {"texts": ["the team scored a goal", "bake bread for dinner"]})
    assert np.argmax(got["probs"], axis=1).tolist() == [0, 1]
    stored = post(client, predict, {"items": ["t0", "t1"]})
    new = post(client, predict, {"texts": docs[:2]})
    np.testing.assert_allclose(stored["probs"], new["probs"], atol=1e-6)
    r = client.post(predict, json={"features": [[1.0] * 16]})
    assert r.status_code == 422 and "send texts or items" in r.json()["errors"][0]["reason"]
    r = client.post(predict, json={"images": [b64(square_pngs(1, 0)[0][0])]})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "images"


def test_label_studio_text_project_trains_by_endpoint(client: TestClient) -> None:
    """The captured Label Studio webhooks give items with `data.text` and votes, no vectors."""
    p = new_project(client, ["pos", "neg", "neu"])
    config = {"from_name": "sentiment", "item_field": "ref"}
    assert client.put(f"/v1/projects/{p}/connectors/label-studio", json=config).status_code == 200
    for path in sorted((FIXTURES / "label-studio" / "webhooks").glob("*.json")):
        body = json.loads(path.read_text())["body"]
        client.post(f"/v1/projects/{p}/connectors/label-studio/events", json=body)
    cfg = {**QUICK, "encoder": {"name": "tfidf-svd", "dim": 4}, "epochs": 3}
    job = train(client, p, {**cfg, "validation_fraction": 0.0, "test_fraction": 0.2})
    assert job["status"] == "succeeded", job
    assert job["metrics"]["encoder"]["computed"] >= 5  # tiny: that it runs, not how well


def test_image_project_trains_the_small_cnn_and_predicts_new_uploads(client: TestClient) -> None:
    p = new_project(client, ["red", "green", "blue"])
    images, truth = square_pngs(300, 2)
    ids = [f"img{i}" for i in range(300)]
    for start in range(0, 300, 100):
        rows = [{"id": ids[i], "image": b64(images[i])} for i in range(start, start + 100)]
        post(client, f"/v1/projects/{p}/items", {"items": rows})
    post(client, f"/v1/projects/{p}/votes", {"votes": crowd_votes(ids, truth, 3, 3)})
    enc = {"name": "small-cnn", "widths": [8, 16]}
    job = train(client, p, {**QUICK, "encoder": enc, "epochs": 6, "lr": 0.003})
    assert job["status"] == "succeeded", job
    m = job["metrics"]
    assert m["encoder"]["end_to_end"] and m["encoder"]["computed"] == 300
    assert m["test"]["accuracy_majority"] > 0.5  # chance: 1/3
    fresh, fresh_truth = square_pngs(60, 4)  # never uploaded
    got = post(client, f"/v1/training-jobs/{job['id']}/predict", {"images": list(map(b64, fresh))})
    assert np.mean(np.argmax(got["probs"], axis=1) == fresh_truth) > 0.5


def test_image_urls_are_fetched_with_the_label_studio_token(
    client: TestClient, media: Server
) -> None:
    """Label Studio tasks name their images by paths on Label Studio; the worker fetches them
    with the connector's token. An item whose image cannot be fetched fails the job in one
    line; fixed, the job trains."""
    p = new_project(client, ["pos", "neg", "neu"])
    config = {
        "from_name": "sentiment",
        "item_field": "ref",
        "content_field": "photo",
        "url": media.url,
        "token": TOKEN,
    }
    assert client.put(f"/v1/projects/{p}/connectors/label-studio", json=config).status_code == 200
    for path in sorted((FIXTURES / "label-studio" / "webhooks").glob("*.json")):
        body = json.loads(path.read_text())["body"]
        tasks = body.get("task") or body.get("tasks") or []
        for task in tasks if isinstance(tasks, list) else [tasks]:
            if isinstance(task, dict) and isinstance(task.get("data"), dict):
                task["data"]["photo"] = f"/data/upload/1/{task['data'].get('ref')}.png"
        client.post(f"/v1/projects/{p}/connectors/label-studio/events", json=body)
    # one more item by the API, its image on another path of the same server (no token)
    post(
        client,
        f"/v1/projects/{p}/items",
        {"items": [{"id": "api-1", "image_url": f"{media.url}/gone"}]},
    )
    post(
        client, f"/v1/projects/{p}/votes", {"votes": [{"item": "api-1", "worker": "u", "label": 0}]}
    )
    cfg = {**QUICK, "encoder": {"name": "small-cnn", "widths": [4]}, "epochs": 1}
    cfg |= {"validation_fraction": 0.0, "test_fraction": 0.2}
    failed = train(client, p, cfg)
    assert failed["status"] == "failed"
    assert failed["error"].endswith(
        "images could not be fetched; the first, item 'api-1': the server answered HTTP 404."
    )
    post(
        client,
        f"/v1/projects/{p}/items",
        {"items": [{"id": "api-1", "image_url": f"{media.url}/api.png"}]},
    )
    job = train(client, p, cfg)
    assert job["status"] == "succeeded", job
    n = job["metrics"]["encoder"]["fetched"]
    assert n >= 5 and n == job["metrics"]["encoder"]["computed"]
    tokens = {auth for path, auth in media.seen if path.startswith("/data/upload/")}
    assert tokens == {f"Token {TOKEN}"}
    assert ("/api.png", None) in media.seen
    got = post(
        client,
        f"/v1/training-jobs/{job['id']}/predict",
        {"image_urls": ["/data/upload/9/new.png", f"{media.url}/x.png"]},
    )
    assert len(got["probs"]) == 2


def test_a_frozen_encoders_vectors_are_computed_once(client: TestClient, database_url: str) -> None:
    """The hashing encoder without SVD is a function of the text alone: cached. A second job
    encodes nothing; an item whose text changed is encoded again."""
    p = new_project(client, ["sport", "food", "weather"])
    docs, truth = topic_texts(120, 5)
    ids = [f"h{i}" for i in range(120)]
    post(
        client,
        f"/v1/projects/{p}/items",
        {"items": [{"id": i, "text": d} for i, d in zip(ids, docs, strict=True)]},
    )
    post(client, f"/v1/projects/{p}/votes", {"votes": crowd_votes(ids, truth, 3, 6)})
    cfg = {**QUICK, "encoder": {"name": "hashing", "n_features": 256, "dim": None}, "epochs": 2}
    first = train(client, p, cfg)
    second = train(client, p, {**cfg, "seed": 1})
    assert first["status"] == second["status"] == "succeeded", (first, second)
    a, b = first["metrics"]["encoder"], second["metrics"]["encoder"]
    assert (a["computed"], a["cached"]) == (120, 0)
    assert (b["computed"], b["cached"]) == (0, 120)
    assert a["cache"] == "embeddings" and a["version"] == b["version"]
    post(client, f"/v1/projects/{p}/items", {"items": [{"id": "h0", "text": "snow storm tonight"}]})
    third = train(client, p, {**cfg, "seed": 2})
    assert (third["metrics"]["encoder"]["computed"], third["metrics"]["encoder"]["cached"]) == (
        1,
        119,
    )
    rows = db_rows(
        database_url,
        "SELECT count(*), count(DISTINCT e.encoder) FROM embeddings e "
        "JOIN items i ON i.id = e.item_id JOIN projects p ON p.id = i.project_id "
        "WHERE p.name = %s",
        p,
    )
    assert rows == [(120, 1)]


def test_a_sweep_encodes_each_item_once(client: TestClient) -> None:
    """Every cell of a sweep on a frozen encoder: one of them encodes, the others read."""
    p = new_project(client, ["sport", "food", "weather"])
    docs, truth = topic_texts(90, 8)
    ids = [f"s{i}" for i in range(90)]
    rows = [{"id": i, "text": d} for i, d in zip(ids, docs, strict=True)]
    post(client, f"/v1/projects/{p}/items", {"items": rows})
    post(client, f"/v1/projects/{p}/votes", {"votes": crowd_votes(ids, truth, 3, 9)})
    base = {**QUICK, "encoder": {"name": "hashing", "n_features": 128, "dim": None}, "epochs": 2}
    body = {
        "labels": [{"method": "majority"}, {"method": "normalized"}],
        "losses": ["hard-ce"],
        "seeds": [0, 1],
    }
    sweep = post(client, f"/v1/projects/{p}/training-sweeps", {**body, "base": base}, 202)
    jobs = []
    for job_id in [c["job_id"] for c in sweep["cells"]]:
        deadline = time.monotonic() + 240
        while (job := client.get(f"/v1/training-jobs/{job_id}").json())["status"] not in TERMINAL:
            assert time.monotonic() < deadline, job
            time.sleep(0.2)
        jobs.append(job)
    assert all(j["status"] == "succeeded" for j in jobs), jobs
    computed = [j["metrics"]["encoder"]["computed"] for j in jobs]
    assert sorted(computed) == [0] * (len(jobs) - 1) + [90]
