"""Query parameters shared by every route that computes soft labels (`method` and its
parameters), and the dependency that turns them into a Labeler.

Which query names are method parameters comes from the method registry, so a parameter a new
method declares works on every such route without touching them.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Annotated

from fastapi import Depends, Query, Request

from app.aggregation.registry import METHOD_NAMES, PARAM_NAMES, resolve_method
from app.api.deps import ProjectDep, ServicesDep
from app.db.models import Project
from app.labeling import Labeler, labeler
from app.services import Services

MethodQuery = Annotated[str, Query(description=f"One of: {', '.join(METHOD_NAMES)}.")]
AlphaQuery = Annotated[
    float | None, Query(description="`normalized`: pseudo-count per class, >= 0 (default 0).")
]
TemperatureQuery = Annotated[
    float | None,
    Query(description="`softmax`, `softmax-normalized`: temperature T > 0 (default 1)."),
]
MaxIterQuery = Annotated[
    int | None, Query(description="Worker-model methods: maximum EM iterations.")
]
TolQuery = Annotated[
    float | None, Query(description="Worker-model methods: convergence tolerance.")
]
SeedQuery = Annotated[int | None, Query(description="Methods with a random start: the seed.")]
UseGoldQuery = Annotated[
    bool | None,
    Query(description="Worker-model methods: clamp gold items' posteriors to their gold label."),
]


@cache
def method_param_names() -> frozenset[str]:
    """Every parameter name any registered method takes."""
    return PARAM_NAMES


def labeler_for(default_method: str) -> Callable[..., Labeler]:
    """A dependency giving the Labeler for the request's `method` (default `default_method`)."""

    def get_labeler(
        request: Request,
        project: ProjectDep,
        services: ServicesDep,
        method: MethodQuery = default_method,
    ) -> Labeler:
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
        names = method_param_names()
        raw = {k: v for k, v in request.query_params.items() if k in names}
    return labeler(
        services.engine,
        project.id,
        len(project.classes),
        project.votes_version,
        resolve_method(method, raw),
        sync_max_votes=services.settings.fit_sync_max_votes,
        queue=services.queue,
        budget=services.fit_budget,
    )


LabelerDep = Annotated[Labeler, Depends(labeler_for("normalized"))]
# /workers: a worker model is the point, so the default is one.
WorkerLabelerDep = Annotated[Labeler, Depends(labeler_for("dawid-skene"))]
