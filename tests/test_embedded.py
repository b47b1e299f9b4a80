"""Without DATABASE_URL, `softlabels` runs on an embedded PostgreSQL kept in the data dir.

`serve --data-dir` starts it, migrates and answers; the data survives an API restart and a full
stop of the embedded server too. `migrate --data-dir` brings a fresh data dir to the newest
migration. Every test stops the embedded server it started.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from alembic.script import ScriptDirectory

from app.db.embedded import start_embedded, stop_embedded
from app.db.migrate import alembic_config
from tests.helpers import REPO, LiveServer, embedded_data_dir

pytestmark = pytest.mark.embedded


def env_without_database_url() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    return {**env, "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = embedded_data_dir() / "softlabels-data"
    yield path
    stop_embedded(path)  # no stray server, whatever the test did
    assert not (path / "pg" / "postmaster.pid").exists()
    shutil.rmtree(path.parent, ignore_errors=True)


def cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env=env_without_database_url(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_migrate_with_data_dir(data_dir: Path) -> None:
    r = cli("migrate", "--data-dir", str(data_dir))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "newest migration" in r.stderr
    assert (data_dir / "pg" / "PG_VERSION").exists()  # the cluster lives in the data dir
    # A CLI command stops the server it started: no stray server behind it.
    assert not (data_dir / "pg" / "postmaster.pid").exists()

    url = start_embedded(data_dir)  # the same cluster, migrated
    heads = set(ScriptDirectory.from_config(alembic_config(url)).get_heads())
    with psycopg.connect(url) as conn:
        assert {v for (v,) in conn.execute("SELECT version_num FROM alembic_version")} == heads
        tables = {t for (t,) in conn.execute("SELECT tablename FROM pg_tables")}
    assert {"projects", "items", "workers", "votes"} <= tables

    again = cli("migrate", "--data-dir", str(data_dir))  # already current: a no-op
    assert again.returncode == 0, again.stdout + again.stderr
    # A server the command found running (ours) is reused and left running.
    assert (data_dir / "pg" / "postmaster.pid").exists()


def test_cli_without_a_database_says_so_in_one_line(data_dir: Path) -> None:
    r = cli(
        "export",
        "--project",
        "p",
        "-o",
        str(data_dir.parent / "x.jsonl"),
        "--data-dir",
        str(data_dir),
    )
    assert r.returncode == 1
    assert r.stderr.strip().startswith("softlabels: no database in") and "Traceback" not in r.stderr
    assert not (data_dir / "pg").exists()  # no cluster made behind the user's back


def test_serve_on_embedded_postgres_keeps_data(data_dir: Path, tmp_path: Path) -> None:
    server = LiveServer(
        env_without_database_url(),
        ["--data-dir", str(data_dir), "--no-worker"],
        tmp_path / "server.log",
    )
    project = f"emb-{uuid.uuid4().hex[:8]}"
    votes = [
        {"item": f"img{i}", "worker": f"w{j}", "label": (i + j) % 3}
        for i in range(20)
        for j in range(i % 4 + 1)
    ]
    try:
        server.start(timeout=180)  # initdb on first start
        assert "embedded PostgreSQL" in server.log.read_text()
        r = httpx.get(f"{server.url}/healthz", timeout=10)
        assert r.status_code == 200 and r.json() == {"status": "ok"}
        r = httpx.post(
            f"{server.url}/v1/projects",
            json={"name": project, "classes": ["cat", "dog", "bird"]},
            timeout=10,
        )
        assert r.status_code == 201, r.text
        r = httpx.post(f"{server.url}/v1/projects/{project}/votes", json={"votes": votes})
        assert r.status_code == 200 and r.json()["inserted"] == len(votes), r.text
        before = snapshot(server, project)
        assert before["project"]["n_votes"] == len(votes)

        # Stop `serve` (SIGTERM, as Ctrl+C): it stops the embedded server it started, and the
        # data stays on disk in the data dir.
        server.stop()
        assert server.proc is not None and server.proc.returncode is not None
        assert not (data_dir / "pg" / "postmaster.pid").exists()
        server.start(timeout=180)
        assert snapshot(server, project) == before

        # A server that was already running when `serve` started is reused and left running.
        server.stop()
        start_embedded(data_dir)
        server.start(timeout=180)
        assert snapshot(server, project) == before
        server.stop()
        assert (data_dir / "pg" / "postmaster.pid").exists()
        stop_embedded(data_dir)
        server.start(timeout=180)
        assert snapshot(server, project) == before
        r = httpx.post(f"{server.url}/v1/projects/{project}/votes", json={"votes": votes})
        assert r.status_code == 200 and r.json()["unchanged"] == len(votes), r.text
    finally:
        server.stop()


def snapshot(server: LiveServer, project: str) -> dict:
    base = f"{server.url}/v1/projects/{project}"
    info = httpx.get(base, timeout=10).json()
    export = httpx.get(f"{base}/soft-labels", params={"format": "jsonl"}, timeout=30)
    assert export.status_code == 200, export.text
    return {"project": info, "export": export.text}
