"""GET /items (a sorted, paged list) and GET /items/{item} (one item with its votes).

Thin: the SQL and the paging live in app/labels/items.py. Included after the analytics router, so
`/items/next` keeps its meaning (an item literally named "next" is read through its soft label or
the export). Ids are one path segment, percent-encoded (app/api/paths.py)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response

import app.api.paths  # noqa: F401  (registers the {item:id} path convertor)
from app.api.access import require
from app.api.deps import EngineDep, ProjectDep, ServicesDep
from app.api.item_schemas import ItemDetail, ItemPage, ItemRow, ItemVote
from app.api.method_query import LabelerDep
from app.errors import NotFound, ValidationFailed
from app.labels.fits import params_key
from app.labels.items import list_items, read_image, read_item

router = APIRouter(prefix="/v1/projects/{project}", tags=["items"])

SortQuery = Literal["entropy", "margin", "votes", "gold_disagreement", "item"]


@router.get("/items", response_model=ItemPage, dependencies=[Depends(require("read"))])
def get_items(
    project: ProjectDep,
    services: ServicesDep,
    labels: LabelerDep,
    sort: Annotated[
        SortQuery,
        Query(description="entropy, margin (p1 - p2), votes, gold_disagreement, or item (id)."),
    ] = "item",
    order: Literal["asc", "desc"] = "asc",
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    cursor: Annotated[
        str | None, Query(max_length=2000, description="`next_cursor` of the previous page.")
    ] = None,
    offset: Annotated[
        int | None, Query(ge=0, le=2**31 - 1, description="Skip this many rows (no cursor).")
    ] = None,
    min_votes: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    features: Annotated[
        bool, Query(description="Also return each item's feature vector (for training sets).")
    ] = False,
) -> ItemPage:
    """Items with their soft label under `method`, one page at a time. Items without a score
    (no votes; for gold_disagreement no gold) come last in either order."""
    if cursor is not None and offset is not None:
        raise ValidationFailed(
            "Send `cursor` or `offset`, not both.",
            errors=[{"index": None, "field": "offset", "reason": "not with cursor"}],
        )
    if project.task_type == "multi_label" and sort == "gold_disagreement":
        # A gold label is one class; a multi-label item's truth is a set, and takes no gold.
        raise ValidationFailed.field(
            "sort", "a multi_label project's items have no gold: sort by entropy, margin or votes"
        )
    method_key = f"{labels.method}:{params_key(labels.params)}:{labels.as_of}"
    with services.engine.connect() as conn:
        page = list_items(
            conn,
            project_id=project.id,
            classes=project.classes,
            method_key=method_key,
            probs=labels.probs,
            sort=sort,
            order=order,
            limit=limit,
            cursor=cursor,
            offset=offset,
            min_votes=min_votes,
            cache=services.item_orders,
            task_type=project.task_type,
        )
    return ItemPage(
        method=labels.method,
        params=labels.params,
        as_of=labels.as_of,
        stale=labels.stale,
        classes=project.classes,
        sort=sort,
        order=order,
        total=page.total,
        items=[
            ItemRow(
                **{
                    **r.__dict__,
                    "features": r.features if features else None,
                }
            )
            for r in page.rows
        ],
        next_cursor=page.next_cursor,
    )


@router.get("/items/{item:id}", response_model=ItemDetail, dependencies=[Depends(require("read"))])
def get_item(request: Request, engine: EngineDep, project: ProjectDep, item: str) -> ItemDetail:
    """One item: counts, gold, features, metadata, and every vote (worker, label, times)."""
    with engine.connect() as conn:
        found = read_item(conn, project.id, item)
    if found is None:
        raise NotFound(f"No item {item!r} in project {project.name!r}.")
    row, classes = found["row"], project.classes
    return ItemDetail(
        item=row.external_id,
        classes=classes,
        n_votes=row.n_votes,
        counts=list(row.counts),
        gold=None if row.gold is None else classes[row.gold],
        features=row.features,
        meta=row.meta,
        text=row.text,
        image_url=row.image_url,
        image=None
        if row.image_bytes is None
        else str(request.url_for("get_item_image", project=project.name, item=item)),
        created_at=row.created_at,
        updated_at=row.updated_at,
        votes=[
            ItemVote(
                worker=v.worker,
                label=classes[v.label] if v.ticks is None else [classes[k] for k in v.ticks],
                created_at=v.created_at,
                updated_at=v.updated_at,
            )
            for v in found["votes"]
        ],
    )


@router.get(
    "/items/{item:id}/image",
    response_class=Response,
    responses={200: {"content": {"image/*": {}}, "description": "The image file as uploaded."}},
    dependencies=[Depends(require("read"))],
)
def get_item_image(engine: EngineDep, project: ProjectDep, item: str) -> Response:
    """The image uploaded with the item (`image` in POST /items), as it was sent."""
    with engine.connect() as conn:
        found = read_image(conn, project.id, item)
    if found is None:
        raise NotFound(f"No stored image for item {item!r} in project {project.name!r}.")
    data, media_type = found
    return Response(data, media_type=media_type or "application/octet-stream")
