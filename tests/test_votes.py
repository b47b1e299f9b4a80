"""Vote ingest: idempotence, all-or-nothing, every bad input, concurrency, counts integrity."""

from __future__ import annotations

import json
import random
import threading

import pytest
from fastapi.testclient import TestClient

from tests.helpers import assert_counts_match_votes, db_rows, post_votes, stored_votes


def test_insert_then_retry_is_unchanged(client: TestClient, project: str, database_url: str):
    votes = [{"item": f"i{i % 3}", "worker": f"w{i}", "label": i % 3} for i in range(9)]
    first = post_votes(client, project, votes)
    assert (first["inserted"], first["updated"], first["unchanged"]) == (9, 0, 0)
    again = post_votes(client, project, votes)
    assert (again["inserted"], again["updated"], again["unchanged"]) == (0, 0, 9)
    assert again["votes_version"] == first["votes_version"]  # nothing changed, no new version
    assert len(stored_votes(database_url, project)) == 9
    assert_counts_match_votes(database_url, project)


def test_changed_label_replaces(client: TestClient, project: str, database_url: str) -> None:
    post_votes(client, project, [{"item": "a", "worker": "w", "label": "cat"}])
    r = post_votes(client, project, [{"item": "a", "worker": "w", "label": "dog"}])
    assert (r["inserted"], r["updated"], r["unchanged"]) == (0, 1, 0)
    assert stored_votes(database_url, project) == {("a", "w", 1)}
    label = client.get(f"/v1/projects/{project}/items/a/soft-label").json()
    assert label["probs"] == [0.0, 1.0, 0.0] and label["n_votes"] == 1
    assert_counts_match_votes(database_url, project)


def test_label_by_name_or_index(client: TestClient, project: str, database_url: str) -> None:
    post_votes(
        client,
        project,
        [
            {"item": "a", "worker": "w1", "label": "bird"},
            {"item": "a", "worker": "w2", "label": 2},
        ],
    )
    assert stored_votes(database_url, project) == {("a", "w1", 2), ("a", "w2", 2)}


def test_one_bad_row_stores_nothing(client: TestClient, project: str, database_url: str) -> None:
    votes = [{"item": f"i{i}", "worker": "w", "label": "cat"} for i in range(100)]
    votes[57]["label"] = "zebra"
    votes[80]["label"] = 7
    r = client.post(f"/v1/projects/{project}/votes", json={"votes": votes})
    assert r.status_code == 422
    body = r.json()
    assert body["error"] == "validation_error"
    assert [(e["index"], e["field"]) for e in body["errors"]] == [(57, "label"), (80, "label")]
    assert stored_votes(database_url, project) == set()
    assert db_rows(
        database_url,
        "SELECT count(*) FROM items i JOIN projects p ON p.id = i.project_id WHERE p.name = %s",
        project,
    ) == [(0,)]


def test_duplicate_pair_in_batch(client: TestClient, project: str, database_url: str) -> None:
    votes = [
        {"item": "a", "worker": "w", "label": "cat"},
        {"item": "b", "worker": "w", "label": "cat"},
        {"item": "a", "worker": "w", "label": "dog"},
    ]
    r = client.post(f"/v1/projects/{project}/votes", json={"votes": votes})
    assert r.status_code == 422
    assert [(e["index"], e["field"]) for e in r.json()["errors"]] == [(2, "item")]
    assert stored_votes(database_url, project) == set()


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"item": "", "worker": "w", "label": "cat"}, "item"),
        ({"item": "x" * 257, "worker": "w", "label": "cat"}, "item"),
        ({"item": 5, "worker": "w", "label": "cat"}, "item"),
        ({"item": "a", "worker": None, "label": "cat"}, "worker"),
        ({"item": "a", "worker": "w", "label": 1.5}, "label"),
        ({"item": "a", "worker": "w", "label": True}, "label"),
        ({"item": "a", "worker": "w", "label": -1}, "label"),
        ({"item": "a", "worker": "w", "label": 3}, "label"),
        ({"item": "a\u0000b", "worker": "w", "label": "cat"}, "item"),
        ({"item": "a", "worker": "w"}, "label"),
        ({"item": "a", "worker": "w", "label": "cat", "extra": 1}, "extra"),
    ],
)
def test_bad_rows_are_422(client: TestClient, project: str, row: dict, field: str) -> None:
    good = {"item": "ok", "worker": "w", "label": "cat"}
    r = client.post(f"/v1/projects/{project}/votes", json={"votes": [good, row]})
    assert r.status_code == 422, r.text
    errors = r.json()["errors"]
    assert {"index": 1, "field": field} == {k: errors[0][k] for k in ("index", "field")}, errors


@pytest.mark.parametrize(
    "body",
    [b"{", b"[]", b'{"votes": {}}', b'{"votes": []}', b'{"votes": "x"}', b"null", b"\xff\xfe"],
)
def test_malformed_bodies(client: TestClient, project: str, body: bytes) -> None:
    r = client.post(
        f"/v1/projects/{project}/votes", content=body, headers={"content-type": "application/json"}
    )
    assert r.status_code == 422, r.text
    assert r.json()["error"] in ("malformed_json", "validation_error")


def test_unknown_project(client: TestClient) -> None:
    r = client.post(
        "/v1/projects/nope-x/votes", json={"votes": [{"item": "a", "worker": "w", "label": "cat"}]}
    )
    assert r.status_code == 404 and r.json()["error"] == "not_found"


def test_too_many_votes_is_413(client: TestClient, project: str, settings) -> None:
    n = settings.max_votes_per_request + 1
    votes = [{"item": f"i{i}", "worker": "w", "label": 0} for i in range(n)]
    r = client.post(f"/v1/projects/{project}/votes", json={"votes": votes})
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large"


def test_too_large_body_is_413_before_parsing(client: TestClient, project: str, settings) -> None:
    body = b'{"votes": [' + b" " * (settings.max_body_bytes + 10) + b"]}"
    r = client.post(
        f"/v1/projects/{project}/votes", content=body, headers={"content-type": "application/json"}
    )
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large"

    def chunks():  # no Content-Length: the limit must hold for a chunked body too
        yield b'{"votes": ['
        for _ in range(settings.max_body_bytes // (1 << 20) + 2):
            yield b" " * (1 << 20)
        yield b"]}"

    r = client.post(
        f"/v1/projects/{project}/votes",
        content=chunks(),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 413


def test_concurrent_overlapping_writers(client: TestClient, project: str, database_url: str):
    """Threads post overlapping batches (with relabels) in random order; the final state is the
    last label each (item, worker) was given by the thread that owns it, and counts match."""
    rng = random.Random(7)
    items = [f"i{i}" for i in range(40)]
    n_threads, n_batches = 6, 8
    expected: dict[tuple[str, str], int] = {}
    plans = []
    for t in range(n_threads):
        worker_ids = [f"t{t}-w{j}" for j in range(5)]
        batches = []
        for _ in range(n_batches):
            pairs = rng.sample([(i, w) for i in items for w in worker_ids], 60)
            batch = [{"item": i, "worker": w, "label": rng.randrange(3)} for i, w in pairs]
            batches.append(batch)
            for v in batch:
                expected[(v["item"], v["worker"])] = v["label"]
        plans.append(batches)
    failures: list[str] = []

    def run(batches: list[list[dict]]) -> None:
        for batch in batches:
            # Each batch is sent twice: a client retrying after a lost reply.
            for _ in range(2):
                r = client.post(f"/v1/projects/{project}/votes", json={"votes": batch})
                if r.status_code != 200:
                    failures.append(r.text)

    threads = [threading.Thread(target=run, args=(p,)) for p in plans]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert failures == []
    assert stored_votes(database_url, project) == {(i, w, k) for (i, w), k in expected.items()}
    assert_counts_match_votes(database_url, project)


def test_items_upsert(client: TestClient, project: str, database_url: str) -> None:
    url = f"/v1/projects/{project}/items"
    r = client.post(
        url,
        json={
            "items": [
                {"id": "a", "features": [1, 2.5], "gold": "dog", "meta": {"src": "x"}},
                {"id": "b"},
            ]
        },
    )
    assert r.status_code == 200 and r.json() == {"inserted": 2, "updated": 0}
    # Omitted fields are kept; sent fields replace (null clears).
    r = client.post(url, json={"items": [{"id": "a", "gold": None}, {"id": "c", "gold": 2}]})
    assert r.json() == {"inserted": 1, "updated": 1}
    rows = db_rows(
        database_url,
        "SELECT i.external_id, i.features, i.gold, i.meta FROM items i "
        "JOIN projects p ON p.id = i.project_id WHERE p.name = %s ORDER BY 1",
        project,
    )
    assert rows == [
        ("a", [1.0, 2.5], None, {"src": "x"}),
        ("b", None, None, None),
        ("c", None, 2, None),
    ]
    assert client.get(f"/v1/projects/{project}").json()["n_features"] == 2


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"id": "x", "features": [1.0, 2.0, 3.0]}, "features"),
        ({"id": "x", "features": []}, "features"),
        ({"id": "x", "features": [1, "a"]}, "features.1"),
        ({"id": "x", "gold": "zebra"}, "gold"),
        ({"id": "x", "gold": 9}, "gold"),
        ({"id": "x", "meta": [1]}, "meta"),
        ({"id": "x", "meta": {"k": "a\u0000"}}, "meta"),
        ({"id": ""}, "id"),
    ],
)
def test_bad_items(client: TestClient, project: str, database_url: str, row: dict, field: str):
    url = f"/v1/projects/{project}/items"
    assert (
        client.post(url, json={"items": [{"id": "first", "features": [0.0, 1.0]}]}).status_code
        == 200
    )
    r = client.post(url, json={"items": [{"id": "ok", "features": [1.0, 1.0]}, row]})
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["index"] == 1
    assert r.json()["errors"][0]["field"] == field
    rows = db_rows(
        database_url,
        "SELECT count(*) FROM items i JOIN projects p ON p.id = i.project_id WHERE p.name = %s",
        project,
    )
    assert rows == [(1,)]


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_features_are_422(client: TestClient, project: str, token: str) -> None:
    body = '{"items": [{"id": "x", "features": [1.0, TOKEN]}]}'.replace("TOKEN", token)
    r = client.post(
        f"/v1/projects/{project}/items",
        content=body.encode(),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == "features.1"


def test_duplicate_item_ids(client: TestClient, project: str) -> None:
    r = client.post(f"/v1/projects/{project}/items", json={"items": [{"id": "a"}, {"id": "a"}]})
    assert r.status_code == 422 and r.json()["errors"][0]["index"] == 1


def test_vote_json_roundtrip_with_unicode_ids(client: TestClient, project: str, database_url):
    ids = ["ünïcødé", "emoji-😀", 'quote"comma,', "tab\tnew\nline", "x" * 256]
    votes = [{"item": i, "worker": i, "label": "cat"} for i in ids]
    post_votes(client, project, votes)
    assert {v[0] for v in stored_votes(database_url, project)} == set(ids)
    json.dumps(votes)
