"""POST /v1/projects/{p}/imports/{format}: a tool's export file as the request body, stored as
votes (source "import"), all or nothing. The same parsers serve `softlabels import`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool

from app.api.access import require
from app.api.connector_schemas import ImportResult
from app.api.deps import ProjectDep, SessionDep
from app.connectors.common import OnDuplicate, apply
from app.connectors.files import FileFormat, Options, parse_file
from app.votes.ingest import committed_with_retries

router = APIRouter(prefix="/v1/projects/{project}", tags=["connectors"])


@router.post(
    "/imports/{format}",
    response_model=ImportResult,
    dependencies=[Depends(require("annotate"))],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string"}}},
            "description": "The file, as is (JSON, JSONL or CSV).",
        }
    },
)
async def import_file(
    request: Request,
    project: ProjectDep,
    session: SessionDep,
    format: FileFormat,
    on_duplicate: Annotated[
        OnDuplicate, Query(description="The same (item, worker) twice: keep last, first, or 422.")
    ] = "last",
    from_name: Annotated[str | None, Query(description="label-studio: the control.")] = None,
    item_field: Annotated[
        str | None, Query(description="label-studio: task data field; prodigy: id field.")
    ] = None,
    question: Annotated[str | None, Query(description="argilla: the label question.")] = None,
    content_field: Annotated[
        str | None,
        Query(
            description="label-studio: task data field, argilla: record field holding the item's "
            "text or image, stored for training on content (default `text` or `image` when there)."
        ),
    ] = None,
) -> ImportResult:
    """Import Label Studio JSON / JSON_MIN, Argilla records, Prodigy JSONL, crowd-kit CSV or
    peerannot answers.json. Problems are listed by line or JSON path; nothing is stored then.
    On a multi-label project a crowd-kit label cell is a JSON list or names joined by `;`
    (empty: none apply), a peerannot label a list, a Prodigy `accept` the set ticked; on an
    ordinal project a crowd-kit cell may also give a level's value."""
    data = await request.body()

    def work() -> ImportResult:
        opts = Options(from_name, item_field, question, content_field).for_project(project)
        parsed = parse_file(format, data, opts)
        applied = committed_with_retries(
            session, lambda: apply(session, project, "import", parsed, on_duplicate)
        )
        return ImportResult(
            rows=parsed.rows,
            duplicates=applied.duplicates,
            inserted=applied.inserted,
            updated=applied.updated,
            unchanged=applied.unchanged,
            skipped=applied.skipped,
            votes_version=applied.votes_version,
        )

    return await run_in_threadpool(work)
