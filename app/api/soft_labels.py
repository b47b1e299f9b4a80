"""[4. exported] One item's soft label, and the streamed export of all of them."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from starlette.convertors import Convertor, register_url_convertor

from app.aggregation.params import ParamError
from app.aggregation.registry import METHOD_NAMES, resolve_method
from app.api.deps import ProjectDep, SessionDep, SettingsDep, require
from app.api.schemas import SoftLabel
from app.config import Settings
from app.db.models import Item, Project
from app.errors import FitPendingError, NotFound, ValidationFailed
from app.export import MEDIA_TYPES, Format, filename, read_chunks, serialize
from app.fits import FitPending
from app.labeling import Labeler, labeler

router = APIRouter(prefix="/v1/projects/{project}", tags=["soft labels"])


class ItemIdConvertor(Convertor[str]):
    """Any item id in a path: "/" and newlines included (sent percent-encoded).

    Item ids are often file paths ("train/cat_01.jpg"); a plain `{item}` cannot match an id with
    "/" (a %2F is decoded before routing), and Starlette's `path` (".*") stops at a newline.
    """

    regex = r"[\s\S]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("item_id", ItemIdConvertor())

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
# Query names that are not method parameters; everything else in the query string is one.
RESERVED = {"method", "format", "min_votes", "strategy", "limit", "worker", "max_votes"}


def labeler_from_query(
    request: Request, project: Project, settings: Settings, method: str
) -> Labeler:
    """Validate the method and exactly the parameters the client sent (unknown ones are 422),
    and get its labels: counts for count methods, the project's fit for worker models."""
    raw = {k: v for k, v in request.query_params.items() if k not in RESERVED}
    try:
        spec, params = resolve_method(method, raw)
    except ParamError as exc:
        raise ValidationFailed(
            f"Invalid soft-label parameter {exc.field!r}: {exc.reason}.",
            errors=[{"index": None, "field": exc.field, "reason": exc.reason}],
        ) from None
    try:
        return labeler(
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
            f"The {spec.name} model for this project is being fitted for the first time; "
            "retry in a few seconds.",
            headers={"Retry-After": "5"},
        ) from None


@router.get(
    "/items/{item:item_id}/soft-label",
    response_model=SoftLabel,
    dependencies=[Depends(require("read"))],
)
def get_soft_label(
    request: Request,
    project: ProjectDep,
    session: SessionDep,
    item: str,
    settings: SettingsDep,
    method: MethodQuery = "normalized",
    alpha: AlphaQuery = None,
    temperature: TemperatureQuery = None,
    max_iter: MaxIterQuery = None,
    tol: TolQuery = None,
    seed: SeedQuery = None,
    use_gold: UseGoldQuery = None,
) -> SoftLabel:
    labels = labeler_from_query(request, project, settings, method)
    row = session.execute(
        select(Item.id, Item.n_votes, Item.counts, Item.gold).where(
            Item.project_id == project.id, Item.external_id == item
        )
    ).one_or_none()
    if row is None:
        raise NotFound(f"No item {item!r} in project {project.name!r}.")
    probs = None
    if row.n_votes:
        counts = np.asarray([row.counts], dtype=np.int64)
        probs = labels.probs(np.asarray([row.id]), counts)[0].tolist()
    return SoftLabel(
        item=item,
        method=labels.method,
        params=labels.params,
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
    settings: SettingsDep,
    method: MethodQuery = "normalized",
    format: Annotated[Format, Query(description="jsonl, csv or parquet.")] = "jsonl",
    min_votes: Annotated[int, Query(ge=0, le=2**31 - 1)] = 1,
    alpha: AlphaQuery = None,
    temperature: TemperatureQuery = None,
    max_iter: MaxIterQuery = None,
    tol: TolQuery = None,
    seed: SeedQuery = None,
    use_gold: UseGoldQuery = None,
) -> StreamingResponse:
    """Every item with at least `min_votes` votes: id, n_votes, distribution, gold if any.

    Headers `X-Votes-Version` (the votes the labels reflect) and `X-Stale` ("true" while a newer
    worker-model fit is being computed) say how current the export is."""
    labels = labeler_from_query(request, project, settings, method)
    chunks = read_chunks(
        request.app.state.engine,
        project.id,
        project.classes,
        labels.probs,
        min_votes,
        settings.export_chunk_rows,
    )
    name = filename(project.name, labels.method, format)
    return StreamingResponse(
        serialize(chunks, format, project.classes),
        media_type=MEDIA_TYPES[format],
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "X-Votes-Version": str(labels.as_of),
            "X-Stale": "true" if labels.stale else "false",
        },
    )
