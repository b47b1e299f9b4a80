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
import math
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel
from sqlalchemy import Engine, text

from app.api.access import admit, require
from app.api.connector_schemas import (
    ArgillaConfig,
    ConnectorOut,
    EventResult,
    LabelStudioConfig,
    SyncQueued,
    SyncResult,
    Tool,
)
from app.api.deps import Caller, ProjectDep, ServicesDep, SessionDep, bearer, get_caller
from app.api.schemas import ErrorBody
from app.connectors import replay, store
from app.db.models import Connector
from app.errors import (
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
    ValidationFailed,
)
from app.outbound import Policy, refuse_url
from app.votes.ingest import committed_with_retries
from app.webhooks.signing import MAX_TOLERANCE_S, check_headers, verify

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/projects/{project}/connectors", tags=["connectors"])

CONFIGS: dict[str, type[BaseModel]] = {"label-studio": LabelStudioConfig, "argilla": ArgillaConfig}


# One answer for an unknown project, a project without an Argilla connector (or secret) and a
# signature that does not verify: a caller without a key learns nothing about which it was.
REFUSED = "Webhook refused: the signature does not verify for this URL."


def _argilla_secret(engine: Engine, project: str) -> str | None:
    with engine.connect() as conn:
        return conn.execute(
            text(
                "SELECT c.secret FROM connectors c JOIN projects p ON p.id = c.project_id "
                "WHERE p.name = :n AND c.tool = 'argilla'"
            ),
            {"n": project},
        ).scalar_one_or_none()


async def events_access(
    request: Request,
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Caller | None:
    """An annotate key; or, for Argilla only and without a key, a Standard Webhooks signature.

    Without a key, everything that can be refused before the body is read is refused here with
    one 401, after the per-address rate limit; the route then reads at most `max_event_bytes`
    and checks the signature over them."""
    if (
        credentials is None
        and request.path_params.get("tool") == "argilla"
        and request.headers.get("webhook-signature")
    ):
        address = request.client.host if request.client else ""
        wait = services.limiter.wait_s(("signed-webhook", address))
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            raise RateLimited(
                f"Too many webhook requests from this address; retry in {seconds} s.",
                headers={"Retry-After": str(seconds)},
            )
        check_headers(dict(request.headers))
        project = str(request.path_params.get("project", ""))
        if not await run_in_threadpool(_argilla_secret, services.engine, project):
            raise Unauthorized(REFUSED)
        request.state.signed_webhook = True  # the route reads at most max_event_bytes
        return None
    caller = await get_caller(request, services, credentials)
    return await admit("annotate", caller, request, services)


events_access.required_scope = "annotate"  # type: ignore[attr-defined]  # for route_scope()


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"An event body is at most {limit} bytes.")
    parts, seen = [], 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            raise PayloadTooLarge(f"An event body is at most {limit} bytes.")
        parts.append(chunk)
    return b"".join(parts)


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
    request: Request,
    project: ProjectDep,
    tool: Tool,
    body: dict[str, Any],
    session: SessionDep,
    services: ServicesDep,
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
    if values.get("url"):
        refuse_url(str(values["url"]), Policy.from_settings(services.settings))
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
    request: Request, project: ProjectDep, tool: Tool, session: SessionDep, services: ServicesDep
) -> EventResult:
    """The URL the tool's webhook points at. Idempotent (the tool's annotation / response id is
    the key), all or nothing; an unknown label or unmapped field is a 422 naming the JSON path.
    Actions without votes (e.g. TASKS_CREATED, PROJECT_UPDATED) are acknowledged and ignored."""
    settings = services.settings
    signed_only = getattr(request.state, "signed_webhook", False)
    raw = await read_body(
        request, settings.max_event_bytes if signed_only else settings.max_body_bytes
    )
    headers = dict(request.headers)

    def work() -> EventResult:
        connector = store.get(session, project, tool)
        if tool == "argilla":
            verify(
                connector.secret or "",
                headers,
                raw,
                float(connector.config.get("tolerance_s", MAX_TOLERANCE_S)),
            )
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
        msg_id = headers.get("webhook-id", "") if tool == "argilla" else ""

        def handle() -> tuple[str, Any]:
            if msg_id and not replay.first_delivery(session, project.id, tool, msg_id):
                return "replayed", None  # this message id was applied already
            return store.handle_event(session, project, connector, body)

        action, applied = committed_with_retries(session, handle)
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
        202: {"model": SyncQueued, "description": "With `wait=false`: queued for the worker."},
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
def sync_label_studio(
    project: ProjectDep,
    session: SessionDep,
    services: ServicesDep,
    wait: Annotated[
        bool,
        Query(
            description="false: queue the sync for the worker and answer 202 at once (for large "
            "projects, whose export Label Studio takes minutes to build); the result is then "
            "the connector's `last_sync`."
        ),
    ] = True,
) -> SyncResult | JSONResponse:
    """Pull the project's annotations from Label Studio and reconcile: add what is missing,
    update what changed, remove what Label Studio no longer has. Repairs missed webhooks
    (Label Studio never retries one). An annotation that cannot be a vote (a choice that is not
    a class, no result from the mapped control, the item field missing from its task) is
    skipped and reported in `rejections` while the others are stored; a vote stored from it
    before is kept. One transaction: a database error changes nothing."""
    connector = store.get(session, project, "label-studio")
    if not wait:
        store.check_syncable(connector)
        store.request_sync(session, project)
        body = SyncQueued(queued=True, detail="The worker syncs within a minute; see last_sync.")
        return JSONResponse(body.model_dump(), status_code=202)
    policy = Policy.from_settings(services.settings)
    data = store.read_export(session, connector, policy)  # no transaction open meanwhile
    n, applied = committed_with_retries(
        session,
        lambda: store.sync_label_studio(session, project, connector, policy, data=data),
    )
    return SyncResult.model_validate(
        store.sync_summary(n, applied) | {"votes_version": applied.votes_version}
    )
