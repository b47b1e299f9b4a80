"""[4. exported] One item's soft label, and the streamed export of all of them."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import select

import app.api.paths  # noqa: F401  (registers the {item:id} path convertor)
from app.api.access import require
from app.api.deps import ProjectDep, ServicesDep, SessionDep
from app.api.method_query import (
    LabelerDep,
    MethodParamsQuery,
    MethodQuery,
    labeler_from_request,
)
from app.api.model_loop import export_model_predictions
from app.api.schemas import SoftLabel
from app.db.models import Item
from app.errors import NotFound
from app.labels.export import MEDIA_TYPES, Format, filename, read_chunks, serialize, summarize
from app.labels.service import project_scale

router = APIRouter(prefix="/v1/projects/{project}", tags=["soft labels"])


@router.get(
    "/items/{item:id}/soft-label",
    response_model=SoftLabel,
    dependencies=[Depends(require("read"))],
)
def get_soft_label(
    project: ProjectDep,
    session: SessionDep,
    item: str,
    labels: LabelerDep,
) -> SoftLabel:
    row = session.execute(
        select(Item.id, Item.n_votes, Item.counts, Item.gold).where(
            Item.project_id == project.id, Item.external_id == item
        )
    ).one_or_none()
    if row is None:
        raise NotFound(f"No item {item!r} in project {project.name!r}.")
    probs = None
    summary: dict[str, float] = {}
    if row.n_votes:
        counts = np.asarray([row.counts], dtype=np.int64)
        p = labels.probs(np.asarray([row.id]), counts, np.asarray([row.n_votes]))
        probs = p[0].tolist()
        summary = {k: float(v[0]) for k, v in summarize(p, project_scale(project)).items()}
    return SoftLabel(
        item=item,
        method=labels.method,
        params=labels.params,
        task_type=project.task_type,  # type: ignore[arg-type]
        **summary,
        n_votes=row.n_votes,
        as_of=labels.as_of,
        stale=labels.stale,
        classes=project.classes,
        probs=probs,
        gold=None if row.gold is None else project.classes[row.gold],
        warnings=labels.fit.result.warnings if labels.fit is not None else [],
    )


@router.get(
    "/soft-labels",
    dependencies=[Depends(require("read"))],
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The export, streamed.",
            "content": {media: {} for media in MEDIA_TYPES.values()},
        }
    },
)
def export_soft_labels(
    request: Request,
    project: ProjectDep,
    services: ServicesDep,
    method: MethodQuery = "normalized",
    format: Annotated[Format, Query(description="jsonl, csv or parquet.")] = "jsonl",
    min_votes: Annotated[int, Query(ge=0, le=2**31 - 1)] = 1,
    _: MethodParamsQuery = None,
) -> StreamingResponse:
    """Every item with at least `min_votes` votes: id, n_votes, distribution, gold if any; for
    an ordinal project also the mean, median and spread of each distribution; for a
    multi-label project each class's probability that it applies.

    Headers `X-Votes-Version` (the votes the labels reflect) and `X-Stale` ("true" while a newer
    worker-model fit is being computed) say how current the export is."""
    if method.startswith("model:"):  # a training job's predictions for items with no votes
        return export_model_predictions(
            services, project, method, format, services.settings.export_chunk_rows
        )
    labels = labeler_from_request(request, project, services, method)
    scale = project_scale(project)
    chunks = read_chunks(
        services.engine,
        project.id,
        project.classes,
        labels.probs,
        min_votes,
        services.settings.export_chunk_rows,
        scale,
    )
    name = filename(project.name, labels.method, format)
    return StreamingResponse(
        serialize(chunks, format, project.classes, ordinal=scale is not None),
        media_type=MEDIA_TYPES[format],
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "X-Votes-Version": str(labels.as_of),
            "X-Stale": "true" if labels.stale else "false",
        },
    )
