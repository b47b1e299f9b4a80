"""Robust worker models over HTTP on real PostgreSQL: gold anchoring, gold accuracy on worker
pages, fit warnings in responses, and GET /methods/compare (the cached `auto` fit)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.aggregation.simulate import CrowdShape, simulate
from tests.helpers import db_rows

SHAPE = CrowdShape(
    "api",
    n_items=150,
    n_workers=20,
    k=3,
    per_item=4,
    class_prior=(0.5, 0.3, 0.2),
    mix={"good": 0.7, "flipper": 0.15, "constant": 0.15},
)
CLASSES = ["cat", "dog", "bird"]
N_GOLD = 40


@pytest.fixture
def crowd(client: TestClient, project: str) -> dict:
    votes, truth = simulate(SHAPE, 3)
    body = [
        {"item": f"i{i}", "worker": f"w{w}", "label": int(lab)}
        for i, w, lab in zip(votes.item, votes.worker, votes.label, strict=True)
    ]
    assert client.post(f"/v1/projects/{project}/votes", json={"votes": body}).status_code == 200
    gold = {f"i{i}": int(truth[i]) for i in range(N_GOLD)}
    items = [{"id": k, "gold": CLASSES[g]} for k, g in gold.items()]
    assert client.post(f"/v1/projects/{project}/items", json={"items": items}).status_code == 200
    return {"name": project, "votes": votes, "truth": truth, "gold": gold}


def test_use_gold_clamps_gold_items_and_follows_gold_edits(client, crowd) -> None:
    p = crowd["name"]
    url = f"/v1/projects/{p}/items/i0/soft-label?method=dawid-skene&use_gold=true"
    one = client.get(url).json()
    assert one["params"]["use_gold"] == 1 and one["warnings"] == []
    assert one["probs"] == [1.0 if c == one["gold"] else 0.0 for c in CLASSES]
    # A gold edit changes no vote, but a gold-anchored fit must follow it.
    new = (crowd["gold"]["i0"] + 1) % 3
    r = client.post(f"/v1/projects/{p}/items", json={"items": [{"id": "i0", "gold": CLASSES[new]}]})
    assert r.status_code == 200
    again = client.get(url).json()
    assert again["probs"] == [1.0 if c == new else 0.0 for c in range(3)]
    # Without use_gold the (now wrong) gold label is ignored by the fit.
    plain = client.get(url.replace("&use_gold=true", "")).json()
    assert plain["params"]["use_gold"] == 0 and np.argmax(plain["probs"]) != new


def test_export_with_gold_is_finite_for_every_method(client, crowd) -> None:
    p = crowd["name"]
    for method in ["dawid-skene", "dawid-skene-clustered", "one-coin", "glad", "mace"]:
        r = client.get(f"/v1/projects/{p}/soft-labels?method={method}&use_gold=1")
        assert r.status_code == 200, r.text
        rows = [json.loads(line) for line in r.text.splitlines()]
        probs = np.array([row["probs"] for row in rows])
        assert np.isfinite(probs).all() and np.allclose(probs.sum(axis=1), 1)


def test_worker_pages_report_accuracy_on_gold(client, crowd) -> None:
    p, v = crowd["name"], crowd["votes"]
    workers = client.get(f"/v1/projects/{p}/workers?method=dawid-skene").json()
    assert workers["warnings"] == []
    gold = np.full(v.n_items, -1)
    gold[:N_GOLD] = crowd["truth"][:N_GOLD]
    for row in workers["workers"]:
        w = int(row["worker"][1:])
        mine = (v.worker == w) & (gold[v.item] >= 0)
        assert row["n_gold"] == int(mine.sum())
        if mine.any():
            expected = float((v.label[mine] == gold[v.item[mine]]).mean())
            assert row["gold_accuracy"] == pytest.approx(expected)
        else:
            assert row["gold_accuracy"] is None
    one = client.get(f"/v1/projects/{p}/workers/w0?method=one-coin").json()
    assert "gold_accuracy" in one and "n_gold" in one


def test_compare_scores_every_method_and_is_cached(client, crowd, database_url) -> None:
    p = crowd["name"]
    r = client.get(f"/v1/projects/{p}/methods/compare")
    assert r.status_code == 200, r.text
    body = r.json()
    names = [c["method"] for c in body["candidates"]]
    assert set(names) == {
        "dawid-skene",
        "dawid-skene-clustered",
        "one-coin",
        "glad",
        "mace",
        "wawa",
    }
    assert body["criterion"] == "accuracy on gold items"  # 40 gold items >= 30
    best = max(c["score"] for c in body["candidates"] if c["score"] is not None)
    assert [c["score"] for c in body["candidates"] if c["method"] == body["chosen"]] == [best]
    # Whether gold accuracy could tell the pick from the others, and why not if so.
    assert [c["std_err"] for c in body["candidates"] if c["method"] == body["chosen"]] == [0.0]
    assert body["decided"] == (body["indistinguishable"] == [])
    assert set(body["indistinguishable"]) <= set(names) - {body["chosen"]}
    assert (body["note"] is None) == body["decided"]
    rows = db_rows(
        database_url,
        "SELECT count(*) FROM label_fits f JOIN projects p ON p.id = f.project_id "
        "WHERE p.name = %s AND f.method = 'auto'",
        p,
    )
    assert rows == [(1,)]
    seconds = db_rows(database_url, "SELECT seconds FROM label_fits WHERE method = 'auto'")
    assert client.get(f"/v1/projects/{p}/methods/compare").json() == body
    assert db_rows(database_url, "SELECT seconds FROM label_fits WHERE method = 'auto'") == seconds
    # method=auto on the soft-label routes serves the chosen method's labels from that fit.
    auto = client.get(f"/v1/projects/{p}/items/i50/soft-label?method=auto").json()
    chosen = client.get(f"/v1/projects/{p}/items/i50/soft-label?method={body['chosen']}").json()
    np.testing.assert_allclose(auto["probs"], chosen["probs"], atol=1e-9)


def test_compare_bad_parameter_names_the_field(client, crowd) -> None:
    r = client.get(f"/v1/projects/{crowd['name']}/methods/compare?holdout=2")
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "holdout", r.text
