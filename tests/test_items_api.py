"""GET /items (sorted, paged) and GET /items/{item}, over HTTP on real PostgreSQL."""

from __future__ import annotations

import uuid
from urllib.parse import quote

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.aggregation import agreement
from app.aggregation.methods import COUNT_METHODS

CLASSES = ["cat", "dog", "bird"]
N = 61  # not a multiple of any page size used below


@pytest.fixture(scope="module")
def world(client: TestClient) -> dict:
    """61 items with 0..6 random votes each from 7 workers; gold on every third item."""
    name = f"items-{uuid.uuid4().hex[:8]}"
    assert client.post("/v1/projects", json={"name": name, "classes": CLASSES}).status_code == 201
    rng = np.random.default_rng(7)
    items = [
        {
            "id": f"it/{i:03d}",
            **({"gold": int(rng.integers(3))} if i % 3 == 0 else {}),
            "meta": {"i": i},
            "features": [float(i), 1.0],
        }
        for i in range(N)
    ]
    assert client.post(f"/v1/projects/{name}/items", json={"items": items}).status_code == 200
    counts = np.zeros((N, 3), np.int64)
    votes = []
    for i in range(N):
        for w in rng.choice(7, size=int(rng.integers(0, 7)), replace=False):
            label = int(rng.integers(3)) if rng.random() < 0.5 else i % 3
            counts[i, label] += 1
            votes.append({"item": f"it/{i:03d}", "worker": f"w{w}", "label": label})
    assert client.post(f"/v1/projects/{name}/votes", json={"votes": votes}).status_code == 200
    gold = np.array([it.get("gold", -1) for it in items])
    return {"name": name, "counts": counts, "gold": gold, "ids": [it["id"] for it in items]}


def all_pages(client: TestClient, project: str, **query: object) -> list[dict]:
    rows, cursor, seen = [], None, 0
    while True:
        q = {**query, **({"cursor": cursor} if cursor else {})}
        r = client.get(f"/v1/projects/{project}/items", params=q)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["total"] == len(body["items"]) + seen or body["next_cursor"]
        rows += body["items"]
        seen += len(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return rows


def expected_scores(world: dict, method: str = "normalized") -> dict[str, np.ndarray]:
    counts = world["counts"]
    probs = COUNT_METHODS[method]().compute(counts)
    voted = counts.sum(1) > 0
    ent = np.where(voted, agreement.normalized_entropy(probs), np.nan)
    top = np.sort(probs, axis=1)
    margin = np.where(voted, top[:, -1] - top[:, -2], np.nan)
    g = world["gold"]
    dis = np.where(voted & (g >= 0), 1 - probs[np.arange(len(g)), np.clip(g, 0, 2)], np.nan)
    return {"entropy": ent, "margin": margin, "gold_disagreement": dis, "probs": probs}


@pytest.mark.parametrize("sort", ["entropy", "margin", "gold_disagreement"])
@pytest.mark.parametrize("order", ["asc", "desc"])
def test_computed_sorts_page_through_every_item_in_order(
    client: TestClient, world: dict, sort: str, order: str
) -> None:
    rows = all_pages(client, world["name"], sort=sort, order=order, limit=7)
    assert sorted(r["item"] for r in rows) == sorted(world["ids"])  # each item exactly once
    exp = expected_scores(world)[sort]
    by_id = dict(zip(world["ids"], exp, strict=True))
    got = [r[sort] for r in rows]
    for r in rows:
        want = by_id[r["item"]]
        assert (r[sort] is None) == bool(np.isnan(want))
        if r[sort] is not None:
            assert r[sort] == pytest.approx(want)
    scored = [g for g in got if g is not None]
    assert scored == sorted(scored, reverse=order == "desc")
    # Unscored items (no votes; no gold) come last in either order.
    first_none = next((i for i, g in enumerate(got) if g is None), len(got))
    assert all(g is None for g in got[first_none:])


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_votes_and_item_sorts_use_keyset_cursors(
    client: TestClient, world: dict, order: str
) -> None:
    rows = all_pages(client, world["name"], sort="votes", order=order, limit=10)
    assert sorted(r["item"] for r in rows) == sorted(world["ids"])
    n = [r["n_votes"] for r in rows]
    assert n == sorted(n, reverse=order == "desc")
    rows = all_pages(client, world["name"], sort="item", order=order, limit=10)
    assert [r["item"] for r in rows] == sorted(world["ids"], reverse=order == "desc")


def test_rows_carry_distribution_gold_and_offset_paging(client: TestClient, world: dict) -> None:
    p = world["name"]
    r = client.get(f"/v1/projects/{p}/items", params={"sort": "item", "limit": 5, "offset": 3})
    body = r.json()
    assert body["total"] == N and body["classes"] == CLASSES and body["method"] == "normalized"
    assert [x["item"] for x in body["items"]] == world["ids"][3:8]
    probs = expected_scores(world)["probs"]
    for x in body["items"]:
        i = world["ids"].index(x["item"])
        assert x["n_votes"] == world["counts"][i].sum()
        if x["n_votes"]:
            assert x["distribution"] == pytest.approx(probs[i].tolist())
        else:
            assert x["distribution"] is None
        g = world["gold"][i]
        assert x["gold"] == (CLASSES[g] if g >= 0 else None)
    # offset on a computed sort equals the same slice of the full order
    full = all_pages(client, p, sort="entropy", order="desc", limit=100)
    r = client.get(
        f"/v1/projects/{p}/items",
        params={"sort": "entropy", "order": "desc", "offset": 10, "limit": 5},
    )
    assert [x["item"] for x in r.json()["items"]] == [x["item"] for x in full[10:15]]


def test_method_changes_the_distributions(client: TestClient, world: dict) -> None:
    p = world["name"]
    a = client.get(f"/v1/projects/{p}/items", params={"sort": "item", "limit": 61}).json()
    b = client.get(
        f"/v1/projects/{p}/items",
        params={"sort": "item", "limit": 61, "method": "softmax", "temperature": 2},
    ).json()
    assert b["method"] == "softmax" and b["params"] == {"temperature": 2.0}
    exp = COUNT_METHODS["softmax"](temperature=2.0).compute(world["counts"])
    for x, y in zip(a["items"], b["items"], strict=True):
        i = world["ids"].index(y["item"])
        if y["n_votes"]:
            assert y["distribution"] == pytest.approx(exp[i].tolist())
            if len(set(world["counts"][i].tolist())) > 1:  # ties are uniform under both
                assert x["distribution"] != pytest.approx(y["distribution"])


def test_min_votes_filter(client: TestClient, world: dict) -> None:
    rows = all_pages(client, world["name"], sort="entropy", min_votes=3, limit=20)
    assert len(rows) == int((world["counts"].sum(1) >= 3).sum())
    assert all(r["n_votes"] >= 3 for r in rows)


def test_bad_queries_are_422_naming_the_field(client: TestClient, world: dict) -> None:
    p = world["name"]
    cases = [
        ({"sort": "loudness"}, "sort"),
        ({"limit": 0}, "limit"),
        ({"order": "up"}, "order"),
        ({"cursor": "!!!"}, "cursor"),
        ({"method": "nope"}, "method"),
        ({"bogus": 1}, "bogus"),
    ]
    for query, field in cases:
        r = client.get(f"/v1/projects/{p}/items", params=query)
        assert r.status_code == 422, (query, r.text)
        assert r.json()["error"] == "validation_error"
        assert field in {e["field"] for e in r.json()["errors"]}, r.json()
    # A cursor made for one sort is refused for another.
    cur = client.get(f"/v1/projects/{p}/items", params={"sort": "votes", "limit": 2}).json()
    r = client.get(
        f"/v1/projects/{p}/items", params={"sort": "entropy", "cursor": cur["next_cursor"]}
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "cursor"
    r = client.get(
        f"/v1/projects/{p}/items",
        params={"sort": "votes", "cursor": cur["next_cursor"], "offset": 1},
    )
    assert r.status_code == 422
    assert client.get("/v1/projects/no-such-project/items").status_code == 404


def test_cache_follows_new_votes(client: TestClient, world: dict) -> None:
    """The computed order is cached; a new vote must show in the next request."""
    name = f"items-{uuid.uuid4().hex[:8]}"
    client.post("/v1/projects", json={"name": name, "classes": ["a", "b"]})
    votes = [
        {"item": "x", "worker": "w1", "label": 0},
        {"item": "y", "worker": "w1", "label": 0},
        {"item": "y", "worker": "w2", "label": 1},
    ]
    client.post(f"/v1/projects/{name}/votes", json={"votes": votes})
    first = client.get(f"/v1/projects/{name}/items", params={"sort": "entropy", "order": "desc"})
    assert [r["item"] for r in first.json()["items"]] == ["y", "x"]
    client.post(
        f"/v1/projects/{name}/votes",
        json={
            "votes": [
                {"item": "x", "worker": "w2", "label": 1},
                {"item": "y", "worker": "w3", "label": 1},
                {"item": "y", "worker": "w4", "label": 1},
            ]
        },
    )
    again = client.get(f"/v1/projects/{name}/items", params={"sort": "entropy", "order": "desc"})
    assert [r["item"] for r in again.json()["items"]] == ["x", "y"]
    client.post(f"/v1/projects/{name}/items", json={"items": [{"id": "z"}]})
    third = client.get(f"/v1/projects/{name}/items", params={"sort": "entropy", "order": "desc"})
    assert [r["item"] for r in third.json()["items"]] == ["x", "y", "z"]


def test_item_detail(client: TestClient, world: dict) -> None:
    p = world["name"]
    i = int(np.argmax(world["counts"].sum(1)))
    item = world["ids"][i]
    # The id has a "/" in it: sent percent-encoded, as one path segment (tests/test_path_ids.py).
    r = client.get(f"/v1/projects/{p}/items/{quote(item, safe='')}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["item"] == item and body["classes"] == CLASSES
    assert body["counts"] == world["counts"][i].tolist()
    assert body["n_votes"] == len(body["votes"]) == world["counts"][i].sum()
    assert body["meta"] == {"i": i} and body["features"] == [float(i), 1.0]
    assert body["gold"] == (CLASSES[world["gold"][i]] if world["gold"][i] >= 0 else None)
    labels = [CLASSES.index(v["label"]) for v in body["votes"]]
    assert np.bincount(labels, minlength=3).tolist() == body["counts"]
    assert all(v["worker"].startswith("w") and v["created_at"] for v in body["votes"])
    assert len({v["worker"] for v in body["votes"]}) == len(body["votes"])
    # The soft-label route under the same prefix still answers.
    sl = client.get(f"/v1/projects/{p}/items/{quote(item, safe='')}/soft-label")
    assert sl.status_code == 200 and sl.json()["item"] == item
    r = client.get(f"/v1/projects/{p}/items/nope")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    # /items/next keeps its meaning.
    assert client.get(f"/v1/projects/{p}/items/next").json()["strategy"] == "entropy"


def test_worker_model_method_sort(client: TestClient, world: dict) -> None:
    rows = all_pages(
        client, world["name"], sort="entropy", order="asc", method="dawid-skene", limit=25
    )
    assert sorted(r["item"] for r in rows) == sorted(world["ids"])
    scored = [r["entropy"] for r in rows if r["entropy"] is not None]
    assert scored == sorted(scored)


def test_forged_cursors_are_422_not_500(client: TestClient, world: dict) -> None:
    from app.labels.items import decode_cursor, encode_cursor

    p = world["name"]
    page = client.get(f"/v1/projects/{p}/items", params={"sort": "votes", "limit": 2}).json()
    import base64
    import json

    raw = page["next_cursor"]
    tag = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))["s"]
    assert decode_cursor(raw, tag)["k"]  # the real cursor passes
    for sort, forged in [
        ("votes", {"s": tag, "k": [10**30, 1], "t": 5}),
        ("votes", {"s": tag, "k": ["x", 1], "t": 5}),
        ("votes", {"s": tag}),
        ("entropy", {"s": tag.replace("votes", "entropy", 1), "o": "x", "f": [1, "a"]}),
        ("entropy", {"s": tag.replace("votes", "entropy", 1), "o": -5, "f": [1, "a"]}),
        ("item", {"s": tag.replace("votes", "item", 1), "k": [None], "t": 1}),
    ]:
        r = client.get(
            f"/v1/projects/{p}/items", params={"sort": sort, "cursor": encode_cursor(forged)}
        )
        assert r.status_code == 422, (forged, r.text)
        assert r.json()["errors"][0]["field"] == "cursor"


@pytest.mark.parametrize("sort", ["entropy", "votes", "item"])
def test_empty_project(client: TestClient, project: str, sort: str) -> None:
    r = client.get(f"/v1/projects/{project}/items", params={"sort": sort})
    assert r.status_code == 200, r.text
    assert r.json()["total"] == 0 and r.json()["items"] == [] and r.json()["next_cursor"] is None
