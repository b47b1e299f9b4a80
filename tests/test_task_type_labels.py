"""Soft labels per task type over HTTP: every method of a multi-label and an ordinal project
against the pure functions on the same votes (or a hand computation), the method checked
against the project's type, the exports' rows and columns, and the routes that refuse a type
they do not speak yet."""

from __future__ import annotations

import csv
import io
import json
import uuid

import numpy as np
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from app.aggregation import multilabel, ordinal
from app.aggregation.dawid_skene import DawidSkene
from app.aggregation.votes import VoteArrays
from tests.helpers import post_votes
from tests.task_type_crowds import Crowd, simulate_multilabel, simulate_ordinal

TOPICS = ["sports", "politics", "tech", "health"]
LEVELS = ["1", "2", "3", "4", "5"]


def make(client: TestClient, task_type: str, classes: list[str], **extra: object) -> str:
    name = f"t-{uuid.uuid4().hex[:12]}"
    r = client.post(
        "/v1/projects", json={"name": name, "classes": classes, "task_type": task_type, **extra}
    )
    assert r.status_code == 201, r.text
    return name


def dense(crowd: Crowd) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """The crowd's votes re-indexed over the items and workers that have votes, in the order
    the service indexes them (ids ascending = external ids sorted: one batch, sorted inserts)."""
    items, item = np.unique(crowd.item, return_inverse=True)
    workers, worker = np.unique(crowd.worker, return_inverse=True)
    return item, worker, [f"i{i:03d}" for i in items], [f"w{w:02d}" for w in workers]


@pytest.fixture(scope="module")
def multi_crowd() -> Crowd:
    return simulate_multilabel(5, n_items=40, n_workers=8, n_classes=4, per_item=3).crowd


@pytest.fixture(scope="module")
def multi(client: TestClient, multi_crowd: Crowd) -> str:
    name = make(client, "multi_label", TOPICS)
    item, worker, items, workers = dense(multi_crowd)
    assert multi_crowd.ticks is not None
    votes = [
        {"item": items[i], "worker": workers[w], "label": [TOPICS[k] for k in np.flatnonzero(t)]}
        for i, w, t in zip(item, worker, multi_crowd.ticks, strict=True)
    ]
    post_votes(client, name, votes)
    return name


@pytest.fixture(scope="module")
def scale_crowd() -> Crowd:
    return simulate_ordinal(3, n_items=40, n_workers=8, n_levels=5, per_item=4).crowd


@pytest.fixture(scope="module")
def scale(client: TestClient, scale_crowd: Crowd) -> str:
    name = make(client, "ordinal", LEVELS, level_values=[0, 25, 50, 75, 100])
    item, worker, items, workers = dense(scale_crowd)
    assert scale_crowd.level is not None
    votes = [
        {"item": items[i], "worker": workers[w], "label": LEVELS[lv]}
        for i, w, lv in zip(item, worker, scale_crowd.level, strict=True)
    ]
    post_votes(client, name, votes)
    return name


def export(client: TestClient, project: str, **params: object) -> list[dict]:
    r = client.get(f"/v1/projects/{project}/soft-labels", params=params)
    assert r.status_code == 200, r.text
    return [json.loads(line) for line in r.text.splitlines()]


def probs(client: TestClient, project: str, **params: object) -> np.ndarray:
    return np.asarray([row["probs"] for row in export(client, project, **params)])


# ----- multi-label ------------------------------------------------------------------------------


def test_multi_label_count_methods(client: TestClient, multi: str, multi_crowd: Crowd) -> None:
    item, _, items, _ = dense(multi_crowd)
    tc, nv = multilabel.tick_counts(item, multi_crowd.ticks, len(items))
    got = probs(client, multi, method="normalized", alpha=1)
    assert np.allclose(got, (tc + 1) / (nv[:, None] + 2), atol=1e-12)
    got = probs(client, multi, method="softmax", temperature=2)
    assert np.allclose(got, 1 / (1 + np.exp(-(2 * tc - nv[:, None]) / 2)), atol=1e-12)
    one = client.get(f"/v1/projects/{multi}/items/{items[0]}/soft-label").json()
    assert one["task_type"] == "multi_label" and one["mean"] is None
    assert one["probs"] == pytest.approx((tc[0] / nv[0]).tolist())


@pytest.mark.parametrize("method", ["binary-relevance", "tick-propensity"])
def test_multi_label_worker_models(
    client: TestClient, multi: str, multi_crowd: Crowd, method: str
) -> None:
    item, worker, items, workers = dense(multi_crowd)
    cls = multilabel.BinaryRelevance if method == "binary-relevance" else multilabel.TickPropensity
    ref = cls().fit(item, worker, multi_crowd.ticks, len(items), len(workers))
    got = probs(client, multi, method=method)
    assert np.allclose(got, ref.probas_, atol=1e-9)
    # Each annotator's view: the worker's tick probabilities on the item.
    r = client.get(
        f"/v1/projects/{multi}/items/{items[3]}/workers/{workers[2]}/prediction",
        params={"method": method},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    expected = ref.predict_ticks(np.array([3]), np.array([2]))[0]
    assert body["probs"] == pytest.approx(expected.tolist(), abs=1e-9)
    assert body["model"] == "worker" and body["task_type"] == "multi_label"


@pytest.mark.parametrize("method", ["dawid-skene", "majority", "distance-smoothed", "glad"])
def test_methods_of_other_types_are_refused(client: TestClient, multi: str, method: str) -> None:
    r = client.get(f"/v1/projects/{multi}/soft-labels", params={"method": method})
    assert r.status_code == 422, r.text
    err = r.json()["errors"][0]
    assert err["field"] == "method"
    assert "normalized, softmax, binary-relevance, tick-propensity" in err["reason"]


def test_multi_label_exports(client: TestClient, multi: str, multi_crowd: Crowd) -> None:
    rows = export(client, multi, method="normalized")
    base = f"/v1/projects/{multi}/soft-labels"
    r = client.get(base, params={"format": "csv"})
    table = list(csv.DictReader(io.StringIO(r.text)))
    assert list(table[0]) == ["item", "n_votes", "gold", *(f"p_{c}" for c in TOPICS)]
    assert float(table[5]["p_tech"]) == pytest.approx(rows[5]["probs"][2])
    r = client.get(base, params={"format": "parquet"})
    frame = pq.read_table(io.BytesIO(r.content)).to_pydict()
    assert frame["p_health"][7] == pytest.approx(rows[7]["probs"][3])
    assert "mean" not in frame


def test_multi_label_item_and_raw_votes(client: TestClient) -> None:
    multi = make(client, "multi_label", TOPICS)
    post_votes(client, multi, [{"item": "aa", "worker": "solo", "label": []}])
    post_votes(client, multi, [{"item": "zz", "worker": "solo", "label": ["health", "sports"]}])
    body = client.get(f"/v1/projects/{multi}/items/zz").json()
    assert body["votes"][0]["label"] == ["sports", "health"]
    assert body["counts"] == [1, 0, 0, 1] and body["n_votes"] == 1
    r = client.get(f"/v1/projects/{multi}/votes/export")
    rows = [json.loads(line) for line in r.text.splitlines()]
    assert {"item": "zz", "worker": "solo", "label": ["sports", "health"]}.items() <= rows[
        -1
    ].items()
    r = client.get(f"/v1/projects/{multi}/votes/export", params={"format": "csv"})
    assert r.text.splitlines()[-1].startswith('zz,solo,"[""sports"", ""health""]"')
    r = client.get(f"/v1/projects/{multi}/votes/export", params={"format": "parquet"})
    assert pq.read_table(io.BytesIO(r.content)).to_pydict()["label"][-1] == ["sports", "health"]
    r = client.get(f"/v1/projects/{multi}/votes/export", params={"format": "crowdkit"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "format"


@pytest.mark.parametrize("path", ["items/suspect"])
def test_routes_that_do_not_speak_multi_label_say_so(
    client: TestClient, multi: str, path: str
) -> None:
    r = client.get(f"/v1/projects/{multi}/{path}")
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == "task_type"
    r = client.get(f"/v1/projects/{multi}/items", params={"sort": "gold_disagreement"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "sort"


@pytest.mark.parametrize("sort", ["entropy", "margin"])
def test_multi_label_items_sort_by_their_least_settled_classes(
    client: TestClient, multi: str, sort: str
) -> None:
    """A multi-label row is per-class probabilities: its entropy is the classes' mean binary
    entropy (bits) and its margin the least decided class's |2p - 1|, recomputed here from the
    normalized soft labels (each class's share of the item's voters)."""
    page = client.get(
        f"/v1/projects/{multi}/items",
        params={"sort": sort, "order": "desc", "limit": 500, "method": "normalized"},
    ).json()
    rows = page["items"]
    assert len(rows) == page["total"] > 10
    for row in rows:
        p = np.asarray(row["distribution"], dtype=float)
        q = 1 - p
        h = -(np.where(p > 0, p * np.log2(np.where(p > 0, p, 1)), 0)) - np.where(
            q > 0, q * np.log2(np.where(q > 0, q, 1)), 0
        )
        assert row["entropy"] == pytest.approx(h.mean(), abs=1e-9)
        assert row["margin"] == pytest.approx(np.abs(2 * p - 1).min(), abs=1e-9)
    got = [r[sort] for r in rows]
    # entropy: most uncertain first; margin: largest (most settled) first, as for one class.
    assert got == sorted(got, reverse=True)


# ----- ordinal ----------------------------------------------------------------------------------


VALUES = np.array([0.0, 25.0, 50.0, 75.0, 100.0])


def test_ordinal_summaries_by_hand(client: TestClient) -> None:
    name = make(client, "ordinal", ["none", "mild", "severe"])
    post_votes(
        client,
        name,
        [
            {"item": "a", "worker": "w1", "label": "none"},
            {"item": "a", "worker": "w2", "label": "severe"},
            {"item": "a", "worker": "w3", "label": "severe"},
        ],
    )
    body = client.get(f"/v1/projects/{name}/items/a/soft-label").json()
    # p = (1/3, 0, 2/3) on values 0, 1, 2: mean 4/3, median 2, sd sqrt(1/3*16/9 + 2/3*4/9).
    assert body["probs"] == pytest.approx([1 / 3, 0, 2 / 3])
    assert body["mean"] == pytest.approx(4 / 3) and body["median"] == 2
    assert body["spread"] == pytest.approx((16 / 27 + 8 / 27) ** 0.5)


def test_ordinal_count_methods(client: TestClient, scale: str, scale_crowd: Crowd) -> None:
    item, _, items, _ = dense(scale_crowd)
    counts = ordinal.level_counts(item, scale_crowd.level, len(items), 5)
    rows = export(client, scale, method="distance-smoothed", bandwidth=0.7)
    ref = ordinal.OrdinalSmoothed(bandwidth=0.7).fit_counts(counts, VALUES)
    assert np.allclose([r["probs"] for r in rows], ref.probas_, atol=1e-12)
    assert np.allclose([r["mean"] for r in rows], ref.mean_, atol=1e-9)
    assert np.allclose([r["median"] for r in rows], ref.median_)
    assert np.allclose([r["spread"] for r in rows], ref.spread_, atol=1e-9)
    got = probs(client, scale, method="softmax", temperature=0.5)
    assert np.allclose(got, ordinal.OrdinalSoftmax(temperature=0.5).fit_counts(counts).probas_)


def test_ordinal_worker_models(client: TestClient, scale: str, scale_crowd: Crowd) -> None:
    item, worker, items, workers = dense(scale_crowd)
    level = scale_crowd.level
    assert level is not None
    rater = ordinal.RaterModel().fit(item, worker, level, len(items), len(workers), 5, VALUES)
    rows = export(client, scale, method="rater-bias")
    assert np.allclose([r["probs"] for r in rows], rater.probas_, atol=1e-8)
    assert np.allclose([r["mean"] for r in rows], rater.mean_, atol=1e-6)
    ds = DawidSkene().fit(VoteArrays(item, worker, level, len(items), len(workers), 5))
    assert np.allclose(probs(client, scale, method="dawid-skene"), ds.probas_, atol=1e-9)
    for method, expected in (
        ("rater-bias", rater.predict_answers(np.array([4]), np.array([1]))[0]),
        ("dawid-skene", ds.probas_[4] @ ds.confusions_[1]),
        ("normalized", ordinal.level_counts(item, level, len(items), 5)[4] / (item == 4).sum()),
    ):
        r = client.get(
            f"/v1/projects/{scale}/items/{items[4]}/workers/{workers[1]}/prediction",
            params={"method": method},
        )
        assert r.status_code == 200, r.text
        assert r.json()["probs"] == pytest.approx(expected.tolist(), abs=1e-8), method
        assert r.json()["model"] == ("item" if method == "normalized" else "worker")


def test_ordinal_exports_carry_summaries(client: TestClient, scale: str) -> None:
    rows = export(client, scale)
    base = f"/v1/projects/{scale}/soft-labels"
    table = list(csv.DictReader(io.StringIO(client.get(base, params={"format": "csv"}).text)))
    assert list(table[0])[-3:] == ["mean", "median", "spread"]
    assert float(table[2]["mean"]) == pytest.approx(rows[2]["mean"])
    frame = pq.read_table(io.BytesIO(client.get(base, params={"format": "parquet"}).content))
    assert frame.column("spread").to_pylist()[2] == pytest.approx(rows[2]["spread"])
    r = client.get(base, params={"method": "binary-relevance"})
    assert r.status_code == 422 and "rater-bias" in r.json()["errors"][0]["reason"]


def test_prediction_errors(client: TestClient, scale: str, scale_crowd: Crowd) -> None:
    _, _, items, workers = dense(scale_crowd)
    base = f"/v1/projects/{scale}/items"
    assert client.get(f"{base}/nope/workers/{workers[0]}/prediction").status_code == 404
    assert client.get(f"{base}/{items[0]}/workers/nobody/prediction").status_code == 404
    r = client.get(f"{base}/{items[0]}/workers/{workers[0]}/prediction", params={"method": "x"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "method"


def test_a_multi_label_project_trains_once_its_items_have_features(
    client: TestClient, multi: str
) -> None:
    """Training speaks multi-label (per-class sigmoids: tests/test_task_type_training.py); this
    project's items have no feature vectors, so a job or sweep is refused for that, naming
    `features`, after its config was checked for the type (a softmax loss is refused first)."""
    r = client.post(f"/v1/projects/{multi}/training-jobs", json={"epochs": 1})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "features", r.text
    r = client.post(f"/v1/projects/{multi}/training-jobs", json={"loss": "soft-ce"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "loss", r.text
    r = client.post(f"/v1/projects/{multi}/training-sweeps", json={"losses": ["soft-bce"]})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "features", r.text
