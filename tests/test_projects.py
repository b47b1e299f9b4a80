"""Projects: creation rules, counts, class changes, the error shape."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient


def test_create_get_list(client: TestClient) -> None:
    name = f"p-{uuid.uuid4().hex[:8]}"
    r = client.post("/v1/projects", json={"name": name, "classes": ["a", "b"], "description": "d"})
    assert r.status_code == 201
    body = r.json()
    assert body["classes"] == ["a", "b"] and body["n_votes"] == 0 and body["votes_version"] == 0
    assert client.get(f"/v1/projects/{name}").json()["name"] == name
    assert name in [p["name"] for p in client.get("/v1/projects").json()["projects"]]


def test_duplicate_name_is_409(client: TestClient, project: str) -> None:
    r = client.post("/v1/projects", json={"name": project, "classes": ["a", "b"]})
    assert r.status_code == 409
    assert r.json()["error"] == "conflict"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "Upper", "classes": ["a", "b"]}, "name"),
        ({"name": "x" * 65, "classes": ["a", "b"]}, "name"),
        ({"name": "has space", "classes": ["a", "b"]}, "name"),
        ({"name": "ok", "classes": ["a"]}, "classes"),
        ({"name": "ok", "classes": ["a", "a"]}, "classes"),
        ({"name": "ok", "classes": [f"c{i}" for i in range(1001)]}, "classes"),
        ({"name": "ok", "classes": ["a", ""]}, "classes.1"),
        ({"name": "ok", "classes": ["a", 3]}, "classes.1"),
        ({"name": "ok", "classes": ["a", "b"], "extra": 1}, "extra"),
        ({"classes": ["a", "b"]}, "name"),
    ],
)
def test_bad_project_is_422_naming_field(client: TestClient, body: dict, field: str) -> None:
    r = client.post("/v1/projects", json=body)
    assert r.status_code == 422, r.text
    err = r.json()
    assert err["error"] == "validation_error"
    assert field in [e["field"] for e in err["errors"]], err


def test_unknown_project_is_404(client: TestClient) -> None:
    r = client.get("/v1/projects/nope-nope")
    assert r.status_code == 404
    assert r.json() == {"error": "not_found", "detail": "No project named 'nope-nope'."}


def test_classes_fixed_once_votes_exist(client: TestClient, project: str) -> None:
    r = client.patch(f"/v1/projects/{project}", json={"classes": ["x", "y"]})
    assert r.status_code == 200 and r.json()["classes"] == ["x", "y"]
    client.post(
        f"/v1/projects/{project}/votes",
        json={"votes": [{"item": "i", "worker": "w", "label": "x"}]},
    )
    r = client.patch(f"/v1/projects/{project}", json={"classes": ["x", "y", "z"]})
    assert r.status_code == 409
    assert client.get(f"/v1/projects/{project}").json()["classes"] == ["x", "y"]


def test_counts(client: TestClient, project: str) -> None:
    client.post(
        f"/v1/projects/{project}/votes",
        json={
            "votes": [
                {"item": "i1", "worker": "w1", "label": "cat"},
                {"item": "i1", "worker": "w2", "label": "dog"},
                {"item": "i2", "worker": "w1", "label": "dog"},
            ]
        },
    )
    body = client.get(f"/v1/projects/{project}").json()
    assert (body["n_items"], body["n_workers"], body["n_votes"]) == (2, 2, 3)


def test_unknown_route_and_method_use_error_shape(client: TestClient) -> None:
    r = client.get("/v1/nothing")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = client.delete("/v1/projects")
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"


def test_patch_null_classes_and_nul_description(client: TestClient, project: str) -> None:
    r = client.patch(f"/v1/projects/{project}", json={"classes": None})
    assert r.status_code == 200 and r.json()["classes"] == ["cat", "dog", "bird"]
    r = client.patch(f"/v1/projects/{project}", json={"description": "a\u0000b"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "description"
