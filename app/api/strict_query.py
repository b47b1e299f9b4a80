"""A query parameter no route reads is a client's typo: the API says so (422) instead of
ignoring it. The declared names are read from FastAPI's dependency tree once per route."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from app.errors import ValidationFailed

_DECLARED: dict[tuple[str, frozenset[str]], frozenset[str]] = {}


def declared_query_params(route: APIRoute) -> frozenset[str]:
    """Every query parameter a route (or any of its dependencies) declares (cached by route)."""
    key = (route.path, frozenset(route.methods or ()))
    if key not in _DECLARED:
        _DECLARED[key] = _walk_query_params(route)
    return _DECLARED[key]


def _walk_query_params(route: APIRoute) -> frozenset[str]:

    def walk(dep: Dependant) -> Iterator[str]:
        yield from (p.alias for p in dep.query_params)
        for sub in dep.dependencies:
            yield from walk(sub)

    return frozenset(walk(route.dependant))


def reject_unknown_query(request: Request) -> None:
    """A query parameter no route reads is a client's typo: say so (422) instead of ignoring it.

    Routes that compute soft labels declare every method's parameters through a dependency
    (app/api/method_query.py, which then checks each against the chosen method)."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not request.query_params:
        return
    declared = declared_query_params(route)
    unknown = sorted(set(request.query_params) - declared)
    if unknown:
        takes = ", ".join(sorted(declared)) or "no query parameters"
        raise ValidationFailed(
            f"Unknown query parameter {unknown[0]!r}; this endpoint takes: {takes}.",
            errors=[
                {"index": None, "field": name, "reason": f"unknown query parameter; takes: {takes}"}
                for name in unknown
            ],
        )
