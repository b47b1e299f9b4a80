"""HTTP to a running service, for the commands that talk to one (`sweep`, `demo`).

Plain httpx: the server package does not import the Python client (clients/python), which is a
distribution of its own. Every error answer becomes a `ServiceError`, a CliError whose one line
carries the service's error code and detail (the one error shape, app/errors.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import quote

import httpx

from app.cli.common import CliError

DEFAULT_URL = "http://127.0.0.1:8000"
# Safe to repeat, and what a busy local server answers: the rate limit and a fit in progress.
RETRY_STATUSES = {429, 503}


def q(name: str) -> str:
    """A project or item name as one path segment."""
    return quote(name, safe="")


class ServiceError(CliError):
    """An error answer: `status`, and the body's `error` code and `detail`."""

    def __init__(self, r: httpx.Response) -> None:
        try:
            body = r.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body = {"detail": r.text[:300] or r.reason_phrase}
        self.status = r.status_code
        self.error = str(body.get("error") or "http_error")
        self.detail = " ".join(str(body.get("detail") or r.reason_phrase).split())
        rows = [
            f"{e.get('field') or 'body'}: {e.get('reason')}"
            for e in (body.get("errors") or [])[:3]
            if isinstance(e, dict)
        ]
        where = f"{r.request.method} {r.request.url.path}"
        more = f" ({'; '.join(rows)})" if rows else ""
        super().__init__(f"{where}: {self.status} {self.error}: {self.detail}{more}")


def check(r: httpx.Response) -> httpx.Response:
    if r.status_code >= 400:
        raise ServiceError(r)
    return r


def _batches(rows: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class Api:
    """An httpx client on the service with the key sent as a bearer token; `get`/`post` return
    the decoded JSON or raise ServiceError. GETs and the idempotent uploads are retried on 429
    and 503 (after Retry-After), as the service asks."""

    def __init__(self, url: str, key: str | None, timeout: float = 120, retries: int = 4) -> None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)
        self.retries = retries

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def request(self, method: str, path: str, *, retry: bool = False, **kwargs: Any) -> Any:
        for attempt in range(self.retries + 1):
            r = self.http.request(method, path, **kwargs)
            if retry and r.status_code in RETRY_STATUSES and attempt < self.retries:
                after = r.headers.get("Retry-After", "")
                delay = float(after) if after.replace(".", "", 1).isdigit() else 0.5 * 2**attempt
                time.sleep(min(delay, 30.0))
                continue
            return check(r).json()
        raise AssertionError("unreachable")

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, retry=True, params=params)

    def post(self, path: str, body: Any, *, retry: bool = False) -> Any:
        return self.request("POST", path, json=body, retry=retry)

    def exists(self, path: str) -> bool:
        r = self.http.get(path)
        if r.status_code == 404:
            return False
        check(r)
        return True

    def upload(self, path: str, key: str, rows: Iterable[Any], batch_size: int) -> None:
        """POST rows in batches ({key: batch}); items and votes are stored idempotently, so a
        batch the service asked to resend is resent."""
        for batch in _batches(rows, batch_size):
            self.post(path, {key: batch}, retry=True)

    def wait_job(self, job_id: int, timeout: float = 1800, poll: float = 0.25) -> dict[str, Any]:
        """Poll a training job until it ends; its last state (any end, failed included)."""
        deadline = time.monotonic() + timeout
        while True:
            job: dict[str, Any] = self.get(f"/v1/training-jobs/{int(job_id)}")
            if job["status"] in ("succeeded", "failed", "cancelled"):
                return job
            if time.monotonic() > deadline:
                raise CliError(f"training job {job_id} still {job['status']} after {timeout:.0f} s")
            time.sleep(poll)
