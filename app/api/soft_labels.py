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
from app.api.schemas import SoftLabel, WorkerPrediction
from app.db.models import Item, Worker
from app.errors import NotFound
from app.labels.export import MEDIA_TYPES, Format, filename, read_chunks, serialize, summarize
from app.labels.perspectives import worker_view
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


# The annotator's view is a worker model's: each type's default is one.
VIEW_METHODS = {"single": "dawid-skene", "ordinal": "rater-bias", "multi_label": "tick-propensity"}


@router.get(
    "/items/{item:id}/workers/{worker:id}/prediction",
    response_model=WorkerPrediction,
    dependencies=[Depends(require("read"))],
)
def get_worker_prediction(
    request: Request,
    project: ProjectDep,
    session: SessionDep,
    services: ServicesDep,
    item: str,
    worker: str,
    method: Annotated[
        str | None,
        Query(
            description="Default: dawid-skene (single), rater-bias (ordinal), tick-propensity "
            "(multi_label). A count method predicts the item's soft label for every worker."
        ),
    ] = None,
    _: MethodParamsQuery = None,
) -> WorkerPrediction:
    """Each annotator's view: the answer this worker would give on this item, from the method's
    model of the worker (the item's posterior through the worker's confusion or rater kernel,
    or its tick rates), whether or not the worker voted on the item."""
    row = session.execute(
        select(Item.id, Item.n_votes, Item.counts).where(
            Item.project_id == project.id, Item.external_id == item
        )
    ).one_or_none()
    if row is None:
        raise NotFound(f"No item {item!r} in project {project.name!r}.")
    worker_id = session.scalar(
        select(Worker.id).where(Worker.project_id == project.id, Worker.external_id == worker)
    )
    if worker_id is None:
        raise NotFound(f"No worker {worker!r} in project {project.name!r}.")
    labels = labeler_from_request(
        request, project, services, method or VIEW_METHODS[project.task_type]
    )
    view = worker_view(
        labels,
        row.id,
        np.asarray(row.counts, dtype=np.int64),
        row.n_votes,
        worker_id,
        project.task_type == "multi_label",
    )
    summary = summarize(view.probs[None, :], project_scale(project))
    return WorkerPrediction(
        item=item,
        worker=worker,
        method=labels.method,
        params=labels.params,
        task_type=project.task_type,  # type: ignore[arg-type]
        classes=project.classes,
        probs=view.probs.tolist(),
        model=view.model,  # type: ignore[arg-type]
        worker_in_fit=view.in_fit,
        **{k: float(v[0]) for k, v in summary.items()},
        n_votes=row.n_votes,
        as_of=labels.as_of,
        stale=labels.stale,
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
