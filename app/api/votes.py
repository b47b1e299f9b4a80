"""[1. vote in] /v1/projects/{project}/items and /votes: batches in, counts of what changed out."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from app.api.deps import ProjectDep, SessionDep, SettingsDep, require
from app.api.schemas import ItemBatch, ItemResult, VoteBatch, VoteResult
from app.errors import PayloadTooLarge
from app.ingest import committed_with_retries, ingest_items, ingest_votes

router = APIRouter(prefix="/v1/projects/{project}", tags=["votes"])


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
def post_votes(
    body: VoteBatch, project: ProjectDep, session: SessionDep, settings: SettingsDep
) -> VoteResult:
    """Store a batch of votes, all or nothing. Re-sending a stored vote changes nothing."""
    if len(body.votes) > settings.max_votes_per_request:
        raise PayloadTooLarge(
            f"{len(body.votes)} votes in one request; the limit is "
            f"{settings.max_votes_per_request}. Split the batch."
        )
    result = committed_with_retries(session, lambda: ingest_votes(session, project, body.votes))
    return VoteResult(
        inserted=result.inserted, updated=result.updated, unchanged=result.unchanged,
        votes_version=result.votes_version,
    )
