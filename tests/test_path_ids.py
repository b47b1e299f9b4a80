"""Item and worker ids in paths reach exactly that item or worker, whatever characters they hold.

Every route with an id in its path is called with ids built to collide with another route
("amb/votes/w0" against /items/{item}/votes/{worker}): the request must touch only the id it
names. Real PostgreSQL, the app over HTTP (TestClient).
"""

from __future__ import annotations

from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

TRICKY = [
    "amb/votes/w0",
    "amb2/soft-label",
    "a/b",
    "100%",
    "%2F",
    "sp ace?#",
    "x\ny",
    "..",
    "next/x",
]


def q(value: str) -> str:
    # Dots too: an HTTP client drops a bare ".." segment before sending.
    return quote(value, safe="").replace(".", "%2E")


def put_votes(client: TestClient, project: str, votes: list[tuple[str, str, int]]) -> None:
    body = {"votes": [{"item": i, "worker": w, "label": lab} for i, w, lab in votes]}
    r = client.post(f"/v1/projects/{project}/votes", json=body)
    assert r.status_code == 200, r.text


def vote_pairs(client: TestClient, project: str) -> set[tuple[str, str]]:
    r = client.get(f"/v1/projects/{project}/votes/export", params={"format": "jsonl"})
    assert r.status_code == 200, r.text
    import json

    return {(row["item"], row["worker"]) for row in map(json.loads, r.text.splitlines())}


def test_delete_vote_of_item_with_slashes_deletes_only_that_vote(
    client: TestClient, project: str
) -> None:
    # Both the item "amb" with worker w0's vote and the item "amb/votes/w0" exist.
    put_votes(
        client, project, [("amb", "w0", 0), ("amb/votes/w0", "w1", 1), ("amb/votes/w0", "w0", 2)]
    )
    p = f"/v1/projects/{project}"
    r = client.delete(f"{p}/items/{q('amb/votes/w0')}")
    assert r.status_code == 200, r.text
    assert r.json()["deleted_votes"] == 2
    assert vote_pairs(client, project) == {("amb", "w0")}


def test_delete_one_vote_with_tricky_item_and_worker(client: TestClient, project: str) -> None:
    put_votes(
        client, project, [("amb", "w0", 0), ("amb/votes/w0", "a/b", 1), ("amb/votes/w0", "w0", 1)]
    )
    r = client.delete(f"/v1/projects/{project}/items/{q('amb/votes/w0')}/votes/{q('a/b')}")
    assert r.status_code == 200, r.text
    assert r.json()["deleted_votes"] == 1
    assert vote_pairs(client, project) == {("amb", "w0"), ("amb/votes/w0", "w0")}


def test_unencoded_slash_does_not_reach_another_item(client: TestClient, project: str) -> None:
    put_votes(client, project, [("amb", "w0", 0)])
    # Sent raw, "amb/votes/w0" is the route for w0's vote on "amb": that is what it names.
    r = client.delete(f"/v1/projects/{project}/items/amb/votes/w0")
    assert r.status_code == 200
    assert vote_pairs(client, project) == set()
    # Raw slashes in an id that has no route are an unknown endpoint, not a guess.
    r = client.get(f"/v1/projects/{project}/items/a/b")
    assert r.status_code == 404
    assert r.json()["error"] == "not_found"


@pytest.mark.parametrize("item", TRICKY)
def test_item_routes_reach_the_item(client: TestClient, project: str, item: str) -> None:
    put_votes(client, project, [(item, "w/1", 0), (item, "w2", 1), ("amb", "w0", 2)])
    p = f"/v1/projects/{project}"
    r = client.get(f"{p}/items/{q(item)}")
    assert r.status_code == 200, r.text
    assert r.json()["item"] == item
    assert {v["worker"] for v in r.json()["votes"]} == {"w/1", "w2"}

    r = client.get(f"{p}/items/{q(item)}/soft-label")
    assert r.status_code == 200, r.text
    assert r.json()["item"] == item
    assert r.json()["n_votes"] == 2

    r = client.delete(f"{p}/items/{q(item)}/votes/{q('w/1')}")
    assert r.status_code == 200, r.text
    assert vote_pairs(client, project) == {(item, "w2"), ("amb", "w0")}

    r = client.delete(f"{p}/items/{q(item)}")
    assert r.status_code == 200, r.text
    assert vote_pairs(client, project) == {("amb", "w0")}


def test_missing_item_with_slash_is_named_in_full(client: TestClient, project: str) -> None:
    put_votes(client, project, [("amb2", "w0", 0)])
    r = client.get(f"/v1/projects/{project}/items/{q('amb2/soft-label')}")
    assert r.status_code == 404
    assert "amb2/soft-label" in r.json()["detail"]


@pytest.mark.parametrize("worker", ["w/0", "w0/votes", "x/exclude", "100%", "a\nb"])
def test_worker_routes_reach_the_worker(client: TestClient, project: str, worker: str) -> None:
    put_votes(
        client,
        project,
        [("i1", worker, 0), ("i2", worker, 1), ("i1", "w0", 0), ("i2", "w0", 1), ("i1", "x", 2)],
    )
    p = f"/v1/projects/{project}"
    r = client.get(f"{p}/workers/{q(worker)}", params={"method": "dawid-skene"})
    assert r.status_code == 200, r.text
    assert r.json()["worker"] == worker

    r = client.post(f"{p}/workers/{q(worker)}/exclude")
    assert r.status_code == 200, r.text
    assert r.json()["worker"] == worker and r.json()["votes"] == 2
    r = client.post(f"{p}/workers/{q(worker)}/include")
    assert r.status_code == 200, r.text
    assert r.json()["worker"] == worker

    r = client.delete(f"{p}/workers/{q(worker)}/votes")
    assert r.status_code == 200, r.text
    assert r.json()["deleted_votes"] == 2
    assert vote_pairs(client, project) == {("i1", "w0"), ("i2", "w0"), ("i1", "x")}
