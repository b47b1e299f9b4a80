"""Fetching an item's image with the credentials of the connector that stored its URL.

Label Studio's task data names uploaded images by paths relative to its own address
(`/data/upload/1/x.png`, `/data/local-files/?d=...`) that only its token opens. The resolver
built here turns such a path into `<connector url><path>` with the token's Authorization
header; an absolute URL gets the header only when it points at that same Label Studio (a
credential never goes to another origin); any other http(s) URL is fetched without one. The
fetching itself, under the network policy, is app/training/media.py's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import httpx
from sqlalchemy import Connection, Engine, text

from app.connectors import label_studio
from app.outbound import Policy
from app.training.media import MediaError, Resolver


def _origin(url: str) -> tuple[str, str, int | None]:
    u = httpx.URL(url)
    return u.scheme, u.host, u.port or (443 if u.scheme == "https" else 80)


def resolver_for(conn: Connection, project_id: int, policy: Policy | None = None) -> Resolver:
    """The resolver for one project's image URLs (its Label Studio connector read now)."""
    row = conn.execute(
        text(
            "SELECT config->>'url', secret FROM connectors "
            "WHERE project_id = :p AND tool = 'label-studio'"
        ),
        {"p": project_id},
    ).one_or_none()
    base = (row[0] or "").rstrip("/") if row is not None else ""
    token = row[1] if row is not None else None
    lock = threading.Lock()
    header: dict[str, str] | None = None

    def credentials() -> dict[str, str]:
        # Once per resolver (a job, a predict call): a personal access token is traded for
        # an access token by a request to Label Studio, which the fetch threads share.
        nonlocal header
        with lock:
            if header is None:
                try:
                    header = label_studio.auth_header(base, token, policy) if token else {}
                except label_studio.SyncFailed as exc:
                    raise MediaError(str(exc)) from None
            return header

    def resolve(url: str, source: str | None) -> tuple[str, dict[str, str]]:
        if url.startswith("/") and not url.startswith("//"):
            if not base:
                raise MediaError(
                    f"{url[:80]!r} is a Label Studio path, and the project's Label Studio "
                    "connector has no url to resolve it against (PUT .../connectors/"
                    "label-studio with url and token)"
                )
            return base + url, credentials()
        if not url.startswith(("http://", "https://")):
            raise MediaError(f"{url[:80]!r} is not an http(s) URL")
        own = source == label_studio.SOURCE and base and _origin(url) == _origin(base)
        return url, credentials() if own else {}

    return resolve


def resolvers(engine: Engine, policy: Policy | None = None) -> Callable[[int], Any]:
    """project id -> its resolver: what the worker's training runner is given."""

    def for_project(project_id: int) -> Resolver:
        with engine.connect() as conn:
            return resolver_for(conn, project_id, policy)

    return for_project
