"""Method parameters on the API: generated from the aggregator classes (app/api/method_query.py),
documented on every route that takes `method`, parsed by the chosen method's class."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.aggregation.registry import METHODS, PARAM_NAMES
from app.aggregation.select import Auto
from app.config import Settings
from app.main import create_app

SCHEMA = create_app(Settings(DATABASE_URL="postgresql://unused@127.0.0.1:1/x")).openapi()


def query_params(op: dict) -> dict[str, dict]:
    return {p["name"]: p for p in op.get("parameters", []) if p["in"] == "query"}


def method_routes() -> list[tuple[str, dict]]:
    return [
        (path, op)
        for path, ops in SCHEMA["paths"].items()
        for op in ops.values()
        if "method" in query_params(op)
    ]


def test_every_route_with_a_method_documents_every_method_parameter() -> None:
    routes = method_routes()
    assert {path.rsplit("/", 1)[-1] for path, _ in routes} >= {
        "soft-label",
        "soft-labels",
        "stats",
        "items",
        "next",
        "workers",
    }
    for path, op in routes:
        params = query_params(op)
        assert set(params) >= PARAM_NAMES, path
        for name in PARAM_NAMES:
            takers = [m.name for m in METHODS.values() if name in m.model_fields]
            text = params[name]["description"]
            assert all(f"`{m}`" in text for m in takers), (path, name, text)
            assert params[name]["schema"]["type"] in ("integer", "number", "boolean")


def test_parameter_schemas_hold_every_methods_range() -> None:
    params = query_params(SCHEMA["paths"]["/v1/projects/{project}/soft-labels"]["get"])
    assert params["max_iter"]["schema"] == {
        "type": "integer",
        "minimum": 0,
        "maximum": 1000,
        "title": "Max Iter",
    }
    # normalized: alpha >= 0; mace: alpha in (0, 1e6]: the union is alpha >= 0.
    assert params["alpha"]["schema"]["minimum"] == 0
    assert "maximum" not in params["alpha"]["schema"]
    assert params["use_gold"]["schema"]["type"] == "boolean"
    assert "(default 50)" in params["max_iter"]["description"]  # mace
    assert "(default 100)" in params["max_iter"]["description"]


def test_compare_documents_autos_parameters_only() -> None:
    op = SCHEMA["paths"]["/v1/projects/{project}/methods/compare"]["get"]
    assert set(query_params(op)) == set(Auto.model_fields)


@pytest.mark.parametrize(
    ("query", "field", "reason"),
    [
        ({"alpha": "abc"}, "alpha", "must be a number (a finite number >= 0)"),
        ({"method": "dawid-skene", "smoothing": "-1"}, "smoothing", "got '-1'"),
        ({"method": "dawid-skene", "use_gold": "maybe"}, "use_gold", "must be true or false"),
        ({"method": "mace", "n_restarts": "2.5"}, "n_restarts", "must be an integer"),
        ({"method": "wawa", "max_iter": "3"}, "max_iter", "does not take it"),
        ({"bogus": "1"}, "bogus", "unknown query parameter"),
    ],
)
def test_bad_method_parameters_are_422_naming_the_field(
    client: TestClient, project: str, query: dict[str, str], field: str, reason: str
) -> None:
    r = client.get(f"/v1/projects/{project}/stats", params=query)
    assert r.status_code == 422, r.text
    err = r.json()["errors"][0]
    assert err["field"] == field and reason in err["reason"], err


def test_flags_take_the_words_they_always_took(client: TestClient, project: str) -> None:
    for value, echoed in [("true", 1), ("No", 0), ("1", 1), ("off", 0)]:
        r = client.get(
            f"/v1/projects/{project}/stats",
            params={"method": "dawid-skene", "use_gold": value},
        )
        assert r.status_code == 200, r.text
        assert r.json()["params"]["use_gold"] == echoed
