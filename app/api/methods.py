"""Which worker model fits a project best: GET /v1/projects/{p}/methods/compare.

The comparison is the `auto` method's fit (app/aggregation/select.py), cached like any fit, so
a second call, or `?method=auto` on the soft-label routes with the same parameters, reuses it.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from app.aggregation.select import describe
from app.api.access import require
from app.api.deps import ProjectDep, ServicesDep
from app.api.method_query import AutoParamsQuery, labeler_from_request
from app.api.schemas import MethodComparison
from app.api.task_types import not_for

router = APIRouter(prefix="/v1/projects/{project}", tags=["analytics"])


@router.get(
    "/methods/compare",
    response_model=MethodComparison,
    dependencies=[
        Depends(require("read")),
        Depends(not_for("multi_label", "ordinal", what="GET /methods/compare")),
    ],
)
def compare_methods(
    request: Request,
    project: ProjectDep,
    services: ServicesDep,
    _: AutoParamsQuery = None,
) -> MethodComparison:
    """Every worker-model method scored on this project's votes: the mean log-probability each
    gives held-out votes (a share of every item's votes, fitted on the rest), or, with at least
    30 gold items that have votes, accuracy on gold. The best is what `method=auto` serves."""
    # Only `auto`'s own parameters: ParamError (a 422 naming the field) for any other.
    labels = labeler_from_request(request, project, services, "auto", dict(request.query_params))
    assert labels.fit is not None
    info = describe(labels.fit.result)
    assert info is not None
    return MethodComparison(
        **info,
        params=labels.params,
        as_of=labels.as_of,
        stale=labels.stale,
        warnings=labels.fit.result.warnings,
    )
