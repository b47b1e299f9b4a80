"""`Client`: typed calls for the softlabels HTTP API, with batching and retries.

Retries: requests that are safe to repeat (GET, DELETE, and the vote and item uploads, which
the service stores idempotently: re-sending a stored vote changes nothing) are retried on
connection errors, 429 (after its Retry-After), 502, 503 and 504, with exponential backoff.
Creating a training job, a project or a key is never retried: a lost answer must not create
two. Every error answer raises `SoftlabelsError`, carrying the service's error body.

Only httpx is imported here; pandas, pyarrow, torch and datasets are imported by the calls that
need them (see _extras.py).
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import httpx

from softlabels_client._extras import need

DEFAULT_URL = "http://127.0.0.1:8000"
RETRY_STATUSES = {429, 502, 503, 504}
TERMINAL = {"succeeded", "failed", "cancelled"}


class SoftlabelsError(Exception):
    """An error answer from the service: `status`, and its body's `error`, `detail`, `errors`."""

    def __init__(self, status: int, body: Any, method: str = "", path: str = "") -> None:
        self.status = status
        self.body: dict[str, Any] = body if isinstance(body, dict) else {"detail": str(body)}
        self.error: str = str(self.body.get("error", "http_error"))
        self.detail: str = str(self.body.get("detail", ""))
        self.errors: list[dict[str, Any]] = list(self.body.get("errors") or [])
        where = f" ({method} {path})" if method else ""
        rows = "".join(
            f"\n  - {e.get('field') or 'body'}"
            + (f" [row {e['index']}]" if e.get("index") is not None else "")
            + f": {e.get('reason')}"
            for e in self.errors[:20]
        )
        super().__init__(f"{status} {self.error}: {self.detail}{where}{rows}")


class JobFailed(SoftlabelsError):
    """wait() saw the job end in `failed` or `cancelled`."""


def _q(name: str) -> str:
    return quote(name, safe="")


def _clean(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


def _image(image: bytes | str | Path) -> str:
    """An image file's bytes (or its path) as the API takes them: base64."""
    data = image if isinstance(image, bytes) else Path(image).read_bytes()
    return base64.b64encode(data).decode("ascii")


def _item(item: Mapping[str, Any]) -> Mapping[str, Any]:
    image = item.get("image")
    return {**item, "image": _image(image)} if isinstance(image, bytes | Path) else item


def _batches(rows: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _vote(v: Any) -> dict[str, Any]:
    if isinstance(v, Mapping):
        return dict(v)
    item, worker, label = v  # a (item, worker, label) tuple
    return {"item": item, "worker": worker, "label": label}


@dataclass
class Job:
    """A training job as last read; `refresh()`, `wait()`, `cancel()`, `download_model()`."""

    client: Client = field(repr=False)
    data: dict[str, Any]

    @property
    def id(self) -> int:
        return int(self.data["id"])

    @property
    def status(self) -> str:
        return str(self.data["status"])

    @property
    def metrics(self) -> dict[str, Any] | None:
        return self.data.get("metrics")

    @property
    def progress(self) -> dict[str, Any] | None:
        return self.data.get("progress")

    def refresh(self) -> Job:
        self.data = self.client._request("GET", f"/v1/training-jobs/{self.id}").json()
        return self

    def wait(
        self,
        timeout: float | None = None,
        poll: float = 1.0,
        on_progress: Callable[[Job], None] | None = None,
        raise_on_failure: bool = True,
    ) -> Job:
        """Poll until the job ends; raise JobFailed if it failed or was cancelled (unless
        `raise_on_failure=False`), TimeoutError after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last = None
        while True:
            self.refresh()
            if on_progress is not None and self.data.get("progress") != last:
                last = self.data.get("progress")
                on_progress(self)
            if self.status in TERMINAL:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"training job {self.id} still {self.status} after {timeout}s")
            time.sleep(poll)
        if raise_on_failure and self.status != "succeeded":
            body = {"error": f"job_{self.status}", "detail": self.data.get("error") or ""}
            raise JobFailed(200, body, "GET", f"/v1/training-jobs/{self.id}")
        return self

    def cancel(self) -> Job:
        self.data = self.client._request("POST", f"/v1/training-jobs/{self.id}/cancel").json()
        return self

    def download_model(self, path: str | Path) -> Path:
        """The checkpoint (torch.load(path, weights_only=True) reads it)."""
        path = Path(path)
        r = self.client._request("GET", f"/v1/training-jobs/{self.id}/model", retry=True)
        path.write_bytes(r.content)
        return path

    def predict(
        self,
        features: list[list[float]] | None = None,
        items: list[str] | None = None,
        *,
        texts: list[str] | None = None,
        images: Iterable[bytes | str | Path] | None = None,
        image_urls: list[str] | None = None,
    ) -> dict[str, Any]:
        """{"classes", "probs"} for exactly one input: feature vectors (a job on features),
        texts, images (file bytes, or paths to read) or image URLs (a job on content), or
        stored items by id."""
        body = _clean(
            {
                "features": features,
                "items": items,
                "texts": texts,
                "images": None if images is None else [_image(i) for i in images],
                "image_urls": image_urls,
            }
        )
        return self.client._request(  # type: ignore[no-any-return]
            "POST", f"/v1/training-jobs/{self.id}/predict", json=body, retry=True
        ).json()


class Client:
    """`Client(url, key)`: the key defaults to $SOFTLABELS_KEY, the URL to $SOFTLABELS_URL."""

    def __init__(
        self,
        url: str | None = None,
        key: str | None = None,
        *,
        timeout: float = 60.0,
        retries: int = 4,
        backoff: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = (url or os.environ.get("SOFTLABELS_URL") or DEFAULT_URL).rstrip("/")
        key = key if key is not None else os.environ.get("SOFTLABELS_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.retries, self.backoff = retries, backoff
        self.http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing ---------------------------------------------------------------------------

    def _request(
        self, method: str, path: str, *, retry: bool | None = None, **kwargs: Any
    ) -> httpx.Response:
        retry = method in ("GET", "DELETE") if retry is None else retry
        attempt = 0
        while True:
            try:
                r = self.http.request(method, path, **kwargs)
            except httpx.TransportError:
                if not retry or attempt >= self.retries:
                    raise
            else:
                if r.status_code < 400:
                    return r
                if not retry or r.status_code not in RETRY_STATUSES or attempt >= self.retries:
                    try:
                        body = r.json()
                    except ValueError:
                        body = {"error": "http_error", "detail": r.text[:500]}
                    raise SoftlabelsError(r.status_code, body, method, path)
                after = r.headers.get("Retry-After")
                if after and after.replace(".", "", 1).isdigit():
                    time.sleep(min(float(after), 30.0))
                    attempt += 1
                    continue
            time.sleep(self.backoff * 2**attempt)
            attempt += 1

    def _get(self, path: str, **params: Any) -> Any:
        return self._request("GET", path, params=_clean(params)).json()

    # --- projects ---------------------------------------------------------------------------

    def projects(self) -> list[dict[str, Any]]:
        return self._get("/v1/projects")["projects"]  # type: ignore[no-any-return]

    def project(self, name: str) -> dict[str, Any]:
        return self._get(f"/v1/projects/{_q(name)}")  # type: ignore[no-any-return]

    def create_project(
        self,
        name: str,
        classes: list[str],
        description: str | None = None,
        n_features: int | None = None,
        *,
        task_type: str | None = None,
        level_values: list[float] | None = None,
    ) -> dict[str, Any]:
        """`task_type`: "single" (the default), "multi_label" (a vote's label is a list of
        classes) or "ordinal" (`classes` are the levels, lowest first; `level_values` their
        numbers for mean and median)."""
        body = _clean(
            {
                "name": name,
                "classes": classes,
                "task_type": task_type,
                "level_values": level_values,
                "description": description,
                "n_features": n_features,
            }
        )
        return self._request("POST", "/v1/projects", json=body).json()  # type: ignore[no-any-return]

    def update_project(self, name: str, **fields: Any) -> dict[str, Any]:
        r = self._request("PATCH", f"/v1/projects/{_q(name)}", json=fields, retry=True)
        return r.json()  # type: ignore[no-any-return]

    # --- items and votes --------------------------------------------------------------------

    def add_items(
        self, project: str, items: Iterable[Mapping[str, Any]], batch_size: int = 5_000
    ) -> dict[str, int]:
        """Create or update items ({"id", "features"?, "gold"?, "meta"?, "text"?, "image"?,
        "image_url"?}), in batches. An `image` given as bytes or a Path is sent base64."""
        total = {"inserted": 0, "updated": 0}
        for batch in _batches((_item(i) for i in items), batch_size):
            r = self._request(
                "POST",
                f"/v1/projects/{_q(project)}/items",
                json={"items": list(batch)},
                retry=True,
            ).json()
            for k in total:
                total[k] += r[k]
        return total

    def add_votes(
        self,
        project: str,
        votes: Iterable[Mapping[str, Any] | tuple[str, str, Any]],
        batch_size: int = 10_000,
    ) -> dict[str, int]:
        """Store votes ({"item", "worker", "label"} or (item, worker, label) tuples) in
        batches; each batch is all or nothing, and a retried batch changes nothing twice."""
        total = {"inserted": 0, "updated": 0, "unchanged": 0, "votes_version": 0}
        for batch in _batches((_vote(v) for v in votes), batch_size):
            r = self._request(
                "POST", f"/v1/projects/{_q(project)}/votes", json={"votes": batch}, retry=True
            ).json()
            for k in ("inserted", "updated", "unchanged"):
                total[k] += r[k]
            total["votes_version"] = r["votes_version"]
        return total

    def items_page(self, project: str, **query: Any) -> dict[str, Any]:
        """One page of GET /items (sort, order, limit, cursor, offset, min_votes, method...)."""
        return self._get(f"/v1/projects/{_q(project)}/items", **query)  # type: ignore[no-any-return]

    def items(
        self,
        project: str,
        *,
        sort: str = "item",
        order: str = "asc",
        page_size: int = 500,
        **query: Any,
    ) -> Iterator[dict[str, Any]]:
        """Every item (row of GET /items), following the cursors."""
        cursor = None
        while True:
            page = self.items_page(
                project, sort=sort, order=order, limit=page_size, cursor=cursor, **query
            )
            yield from page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                return

    def item(self, project: str, item: str) -> dict[str, Any]:
        return self._get(f"/v1/projects/{_q(project)}/items/{_q(item)}")  # type: ignore[no-any-return]

    # --- soft labels and exports ------------------------------------------------------------

    def soft_label(
        self, project: str, item: str, method: str = "normalized", **params: Any
    ) -> dict[str, Any]:
        return self._get(  # type: ignore[no-any-return]
            f"/v1/projects/{_q(project)}/items/{_q(item)}/soft-label", method=method, **params
        )

    def worker_prediction(
        self, project: str, item: str, worker: str, method: str | None = None, **params: Any
    ) -> dict[str, Any]:
        """Each annotator's view: the answer `worker` would give on `item` ("probs"; per class
        P(tick) on a multi-label project). `method` None: the project type's worker model."""
        return self._get(  # type: ignore[no-any-return]
            f"/v1/projects/{_q(project)}/items/{_q(item)}/workers/{_q(worker)}/prediction",
            method=method,
            **params,
        )

    def export(
        self,
        project: str,
        dest: str | Path | IO[bytes],
        *,
        format: str = "jsonl",
        method: str = "normalized",
        min_votes: int = 1,
        **params: Any,
    ) -> str | Path | IO[bytes]:
        """Stream GET /soft-labels into a file (path or binary file object)."""
        query = _clean({"format": format, "method": method, "min_votes": min_votes, **params})
        path = f"/v1/projects/{_q(project)}/soft-labels"
        for attempt in range(self.retries + 1):
            with self.http.stream("GET", path, params=query) as r:
                if r.status_code in RETRY_STATUSES and attempt < self.retries:
                    r.read()
                    time.sleep(float(r.headers.get("Retry-After", self.backoff * 2**attempt)))
                    continue
                if r.status_code >= 400:
                    r.read()
                    raise SoftlabelsError(r.status_code, r.json(), "GET", path)
                if isinstance(dest, str | Path):
                    with open(dest, "wb") as f:
                        for chunk in r.iter_bytes():
                            f.write(chunk)
                else:
                    for chunk in r.iter_bytes():
                        dest.write(chunk)
                return dest
        raise AssertionError("unreachable")

    def soft_labels(
        self,
        project: str,
        method: str = "normalized",
        *,
        as_: str = "pandas",
        min_votes: int = 1,
        **params: Any,
    ) -> Any:
        """Every item's soft label: a pandas DataFrame (as_="pandas", the `pandas` extra) or a
        pyarrow Table (as_="arrow", the `arrow` extra) with columns item, n_votes, gold and
        p_<class> for each class; or a list of dicts {"item", "n_votes", "probs", "gold"?}
        (as_="records", no extra needed; "probs" is None for an item with no votes)."""
        import io

        if as_ not in ("pandas", "arrow", "records"):
            raise ValueError('as_ must be "pandas", "arrow" or "records"')
        buf = io.BytesIO()
        if as_ == "records":
            import json

            self.export(project, buf, format="jsonl", method=method, min_votes=min_votes, **params)
            return [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]
        # Checked before the download, so a missing extra fails at once.
        call = f'Client.soft_labels(as_="{as_}")'
        if as_ == "pandas":
            need("pandas", "pandas", call)
        pq = need("pyarrow.parquet", as_, call)
        self.export(project, buf, format="parquet", method=method, min_votes=min_votes, **params)
        buf.seek(0)
        table = pq.read_table(buf)
        return table if as_ == "arrow" else table.to_pandas()

    # --- analytics --------------------------------------------------------------------------

    def stats(self, project: str, method: str = "normalized", **params: Any) -> dict[str, Any]:
        return self._get(f"/v1/projects/{_q(project)}/stats", method=method, **params)  # type: ignore[no-any-return]

    def workers(self, project: str, method: str = "dawid-skene", **params: Any) -> dict[str, Any]:
        return self._get(f"/v1/projects/{_q(project)}/workers", method=method, **params)  # type: ignore[no-any-return]

    def worker(
        self, project: str, worker: str, method: str = "dawid-skene", **params: Any
    ) -> dict[str, Any]:
        return self._get(  # type: ignore[no-any-return]
            f"/v1/projects/{_q(project)}/workers/{_q(worker)}", method=method, **params
        )

    def next_items(
        self,
        project: str,
        strategy: str = "entropy",
        limit: int = 50,
        *,
        worker: str | None = None,
        max_votes: int | None = None,
        method: str = "normalized",
        **params: Any,
    ) -> list[dict[str, Any]]:
        """The routing queue: items that most need another vote."""
        return self._get(  # type: ignore[no-any-return]
            f"/v1/projects/{_q(project)}/items/next",
            strategy=strategy,
            limit=limit,
            worker=worker,
            max_votes=max_votes,
            method=method,
            **params,
        )["items"]

    # --- training ---------------------------------------------------------------------------

    def train(self, project: str, config: Mapping[str, Any] | None = None, **fields: Any) -> Job:
        """Queue a training job (fields as in the API's TrainingConfig); returns its Job."""
        body = {**(config or {}), **fields}
        r = self._request("POST", f"/v1/projects/{_q(project)}/training-jobs", json=body)
        return Job(self, r.json())

    def job(self, job_id: int) -> Job:
        return Job(self, self._get(f"/v1/training-jobs/{int(job_id)}"))

    def jobs(self, project: str, limit: int = 50, before: int | None = None) -> list[Job]:
        data = self._get(f"/v1/projects/{_q(project)}/training-jobs", limit=limit, before=before)
        return [Job(self, j) for j in data["jobs"]]

    # --- keys (admin) -----------------------------------------------------------------------

    def create_key(
        self, label: str, scopes: list[str], projects: list[str] | str = "*"
    ) -> dict[str, Any]:
        body = {"label": label, "scopes": scopes, "projects": projects}
        return self._request("POST", "/v1/keys", json=body).json()  # type: ignore[no-any-return]

    def list_keys(self) -> list[dict[str, Any]]:
        return self._get("/v1/keys")["keys"]  # type: ignore[no-any-return]

    def revoke_key(self, key_id: int) -> None:
        self._request("DELETE", f"/v1/keys/{int(key_id)}")

    # --- training sets ----------------------------------------------------------------------

    def torch_dataset(
        self, project: str, method: str = "normalized", *, min_votes: int = 1, **params: Any
    ) -> Any:
        """A torch Dataset of (features, soft target) float32 tensors, one per item with
        features and at least `min_votes` votes; `.items` and `.classes` say which is which."""
        need("torch", "torch", "Client.torch_dataset()")
        from softlabels_client.data import SoftLabelDataset

        return SoftLabelDataset.from_rows(
            self._training_rows(project, method, min_votes, params), self.project(project)
        )

    def hf_dataset(
        self, project: str, method: str = "normalized", *, min_votes: int = 1, **params: Any
    ) -> Any:
        """A Hugging Face `datasets.Dataset` (item, features, soft_label, n_votes, gold);
        needs the `datasets` extra."""
        need("datasets", "datasets", "Client.hf_dataset()")  # before fetching every row
        from softlabels_client.hf import to_hf_dataset

        return to_hf_dataset(self._training_rows(project, method, min_votes, params))

    def _training_rows(
        self, project: str, method: str, min_votes: int, params: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        return [
            r
            for r in self.items(
                project,
                sort="item",
                page_size=1000,
                min_votes=min_votes,
                features="true",
                method=method,
                **params,
            )
            if r["features"] is not None and r["distribution"] is not None
        ]
