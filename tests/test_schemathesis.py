"""Schemathesis against the service's own OpenAPI schema, in-process (ASGI), with the admin key
and without one: never a 5xx, and every response matches its documented schema and media type.

Bounded for CI: a few examples per operation, no deadline, no shrinking-heavy phases.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.config import Settings
from app.main import create_app
from tests.helpers import ADMIN_HEADERS, ADMIN_KEY, db_rows

pytestmark = pytest.mark.slow

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
BOUNDED = hypothesis_settings(
    max_examples=12,
    deadline=None,
    derandomize=True,  # the same examples on every run: a CI failure reproduces locally
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


# The schema is the app's own, generated without a database; the requests go to an app on the
# test database (in-process, lifespan run by schemathesis).
schema = schemathesis.openapi.from_dict(
    create_app(Settings(DATABASE_URL="postgresql://unused@127.0.0.1:1/x")).openapi()
)


@pytest.fixture(scope="module")
def app(settings: Settings) -> FastAPI:
    update = {"auth": True, "admin_key": ADMIN_KEY, "rate_limit_per_s": 0}
    return create_app(settings.model_copy(update=update))


@dataclass
class Targets:
    project: str
    job: int


@pytest.fixture(scope="module")
def targets(client: TestClient, database_url: str) -> Targets:
    """A project with votes (no features: no training job can be queued) and an ended job."""
    name = f"st-{uuid.uuid4().hex[:10]}"
    assert client.post("/v1/projects", json={"name": name, "classes": ["a", "b"]}).is_success
    votes = [{"item": f"i{n}", "worker": f"w{n % 3}", "label": n % 2} for n in range(12)]
    assert client.post(f"/v1/projects/{name}/votes", json={"votes": votes}).is_success
    job = db_rows(
        database_url,
        "INSERT INTO training_jobs (project_id, config, status, finished_at) SELECT id, "
        "'{}'::jsonb, 'cancelled', now() FROM projects WHERE name = %s RETURNING id",
        name,
    )[0][0]
    return Targets(name, int(job))


@schema.parametrize()
@BOUNDED
def test_with_admin_key(
    app: FastAPI, client: TestClient, targets: Targets, case: schemathesis.Case
) -> None:
    # Aim at things that exist, so the examples get past "no such project" into the handlers.
    params = case.path_parameters or {}
    if "project" in params:
        params["project"] = targets.project
    if "job_id" in params:
        params["job_id"] = targets.job
    if "key_id" in params:  # never revoke a key another test holds: make one to revoke
        made = client.post("/v1/keys", json={"label": "st", "scopes": ["read"], "projects": "*"})
        params["key_id"] = made.json()["id"]
    case.call_and_validate(app=app, headers=ADMIN_HEADERS, checks=CHECKS)


@schema.parametrize()
@BOUNDED
def test_without_key(app: FastAPI, case: schemathesis.Case) -> None:
    case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    response = case.call_and_validate(app=app, checks=CHECKS)
    if case.path != "/healthz":
        # The body is read before the key is checked: an unreadable one is 400/413/422; a
        # method the path does not have is 405.
        assert response.status_code in (400, 401, 405, 413, 422), response.text
