"""Task types on the write path: a project's task type (created, shown, fixed once it has
votes), multi-label votes (sets of classes) and ordinal votes (levels), each bad row named, the
counts exact under updates, retries, deletes, exclusion and concurrent writers."""

from __future__ import annotations

import random
import threading
import uuid

import pytest
from fastapi.testclient import TestClient

from tests.helpers import (
    assert_counts_recount,
    assert_ticks_recount,
    db_rows,
    post_votes,
    version,
)

TOPICS = ["sports", "politics", "tech", "health"]


def make(client: TestClient, task_type: str, classes: list[str], **extra: object) -> str:
    name = f"t-{uuid.uuid4().hex[:12]}"
    body = {"name": name, "classes": classes, "task_type": task_type, **extra}
    r = client.post("/v1/projects", json=body)
    assert r.status_code == 201, r.text
    return name


@pytest.fixture
def multi(client: TestClient) -> str:
    return make(client, "multi_label", TOPICS)


@pytest.fixture
def scale(client: TestClient) -> str:
    return make(client, "ordinal", ["1", "2", "3", "4", "5"])


def ticks(database_url: str, project: str) -> dict[tuple[str, str], list[int]]:
    rows = db_rows(
        database_url,
        "SELECT i.external_id, w.external_id, v.ticks, v.label FROM votes v "
        "JOIN items i ON i.id = v.item_id JOIN workers w ON w.id = v.worker_id "
        "JOIN projects p ON p.id = v.project_id WHERE p.name = %s",
        project,
    )
    assert all(label == -1 for *_, label in rows)
    return {(i, w): t for i, w, t, _ in rows}


def counts(client: TestClient, project: str, item: str) -> tuple[list[int], int]:
    body = client.get(f"/v1/projects/{project}/items/{item}").json()
    return body["counts"], body["n_votes"]


# ----- the project's task type --------------------------------------------------------------


def test_task_type_is_created_and_shown(client: TestClient, project: str) -> None:
    assert client.get(f"/v1/projects/{project}").json()["task_type"] == "single"
    name = make(client, "ordinal", ["-2", "-1", "0", "1", "2"])
    body = client.get(f"/v1/projects/{name}").json()
    # Numeric level names are the scale's values unless others are given.
    assert body["task_type"] == "ordinal" and body["level_values"] == [-2, -1, 0, 1, 2]
    named = make(client, "ordinal", ["low", "mid", "high"], level_values=[0, 5, 10])
    assert client.get(f"/v1/projects/{named}").json()["level_values"] == [0, 5, 10]
    plain = make(client, "ordinal", ["low", "mid", "high"])
    assert client.get(f"/v1/projects/{plain}").json()["level_values"] == [0, 1, 2]
    listed = {p["name"]: p for p in client.get("/v1/projects").json()["projects"]}
    assert listed[named]["task_type"] == "ordinal" and listed[project]["level_values"] is None


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"task_type": "multi"}, "task_type"),
        ({"task_type": "ordinal", "level_values": [1, 2]}, "level_values"),
        ({"task_type": "ordinal", "level_values": [3, 2, 1]}, "level_values"),
        ({"task_type": "single", "level_values": [1, 2, 3]}, "level_values"),
        ({"task_type": "ordinal", "level_values": [1, "x", 3]}, "level_values.1"),
    ],
)
def test_bad_task_type_is_422_naming_field(client: TestClient, extra: dict, field: str) -> None:
    body = {"name": f"t-{uuid.uuid4().hex[:8]}", "classes": ["a", "b", "c"], **extra}
    r = client.post("/v1/projects", json=body)
    assert r.status_code == 422, r.text
    assert field in [e["field"] for e in r.json()["errors"]], r.json()


def test_task_type_fixed_once_votes_exist(client: TestClient, project: str) -> None:
    r = client.patch(f"/v1/projects/{project}", json={"task_type": "multi_label"})
    assert r.status_code == 200 and r.json()["task_type"] == "multi_label"
    r = client.patch(f"/v1/projects/{project}", json={"task_type": "ordinal"})
    assert r.status_code == 200 and r.json()["level_values"] == [0, 1, 2]
    post_votes(client, project, [{"item": "i", "worker": "w", "label": "dog"}])
    r = client.patch(f"/v1/projects/{project}", json={"task_type": "single"})
    assert r.status_code == 409, r.text
    assert r.json()["errors"][0]["field"] == "task_type"
    # The level values are no part of the votes: they may change at any time.
    r = client.patch(f"/v1/projects/{project}", json={"level_values": [1, 2, 4]})
    assert r.status_code == 200 and r.json()["level_values"] == [1, 2, 4]
    r = client.patch(f"/v1/projects/{project}", json={"level_values": [1, 2]})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "level_values"
    assert client.get(f"/v1/projects/{project}").json()["task_type"] == "ordinal"


def test_a_cached_project_whose_type_changed_is_refused_then_seen(
    client: TestClient, project: str, database_url: str
) -> None:
    """The write path caches the project; a type changed behind its back (another process) is
    caught by the SQL function, and the vote is checked again against the new type."""
    post_votes(client, project, [{"item": "warm", "worker": "w", "label": "cat"}])
    client.delete(f"/v1/projects/{project}/items/warm/votes/w")
    db_rows(
        database_url,
        "UPDATE projects SET task_type = 'multi_label' WHERE name = %s RETURNING 1",
        project,
    )
    r = client.post(
        f"/v1/projects/{project}/votes", json={"votes": [{"item": "a", "worker": "w", "label": 0}]}
    )
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == "label" and "multi_label" in r.text
    post_votes(client, project, [{"item": "a", "worker": "w", "label": ["cat", "bird"]}])
    assert counts(client, project, "a") == ([1, 0, 1], 1)


# ----- multi-label votes --------------------------------------------------------------------


def test_multi_label_votes_count_voters_and_ticks(
    client: TestClient, multi: str, database_url: str
) -> None:
    r = post_votes(
        client,
        multi,
        [
            {"item": "a", "worker": "w1", "label": ["sports", "tech"]},
            {"item": "a", "worker": "w2", "label": [2]},
            {"item": "a", "worker": "w3", "label": []},  # none apply: a voter, no tick
            {"item": "b", "worker": "w1", "label": ["health", 0]},
        ],
    )
    assert (r["inserted"], r["updated"], r["unchanged"]) == (4, 0, 0)
    assert counts(client, multi, "a") == ([1, 0, 2, 0], 3)
    assert counts(client, multi, "b") == ([1, 0, 0, 1], 1)
    assert ticks(database_url, multi)[("b", "w1")] == [0, 3]  # sorted, whatever the order sent
    assert_ticks_recount(database_url, multi)


def test_multi_label_retry_update_and_same_set(
    client: TestClient, multi: str, database_url: str
) -> None:
    votes = [
        {"item": f"i{i % 4}", "worker": f"w{i}", "label": [TOPICS[j] for j in range(i % 3)]}
        for i in range(12)
    ]
    first = post_votes(client, multi, votes)
    again = post_votes(client, multi, votes)
    assert (again["inserted"], again["updated"], again["unchanged"]) == (0, 0, 12)
    assert again["votes_version"] == first["votes_version"]
    assert_ticks_recount(database_url, multi)
    # The same set in another order or by index is the same vote.
    same = post_votes(
        client,
        multi,
        [
            {"item": "i1", "worker": "w1", "label": [0]},  # was ["sports"]
            {"item": "i1", "worker": "w5", "label": ["politics", 0]},  # was [0, 1]
        ],
    )
    assert (same["updated"], same["unchanged"]) == (0, 2)
    r = post_votes(
        client,
        multi,
        [
            {"item": "i2", "worker": "w2", "label": ["politics", "sports"]},  # was [0, 1]
            {"item": "i2", "worker": "w6", "label": ["health"]},  # was []
            {"item": "i3", "worker": "w3", "label": []},  # was []
        ],
    )
    assert (r["inserted"], r["updated"], r["unchanged"]) == (0, 1, 2)
    r = post_votes(client, multi, [{"item": "i2", "worker": "w2", "label": []}])
    assert r["updated"] == 1
    assert ticks(database_url, multi)[("i2", "w2")] == []
    assert_ticks_recount(database_url, multi)


@pytest.mark.parametrize(
    ("label", "reason"),
    [
        (["sports", "chess"], "unknown class 'chess'"),
        ([0, 9], "out of range"),
        (["tech", "tech"], "listed twice"),
        (["tech", 2], "listed twice"),
        ("tech", "must be the list"),
        ([True], "must list class names"),
        ([["tech"]], "must list class names"),
    ],
)
def test_bad_multi_label_rows_name_the_row(
    client: TestClient, multi: str, database_url: str, label: object, reason: str
) -> None:
    good = {"item": "ok", "worker": "w", "label": ["tech"]}
    bad = {"item": "ok", "worker": "v", "label": label}
    r = client.post(
        f"/v1/projects/{multi}/votes", json={"votes": [good, good | {"worker": "u"}, bad]}
    )
    assert r.status_code == 422, r.text
    errors = r.json()["errors"]
    assert [(e["index"], e["field"]) for e in errors] == [(2, "label")], errors
    assert reason in errors[0]["reason"]
    assert ticks(database_url, multi) == {}  # nothing half-stored


def test_single_label_project_refuses_a_list(
    client: TestClient, project: str, database_url: str
) -> None:
    r = client.post(
        f"/v1/projects/{project}/votes",
        json={
            "votes": [
                {"item": "a", "worker": "w", "label": "cat"},
                {"item": "a", "worker": "v", "label": ["cat"]},
            ]
        },
    )
    assert r.status_code == 422
    assert [(e["index"], e["field"]) for e in r.json()["errors"]] == [(1, "label")]
    assert "not a list" in r.json()["errors"][0]["reason"]


def test_multi_label_deletes_and_exclusion_keep_counts_exact(
    client: TestClient, multi: str, database_url: str
) -> None:
    post_votes(
        client,
        multi,
        [
            {"item": "a", "worker": "w1", "label": ["sports", "tech"]},
            {"item": "a", "worker": "spam", "label": TOPICS},
            {"item": "a", "worker": "quiet", "label": []},
            {"item": "b", "worker": "spam", "label": TOPICS},
            {"item": "b", "worker": "w1", "label": ["health"]},
        ],
    )
    v0 = version(database_url, multi)
    assert client.post(f"/v1/projects/{multi}/workers/spam/exclude").json()["votes"] == 2
    assert counts(client, multi, "a") == ([1, 0, 1, 0], 2)
    assert_ticks_recount(database_url, multi)
    assert client.post(f"/v1/projects/{multi}/workers/spam/include").json()["votes"] == 2
    assert counts(client, multi, "a") == ([2, 1, 2, 1], 3)
    r = client.delete(f"/v1/projects/{multi}/items/a/votes/quiet")  # an empty set: one voter
    assert r.status_code == 200 and r.json()["deleted_votes"] == 1
    assert counts(client, multi, "a") == ([2, 1, 2, 1], 2)
    assert client.delete(f"/v1/projects/{multi}/workers/spam/votes").json()["deleted_votes"] == 2
    assert counts(client, multi, "b") == ([0, 0, 0, 1], 1)
    assert version(database_url, multi) == v0 + 4
    assert_ticks_recount(database_url, multi)


def test_multi_label_concurrent_writers_with_retries(
    client: TestClient, multi: str, database_url: str
) -> None:
    """Threads send overlapping batches twice each (a retry after a lost reply) while another
    excludes and includes a worker: the final sets are each thread's last, counts exact."""
    rng = random.Random(11)
    items = [f"i{i}" for i in range(20)]
    expected: dict[tuple[str, str], list[int]] = {}
    plans = []
    for t in range(4):
        workers = [f"t{t}-w{j}" for j in range(4)]
        batches = []
        for _ in range(6):
            pairs = rng.sample([(i, w) for i in items for w in workers], 30)
            batch = []
            for i, w in pairs:
                ticked = sorted(rng.sample(range(4), rng.randrange(5)))
                batch.append({"item": i, "worker": w, "label": [TOPICS[k] for k in ticked]})
                expected[(i, w)] = ticked
            batches.append(batch)
        plans.append(batches)
    failures: list[str] = []

    def run(batches: list[list[dict]]) -> None:
        for batch in batches:
            for _ in range(2):
                r = client.post(f"/v1/projects/{multi}/votes", json={"votes": batch})
                if r.status_code != 200:
                    failures.append("votes " + r.text)

    def toggle() -> None:
        for k in range(4):
            action = "exclude" if k % 2 == 0 else "include"
            r = client.post(f"/v1/projects/{multi}/workers/t0-w0/{action}")
            if r.status_code not in (200, 404):
                failures.append(action + " " + r.text)

    threads = [threading.Thread(target=run, args=(p,)) for p in plans]
    threads.append(threading.Thread(target=toggle))
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert failures == []
    assert ticks(database_url, multi) == expected
    assert_ticks_recount(database_url, multi)


def test_large_multi_label_batch_takes_the_batch_plan(
    client: TestClient, multi: str, database_url: str
) -> None:
    votes = [
        {"item": f"i{i % 50}", "worker": f"w{i // 50}", "label": [i % 4, (i // 7) % 4]}
        for i in range(2000)
        if i % 4 != (i // 7) % 4
    ]
    r = post_votes(client, multi, votes)
    assert r["inserted"] == len(votes)
    assert post_votes(client, multi, votes)["unchanged"] == len(votes)
    assert_ticks_recount(database_url, multi)


# ----- ordinal votes ------------------------------------------------------------------------


def test_ordinal_votes_by_level_name_or_index(
    client: TestClient, scale: str, database_url: str
) -> None:
    post_votes(
        client,
        scale,
        [
            {"item": "a", "worker": "w1", "label": "4"},  # the level named "4"
            {"item": "a", "worker": "w2", "label": 4},  # index 4: the level named "5"
            {"item": "a", "worker": "w3", "label": "4"},
        ],
    )
    assert counts(client, scale, "a") == ([0, 0, 0, 2, 1], 3)
    r = post_votes(client, scale, [{"item": "a", "worker": "w2", "label": "1"}])
    assert r["updated"] == 1
    assert counts(client, scale, "a") == ([1, 0, 0, 2, 0], 3)
    assert_counts_recount(database_url, scale)


@pytest.mark.parametrize(
    ("label", "reason"),
    [
        ("6", "is not on this project's scale"),
        ("2.5", "is not on this project's scale"),
        (5, "level index 5 is out of range 0..4"),
        (["3"], "must be one level"),
    ],
)
def test_ordinal_off_the_scale_names_the_row(
    client: TestClient, scale: str, database_url: str, label: object, reason: str
) -> None:
    good = {"item": "x", "worker": "w", "label": "3"}
    r = client.post(
        f"/v1/projects/{scale}/votes",
        json={"votes": [good, {"item": "x", "worker": "v", "label": label}]},
    )
    assert r.status_code == 422, r.text
    errors = r.json()["errors"]
    assert [(e["index"], e["field"]) for e in errors] == [(1, "label")]
    assert reason in errors[0]["reason"], errors
    assert db_rows(
        database_url,
        "SELECT count(*) FROM votes v JOIN projects p ON p.id = v.project_id WHERE p.name = %s",
        scale,
    ) == [(0,)]


def test_multi_label_items_take_no_gold(client: TestClient, multi: str) -> None:
    r = client.post(f"/v1/projects/{multi}/items", json={"items": [{"id": "a", "gold": "tech"}]})
    assert r.status_code == 422
    assert [(e["index"], e["field"]) for e in r.json()["errors"]] == [(0, "gold")]


def test_multi_label_items_settle_by_votes_never_by_entropy(
    client: TestClient, multi: str, database_url: str
) -> None:
    """A multi-label item's counts are no distribution: `item.settled` has no entropy for it,
    so a subscription by entropy never fires and one by votes counts voters."""
    subs = {}
    for key, value in (("settle_entropy", 0.99), ("settle_votes", 2)):
        r = client.post(
            f"/v1/projects/{multi}/webhooks",
            json={"url": "http://127.0.0.1:1/h", "events": ["item.settled"], key: value},
        )
        assert r.status_code == 201, r.text
        subs[key] = r.json()["id"]
    post_votes(
        client,
        multi,
        [
            {"item": "a", "worker": "w1", "label": ["tech", "sports"]},
            {"item": "a", "worker": "w2", "label": []},
        ],
    )

    def recorded(sub: int) -> list[tuple]:
        return db_rows(
            database_url,
            "SELECT payload->'data'->'n_votes', payload->'data'->'entropy', "
            "payload->'data'->'counts' FROM webhook_deliveries WHERE subscription_id = %s",
            sub,
        )

    assert recorded(subs["settle_entropy"]) == []
    counts = {"sports": 1, "politics": 0, "tech": 1, "health": 0}
    assert recorded(subs["settle_votes"]) == [(2, None, counts)]
