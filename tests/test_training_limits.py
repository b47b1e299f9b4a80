"""Training configs are bounded by limits an admin can raise (epochs, optimizer steps, model
weights), and a project may have only so many jobs queued or running. Real PostgreSQL, the app
over HTTP; no worker runs, so created jobs stay queued."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.helpers import ADMIN_HEADERS, ADMIN_KEY


def app_client(settings: Settings, **update: Any) -> TestClient:
    base = {"auth": True, "admin_key": ADMIN_KEY, "rate_limit_per_s": 0}
    return TestClient(create_app(settings.model_copy(update=base | update)), headers=ADMIN_HEADERS)


def trainable(c: TestClient, n: int = 50) -> str:
    name = f"tl-{uuid.uuid4().hex[:10]}"
    assert c.post("/v1/projects", json={"name": name, "classes": ["x", "y"]}).status_code == 201
    items = [{"id": f"i{i}", "features": [float(i % 5), 1.0, 2.0]} for i in range(n)]
    assert c.post(f"/v1/projects/{name}/items", json={"items": items}).status_code == 200
    votes = [{"item": f"i{i}", "worker": "w", "label": i % 2} for i in range(n)]
    assert c.post(f"/v1/projects/{name}/votes", json={"votes": votes}).status_code == 200
    return name


def create(c: TestClient, project: str, **config: Any) -> Any:
    return c.post(
        f"/v1/projects/{project}/training-jobs",
        json={"labels": {"method": "normalized"}, **config},
    )


@pytest.mark.parametrize(
    ("config", "field", "env"),
    [
        ({"epochs": 10000, "batch_size": 64}, "epochs", "SOFTLABELS_TRAINING_MAX_EPOCHS"),
        ({"epochs": 1000, "batch_size": 1}, "batch_size", "SOFTLABELS_TRAINING_MAX_STEPS"),
        (
            {"model": {"kind": "mlp", "hidden": [65536] * 16}},
            "model",
            "SOFTLABELS_TRAINING_MAX_PARAMS",
        ),
    ],
)
def test_training_configs_past_the_limits_are_422(
    settings: Settings, config: dict, field: str, env: str
) -> None:
    with app_client(settings, training_max_epochs=1000, training_max_steps=10_000) as c:
        p = trainable(c)
        r = create(c, p, **config)
        assert r.status_code == 422, r.text
        assert r.json()["errors"][0]["field"] == field
        assert env in r.json()["detail"]


def test_an_admin_raises_the_limits(settings: Settings) -> None:
    with app_client(
        settings, training_max_epochs=20_000, training_max_steps=10**9, training_max_params=10**12
    ) as c:
        p = trainable(c)
        r = create(c, p, epochs=10000, batch_size=1)
        assert r.status_code == 202, r.text


def test_active_jobs_per_project_are_capped(settings: Settings) -> None:
    with app_client(settings, training_max_active_per_project=2) as c:
        p, q = trainable(c), trainable(c)
        assert create(c, p, epochs=1).status_code == 202
        second = create(c, p, epochs=1)
        assert second.status_code == 202
        r = create(c, p, epochs=1)
        assert r.status_code == 409 and r.json()["error"] == "conflict", r.text
        assert create(c, q, epochs=1).status_code == 202  # another project is not held up
        assert c.post(f"/v1/training-jobs/{second.json()['id']}/cancel").status_code == 200
        assert create(c, p, epochs=1).status_code == 202
