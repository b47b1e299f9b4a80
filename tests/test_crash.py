"""A server killed with SIGKILL in the middle of a 50,000-vote batch stores all of it or none.

Each kill is aimed at a moment seen in PostgreSQL (pg_stat_activity, filtered by the server's
application_name), so the kills land where they matter: while the request's transaction is
open, while the big vote upsert is running, just after the commit, and at a fixed delay. After
each kill the state is exactly the state before the batch or exactly the state after it, the
maintained counts equal a recount, and after a restart a retry of the batch brings it to
exactly the expected state.
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.helpers import LiveServer, assert_counts_match_votes, stored_votes

pytestmark = pytest.mark.slow

BATCH = 50_000
RELABELED = 2_000  # of the batch's votes, how many change a label already stored
CLASSES = ["cat", "dog", "bird", "fish", "frog"]

Vote = dict[str, object]
State = set[tuple[str, str, int]]


@pytest.fixture
def crash_server(database_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    """`softlabels serve` (as the `live_server` fixture) whose database sessions carry a unique
    application_name, so the test can watch exactly this server's backends."""
    tag = f"softlabels-crash-{uuid.uuid4().hex[:8]}"
    url = f"{database_url}{'&' if '?' in database_url else '?'}application_name={tag}"
    env = {**os.environ, "DATABASE_URL": url, "PYTHONUNBUFFERED": "1"}
    server = LiveServer(env, ["--no-worker"], tmp_path / "server.log")
    server.tag = tag  # type: ignore[attr-defined]
    server.start()
    yield server
    server.stop()


def backends(database_url: str, tag: str, where: str = "true") -> list[tuple]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute(
            "SELECT pid, state, xact_start, query FROM pg_stat_activity "
            f"WHERE application_name = %s AND ({where})",
            (tag,),
        ).fetchall()


def poll(condition: Callable[[], bool], timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.002)
    return False


def wait_for_backends_to_end(database_url: str, tag: str) -> None:
    """A killed client's backend finishes its statement, then aborts (or has committed): the
    state is final only once every backend of the dead server is gone."""
    assert poll(lambda: not backends(database_url, tag), timeout=120), backends(database_url, tag)


def project_version(database_url: str, project: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT softlabels_votes_version(id) FROM projects WHERE name = %s", (project,)
        )
        return int(row.fetchone()[0])  # type: ignore[index]


def n_stored(database_url: str, project: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM votes v JOIN projects p ON p.id = v.project_id WHERE p.name = %s",
            (project,),
        ).fetchone()
        return int(row[0])  # type: ignore[index]


def items_and_workers(database_url: str, project: str) -> tuple[set, set]:
    """Everything else the batch writes: items (with their counts) and workers."""
    with psycopg.connect(database_url) as conn:
        items = conn.execute(
            "SELECT i.external_id, i.counts, i.n_votes FROM items i "
            "JOIN projects p ON p.id = i.project_id WHERE p.name = %s",
            (project,),
        ).fetchall()
        workers = conn.execute(
            "SELECT w.external_id FROM workers w JOIN projects p ON p.id = w.project_id "
            "WHERE p.name = %s",
            (project,),
        ).fetchall()
    return {(e, tuple(c), n) for e, c, n in items}, {w for (w,) in workers}


def make_batches(seed: int) -> tuple[list[Vote], list[Vote]]:
    """A committed base batch, and a 50,000-vote batch that relabels part of it and adds the
    rest (new items and workers among them)."""
    rng = random.Random(seed)
    base = [
        {"item": f"i{n % 1500}", "worker": f"w{n // 1500}", "label": rng.randrange(5)}
        for n in range(6_000)
    ]
    relabel = [dict(v, label=(int(v["label"]) + 1) % 5) for v in rng.sample(base, RELABELED)]
    new = [
        {"item": f"i{n % 2500}", "worker": f"v{n // 2500}", "label": rng.choice(CLASSES)}
        for n in range(BATCH - RELABELED)
    ]
    batch = relabel + new
    rng.shuffle(batch)
    return base, batch


def as_state(votes: list[Vote], before: State | None = None) -> State:
    state = {(i, w): k for i, w, k in before or set()}
    for v in votes:
        label = v["label"]
        state[(str(v["item"]), str(v["worker"]))] = (
            CLASSES.index(label) if isinstance(label, str) else int(label)  # type: ignore[arg-type]
        )
    return {(i, w, k) for (i, w), k in state.items()}


def post(server: LiveServer, project: str, votes: list[Vote], timeout: float = 120) -> dict:
    r = httpx.post(
        f"{server.url}/v1/projects/{project}/votes", json={"votes": votes}, timeout=timeout
    )
    assert r.status_code == 200, r.text
    return r.json()


def test_sigkill_mid_batch_is_all_or_nothing(crash_server: LiveServer, database_url: str) -> None:
    server, tag = crash_server, crash_server.tag  # type: ignore[attr-defined]
    # A vote batch is one statement on an autocommit connection (app/votes/ingest.py): killed while
    # it runs, PostgreSQL finishes it and commits (it does not notice the client went away),
    # or, killed before it is sent, nothing of it exists. Either way all or nothing.
    ingest_running = "state = 'active' AND query LIKE '%%softlabels_ingest_votes%%'"

    def when(where: str) -> Callable[[str], bool]:
        return lambda _project: poll(lambda: bool(backends(database_url, tag, where)))

    def after(seconds: float) -> Callable[[str], bool]:
        return lambda _project: time.sleep(seconds) is None

    def committed(project: str) -> bool:
        return poll(lambda: n_stored(database_url, project) > 6_000)

    # (name, wait until the moment to kill, what the kill must leave: "none", "all" or "either")
    trials: list[tuple[str, Callable[[str], bool], str]] = [
        ("before the statement (10 ms in)", after(0.01), "either"),
        ("ingest statement running", when(ingest_running), "either"),
        ("just after the commit", committed, "all"),
        ("fixed delay 1.5 s", after(1.5), "either"),
    ]
    outcomes = []
    for seed, (name, wait, must) in enumerate(trials):
        project = f"crash-{seed}-{uuid.uuid4().hex[:8]}"
        r = httpx.post(f"{server.url}/v1/projects", json={"name": project, "classes": CLASSES})
        assert r.status_code == 201, r.text
        base, batch = make_batches(seed)
        post(server, project, base)
        before = stored_votes(database_url, project)
        assert before == as_state(base)
        after_batch = as_state(batch, before)
        version = project_version(database_url, project)
        rows_before = items_and_workers(database_url, project)

        reply: list[object] = []
        sender = threading.Thread(target=_try_post, args=(server, project, batch, reply))
        sender.start()
        fired = wait(project)
        server.kill()
        sender.join(120)
        assert fired, f"{name}: the moment to kill was never seen"
        wait_for_backends_to_end(database_url, tag)

        state = stored_votes(database_url, project)
        outcome = "none" if state == before else "all" if state == after_batch else "partial"
        outcomes.append((name, outcome, reply[0] if reply else None))
        assert outcome != "partial", f"{name}: {len(state)} votes stored, neither before nor after"
        assert must in ("either", outcome), f"{name}: expected {must}, got {outcome}"
        assert project_version(database_url, project) == version + (outcome == "all")
        if outcome == "none":  # not even an item or worker row of the batch was kept
            assert items_and_workers(database_url, project) == rows_before, name
        assert_counts_match_votes(database_url, project)

        # Restart (on the same port) and retry the batch, as a client that got no reply would:
        # exactly the expected state, however the kill landed.
        server.start()
        res = post(server, project, batch)
        expected = (0, 0, BATCH) if outcome == "all" else (BATCH - RELABELED, RELABELED, 0)
        assert (res["inserted"], res["updated"], res["unchanged"]) == expected, name
        assert stored_votes(database_url, project) == after_batch, name
        assert_counts_match_votes(database_url, project)

    # Both outcomes were exercised, and the service still answers reads after all the kills.
    assert {o for _, o, _ in outcomes} == {"none", "all"}, outcomes
    r = httpx.get(f"{server.url}/v1/projects/{project}/items/i0/soft-label", timeout=10)
    assert r.status_code == 200 and r.json()["n_votes"] > 0, r.text


def _try_post(server: LiveServer, project: str, votes: list[Vote], out: list[object]) -> None:
    """The client's view of a request the server dies under: an error, or (rarely) a reply."""
    try:
        r = httpx.post(
            f"{server.url}/v1/projects/{project}/votes", json={"votes": votes}, timeout=120
        )
        out.append(r.status_code)
    except httpx.HTTPError as exc:
        out.append(type(exc).__name__)
