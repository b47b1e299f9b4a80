"""Every endpoint x every kind of key x own/other project, generated from the app's routes.

The rules are read off the routes themselves (the scope in each route's `require(...)`), so a new
endpoint is covered the day it is added, and one without a rule fails
`test_every_route_has_a_rule`.
What each key may do is written out here independently of app/auth.py:

- no key: 401;
- admin: everything;
- otherwise 403 when the endpoint needs admin or a scope the key lacks (`train` includes `read`);
- an endpoint under a project (or a training job) the key does not cover: 404 not_found, the very
  answer a project or job that does not exist gets;
- an endpoint that spans projects (the project list): only for keys on every project ("*"),
  else 403.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from app.api.access import api_routes
from app.config import Settings
from app.main import create_app
from tests.helpers import ADMIN_HEADERS, ADMIN_KEY, db_rows

SCOPE_ALLOWS = {  # the spec, written out
    "admin": {"admin", "annotate", "read", "train"},
    "annotate": {"annotate"},
    "read": {"read"},
    "train": {"train", "read"},
}
PUBLIC = {"/healthz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
ROUTES = api_routes(create_app(Settings(DATABASE_URL="postgresql://unused@127.0.0.1:1/x")))
V1 = [(m, p, s) for m, p, s in ROUTES if p.startswith("/v1/")]


@dataclass(frozen=True)
class KeyKind:
    name: str
    scopes: tuple[str, ...]
    everywhere: bool  # projects "*", else the own project (and one more)


KINDS = [
    KeyKind("admin", ("admin",), True),
    *[KeyKind(f"{s}@own", (s,), False) for s in ("annotate", "read", "train")],
    *[KeyKind(f"{s}@all", (s,), True) for s in ("annotate", "read", "train")],
    KeyKind("annotate+read@own", ("annotate", "read"), False),
]


def test_every_route_has_a_rule() -> None:
    assert V1, "no /v1 routes found"
    missing = [(m, p) for m, p, s in V1 if s is None]
    assert not missing, f"/v1 endpoints without require(scope): {missing}"
    outside = {p for _, p, _ in ROUTES if not p.startswith("/v1/")}
    assert outside <= PUBLIC, f"endpoints outside /v1 (public, no key): {outside - PUBLIC}"
    rules = {(m, p): s for m, p, s in V1}
    # Spot checks that the rules are the intended ones.
    assert rules[("POST", "/v1/projects")] == "admin"
    assert rules[("POST", "/v1/projects/{project}/votes")] == "annotate"
    assert all(s == "admin" for (m, p), s in rules.items() if p.startswith("/v1/keys"))
    assert all(s == "train" for (m, p), s in rules.items() if "training-jobs" in p)


@dataclass
class World:
    client: TestClient
    own: str
    other: str
    jobs: dict[str, int]
    keys: dict[str, str]
    database_url: str


@pytest.fixture(scope="module")
def world(settings: Settings, database_url: str) -> Iterator[World]:
    update = {"auth": True, "admin_key": ADMIN_KEY, "rate_limit_per_s": 0}
    with TestClient(create_app(settings.model_copy(update=update))) as client:
        names = {side: f"mx-{side}-{uuid.uuid4().hex[:8]}" for side in ("own", "other", "third")}
        jobs = {}
        for side, name in names.items():
            r = client.post(
                "/v1/projects", json={"name": name, "classes": ["a", "b"]}, headers=ADMIN_HEADERS
            )
            assert r.status_code == 201, r.text
            votes = [{"item": "i0", "worker": f"w{k}", "label": k % 2} for k in range(3)]
            r = client.post(
                f"/v1/projects/{name}/votes", json={"votes": votes}, headers=ADMIN_HEADERS
            )
            assert r.status_code == 200, r.text
            # An ended job (no worker takes it) for the /v1/training-jobs/{job_id} routes.
            jobs[side] = db_rows(
                database_url,
                "INSERT INTO training_jobs (project_id, config, status, finished_at) SELECT id, "
                "'{}'::jsonb, 'cancelled', now() FROM projects WHERE name = %s RETURNING id",
                name,
            )[0][0]
        keys = {}
        for kind in KINDS:
            projects = "*" if kind.everywhere else [names["own"], names["third"]]
            body = {
                "label": f"matrix {kind.name}",
                "scopes": list(kind.scopes),
                "projects": projects,
            }
            r = client.post("/v1/keys", json=body, headers=ADMIN_HEADERS)
            assert r.status_code == 201, r.text
            keys[kind.name] = r.json()["key"]
        yield World(client, names["own"], names["other"], jobs, keys, database_url)


def expected(scope: str, kind: KeyKind | None, where: str, side: str) -> str:
    if kind is None:
        return "401"
    if "admin" in kind.scopes:
        return "allowed"
    if not any(scope in SCOPE_ALLOWS[s] for s in kind.scopes):
        return "403"
    if where == "global":
        return "allowed" if kind.everywhere else "403"
    if side == "other" and not kind.everywhere:
        return "404"
    return "allowed"


def fill(world: World, path: str, side: str) -> str:
    """The path with its parameters filled in for the own or the other project (or a ghost)."""
    project = {"own": world.own, "other": world.other, "ghost": f"ghost-{world.own}"}[side]
    job = world.jobs.get(side, world.jobs["other"] + 10**9)

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "project":
            return project
        if name == "job_id":
            return str(job)
        if name == "key_id":  # a key made for this request: an admin call revokes it
            r = world.client.post(
                "/v1/keys",
                json={"label": "sacrificial", "scopes": ["read"], "projects": "*"},
                headers=ADMIN_HEADERS,
            )
            return str(r.json()["id"])
        return {"item": "i0", "worker": "w0"}.get(name, "x")

    return re.sub(r"\{(\w+)(?::\w+)?\}", value, path)


def where(path: str) -> str:
    return "job" if "{job_id}" in path else "project" if "{project}" in path else "global"


def call(world: World, method: str, path: str, key: str | None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {} if method in ("POST", "PUT", "PATCH") else None
    r = world.client.request(method, path, headers=headers, json=body)
    try:
        payload = r.json()
    except ValueError:
        payload = {}
    return r.status_code, payload if isinstance(payload, dict) else {}


def not_found_details(world: World, side: str) -> set[str]:
    project = {"own": world.own, "other": world.other}[side]
    return {f"No project named {project!r}.", f"No training job {world.jobs[side]}."}


@pytest.mark.parametrize(("method", "path", "scope"), V1, ids=[f"{m} {p}" for m, p, _ in V1])
def test_matrix(world: World, method: str, path: str, scope: str) -> None:
    place = where(path)
    sides = ["own"] if place == "global" else ["own", "other"]
    failures = []
    for kind in [None, *KINDS]:
        key = None if kind is None else world.keys[kind.name]
        for side in sides:
            want = expected(scope, kind, place, side)
            url = fill(world, path, side)
            status, body = call(world, method, url, key)
            label = f"{kind.name if kind else 'no key'} on {side}: {method} {url} -> {status}"
            if want == "allowed":
                hidden = status == 404 and body.get("detail") in not_found_details(world, side)
                if status in (401, 403) or status >= 500 or hidden:
                    failures.append(f"{label}, expected allowed: {body}")
            elif (
                str(status) != want
                or body.get("error")
                != {
                    "401": "unauthorized",
                    "403": "forbidden",
                    "404": "not_found",
                }[want]
            ):
                failures.append(f"{label}, expected {want}: {body}")
            if want == "404":
                # ... and exactly what a project or job that does not exist gets.
                ghost_status, ghost = call(world, method, fill(world, path, "ghost"), key)
                other_name, other_job = world.other, str(world.jobs["other"])
                ghost_name = f"ghost-{world.own}"
                ghost_job = str(world.jobs["other"] + 10**9)
                same = body.get("detail", "").replace(other_name, ghost_name)
                if place == "job":
                    same = body.get("detail", "").replace(other_job, ghost_job)
                if (ghost_status, ghost.get("error"), ghost.get("detail")) != (
                    status,
                    body.get("error"),
                    same,
                ):
                    failures.append(f"{label}: other {body} != missing {ghost_status} {ghost}")
    assert not failures, "\n".join(failures)
