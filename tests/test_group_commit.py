"""Group commit (app/votes/group_commit.py): concurrent small vote requests share one statement
and one commit, and each still gets exactly its own answer.

Over real HTTP against `softlabels serve` (one process, so every request meets the same
committer) and real PostgreSQL:
- many threads post single votes at once, some naming the same (item, worker) as another
  thread, some re-sending a vote they were just told is stored: groups form (the statements
  counted by /v1/metrics are fewer than the requests), every pair was `inserted` in exactly one
  answer, the votes version rose once per request that changed something, a re-sent vote is
  `unchanged`, each thread's last vote for a pair it alone writes is the one stored, and the
  counts equal a recount; for single-label, ordinal and multi-label projects;
- a group whose statement fails (the project behind the cached name was replaced by one with
  fewer classes) is redone one request at a time: the request naming the class that is gone
  gets its own 422, the others are stored.
And at the committer itself: two requests naming the same pair never share a group, and the
later one's label is the one kept.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import threading
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from app.db.functions import ingest_votes
from app.db.session import libpq_url
from app.votes.group_commit import GroupCommitter, GroupKey, lock_timeout_options
from app.votes.ingest import PreparedVotes, VoteCounts
from tests.helpers import (
    LiveServer,
    assert_counts_recount,
    assert_ticks_recount,
    db_rows,
    version,
)

CLASSES = ["a", "b", "c", "d"]


@contextmanager
def serve(database_url: str, log: Path, **settings: str) -> Iterator[LiveServer]:
    env = {**os.environ, "DATABASE_URL": database_url, "SOFTLABELS_RATE_LIMIT_PER_S": "0"}
    env.update({f"SOFTLABELS_{k.upper()}": v for k, v in settings.items()})
    server = LiveServer(env, ["--no-worker", "--workers", "1"], log)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with serve(database_url, tmp_path_factory.mktemp("gc") / "server.log") as server:
        yield server


def metrics(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/v1/metrics", timeout=30).text
    return {m[1]: float(m[2]) for m in re.finditer(r"^(\w+)\{[^}]*\} (\S+)$", text, re.M)}


def make_project(url: str, task_type: str, classes: list[str] = CLASSES) -> str:
    name = f"gc-{uuid.uuid4().hex[:10]}"
    body = {"name": name, "classes": classes, "task_type": task_type}
    r = httpx.post(f"{url}/v1/projects", json=body, timeout=30)
    assert r.status_code == 201, r.text
    return name


def label(task_type: str, k: int) -> str | list[str]:
    if task_type == "multi_label":  # a set of classes, sometimes none
        return [c for j, c in enumerate(CLASSES) if (k >> j) & 1]
    return CLASSES[k % len(CLASSES)]


@pytest.mark.slow
@pytest.mark.parametrize("task_type", ["single", "ordinal", "multi_label"])
def test_concurrent_single_votes_share_statements_and_count_exactly(
    server: LiveServer, database_url: str, task_type: str
) -> None:
    project = make_project(server.url, task_type)
    before = metrics(server.url)
    threads, per_thread = 12, 30
    answers: list[tuple[int, tuple[str, str], dict]] = []  # (thread, pair, answer)
    last_label: dict[tuple[str, str], object] = {}
    errors: list[str] = []

    def writer(t: int) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            for i in range(per_thread):
                # Items shared by every thread; a worker of this thread's own, except every
                # 5th vote, whose worker thread t + 6 also uses at the same step: the same pair
                # from two clients at once.
                item = f"i{i % 7}"
                worker = f"shared{t % 6}-{i}" if i % 5 == 0 else f"w{t}-{i % 4}"
                vote = {"item": item, "worker": worker, "label": label(task_type, t + i)}
                sends = 2 if i % 3 == 0 else 1  # a client that did not trust the first reply
                for _ in range(sends):
                    r = c.post(f"/v1/projects/{project}/votes", json={"votes": [vote]})
                    if r.status_code != 200:
                        errors.append(r.text)
                        continue
                    answers.append((t, (item, worker), r.json()))
                if not worker.startswith("shared"):
                    last_label[(item, worker)] = vote["label"]

    pool = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join(120)
    assert not errors, errors[:3]

    stored = db_rows(
        database_url,
        "SELECT i.external_id, w.external_id, v.label, v.ticks FROM votes v "
        "JOIN items i ON i.id = v.item_id JOIN workers w ON w.id = v.worker_id "
        "JOIN projects p ON p.id = v.project_id WHERE p.name = %s",
        project,
    )
    # Each stored pair was "inserted" in exactly one answer, whatever group it was in.
    assert sum(a["inserted"] for _, _, a in answers) == len(stored)
    assert all(a["inserted"] + a["updated"] + a["unchanged"] == 1 for _, _, a in answers)
    # One version step per request that changed something, as if each had run alone.
    changed = sum(a["inserted"] + a["updated"] for _, _, a in answers)
    assert version(database_url, project) == changed
    # A vote sent again right after it was acknowledged changed nothing.
    by_thread: dict[int, list[tuple[tuple[str, str], dict]]] = defaultdict(list)
    for t, pair, a in answers:
        by_thread[t].append((pair, a))
    for seq in by_thread.values():
        for (pair, first), (again_pair, again) in itertools.pairwise(seq):
            if pair == again_pair and not pair[1].startswith("shared"):
                assert again["unchanged"] == 1, (pair, first, again)
                assert again["votes_version"] >= first["votes_version"]
    # The last vote of a thread for a pair only it writes is the one stored.
    classes = CLASSES
    for item, worker, idx, ticks in stored:
        if (item, worker) in last_label:
            got = [classes[k] for k in ticks] if task_type == "multi_label" else classes[idx]
            assert got == last_label[(item, worker)], (item, worker)
    if task_type == "multi_label":
        assert_ticks_recount(database_url, project)
    else:
        assert_counts_recount(database_url, project)

    after = metrics(server.url)
    requests = after["softlabels_group_commit_requests_total"] - before.get(
        "softlabels_group_commit_requests_total", 0
    )
    statements = after["softlabels_group_commit_statements_total"] - before.get(
        "softlabels_group_commit_statements_total", 0
    )
    assert requests == len(answers)
    assert statements < requests, (statements, requests)  # groups formed
    assert after["softlabels_group_commit_largest_group"] > 1


@pytest.mark.slow
def test_a_failed_group_is_redone_one_by_one_and_only_the_bad_request_fails(
    database_url: str, tmp_path: Path
) -> None:
    # Groups wait 300 ms for company, so the requests below, sent together, share one.
    with serve(database_url, tmp_path / "server.log", group_commit_wait_ms="300") as server:
        project = make_project(server.url, "single")
        first = httpx.post(
            f"{server.url}/v1/projects/{project}/votes",
            json={"votes": [{"item": "x", "worker": "w", "label": "a"}]},
            timeout=30,
        )
        assert first.status_code == 200  # the server now has the project (4 classes) cached
        # Another process replaces the project with one of two classes under the same name.
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("DELETE FROM projects WHERE name = %s", (project,))
            conn.execute(
                "INSERT INTO projects (name, classes) VALUES (%s, ARRAY['a', 'b'])", (project,)
            )
        before = metrics(server.url)
        votes = [("i0", "w0", "a"), ("i1", "w1", "b"), ("i2", "w2", "d"), ("i3", "w3", "a")]
        results: dict[str, httpx.Response] = {}
        barrier = threading.Barrier(len(votes))

        def post(item: str, worker: str, lab: str) -> None:
            barrier.wait()
            results[item] = httpx.post(
                f"{server.url}/v1/projects/{project}/votes",
                json={"votes": [{"item": item, "worker": worker, "label": lab}]},
                timeout=30,
            )

        pool = [threading.Thread(target=post, args=v) for v in votes]
        for th in pool:
            th.start()
        for th in pool:
            th.join(60)
        after = metrics(server.url)

        bad = results["i2"]
        assert bad.status_code == 422, bad.text
        assert bad.json()["error"] == "validation_error"
        assert bad.json()["errors"][0]["field"] == "label" and "'d'" in bad.text
        for item in ("i0", "i1", "i3"):
            assert results[item].status_code == 200, results[item].text
            assert results[item].json()["inserted"] == 1
        stored = db_rows(
            database_url,
            "SELECT i.external_id FROM votes v JOIN items i ON i.id = v.item_id "
            "JOIN projects p ON p.id = v.project_id WHERE p.name = %s ORDER BY 1",
            project,
        )
        assert [r[0] for r in stored] == ["i0", "i1", "i3"]
        # The four shared one statement, which failed; then each ran alone.
        delta = {k: after[k] - before[k] for k in after}
        assert delta["softlabels_group_commit_requests_total"] == 4
        assert delta["softlabels_group_commit_statements_total"] == 1
        assert delta["softlabels_group_commit_solo_fallbacks_total"] == 1
        assert_counts_recount(database_url, project)


def prepared(item: str, worker: str, label_index: int) -> PreparedVotes:
    return PreparedVotes([item], [worker], np.array([label_index]), None)


def test_requests_naming_the_same_pair_go_to_later_groups_in_arrival_order(
    database_url: str,
) -> None:
    name = f"gc-{uuid.uuid4().hex[:10]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        (pid,) = conn.execute(
            "INSERT INTO projects (name, classes) VALUES (%s, %s) RETURNING id", (name, CLASSES)
        ).fetchone()  # type: ignore[misc]

    async def run() -> tuple[list[VoteCounts], int]:
        async with AsyncConnectionPool(
            libpq_url(database_url), min_size=1, max_size=4, kwargs={"autocommit": True}
        ) as pool:
            committer = GroupCommitter(pool)
            key = GroupKey(pid, tuple(CLASSES), "single")

            async def never() -> VoteCounts:
                raise AssertionError("no request should run alone here")

            # Submitted in one turn of the loop: they are all waiting when the first group forms.
            sent = [("i1", "w", 0), ("i2", "w", 1), ("i1", "w", 2), ("i1", "w", 3), ("i3", "w", 0)]
            results = await asyncio.gather(
                *(committer.submit(key, prepared(*v), never) for v in sent)
            )
            return list(results), committer.stats.statements

    results, statements = asyncio.run(run())
    # Group 1: i1->a, i2->b, i3->a; group 2: i1->c; group 3: i1->d (never two i1 in one call).
    assert statements == 3
    assert [(r.inserted, r.updated, r.unchanged) for r in results] == [
        (1, 0, 0),
        (1, 0, 0),
        (0, 1, 0),
        (0, 1, 0),
        (1, 0, 0),
    ]
    assert results[0].votes_version == results[1].votes_version == results[4].votes_version
    assert results[0].votes_version < results[2].votes_version < results[3].votes_version
    rows = db_rows(
        database_url,
        "SELECT i.external_id, v.label FROM votes v JOIN items i ON i.id = v.item_id "
        "WHERE v.project_id = %s ORDER BY 1",
        pid,
    )
    assert rows == [("i1", 3), ("i2", 1), ("i3", 0)]
    assert version(database_url, name) == 5
    assert_counts_recount(database_url, name)


def test_one_statement_stores_the_requests_of_several_projects(database_url: str) -> None:
    """Single-label and multi-label projects in one group: one statement, one call per
    project, each request its own counts and each project its own version steps."""
    names = [f"gc-{uuid.uuid4().hex[:10]}" for _ in range(2)]
    with psycopg.connect(database_url, autocommit=True) as conn:
        single, multi = (
            conn.execute(
                "INSERT INTO projects (name, classes, task_type) VALUES (%s, %s, %s) RETURNING id",
                (name, CLASSES, task_type),
            ).fetchone()[0]  # type: ignore[index]
            for name, task_type in zip(names, ["single", "multi_label"], strict=True)
        )

    async def run() -> tuple[list[VoteCounts], GroupCommitter]:
        async with AsyncConnectionPool(
            libpq_url(database_url), min_size=1, max_size=4, kwargs={"autocommit": True}
        ) as pool:
            committer = GroupCommitter(pool)
            s_key = GroupKey(single, tuple(CLASSES), "single")
            m_key = GroupKey(multi, tuple(CLASSES), "multi_label")

            async def never() -> VoteCounts:
                raise AssertionError("no request should run alone here")

            sent = [
                (m_key, PreparedVotes(["i1", "i2"], ["w", "w"], None, [[0, 2], []])),
                (s_key, prepared("i1", "w", 1)),  # same names, other project: other rows
                (m_key, PreparedVotes(["i1"], ["v"], None, [[3]])),
                (s_key, prepared("i9", "w", 2)),
            ]
            results = await asyncio.gather(*(committer.submit(k, b, never) for k, b in sent))
            again = await committer.submit(s_key, prepared("i1", "w", 1), never)
            return [*results, again], committer

    results, committer = asyncio.run(run())
    assert committer.stats.statements == 2 and committer.stats.largest == 4
    assert [(r.inserted, r.updated, r.unchanged) for r in results] == [
        (2, 0, 0),
        (1, 0, 0),
        (1, 0, 0),
        (1, 0, 0),
        (0, 0, 1),
    ]
    assert version(database_url, names[0]) == 2 == results[1].votes_version
    assert version(database_url, names[1]) == 2 == results[0].votes_version
    assert_counts_recount(database_url, names[0])
    assert_ticks_recount(database_url, names[1])


def test_a_request_waiting_on_a_row_lock_does_not_hold_back_its_group(database_url: str) -> None:
    """A batch holds item i1 (as a large batch does until it commits). A group of a vote on i1
    and a vote on i2 gives up waiting after LOCK_TIMEOUT_MS and is redone one by one: the vote
    on i2 is stored while i1 is still held; the vote on i1 when the batch commits."""
    name = f"gc-{uuid.uuid4().hex[:10]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        (pid,) = conn.execute(
            "INSERT INTO projects (name, classes) VALUES (%s, %s) RETURNING id", (name, CLASSES)
        ).fetchone()  # type: ignore[misc]
    key = GroupKey(pid, tuple(CLASSES), "single")
    url = libpq_url(database_url)

    async def run() -> tuple[VoteCounts, VoteCounts, bool, GroupCommitter]:
        async with (
            AsyncConnectionPool(url, max_size=4, kwargs={"autocommit": True}) as pool,
            AsyncConnectionPool(
                url, max_size=4, kwargs={"autocommit": True, "options": lock_timeout_options()}
            ) as group_pool,
            await psycopg.AsyncConnection.connect(url) as batch,
        ):
            # The "batch": i1 created and locked, its transaction left open.
            await batch.execute(
                "INSERT INTO items (project_id, external_id, counts) "
                "VALUES (%s, 'i1', '{0,0,0,0}') RETURNING id",
                (pid,),
            )
            committer = GroupCommitter(group_pool)

            def solo(item: str, label_index: int) -> Callable[[], Awaitable[VoteCounts]]:
                async def alone() -> VoteCounts:  # the request run alone: waits as long as needed
                    async with pool.connection() as conn:
                        row = await ingest_votes(
                            conn,
                            project_id=pid,
                            classes=CLASSES,
                            items=[item],
                            workers=["w"],
                            labels=[label_index],
                        )
                    return VoteCounts(row.inserted, row.updated, row.unchanged, row.votes_version)

                return alone

            blocked = asyncio.ensure_future(
                committer.submit(key, prepared("i1", "w", 1), solo("i1", 1))
            )
            free = await asyncio.wait_for(
                committer.submit(key, prepared("i2", "w", 2), solo("i2", 2)), timeout=10
            )
            still_waiting = not blocked.done()
            await batch.commit()
            return await asyncio.wait_for(blocked, 10), free, still_waiting, committer

    on_i1, on_i2, i1_waited, committer = asyncio.run(run())
    assert i1_waited  # the vote on i2 was answered while i1 was still locked
    assert (on_i2.inserted, on_i1.inserted) == (1, 1)
    assert committer.stats.statements == 1 and committer.stats.lock_timeouts == 1
    assert committer.stats.solo_fallbacks == 1
    assert_counts_recount(database_url, name)
