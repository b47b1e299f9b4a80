"""[1. vote in] /v1/projects/{project}/items and /votes: batches in, counts of what changed out;
and the votes' lifecycle: delete a vote, a worker's votes or an item, exclude or include a
worker, stream the raw votes (the work is in app/votes/)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import StreamingResponse

import app.api.paths  # noqa: F401  (registers the {item:id} path convertor)
from app.api.access import require
from app.api.connector_schemas import DeletedOut, ExcludedOut
from app.api.deps import EngineDep, ProjectDep, ServicesDep, SessionDep, SettingsDep
from app.api.schemas import ItemBatch, ItemResult, VoteBatch, VoteResult
from app.errors import PayloadTooLarge, ValidationFailed
from app.votes import lifecycle
from app.votes.export import (
    EXTENSIONS,
    MULTI_LABEL_FORMATS,
    VOTE_MEDIA_TYPES,
    VoteFormat,
    read_vote_chunks,
    serialize_votes,
)
from app.votes.ingest import committed_with_retries, ingest_items

router = APIRouter(prefix="/v1/projects/{project}", tags=["votes"])
ProjectName = Annotated[str, Path(description="Project name", max_length=200)]


@router.post("/items", response_model=ItemResult, dependencies=[Depends(require("annotate"))])
def post_items(
    body: ItemBatch, project: ProjectDep, session: SessionDep, settings: SettingsDep
) -> ItemResult:
    """Create or update items (features, gold label, metadata). All or nothing."""
    if len(body.items) > settings.max_items_per_request:
        raise PayloadTooLarge(
            f"{len(body.items)} items in one request; the limit is "
            f"{settings.max_items_per_request}. Split the batch."
        )
    result = committed_with_retries(session, lambda: ingest_items(session, project, body.items))
    return ItemResult(inserted=result.inserted, updated=result.updated)


@router.post("/votes", response_model=VoteResult, dependencies=[Depends(require("annotate"))])
async def post_votes(body: VoteBatch, project: ProjectName, services: ServicesDep) -> VoteResult:
    """Store a batch of votes, all or nothing. Re-sending a stored vote changes nothing.

    The hot path of a labeling tool (one request per annotation): async end to end, the project
    from a per-process cache, and the write in its lane (app/votes/lanes.py): a small batch
    shares one statement and one commit with those arriving at the same time, a large one waits
    for the bulk lane, never for a small one's connection."""
    limit = services.settings.max_votes_per_request
    if len(body.votes) > limit:
        raise PayloadTooLarge(
            f"{len(body.votes)} votes in one request; the limit is {limit}. Split the batch."
        )
    result = await services.votes.store(project, body.votes)
    return VoteResult(
        inserted=result.inserted,
        updated=result.updated,
        unchanged=result.unchanged,
        votes_version=result.votes_version,
    )


ItemPath = Annotated[str, Path(description="The item's id.", max_length=256)]
WorkerPath = Annotated[str, Path(description="The worker's id.", max_length=256)]


def _deleted(d: lifecycle.Deleted) -> DeletedOut:
    return DeletedOut(deleted_votes=d.votes, votes_version=d.votes_version)


@router.delete(
    "/items/{item:id}/votes/{worker:id}",
    response_model=DeletedOut,
    dependencies=[Depends(require("annotate"))],
)
def delete_vote(
    project: ProjectDep, item: ItemPath, worker: WorkerPath, session: SessionDep
) -> DeletedOut:
    """Delete one vote. Counts, soft labels, fits and exports follow at once."""
    return _deleted(
        committed_with_retries(
            session, lambda: lifecycle.delete_vote(session, project, item, worker)
        )
    )


@router.delete(
    "/workers/{worker:id}/votes",
    response_model=DeletedOut,
    dependencies=[Depends(require("admin"))],
)
def delete_worker_votes(project: ProjectDep, worker: WorkerPath, session: SessionDep) -> DeletedOut:
    """Delete every vote of one worker (e.g. a spammer found with `/workers`)."""
    return _deleted(
        committed_with_retries(
            session, lambda: lifecycle.delete_worker_votes(session, project, worker)
        )
    )


def _exclude(session: SessionDep, project: ProjectDep, worker: str, flag: bool) -> ExcludedOut:
    out = committed_with_retries(
        session, lambda: lifecycle.set_excluded(session, project, worker, flag)
    )
    return ExcludedOut(
        worker=out.worker,
        excluded=out.excluded,
        changed=out.changed,
        votes=out.votes,
        votes_version=out.votes_version,
    )


@router.post(
    "/workers/{worker:id}/exclude",
    response_model=ExcludedOut,
    dependencies=[Depends(require("admin"))],
)
def exclude_worker(project: ProjectDep, worker: WorkerPath, session: SessionDep) -> ExcludedOut:
    """Stop counting a worker's votes everywhere (counts, every method, exports), keeping them
    stored. Reversible with `/include`. Votes the worker sends meanwhile are stored, uncounted."""
    return _exclude(session, project, worker, True)


@router.post(
    "/workers/{worker:id}/include",
    response_model=ExcludedOut,
    dependencies=[Depends(require("admin"))],
)
def include_worker(project: ProjectDep, worker: WorkerPath, session: SessionDep) -> ExcludedOut:
    """Count an excluded worker's votes again."""
    return _exclude(session, project, worker, False)


@router.delete(
    "/items/{item:id}", response_model=DeletedOut, dependencies=[Depends(require("admin"))]
)
def delete_item(project: ProjectDep, item: ItemPath, session: SessionDep) -> DeletedOut:
    """Delete an item with its votes, features, gold label and metadata."""
    return _deleted(
        committed_with_retries(session, lambda: lifecycle.delete_item(session, project, item))
    )


@router.get(
    "/votes/export",
    dependencies=[Depends(require("read"))],
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The raw votes, streamed: item, worker, label, created_at, "
            "updated_at, source.",
            "content": {media: {} for media in set(VOTE_MEDIA_TYPES.values())},
        }
    },
)
def export_votes(
    project: ProjectDep,
    engine: EngineDep,
    settings: SettingsDep,
    format: Annotated[
        VoteFormat,
        Query(
            description="jsonl, csv, parquet; or crowdkit (task,worker,label CSV) or "
            "peerannot (answers.json with class indices)."
        ),
    ] = "jsonl",
    include_excluded: Annotated[
        bool, Query(description="Also the votes of excluded workers.")
    ] = False,
) -> StreamingResponse:
    """Every vote, one row each, in item then worker order (crowd-kit reads the CSV as is:
    `task` = item). A multi-label vote's label is the list of classes ticked (jsonl, csv as a
    JSON list, parquet as a list column)."""
    multi = project.task_type == "multi_label"
    if multi and format not in MULTI_LABEL_FORMATS:
        raise ValidationFailed.field(
            "format",
            f"a multi-label project's votes export as {', '.join(MULTI_LABEL_FORMATS)}; "
            f"{format} has no form for sets of labels",
        )
    chunks = read_vote_chunks(engine, project.id, settings.export_chunk_rows, include_excluded)
    return StreamingResponse(
        serialize_votes(chunks, format, project.classes, multi),
        media_type=VOTE_MEDIA_TYPES[format],
        headers={
            "Content-Disposition": 'attachment; filename="'
            f'{project.name}-votes.{EXTENSIONS.get(format, format)}"',
            "X-Votes-Version": str(project.votes_version),
        },
    )
