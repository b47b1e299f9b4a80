"""Which worker model fits a project best: GET /v1/projects/{p}/methods/compare.

The comparison is the `auto` method's fit (app/aggregation/select.py), cached like any fit, so
a second call, or `?method=auto` on the soft-label routes with the same parameters, reuses it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from app.aggregation.params import ParamError
from app.aggregation.registry import resolve_method
from app.aggregation.select import describe
from app.api.deps import ProjectDep, SettingsDep, require
from app.api.schemas import MethodComparison
from app.errors import FitPendingError, ValidationFailed
from app.fits import FitPending
from app.labeling import labeler

router = APIRouter(prefix="/v1/projects/{project}", tags=["analytics"])


@router.get(
    "/methods/compare",
    response_model=MethodComparison,
    dependencies=[Depends(require("read"))],
)
def compare_methods(
    request: Request,
    project: ProjectDep,
    settings: SettingsDep,
    holdout: Annotated[
        float | None, Query(description="Share of each item's votes held out (default 0.2).")
    ] = None,
    seed: Annotated[int | None, Query(description="Seed of the held-out split.")] = None,
    use_gold: Annotated[
        bool | None, Query(description="Fit the chosen method with gold items clamped.")
    ] = None,
) -> MethodComparison:
    """Every worker-model method scored on this project's votes: the mean log-probability each
    gives held-out votes (a share of every item's votes, fitted on the rest), or, with at least
    30 gold items that have votes, accuracy on gold. The best is what `method=auto` serves."""
    raw = dict(request.query_params)
    try:
        spec, params = resolve_method("auto", raw)
    except ParamError as exc:
        raise ValidationFailed(
            f"Invalid parameter {exc.field!r}: {exc.reason}.",
            errors=[{"index": None, "field": exc.field, "reason": exc.reason}],
        ) from None
    try:
        labels = labeler(
            request.app.state.engine,
            project.id,
            len(project.classes),
            project.votes_version,
            spec,
            params,
            sync_max_votes=settings.fit_sync_max_votes,
            queue=request.app.state.queue,
        )
    except FitPending:
        raise FitPendingError(
            "The method comparison for this project is being computed for the first time; "
            "retry in a few seconds.",
            headers={"Retry-After": "5"},
        ) from None
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
