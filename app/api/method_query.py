"""Query parameters shared by every route that computes soft labels (`method` and its
parameters), and the dependency that turns them into a Labeler.

The parameters are generated from the aggregator classes' fields (app/aggregation/registry.py):
each name any method takes is one query parameter, documented with its type, the union of its
ranges and, per method that takes it, its meaning and default. A parameter a new method declares
therefore appears, and is accepted, on every such route without touching them; a route declares
them by depending on `MethodParamsQuery` (LabelerDep does), which is also how
app/api/deps.py's check for unknown query parameters learns them.

FastAPI receives them as plain strings (the schema says what they are): the chosen method's class
parses and checks them (app/aggregation/params.py), so a bad value gets the same reason, naming
the allowed range, on every route, and one the method does not take is a 422 naming it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from pydantic import WithJsonSchema

from app.aggregation.base import Aggregator
from app.aggregation.params import bounds, kind_of, number, rule_of
from app.aggregation.registry import (
    ALL_METHODS,
    METHODS_BY_TASK,
    PARAM_NAMES,
    resolve_method,
)
from app.aggregation.select import Auto
from app.api.deps import ProjectDep, ServicesDep
from app.api.services import Services
from app.db.models import Project
from app.labels.service import Labeler, labeler

MethodQuery = Annotated[
    str,
    Query(
        description="The method, by the project's task type: "
        + "; ".join(f"{t}: {', '.join(table)}" for t, table in METHODS_BY_TASK.items())
        + ". A method of another task type is a 422 listing the project's. Each method "
        "parameter below is taken only by the methods its description names; with any other "
        "method it is a 422."
    ),
]

_JSON_TYPE = {int: "integer", float: "number", bool: "boolean"}


def _default(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return number(value) if isinstance(value, int | float) else str(value)


def _schema(fields: list[Any]) -> dict[str, Any]:
    """One JSON schema for a parameter several methods take: their common type and the smallest
    range that holds every method's (defaults differ by method: the description has them)."""
    kinds = {kind_of(f) for f in fields}
    if len(kinds) != 1:
        raise TypeError(f"methods disagree on the type of a parameter: {kinds}")
    schema: dict[str, Any] = {"type": _JSON_TYPE[kinds.pop()]}
    lows = [bounds(f)[:2] for f in fields]
    highs = [bounds(f)[2:] for f in fields]
    if all(lo is not None for lo, _ in lows):
        lo, is_open = min(lows, key=lambda b: (b[0], b[1]))
        schema["exclusiveMinimum" if is_open else "minimum"] = lo
    if all(hi is not None for hi, _ in highs):
        hi, is_open = max(highs, key=lambda b: (b[0], not b[1]))
        schema["exclusiveMaximum" if is_open else "maximum"] = hi
    return schema


def _description(name: str, methods: list[type[Aggregator]]) -> str:
    """Per group of methods that document the parameter alike: which take it (with their
    defaults), what it means there and its allowed values."""
    groups: dict[tuple[str, str], list[str]] = {}
    for m in methods:
        f = m.model_fields[name]
        default = "" if f.default is None else f" (default {_default(f.default)})"
        # "normalized" of a multi-label project is another class than the single-label one.
        kind = "" if m.task_type == "single" else f" ({m.task_type})"
        groups.setdefault((f.description or "", rule_of(f)), []).append(
            f"`{m.name}`{kind}{default}"
        )
    return " ".join(
        f"{', '.join(takers)}: {meaning}; {rule}." for (meaning, rule), takers in groups.items()
    )


def query_parameters(methods: Iterable[type[Aggregator]]) -> list[inspect.Parameter]:
    """One optional query parameter per name the methods take, in the order they first appear."""
    methods = list(methods)
    names = list(dict.fromkeys(name for m in methods for name in m.model_fields))
    out = []
    for name in names:
        takers = [m for m in methods if name in m.model_fields]
        schema = _schema([m.model_fields[name] for m in takers])
        annotation = Annotated[
            str | None,
            WithJsonSchema(schema),
            Query(description=_description(name, takers)),
        ]
        out.append(
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation
            )
        )
    return out


def params_dependency(methods: Iterable[type[Aggregator]]) -> Callable[..., None]:
    """A dependency that only declares the methods' parameters (for OpenAPI and the unknown-
    parameter check); the values are read from the request and parsed by the chosen method."""

    def declare(**_: str | None) -> None:
        return None

    declare.__signature__ = inspect.Signature(query_parameters(methods))  # type: ignore[attr-defined]
    return declare


MethodParamsQuery = Annotated[None, Depends(params_dependency(ALL_METHODS))]
# GET .../methods/compare takes auto's parameters (it is auto's fit) and no method.
AutoParamsQuery = Annotated[None, Depends(params_dependency([Auto]))]


def labeler_for(default_method: str | Mapping[str, str]) -> Callable[..., Labeler]:
    """A dependency giving the Labeler for the request's `method`; without one,
    `default_method`, or for a mapping the default of the project's task type."""
    default = default_method if isinstance(default_method, str) else None

    def get_labeler(
        request: Request,
        project: ProjectDep,
        services: ServicesDep,
        method: MethodQuery = default,  # type: ignore[assignment]  # None: the type's default
        _: MethodParamsQuery = None,
    ) -> Labeler:
        if method is None:
            assert not isinstance(default_method, str)
            method = default_method[project.task_type]
        return labeler_from_request(request, project, services, method)

    return get_labeler


def labeler_from_request(
    request: Request,
    project: Project,
    services: Services,
    method: str,
    raw: dict[str, str] | None = None,
) -> Labeler:
    """Validate the method and exactly the parameters the client sent (one the method does not
    take is a 422 naming it), and get its labels: counts for count methods, the project's fit
    for worker models (503 fit_pending while a large project's first fit runs)."""
    if raw is None:
        raw = {k: v for k, v in request.query_params.items() if k in PARAM_NAMES}
    return labeler(
        services.engine,
        project.id,
        len(project.classes),
        project.votes_version,
        resolve_method(method, raw, project.task_type),
        sync_max_votes=services.settings.fit_sync_max_votes,
        queue=services.queue,
        budget=services.fit_budget,
    )


LabelerDep = Annotated[Labeler, Depends(labeler_for("normalized"))]
# /workers: a worker model is the point, so the default is one, of the project's task type.
WORKER_DEFAULT = {
    "single": "dawid-skene",
    "ordinal": "dawid-skene",
    "multi_label": "binary-relevance",
}
WorkerLabelerDep = Annotated[Labeler, Depends(labeler_for(WORKER_DEFAULT))]
