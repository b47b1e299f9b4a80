"""[1. vote in] /v1/projects/{project}/items and /votes: batches in, counts of what changed out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from app.api.access import require
from app.api.deps import ProjectDep, ServicesDep, SessionDep, SettingsDep
from app.api.schemas import ItemBatch, ItemResult, VoteBatch, VoteResult
from app.errors import PayloadTooLarge
from app.votes.ingest import committed_with_retries, ingest_items, store_votes

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
    from a per-process cache, and the whole write in one statement (app/votes/ingest.py)."""
    limit = services.settings.max_votes_per_request
    if len(body.votes) > limit:
        raise PayloadTooLarge(
            f"{len(body.votes)} votes in one request; the limit is {limit}. Split the batch."
        )
    result = await store_votes(services.pool, services.projects, project, body.votes)
    return VoteResult(
        inserted=result.inserted,
        updated=result.updated,
        unchanged=result.unchanged,
        votes_version=result.votes_version,
    )
