"""The Python client (softlabels_client) against a live `softlabels serve --worker`, auth on."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from softlabels_client import Client, JobFailed, SoftlabelsError

from tests.helpers import LiveServer, server_with_worker

pytestmark = pytest.mark.slow  # starts worker processes

ADMIN = f"sl_client-admin-{uuid.uuid4().hex}"
CLASSES = ["a", "b", "c"]


@pytest.fixture(scope="module")
def server(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("client")
    with server_with_worker(server_url, tmp, "softlabels_client", ADMIN) as live:
        yield live


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[Client]:
    with Client(server.url, key=ADMIN) as c:
        yield c


@pytest.fixture(scope="module")
def project(client: Client) -> dict[str, Any]:
    """90 items with 5 features, gold, 3-5 votes each from 8 workers."""
    name = f"cl-{uuid.uuid4().hex[:8]}"
    client.create_project(name, CLASSES, description="client test")
    rng = np.random.default_rng(5)
    n = 90
    gold = rng.integers(0, 3, n)
    x = rng.normal(0, 2, (3, 5))[gold] + rng.normal(0, 1, (n, 5))
    items = [{"id": f"i/{i}", "features": x[i].tolist(), "gold": int(gold[i])} for i in range(n)]
    assert client.add_items(name, items, batch_size=40) == {"inserted": n, "updated": 0}
    votes = [
        (f"i/{i}", f"w{w}", CLASSES[int(gold[i]) if rng.random() < 0.8 else int(rng.integers(3))])
        for i in range(n)
        for w in rng.choice(8, size=int(rng.integers(3, 6)), replace=False)
    ]
    out = client.add_votes(name, votes, batch_size=100)  # several batches
    assert out["inserted"] == len(votes) and out["unchanged"] == 0
    return {"name": name, "votes": votes, "n": n}


def test_projects_and_batched_votes_are_idempotent(client: Client, project: dict) -> None:
    p = project["name"]
    assert p in [x["name"] for x in client.projects()]
    info = client.project(p)
    assert info["n_items"] == project["n"] and info["n_votes"] == len(project["votes"])
    again = client.add_votes(p, project["votes"][:250], batch_size=60)
    assert again["inserted"] == 0 and again["unchanged"] == 250
    assert client.update_project(p, description="changed")["description"] == "changed"


def test_errors_carry_the_service_body(client: Client, project: dict) -> None:
    with pytest.raises(SoftlabelsError) as e:
        client.create_project(project["name"], CLASSES)
    assert e.value.status == 409 and e.value.error == "conflict"
    with pytest.raises(SoftlabelsError) as e:
        client.add_votes(project["name"], [("i/1", "w1", "a"), ("i/1", "w2", "zebra")])
    assert e.value.status == 422
    assert e.value.errors and e.value.errors[0]["index"] == 1
    assert "zebra" in str(e.value) or "label" in str(e.value)
    with pytest.raises(SoftlabelsError) as e:
        client.project("does-not-exist")
    assert e.value.status == 404 and e.value.body["error"] == "not_found"
    with pytest.raises(SoftlabelsError) as e:
        Client(client.url, key="sl_nope").projects()
    assert e.value.status == 401


def test_items_and_soft_labels(client: Client, project: dict, tmp_path: Path) -> None:
    p = project["name"]
    rows = list(client.items(p, sort="entropy", order="desc", page_size=25))
    assert len(rows) == project["n"]
    ent = [r["entropy"] for r in rows]
    assert ent == sorted(ent, reverse=True)
    one = client.item(p, "i/7")
    assert one["item"] == "i/7" and len(one["votes"]) == one["n_votes"]
    df = client.soft_labels(p, method="normalized")
    assert isinstance(df, pd.DataFrame) and len(df) == project["n"]
    sl = client.soft_label(p, "i/7")
    row = df.set_index("item").loc["i/7"]
    assert [row[f"p_{c}"] for c in CLASSES] == pytest.approx(sl["probs"])
    table = client.soft_labels(p, method="dawid-skene", as_="arrow")
    assert isinstance(table, pa.Table) and table.num_rows == project["n"]
    out = client.export(p, tmp_path / "x.csv", format="csv", method="majority")
    lines = Path(out).read_text().splitlines()  # type: ignore[arg-type]
    assert lines[0].startswith("item") and len(lines) == project["n"] + 1


def test_analytics(client: Client, project: dict) -> None:
    p = project["name"]
    st = client.stats(p)
    assert st["items"] == project["n"] and st["votes"] == len(project["votes"])
    ws = client.workers(p)
    assert len(ws["workers"]) == 8
    w = client.worker(p, "w0")
    assert len(w["confusion"]) == 3
    nxt = client.next_items(p, strategy="fewest-votes", limit=4)
    assert len(nxt) == 4 and nxt[0]["n_votes"] == min(r["n_votes"] for r in nxt)


def test_torch_dataset(client: Client, project: dict) -> None:
    import torch
    from torch.utils.data import DataLoader, Dataset

    ds = client.torch_dataset(project["name"], method="normalized")
    assert isinstance(ds, Dataset) and len(ds) == project["n"]
    x, y = ds[0]
    assert x.shape == (5,) and y.shape == (3,) and x.dtype == torch.float32
    xb, yb = next(iter(DataLoader(ds, batch_size=16, shuffle=True)))
    assert xb.shape == (16, 5) and torch.allclose(yb.sum(1), torch.ones(16))
    assert ds.classes == CLASSES and len(ds.items) == len(ds)


def test_hf_dataset_needs_datasets(client: Client, project: dict) -> None:
    try:
        import datasets  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="datasets"):
            client.hf_dataset(project["name"])
    else:
        hf = client.hf_dataset(project["name"])
        assert hf.num_rows == project["n"]


def test_train_wait_and_predict(client: Client, project: dict, tmp_path: Path) -> None:
    p = project["name"]
    with pytest.raises(SoftlabelsError) as e:
        client.train(p, epochs=0)
    assert e.value.status == 422 and e.value.errors[0]["field"] == "epochs"
    seen: list[Any] = []
    job = client.train(
        p,
        epochs=30,
        lr=0.02,
        model={"kind": "mlp", "hidden": [16], "dropout": 0.0},
        batch_size=16,
    )
    assert job.status == "queued"
    job.wait(timeout=180, poll=0.2, on_progress=lambda j: seen.append(j.progress))
    assert job.status == "succeeded" and job.metrics and job.metrics["test"]["accuracy"] > 0.6
    assert any(s and s.get("epoch") for s in seen)
    path = job.download_model(tmp_path / "m.pt")
    assert path.stat().st_size > 0
    pred = job.predict(items=["i/1", "i/2"])
    assert len(pred["probs"]) == 2 and pred["classes"] == CLASSES
    assert job.id in [j.id for j in client.jobs(p)]
    # A job that ends other than succeeded: wait() raises JobFailed.
    slow = client.train(p, epochs=5000, batch_size=1)
    slow.cancel()
    with pytest.raises(JobFailed):
        slow.wait(timeout=120, poll=0.2)
    assert slow.status == "cancelled"


def test_content_items_and_predictions_on_new_texts(client: Client, tmp_path: Path) -> None:
    """Items with texts (and an image given as bytes), a job on them, predict(texts=...)."""
    from tests.test_content_training import topic_texts
    from tests.test_item_content import png

    name = f"cl-text-{uuid.uuid4().hex[:8]}"
    client.create_project(name, ["sport", "food", "weather"])
    docs, truth = topic_texts(150, 7)
    items: list[dict[str, Any]] = [{"id": f"t{i}", "text": d} for i, d in enumerate(docs)]
    (tmp_path / "x.png").write_bytes(png())
    items.append({"id": "img", "image": png()})  # bytes: the client sends them base64
    assert client.add_items(name, items) == {"inserted": 151, "updated": 0}
    votes = [(f"t{i}", f"w{w}", int(t)) for i, t in enumerate(truth) for w in range(3)]
    client.add_votes(name, votes)
    job = client.train(name, encoder={"name": "tfidf-svd", "dim": 8}, epochs=30, batch_size=16)
    job.wait(timeout=180, poll=0.2)
    assert job.status == "succeeded" and job.metrics and job.metrics["encoder"]["computed"] == 150
    pred = job.predict(texts=["the team scored a goal", "bake bread for dinner"])
    assert np.argmax(pred["probs"], axis=1).tolist() == [0, 1]
    with pytest.raises(SoftlabelsError) as e:  # a job on texts does not read images
        job.predict(images=[tmp_path / "x.png"])
    assert e.value.status == 422 and e.value.errors[0]["field"] == "images"


class Flaky(httpx.BaseTransport):
    """Fails the first `n` requests (a connection error, or a given status), then passes."""

    def __init__(self, n: int, status: int | None = None) -> None:
        self.n, self.status, self.calls = n, status, 0
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.calls <= self.n:
            if self.status is None:
                raise httpx.ConnectError("connection refused", request=request)
            body = b'{"error": "rate_limited", "detail": "slow down"}'
            return httpx.Response(self.status, headers={"Retry-After": "0"}, content=body)
        return self.inner.handle_request(request)


def test_idempotent_requests_are_retried(server: LiveServer, project: dict) -> None:
    flaky = Flaky(2)
    c = Client(server.url, key=ADMIN, transport=flaky, backoff=0.01)
    assert c.project(project["name"])["name"] == project["name"]
    assert flaky.calls == 3
    flaky = Flaky(2, status=429)
    c = Client(server.url, key=ADMIN, transport=flaky, backoff=0.01)
    out = c.add_votes(project["name"], project["votes"][:10])  # votes: safe to resend
    assert out["unchanged"] == 10 and flaky.calls == 3
    flaky = Flaky(1)
    c = Client(server.url, key=ADMIN, transport=flaky, backoff=0.01)
    with pytest.raises(httpx.ConnectError):  # a job is never created twice by a retry
        c.train(project["name"], epochs=1)
    assert flaky.calls == 1
    flaky = Flaky(10, status=503)
    c = Client(server.url, key=ADMIN, transport=flaky, backoff=0.01, retries=2)
    with pytest.raises(SoftlabelsError) as e:
        c.stats(project["name"])
    assert e.value.status == 503 and flaky.calls == 3


def test_keys(client: Client, server: LiveServer, project: dict) -> None:
    k = client.create_key("reader", ["read"], [project["name"]])
    reader = Client(server.url, key=k["key"])
    assert reader.project(project["name"])["name"] == project["name"]
    with pytest.raises(SoftlabelsError) as e:
        reader.add_votes(project["name"], [("i/1", "w1", "a")])
    assert e.value.status == 403
    assert k["id"] in [x["id"] for x in client.list_keys()]
    client.revoke_key(k["id"])
    # `serve` runs one API process per CPU: the others notice within the key-cache TTL (1 s).
    time.sleep(1.5)
    with pytest.raises(SoftlabelsError) as e:
        reader.project(project["name"])
    assert e.value.status == 401
