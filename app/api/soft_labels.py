"""[4. exported] One item's soft label, and the streamed export of all of them."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from starlette.convertors import Convertor, register_url_convertor

from app.aggregation.methods import COUNT_METHODS, CountsMethod, resolve
from app.aggregation.params import ParamError
from app.api.deps import ProjectDep, SessionDep, SettingsDep, require
from app.api.schemas import SoftLabel
from app.db.models import Item
from app.errors import NotFound, ValidationFailed
from app.export import MEDIA_TYPES, Format, filename, read_chunks, serialize

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

METHOD_NAMES = ", ".join(COUNT_METHODS)
MethodQuery = Annotated[str, Query(description=f"One of: {METHOD_NAMES}.")]
AlphaQuery = Annotated[
    float | None, Query(description="`normalized`: pseudo-count per class, >= 0 (default 0).")
]
TemperatureQuery = Annotated[
    float | None,
    Query(description="`softmax`, `softmax-normalized`: temperature T > 0 (default 1)."),
]
# Query names that are not method parameters; everything else in the query string is one.
RESERVED = {"method", "format", "min_votes"}


def method_from_query(request: Request, method: str) -> tuple[CountsMethod, dict[str, Any]]:
    """Validate the method and exactly the parameters the client sent (unknown ones are 422)."""
    raw = {k: v for k, v in request.query_params.items() if k not in RESERVED}
    try:
        return resolve(method, raw)
    except ParamError as exc:
        raise ValidationFailed(
            f"Invalid soft-label parameter {exc.field!r}: {exc.reason}.",
            errors=[{"index": None, "field": exc.field, "reason": exc.reason}],
        ) from None


@router.get(
    "/items/{item:item_id}/soft-label", response_model=SoftLabel,
    dependencies=[Depends(require("read"))],
)
def get_soft_label(
    request: Request,
    project: ProjectDep,
    session: SessionDep,
    item: str,
    method: MethodQuery = "normalized",
    alpha: AlphaQuery = None,
    temperature: TemperatureQuery = None,
) -> SoftLabel:
    spec, params = method_from_query(request, method)
    row = session.execute(
        select(Item.n_votes, Item.counts, Item.gold).where(
            Item.project_id == project.id, Item.external_id == item
        )
    ).one_or_none()
    if row is None:
        raise NotFound(f"No item {item!r} in project {project.name!r}.")
    probs = None
    if row.n_votes:
        probs = spec.compute(np.asarray([row.counts], dtype=np.int64), params)[0].tolist()
    return SoftLabel(
        item=item, method=spec.name, params=params, n_votes=row.n_votes,
        classes=project.classes, probs=probs,
        gold=None if row.gold is None else project.classes[row.gold],
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
) -> StreamingResponse:
    """Every item with at least `min_votes` votes: id, n_votes, distribution, gold if any."""
    spec, params = method_from_query(request, method)
    chunks = read_chunks(
        request.app.state.engine, project.id, project.classes, spec, params, min_votes,
        settings.export_chunk_rows,
    )
    name = filename(project.name, spec.name, format)
    return StreamingResponse(
        serialize(chunks, format, project.classes),
        media_type=MEDIA_TYPES[format],
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
