"""Budgets on the work a request can cause: method parameters bounded, in-request fits only
within an estimated cost and a time budget (else the worker fits, the read gets 503 + Retry-After),
at most `fit_concurrency` in-request fits per process; and `serve` processes that end when their
parent dies even in the middle of a fit. Real PostgreSQL, the app over HTTP."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.helpers import ADMIN_HEADERS, ADMIN_KEY, free_port


def app_client(settings: Settings, **update: Any) -> TestClient:
    base = {"auth": True, "admin_key": ADMIN_KEY, "rate_limit_per_s": 0}
    return TestClient(create_app(settings.model_copy(update=base | update)), headers=ADMIN_HEADERS)


def seed(client: TestClient, n_items: int = 40, n_workers: int = 5) -> str:
    name = f"fb-{uuid.uuid4().hex[:10]}"
    assert (
        client.post("/v1/projects", json={"name": name, "classes": ["a", "b", "c"]}).status_code
        == 201
    )
    votes = [
        {"item": f"i{i}", "worker": f"w{w}", "label": (i + (w == 0)) % 3}
        for i in range(n_items)
        for w in range(n_workers)
    ]
    r = client.post(f"/v1/projects/{name}/votes", json={"votes": votes})
    assert r.status_code == 200, r.text
    return name


@pytest.mark.parametrize(
    ("method", "params", "field"),
    [
        ("mace", {"n_restarts": 1000}, "n_restarts"),
        ("mace", {"max_iter": 100000}, "max_iter"),
        ("dawid-skene", {"max_iter": 1001}, "max_iter"),
        ("glad", {"m_step_iter": 1000}, "m_step_iter"),
    ],
)
def test_method_parameters_are_bounded(
    client: TestClient, project: str, method: str, params: dict, field: str
) -> None:
    client.post(
        f"/v1/projects/{project}/votes",
        json={"votes": [{"item": "it1", "worker": "w", "label": 0}]},
    )
    r = client.get(
        f"/v1/projects/{project}/items/it1/soft-label", params={"method": method, **params}
    )
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == field


def test_a_fit_estimated_too_costly_goes_to_the_worker(
    settings: Settings, database_url: str
) -> None:
    with app_client(settings, fit_sync_max_work=1000) as c:
        p = seed(c)
        r = c.get(f"/v1/projects/{p}/items/i1/soft-label", params={"method": "dawid-skene"})
        assert r.status_code == 503, r.text
        assert r.json()["error"] == "fit_pending" and r.headers["Retry-After"]
        # A count method costs nothing and still answers at once.
        assert c.get(f"/v1/projects/{p}/items/i1/soft-label").status_code == 200
    with app_client(settings) as c:  # the default budget fits it in the request
        r = c.get(f"/v1/projects/{p}/items/i1/soft-label", params={"method": "dawid-skene"})
        assert r.status_code == 200, r.text


def test_a_fit_past_its_time_budget_goes_to_the_worker(settings: Settings) -> None:
    with app_client(settings, fit_sync_max_s=1e-9) as c:
        p = seed(c)
        start = time.monotonic()
        r = c.get(
            f"/v1/projects/{p}/items/i1/soft-label",
            params={"method": "mace", "max_iter": 1000, "tol": 0, "n_restarts": 100},
        )
        assert r.status_code == 503 and r.json()["error"] == "fit_pending", r.text
        assert time.monotonic() - start < 5
        r = c.get(f"/v1/projects/{p}/methods/compare")
        assert r.status_code == 503 and r.json()["error"] == "fit_pending", r.text


def test_in_request_fits_are_capped_per_process(settings: Settings) -> None:
    with app_client(settings, fit_concurrency=1) as c:
        p = seed(c)
        slots = c.app.state.services.fit_budget.slots  # type: ignore[attr-defined]
        assert slots.acquire(blocking=False)  # another request's fit holds the only slot
        try:
            r = c.get(f"/v1/projects/{p}/items/i1/soft-label", params={"method": "one-coin"})
            assert r.status_code == 503 and r.json()["error"] == "fits_busy", r.text
            assert r.headers["Retry-After"]
        finally:
            slots.release()
        r = c.get(f"/v1/projects/{p}/items/i1/soft-label", params={"method": "one-coin"})
        assert r.status_code == 200, r.text


# --- serve's processes end with it -------------------------------------------------------------


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(x) for x in out.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.fixture
def busy_serve(database_url: str, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "SOFTLABELS_ADMIN_KEY": ADMIN_KEY,
        "SOFTLABELS_RATE_LIMIT_PER_S": "0",
        # A fit that runs for minutes inside a request: what the budget normally prevents.
        "SOFTLABELS_FIT_SYNC_MAX_S": "600",
        "SOFTLABELS_FIT_SYNC_MAX_WORK": "1e15",
    }
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "app.cli",
            "serve",
            "--port",
            str(port),
            "--workers",
            "2",
            "--no-worker",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    yield proc, url
    for pid in [proc.pid, *_children(proc.pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_api_processes_die_with_a_killed_serve_even_mid_fit(
    busy_serve: tuple[subprocess.Popen[bytes], str],
) -> None:
    proc, url = busy_serve
    with httpx.Client(base_url=url, headers=ADMIN_HEADERS, timeout=30) as h:
        name = f"fb-{uuid.uuid4().hex[:10]}"
        assert (
            h.post("/v1/projects", json={"name": name, "classes": ["a", "b", "c"]}).status_code
            == 201
        )
        votes = [
            {"item": f"i{i}", "worker": f"w{w}", "label": (i * w) % 3}
            for i in range(1000)
            for w in range(10)
        ]
        assert h.post(f"/v1/projects/{name}/votes", json={"votes": votes}).status_code == 200
    api = _children(proc.pid)
    assert api, "serve started no API processes"

    def slow_fit() -> None:
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(
                f"{url}/v1/projects/{name}/items/i1/soft-label",
                params={"method": "mace", "max_iter": 1000, "tol": 0, "n_restarts": 100},
                headers=ADMIN_HEADERS,
                timeout=120,
            )

    threads = [threading.Thread(target=slow_fit, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(3)  # the fits are running in the API processes
    proc.kill()  # serve is killed: no cleanup of its own
    proc.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in api):
        time.sleep(0.2)
    orphans = [p for p in api if _alive(p)]
    for pid in orphans:  # never leave them burning CPU after a failure
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not orphans, "API processes outlived their serve"
