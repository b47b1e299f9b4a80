"""Which row locks a vote batch holds, and for how long (app/db/sql/softlabels_ingest_votes.sql).

A batch that changes no counts (a re-sent batch, a re-sync with nothing new) must hold nothing
another batch on the same items waits for; two batches racing to insert the same new vote must
both be answered as if one came after the other, with counts equal to a recount. Each test
keeps one batch's transaction open (its function has returned, its commit not yet come) and
runs the other beside it with a lock timeout, so a wait is an error, not a slow test.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient

from tests.helpers import assert_counts_recount, assert_ticks_recount, db_rows

CLASSES = ["cat", "dog", "bird"]
INGEST = "SELECT * FROM softlabels_ingest_votes(%s, %s, %s, %s, %s::smallint[], 'api', NULL, NULL)"
TICKS = "SELECT * FROM softlabels_ingest_ticks(%s, %s, %s, %s, %s, 'api', NULL, NULL)"


def post(client: TestClient, project: str, votes: list[dict]) -> dict:
    r = client.post(f"/v1/projects/{project}/votes", json={"votes": votes})
    assert r.status_code == 200, r.text
    return r.json()


def project_id(database_url: str, project: str) -> int:
    return int(db_rows(database_url, "SELECT id FROM projects WHERE name = %s", project)[0][0])


@pytest.fixture
def open_batch(database_url: str) -> Iterator[psycopg.Connection]:
    """A connection whose transaction stays open until the test commits it."""
    with psycopg.connect(database_url) as conn:
        yield conn


def test_a_batch_that_changes_nothing_holds_no_lock_other_batches_wait_for(
    client: TestClient, project: str, database_url: str, open_batch: psycopg.Connection
) -> None:
    items = [f"i{n}" for n in range(20)]
    post(client, project, [{"item": i, "worker": "w1", "label": "cat"} for i in items])
    pid = project_id(database_url, project)
    # The same batch again, left uncommitted: every vote unchanged.
    row = open_batch.execute(INGEST, (pid, CLASSES, items, ["w1"] * 20, [0] * 20)).fetchone()
    assert row is not None and row[2] == 20  # unchanged
    # Another worker's votes on the same items, with a lock wait being an error.
    with psycopg.connect(database_url, autocommit=True) as other:
        other.execute("SET lock_timeout = '2s'")
        row = other.execute(INGEST, (pid, CLASSES, items, ["w2"] * 20, [1] * 20)).fetchone()
        assert row is not None and row[0] == 20  # inserted, without waiting
    open_batch.commit()
    assert_counts_recount(database_url, project)


def test_a_batch_whose_counts_changed_holds_those_items_until_it_commits(
    client: TestClient, project: str, database_url: str, open_batch: psycopg.Connection
) -> None:
    """The counts update is where batches on the same items wait for each other: the second
    waits for the first's commit, and then both are counted."""
    items = ["a", "b", "c"]
    post(client, project, [{"item": i, "worker": "w1", "label": "cat"} for i in items])
    pid = project_id(database_url, project)
    open_batch.execute(INGEST, (pid, CLASSES, items, ["w2"] * 3, [1] * 3))
    result: dict[str, object] = {}

    def second() -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            result["row"] = conn.execute(
                INGEST, (pid, CLASSES, items, ["w3"] * 3, [2] * 3)
            ).fetchone()

    th = threading.Thread(target=second)
    th.start()
    with psycopg.connect(database_url, autocommit=True) as watch:
        for _ in range(250):  # until the second batch waits for the first
            waiting = watch.execute(
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'transactionid'"
            ).fetchone()
            if waiting and waiting[0]:
                break
            time.sleep(0.02)
        else:
            raise AssertionError("the second batch never waited for the first's counts")
    open_batch.commit()
    th.join(timeout=30)
    assert result["row"][0] == 3  # type: ignore[index]
    assert_counts_recount(database_url, project)


def test_two_batches_inserting_the_same_new_vote_are_answered_one_after_the_other(
    client: TestClient, project: str, database_url: str, open_batch: psycopg.Connection
) -> None:
    post(client, project, [{"item": "x", "worker": "w0", "label": "cat"}])
    pid = project_id(database_url, project)
    first = open_batch.execute(INGEST, (pid, CLASSES, ["x"], ["w1"], [0])).fetchone()
    assert first is not None and first[0] == 1  # inserted, not committed yet
    result: dict[str, object] = {}

    def second() -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            result["row"] = conn.execute(INGEST, (pid, CLASSES, ["x"], ["w1"], [2])).fetchone()

    th = threading.Thread(target=second)
    th.start()
    time.sleep(0.3)  # the second now waits on the first's new vote
    assert th.is_alive()
    open_batch.commit()
    th.join(timeout=30)
    row = result["row"]
    assert row is not None and (row[0], row[1], row[2]) == (0, 1, 0)  # type: ignore[index]
    votes = db_rows(database_url, "SELECT label FROM votes WHERE project_id = %s ORDER BY 1", pid)
    assert [v[0] for v in votes] == [0, 2]
    assert_counts_recount(database_url, project)


def test_multi_label_batches_on_the_same_items_overlap_too(
    client: TestClient, database_url: str, open_batch: psycopg.Connection
) -> None:
    project = "locks-ml"
    r = client.post(
        "/v1/projects", json={"name": project, "classes": CLASSES, "task_type": "multi_label"}
    )
    assert r.status_code == 201, r.text
    try:
        post(client, project, [{"item": i, "worker": "w1", "label": ["cat"]} for i in "abc"])
        pid = project_id(database_url, project)
        row = open_batch.execute(
            TICKS, (pid, CLASSES, list("abc"), ["w1"] * 3, ["{0}"] * 3)
        ).fetchone()
        assert row is not None and row[2] == 3  # unchanged
        with psycopg.connect(database_url, autocommit=True) as other:
            other.execute("SET lock_timeout = '2s'")
            row = other.execute(
                TICKS, (pid, CLASSES, list("abc"), ["w2"] * 3, ["{0,2}", "{}", "{1}"])
            ).fetchone()
            assert row is not None and row[0] == 3
        open_batch.commit()
        assert_ticks_recount(database_url, project)
    finally:
        client.delete(f"/v1/projects/{project}")


def test_a_call_naming_one_vote_twice_is_refused_whole(
    client: TestClient, project: str, database_url: str
) -> None:
    """The API refuses such a batch before it reaches the function (a 422 naming the row);
    the function refuses it too, rather than count the second as another new vote."""
    pid = project_id(database_url, project)
    with (
        psycopg.connect(database_url, autocommit=True) as conn,
        pytest.raises(psycopg.errors.CardinalityViolation),
    ):
        conn.execute(INGEST, (pid, CLASSES, ["a", "a"], ["w", "w"], [0, 1]))
    assert db_rows(database_url, "SELECT count(*) FROM votes WHERE project_id = %s", pid) == [(0,)]
    r = client.post(
        f"/v1/projects/{project}/votes",
        json={"votes": [{"item": "a", "worker": "w", "label": 0}] * 2},
    )
    assert r.status_code == 422 and r.json()["errors"][0]["index"] == 1, r.text
