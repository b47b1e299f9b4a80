"""The vote lifecycle over HTTP: delete a vote / a worker's votes / an item / a project, exclude
and include a worker, the raw-votes export. After every change the stored counts must equal a
recount of the votes, and votes_version must move so fits and exports follow."""

from __future__ import annotations

import csv
import io
import json

import pyarrow.parquet as pq
from fastapi.testclient import TestClient

from tests.helpers import assert_counts_recount, db_rows, version

VOTES = [
    {"item": "a", "worker": "w1", "label": "cat"},
    {"item": "a", "worker": "w2", "label": "cat"},
    {"item": "a", "worker": "spam", "label": "bird"},
    {"item": "b", "worker": "w1", "label": "dog"},
    {"item": "b", "worker": "spam", "label": "bird"},
    {"item": "c/with slash", "worker": "w2", "label": "dog"},
    {"item": "c/with slash", "worker": "spam", "label": "bird"},
]


def seed(client: TestClient, project: str) -> None:
    r = client.post(f"/v1/projects/{project}/votes", json={"votes": VOTES})
    assert r.status_code == 200, r.text


def label(client: TestClient, project: str, item: str, method: str = "normalized") -> dict:
    r = client.get(f"/v1/projects/{project}/items/{item}/soft-label", params={"method": method})
    assert r.status_code == 200, r.text
    return r.json()


def test_delete_one_vote(client: TestClient, project: str, database_url: str) -> None:
    seed(client, project)
    v0 = version(database_url, project)
    r = client.delete(f"/v1/projects/{project}/items/a/votes/spam")
    assert r.status_code == 200, r.text
    assert r.json()["deleted_votes"] == 1 and r.json()["votes_version"] == v0 + 1
    assert label(client, project, "a")["probs"] == [1.0, 0.0, 0.0]
    assert_counts_recount(database_url, project)
    # An id with "/" works as in the soft-label route.
    r = client.delete(f"/v1/projects/{project}/items/c%2Fwith%20slash/votes/w2")
    assert r.status_code == 200, r.text
    assert_counts_recount(database_url, project)
    # Gone: a second delete is a 404, and nothing moves.
    r = client.delete(f"/v1/projects/{project}/items/a/votes/spam")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = client.delete(f"/v1/projects/{project}/items/nope/votes/spam")
    assert r.status_code == 404
    assert version(database_url, project) == v0 + 2


def test_delete_worker_votes(client: TestClient, project: str, database_url: str) -> None:
    seed(client, project)
    before = label(client, project, "b", "dawid-skene")
    r = client.delete(f"/v1/projects/{project}/workers/spam/votes")
    assert r.status_code == 200, r.text
    assert r.json()["deleted_votes"] == 3
    assert_counts_recount(database_url, project)
    assert label(client, project, "b")["probs"] == [0.0, 1.0, 0.0]
    after = label(client, project, "b", "dawid-skene")  # the fit follows the new version
    assert after["as_of"] > before["as_of"] and after["n_votes"] == 1
    stored = db_rows(
        database_url,
        "SELECT count(*) FROM votes v JOIN workers w ON w.id = v.worker_id "
        "JOIN projects p ON p.id = w.project_id WHERE p.name = %s AND w.external_id = 'spam'",
        project,
    )
    assert stored == [(0,)]
    assert client.delete(f"/v1/projects/{project}/workers/ghost/votes").status_code == 404


def test_exclude_and_include(client: TestClient, project: str, database_url: str) -> None:
    seed(client, project)
    v0 = version(database_url, project)
    r = client.post(f"/v1/projects/{project}/workers/spam/exclude")
    assert r.status_code == 200, r.text
    assert r.json() == {
        "worker": "spam",
        "excluded": True,
        "changed": True,
        "votes": 3,
        "votes_version": v0 + 1,
    }
    assert_counts_recount(database_url, project)
    assert label(client, project, "a")["probs"] == [1.0, 0.0, 0.0]
    assert label(client, project, "b", "dawid-skene")["n_votes"] == 1
    # Excluding twice changes nothing.
    again = client.post(f"/v1/projects/{project}/workers/spam/exclude").json()
    assert again["changed"] is False and again["votes_version"] == v0 + 1
    # /workers says who is excluded (and counts none of its votes).
    workers = {
        w["worker"]: w for w in client.get(f"/v1/projects/{project}/workers").json()["workers"]
    }
    assert workers["spam"]["excluded"] is True and workers["spam"]["n_votes"] == 0
    assert not any(w["excluded"] for name, w in workers.items() if name != "spam")
    # Votes an excluded worker sends meanwhile are stored, not counted.
    r = client.post(
        f"/v1/projects/{project}/votes",
        json={
            "votes": [
                {"item": "d", "worker": "spam", "label": "bird"},
                {"item": "a", "worker": "spam", "label": "dog"},
            ]
        },
    )
    assert r.status_code == 200, r.text
    assert_counts_recount(database_url, project)
    assert db_rows(
        database_url,
        "SELECT n_votes FROM items i JOIN projects p ON "
        "p.id = i.project_id WHERE p.name = %s AND i.external_id = 'd'",
        project,
    ) == [(0,)]
    # Raw export leaves them out unless asked.
    rows = client.get(f"/v1/projects/{project}/votes/export").text.splitlines()
    assert all(json.loads(x)["worker"] != "spam" for x in rows) and len(rows) == 4
    rows = client.get(
        f"/v1/projects/{project}/votes/export", params={"include_excluded": True}
    ).text.splitlines()
    assert len(rows) == 8
    # Deleting one of an excluded worker's votes leaves the counts alone.
    assert client.delete(f"/v1/projects/{project}/items/b/votes/spam").status_code == 200
    assert_counts_recount(database_url, project)
    r = client.post(f"/v1/projects/{project}/workers/spam/include")
    assert r.status_code == 200 and r.json()["votes"] == 3, r.text
    workers = {
        w["worker"]: w for w in client.get(f"/v1/projects/{project}/workers").json()["workers"]
    }
    assert workers["spam"]["excluded"] is False and workers["spam"]["n_votes"] == 3
    assert_counts_recount(database_url, project)
    assert label(client, project, "a")["probs"] == [2 / 3, 1 / 3, 0.0]
    assert label(client, project, "d")["probs"] == [0.0, 0.0, 1.0]
    assert client.post(f"/v1/projects/{project}/workers/ghost/exclude").status_code == 404


def test_delete_item(client: TestClient, project: str, database_url: str) -> None:
    seed(client, project)
    v0 = version(database_url, project)
    r = client.delete(f"/v1/projects/{project}/items/c%2Fwith%20slash")
    assert r.status_code == 200 and r.json()["deleted_votes"] == 2, r.text
    assert version(database_url, project) == v0 + 1
    r = client.get(f"/v1/projects/{project}/items/c%2Fwith%20slash/soft-label")
    assert r.status_code == 404
    assert_counts_recount(database_url, project)
    assert client.get(f"/v1/projects/{project}").json()["n_votes"] == 5
    export = client.get(f"/v1/projects/{project}/soft-labels").text.splitlines()
    assert sorted(json.loads(x)["item"] for x in export) == ["a", "b"]
    assert client.delete(f"/v1/projects/{project}/items/c%2Fwith%20slash").status_code == 404


def test_delete_project_needs_confirmation(
    client: TestClient, project: str, database_url: str
) -> None:
    seed(client, project)
    pid = db_rows(database_url, "SELECT id FROM projects WHERE name = %s", project)[0][0]
    r = client.delete(f"/v1/projects/{project}")
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "confirm", r.text
    r = client.delete(f"/v1/projects/{project}", params={"confirm": "something-else"})
    assert r.status_code == 422
    assert client.get(f"/v1/projects/{project}").status_code == 200
    r = client.delete(f"/v1/projects/{project}", params={"confirm": project})
    assert r.status_code == 200, r.text
    assert r.json() == {"deleted": project, "deleted_votes": 7}
    assert client.get(f"/v1/projects/{project}").status_code == 404
    for table in ("items", "workers", "votes", "label_fits", "connectors"):
        left = db_rows(database_url, f"SELECT count(*) FROM {table} WHERE project_id = %s", pid)
        assert left == [(0,)], table


def test_votes_export_formats(client: TestClient, project: str, database_url: str) -> None:
    seed(client, project)
    client.put(f"/v1/projects/{project}/connectors/label-studio", json={"from_name": "x"})
    lines = client.get(f"/v1/projects/{project}/votes/export").text.splitlines()
    first = json.loads(lines[0])
    assert set(first) == {"item", "worker", "label", "created_at", "updated_at", "source"}
    assert len(lines) == 7 and first["source"] == "api"
    assert {
        (json.loads(x)["item"], json.loads(x)["worker"], json.loads(x)["label"]) for x in lines
    } == {(v["item"], v["worker"], v["label"]) for v in VOTES}
    r = client.get(f"/v1/projects/{project}/votes/export", params={"format": "csv"})
    assert r.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(r.text)))
    assert list(table[0]) == ["item", "worker", "label", "created_at", "updated_at", "source"]
    assert len(table) == 7
    r = client.get(f"/v1/projects/{project}/votes/export", params={"format": "parquet"})
    pt = pq.read_table(io.BytesIO(r.content))
    assert pt.column_names == ["item", "worker", "label", "created_at", "updated_at", "source"]
    assert pt.num_rows == 7
    assert sorted(pt.column("label").to_pylist()) == sorted(v["label"] for v in VOTES)
    # After a delete, the export follows at once.
    client.delete(f"/v1/projects/{project}/workers/spam/votes")
    assert len(client.get(f"/v1/projects/{project}/votes/export").text.splitlines()) == 4


def test_concurrent_ingest_exclude_and_deletes(
    client: TestClient, project: str, database_url: str
) -> None:
    """Writers post and relabel votes of worker `w` and others while another thread excludes and
    includes `w` and deletes votes: the counts still equal a recount of the counted votes."""
    import random
    import threading

    rng = random.Random(3)
    items = [f"i{k}" for k in range(25)]
    seed_votes = [{"item": i, "worker": "w", "label": 0} for i in items]
    r = client.post(f"/v1/projects/{project}/votes", json={"votes": seed_votes})
    assert r.status_code == 200
    failures: list[str] = []

    def writer(worker_ids: list[str]) -> None:
        for _ in range(12):
            batch = [
                {"item": i, "worker": w, "label": rng.randrange(3)}
                for i in rng.sample(items, 10)
                for w in worker_ids
            ]
            r = client.post(f"/v1/projects/{project}/votes", json={"votes": batch})
            if r.status_code != 200:
                failures.append(r.text)

    def toggler() -> None:
        for k in range(12):
            action = "exclude" if k % 2 == 0 else "include"
            r = client.post(f"/v1/projects/{project}/workers/w/{action}")
            if r.status_code != 200:
                failures.append(r.text)
            r = client.delete(f"/v1/projects/{project}/items/{rng.choice(items)}/votes/x")
            if r.status_code not in (200, 404):
                failures.append(r.text)

    threads = [threading.Thread(target=writer, args=(ws,)) for ws in (["w", "x"], ["w", "y"])]
    threads.append(threading.Thread(target=toggler))
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert failures == []
    assert_counts_recount(database_url, project)
    assert client.post(f"/v1/projects/{project}/workers/w/include").status_code == 200
    assert_counts_recount(database_url, project)


def test_exclude_takes_item_locks_in_the_order_vote_batches_do(
    client: TestClient, project: str, database_url: str
) -> None:
    """Item "i2" is created before "i10", so id order and external-id order differ. A vote batch
    holding "i10" (a batch locks the items of its counts sorted by external id) and then
    reaching for "i2" must not meet an exclusion of another worker holding "i2" and waiting for
    "i10": that cycle is a deadlock, and PostgreSQL aborts one of the two."""
    import threading
    import time

    import psycopg

    for item in ("i2", "i10"):  # one batch each: a batch creates its items sorted by id
        vote = {"item": item, "worker": "w", "label": 0}
        r = client.post(f"/v1/projects/{project}/votes", json={"votes": [vote]})
        assert r.status_code == 200, r.text
    (project_id,) = db_rows(database_url, "SELECT id FROM projects WHERE name = %s", project)[0]
    ingest = "SELECT * FROM softlabels_ingest_votes(%s, %s, %s, %s, %s, 'api', NULL, NULL)"
    classes = ["cat", "dog", "bird"]
    result: dict[str, object] = {}
    with psycopg.connect(database_url) as batch:
        # First half of a batch: holds the lock on "i10", in an open transaction.
        batch.execute(ingest, (project_id, classes, ["i10"], ["x"], [1]))

        def exclude() -> None:
            r = client.post(f"/v1/projects/{project}/workers/w/exclude")
            result["exclude"] = (r.status_code, r.text)

        th = threading.Thread(target=exclude)
        th.start()
        with psycopg.connect(database_url, autocommit=True) as watch:
            for _ in range(200):  # until the exclusion waits on a row lock
                waiting = watch.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE '%FOR UPDATE%'"
                ).fetchone()
                if waiting and waiting[0]:
                    break
                time.sleep(0.02)
            else:
                raise AssertionError("the exclusion never waited for the batch's lock")
        # Second half: "i2". Were the exclusion holding "i2" while it waits, this would be a
        # deadlock (its victim retried unseen): NOWAIT makes a held lock an error instead.
        batch.execute(
            "SELECT 1 FROM items WHERE project_id = %s AND external_id = 'i2' FOR UPDATE NOWAIT",
            (project_id,),
        )
        batch.execute(ingest, (project_id, classes, ["i2"], ["x"], [1]))
        batch.commit()
    th.join(timeout=30)
    assert result["exclude"][0] == 200, result  # type: ignore[index]
    assert_counts_recount(database_url, project)
