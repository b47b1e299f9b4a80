"""The service as a benchmark drives it: the API in process (FastAPI's TestClient: real HTTP
semantics, no socket) on a fresh database, and one real `softlabels worker` process.

    with live_service("softlabels_bench_x", torch_threads=1) as client:
        job = run_job(client, project, config)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


@contextmanager
def live_service(prefix: str, torch_threads: int = 1) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from app.config import Settings
    from app.db.migrate import upgrade
    from app.main import create_app
    from tests.helpers import create_database, drop_database

    server = os.environ["DATABASE_URL"]
    url = create_database(server, prefix=prefix)
    upgrade(url)
    env = {**os.environ, "DATABASE_URL": url, "SOFTLABELS_TORCH_THREADS": str(torch_threads)}
    log = Path(tempfile.mkdtemp()) / "worker.log"
    worker = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker"],
        env=env,
        cwd=REPO,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        settings = Settings(DATABASE_URL=url, data_dir=log.parent, auth=False)
        with TestClient(create_app(settings)) as client:
            yield client
    finally:
        worker.terminate()
        worker.wait(30)
        drop_database(server, url)
        print(f"worker log: {log}")


def run_job(
    client: Any,
    project: str,
    config: dict[str, Any],
    timeout: float = 7200,
    on_progress: Callable[[dict[str, Any], float], None] | None = None,
) -> dict[str, Any]:
    """Submit a training job and poll it to its end; on_progress(progress, time) on changes."""
    r = client.post(f"/v1/projects/{project}/training-jobs", json=config)
    r.raise_for_status()
    job_id = r.json()["id"]
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        job = client.get(f"/v1/training-jobs/{job_id}").json()
        if on_progress is not None and job["progress"] and job["progress"] != last:
            last = job["progress"]
            on_progress(last, time.perf_counter())
        if job["status"] in ("succeeded", "failed", "cancelled"):
            if job["status"] != "succeeded":
                raise RuntimeError(f"job {job_id} {job['status']}: {job['error']}")
            return dict(job)
        time.sleep(0.25)
    raise TimeoutError(job_id)
