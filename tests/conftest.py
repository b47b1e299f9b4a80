"""Test databases are real PostgreSQL, built by running the Alembic migrations.

With DATABASE_URL set (CI: the server at 127.0.0.1:5432), a fresh database is created on that
server for the session; without it, an embedded PostgreSQL is started in a temporary directory.
Tests isolate by project (each test makes its own), so one migrated database serves the session;
tests that run workers or need real commits across connections get their own
(`isolated_database_url`). Shared helpers are in tests/helpers.py.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

# The fake Label Studio servers and webhook receivers of the tests listen on loopback, which
# the address policy (app/outbound.py) refuses by default: allow it for the whole session
# (LiveServer and worker processes inherit it). tests/test_outbound.py proves the default refuses.
os.environ.setdefault("SOFTLABELS_ALLOWED_NETWORKS", "127.0.0.0/8,::1/128")
# Tests share projects that collect queued training jobs no worker runs, and use long jobs
# (10000 epochs) to have one running: raise those two training limits for the session.
# tests/test_training_limits.py sets the limits it tests explicitly.
os.environ.setdefault("SOFTLABELS_TRAINING_MAX_ACTIVE_PER_PROJECT", "1000")
os.environ.setdefault("SOFTLABELS_TRAINING_MAX_EPOCHS", "10000")

from app.config import Settings
from app.main import create_app
from tests.helpers import ADMIN_HEADERS, ADMIN_KEY, LiveServer, embedded_data_dir, migrated_database


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # An embedded PostgreSQL or a browser is a process too: those lanes are part of the slow one.
    for item in items:
        if item.get_closest_marker("embedded") or item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def quick_lane_starts_no_process(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The quick lane (`-m "not slow"`) is what a developer runs after every edit: a test that
    starts a server, worker, CLI or other subprocess belongs to a marked lane, and fails here
    if it is not marked. (Session fixtures, such as an embedded server, start before this.)"""
    if request.node.get_closest_marker("slow"):
        return

    def refuse(self: subprocess.Popen, *args: object, **kw: object) -> None:
        what = args[0] if args else kw.get("args")
        raise AssertionError(
            f"{request.node.nodeid} started a process ({what!r}); mark it slow (pytest.mark.slow)"
        )

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)


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


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    with migrated_database(server_url) as url:
        yield url


@pytest.fixture
def isolated_database_url(server_url: str) -> Iterator[str]:
    """A migrated database of this test's own: for tests that run worker processes, which take
    every queued job in their database (other tests queue jobs they never mean to run)."""
    with migrated_database(server_url, prefix="softlabels_iso") as url:
        yield url


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


@pytest.fixture
def live_server(database_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    env = {**os.environ, "DATABASE_URL": database_url, "PYTHONUNBUFFERED": "1"}
    server = LiveServer(env, ["--no-worker"], tmp_path / "server.log")
    server.start()
    yield server
    server.stop()
