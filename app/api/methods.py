"""Which method fits a project best: GET /v1/projects/{p}/methods/compare.

The comparison is the `auto` method's fit, cached like any fit, so a second call, or
`?method=auto` on the soft-label routes with the same parameters, reuses it. Which `auto`: the
project's task type's (single-choice: app/aggregation/select.py, among the worker models;
multi-label and ordinal: app/aggregation/select_tasks.py, among every method of the type).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from app.aggregation.registry import get_method
from app.aggregation.select import describe
from app.aggregation.select_tasks import predicts
from app.api.access import require
from app.api.deps import ProjectDep, ServicesDep
from app.api.method_query import AutoParamsQuery, labeler_from_request
from app.api.schemas import MethodComparison

router = APIRouter(prefix="/v1/projects/{project}", tags=["analytics"])


@router.get(
    "/methods/compare",
    response_model=MethodComparison,
    dependencies=[Depends(require("read"))],
)
def compare_methods(
    request: Request,
    project: ProjectDep,
    services: ServicesDep,
    _: AutoParamsQuery = None,
) -> MethodComparison:
    """Every candidate of `auto` scored on this project's votes: the mean log-probability each
    gives held-out votes (a share of every item's votes, fitted on the rest), or, on a
    single-choice project with at least 30 gold items that have votes, accuracy on gold. The
    best is what `method=auto` serves. Candidates: a single-choice project's worker models; every
    method of a multi-label project (a held-out vote is its whole set of ticks) or of an ordinal
    one (a held-out vote is its level). `predicts` says how each candidate predicts a held-out
    vote: through that worker's own model, or as the item's soft label."""
    # Only `auto`'s own parameters: ParamError (a 422 naming the field) for any other.
    labels = labeler_from_request(request, project, services, "auto", dict(request.query_params))
    assert labels.fit is not None
    info = describe(labels.fit.result)
    assert info is not None
    candidates = info["candidates"]
    assert isinstance(candidates, list)
    for c in candidates:
        c["predicts"] = predicts(get_method(c["method"], project.task_type))
    return MethodComparison(
        **info,
        params=labels.params,
        as_of=labels.as_of,
        stale=labels.stale,
        warnings=labels.fit.result.warnings,
    )
