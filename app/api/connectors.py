"""/v1/projects/{p}/connectors/{tool}: configure a labeling tool, receive its webhook events,
pull (sync) from it. Parsing lives in app/connectors; nothing here knows a payload's shape.

Label Studio sends the project's custom headers with each webhook, so its key travels as
`Authorization: Bearer <key>` (scope annotate). Argilla cannot add headers: its Standard
Webhooks signature, checked against the secret in the connector, is its credential (a key may be
sent as well). Payloads are never stored or logged whole: they carry Label Studio's share token.
"""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel

from app.api.connector_schemas import (
    ArgillaConfig,
    ConnectorOut,
    EventResult,
    LabelStudioConfig,
    SyncResult,
    Tool,
)
from app.api.deps import Caller, ProjectDep, ServicesDep, SessionDep, bearer, get_caller, require
from app.api.schemas import ErrorBody
from app.connectors import store
from app.connectors.label_studio import SyncFailed
from app.db.models import Connector
from app.errors import ToolUnreachable, Unauthorized, ValidationFailed
from app.ingest import committed_with_retries
from app.signing import BadSignature, verify

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/projects/{project}/connectors", tags=["connectors"])

CONFIGS: dict[str, type[BaseModel]] = {"label-studio": LabelStudioConfig, "argilla": ArgillaConfig}
_annotate = require("annotate")


async def events_access(
    request: Request,
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Caller | None:
    """An annotate key; or, for Argilla only and without a key, a Standard Webhooks signature
    (checked by the route against the connector's secret)."""
    if (
        credentials is None
        and request.path_params.get("tool") == "argilla"
        and request.headers.get("webhook-signature")
    ):
        return None
    caller = await get_caller(request, services, credentials)
    return await _annotate(caller, request, services)


events_access.required_scope = "annotate"  # type: ignore[attr-defined]  # for route_scope()


def _out(request: Request, project: str, c: Connector) -> ConnectorOut:
    return ConnectorOut(
        tool=c.tool,  # type: ignore[arg-type]
        config=dict(c.config),
        secret_set=c.secret is not None,
        events_url=str(request.url_for("connector_events", project=project, tool=c.tool)),
        last_sync_at=c.last_sync_at,
        last_sync=c.last_sync,
    )


@router.put("/{tool}", response_model=ConnectorOut, dependencies=[Depends(require("admin"))])
def put_connector(
    request: Request, project: ProjectDep, tool: Tool, body: dict[str, Any], session: SessionDep
) -> ConnectorOut:
    """Set the mapping. Label Studio: `{"from_name", "item_field"}` (+ `url`, `ls_project`,
    `token` for sync); Argilla: `{"question", "secret"}`. The token / secret is stored and never
    returned; leave it out to keep the stored one."""
    from pydantic import ValidationError

    try:
        config = CONFIGS[tool].model_validate(body)
    except ValidationError as exc:
        raise ValidationFailed(
            "The connector config is invalid.",
            errors=[
                {"index": None, "field": ".".join(map(str, e["loc"])) or None, "reason": e["msg"]}
                for e in exc.errors()
            ],
        ) from None
    values = config.model_dump(mode="json", exclude_unset=False)
    if tool == "label-studio" and "token" not in config.model_fields_set:
        values.pop("token")
    c = store.put(session, project, tool, values)
    out = _out(request, project.name, c)
    session.commit()
    return out


@router.get("/{tool}", response_model=ConnectorOut, dependencies=[Depends(require("admin"))])
def get_connector(
    request: Request, project: ProjectDep, tool: Tool, session: SessionDep
) -> ConnectorOut:
    return _out(request, project.name, store.get(session, project, tool))


@router.delete("/{tool}", status_code=204, dependencies=[Depends(require("admin"))])
def delete_connector(project: ProjectDep, tool: Tool, session: SessionDep) -> None:
    """Stop accepting the tool's events. The votes it sent stay."""
    store.delete(session, project, tool)


def _result(action: str, applied: Any) -> EventResult:
    if applied is None:
        return EventResult(action=action, ignored=True)
    return EventResult(
        action=action,
        inserted=applied.inserted,
        updated=applied.updated,
        unchanged=applied.unchanged,
        deleted=applied.deleted,
        skipped=applied.skipped,
        votes_version=applied.votes_version,
    )


@router.post(
    "/{tool}/events",
    response_model=EventResult,
    name="connector_events",
    dependencies=[Depends(events_access)],
)
async def connector_events(
    request: Request, project: ProjectDep, tool: Tool, session: SessionDep
) -> EventResult:
    """The URL the tool's webhook points at. Idempotent (the tool's annotation / response id is
    the key), all or nothing; an unknown label or unmapped field is a 422 naming the JSON path.
    Actions without votes (e.g. TASKS_CREATED, PROJECT_UPDATED) are acknowledged and ignored."""
    raw = await request.body()

    def work() -> EventResult:
        connector = store.get(session, project, tool)
        if tool == "argilla":
            try:
                verify(
                    connector.secret or "",
                    dict(request.headers),
                    raw,
                    float(connector.config.get("tolerance_s", 300)),
                )
            except BadSignature as exc:
                raise Unauthorized(f"Argilla webhook refused: {exc}.") from None
        try:
            body = json.loads(raw)
        except ValueError:
            raise ValidationFailed(
                "The body is not valid JSON.",
                errors=[{"index": None, "field": "body", "reason": "not valid JSON"}],
            ) from None
        if not isinstance(body, dict):
            raise ValidationFailed(
                "The body must be a JSON object.",
                errors=[{"index": None, "field": "body", "reason": "not an object"}],
            )
        action, applied = committed_with_retries(
            session, lambda: store.handle_event(session, project, connector, body)
        )
        result = _result(action, applied)
        # Never the body: it carries the tool's secrets (Label Studio's share token). The
        # action and what it changed, to tell later which events arrived and did what.
        log.info(
            "connector event",
            extra={
                "connector": {"tool": tool, "action": action[:64]}
                | result.model_dump(exclude={"action"}, exclude_defaults=True)
            },
        )
        return result

    return await run_in_threadpool(work)


@router.post(
    "/label-studio/sync",
    response_model=SyncResult,
    dependencies=[Depends(require("admin"))],
    responses={
        404: {"model": ErrorBody, "description": "No such project, or it has no connector."},
        422: {
            "model": ErrorBody,
            "description": "The connector lacks `url`, `ls_project` or `token` (each named in "
            "`errors`). Annotations that cannot be votes are not a 422: they are reported in "
            "`rejected` / `rejections`.",
        },
        502: {
            "model": ErrorBody,
            "description": "Label Studio could not be read: unreachable, refused the token or "
            "the project, or its export is not a list of tasks. Nothing changed.",
        },
    },
)
def sync_label_studio(project: ProjectDep, session: SessionDep) -> SyncResult:
    """Pull the project's annotations from Label Studio and reconcile: add what is missing,
    update what changed, remove what Label Studio no longer has. Repairs missed webhooks
    (Label Studio never retries one). An annotation that cannot be a vote (a choice that is not
    a class, no result from the mapped control, the item field missing from its task) is
    skipped and reported in `rejections` while the others are stored; a vote stored from it
    before is kept. One transaction: a database error changes nothing."""
    connector = store.get(session, project, "label-studio")
    try:
        n, applied = committed_with_retries(
            session, lambda: store.sync_label_studio(session, project, connector)
        )
    except SyncFailed as exc:
        raise ToolUnreachable(str(exc)) from None
    return SyncResult.model_validate(
        store.sync_summary(n, applied) | {"votes_version": applied.votes_version}
    )
