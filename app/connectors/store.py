"""Connector configs (table `connectors`) and the operations the HTTP routes, the CLI and the
worker share: handle one event, run a sync."""

from __future__ import annotations

import functools
import json
import logging
from typing import Any

from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from app.connectors import argilla, label_studio
from app.connectors.common import Applied, Parsed, apply
from app.db.models import Connector, Project
from app.errors import NotFound

log = logging.getLogger(__name__)
SECRET_KEYS = {"label-studio": "token", "argilla": "secret"}


def get(session: Session, project: Project, tool: str) -> Connector:
    row = session.scalars(
        select(Connector).where(Connector.project_id == project.id, Connector.tool == tool)
    ).one_or_none()
    if row is None:
        raise NotFound(f"Project {project.name!r} has no {tool} connector; PUT one first.")
    return row


def put(session: Session, project: Project, tool: str, config: dict[str, Any]) -> Connector:
    """Create or replace the config. A token / secret left out keeps the stored one."""
    secret_key = SECRET_KEYS[tool]
    secret = config.pop(secret_key, None)
    session.execute(
        text(
            """
            INSERT INTO connectors (project_id, tool, config, secret)
            VALUES (:p, :t, CAST(:c AS jsonb), :s)
            ON CONFLICT (project_id, tool) DO UPDATE SET config = EXCLUDED.config,
                secret = coalesce(EXCLUDED.secret, connectors.secret), updated_at = now()
            """
        ),
        {"p": project.id, "t": tool, "c": json.dumps(config), "s": secret},
    )
    session.expire_all()
    return get(session, project, tool)


def delete(session: Session, project: Project, tool: str) -> None:
    get(session, project, tool)
    session.execute(
        text("DELETE FROM connectors WHERE project_id = :p AND tool = :t"),
        {"p": project.id, "t": tool},
    )


def parse_event(connector: Connector, body: dict[str, Any]) -> Parsed | None:
    c = connector.config
    if connector.tool == "label-studio":
        return label_studio.parse_event(body, c["from_name"], c.get("item_field"))
    return argilla.parse_event(
        body, c["question"], c.get("item_field", "external_id"), c.get("worker_field", "id")
    )


def handle_event(
    session: Session, project: Project, connector: Connector, body: dict[str, Any]
) -> tuple[str, Applied | None]:
    """Apply one event (the caller commits). Returns the action and what changed (None when the
    action carries no votes)."""
    action = str(body.get("action") or body.get("type") or "")
    parsed = parse_event(connector, body)
    if parsed is None:
        if connector.tool == "label-studio" and label_studio.has_inline_annotations(body):
            request_sync(session, project)
        return action, None
    source = label_studio.SOURCE if connector.tool == "label-studio" else argilla.SOURCE
    return action, apply(session, project, source, parsed, "last")


def request_sync(session: Session, project: Project) -> None:
    """Tasks imported with annotations send no annotation events: ask the worker's next
    periodic tick (within a minute) to sync, when the connector can (url, project, token)."""
    session.execute(
        text(
            "UPDATE connectors SET last_sync = coalesce(last_sync, '{}'::jsonb) || "
            "'{\"requested\": true}'::jsonb WHERE project_id = :p AND tool = 'label-studio'"
        ),
        {"p": project.id},
    )


def sync_label_studio(
    session: Session, project: Project, connector: Connector
) -> tuple[int, Applied]:
    """Pull Label Studio's export and reconcile (the caller commits): add what is missing,
    update what changed, remove what Label Studio no longer has. Returns (annotations, what
    changed). Raises label_studio.SyncFailed when Label Studio cannot be read."""
    c = connector.config
    if not c.get("url") or not c.get("ls_project") or not connector.secret:
        raise label_studio.SyncFailed(
            "The connector needs url, ls_project and token for sync; PUT them first."
        )
    data = label_studio.fetch_export(c["url"], int(c["ls_project"]), connector.secret)
    parsed = label_studio.parse_export(data, c["from_name"], c.get("item_field"))
    applied = apply(session, project, label_studio.SOURCE, parsed, "last", keep_only_refs=True)
    summary = {
        "annotations": parsed.rows,
        "inserted": applied.inserted,
        "updated": applied.updated,
        "unchanged": applied.unchanged,
        "deleted": applied.deleted,
        "skipped": applied.skipped,
    }
    session.execute(
        text(
            "UPDATE connectors SET last_sync_at = now(), last_sync = CAST(:s AS jsonb) "
            "WHERE project_id = :p AND tool = 'label-studio'"
        ),
        {"s": json.dumps(summary), "p": project.id},
    )
    return parsed.rows, applied


def sync_due(engine: Engine) -> list[int]:
    """The worker's periodic task: sync every Label Studio connector whose `sync_interval_s`
    has passed since its last sync. A failure is recorded in `last_sync` (and logged without
    the token), and retried at the next interval."""
    from app.errors import ValidationFailed
    from app.ingest import committed_with_retries

    with Session(engine) as session:
        due = list(
            session.execute(
                text(
                    "SELECT project_id FROM connectors WHERE tool = 'label-studio' AND (("
                    "config->>'sync_interval_s' IS NOT NULL AND (last_sync_at IS NULL OR "
                    "last_sync_at < now() - "
                    "make_interval(secs => (config->>'sync_interval_s')::float)))"
                    " OR (last_sync @> '{\"requested\": true}' AND config->>'url' IS NOT NULL "
                    "AND config->>'ls_project' IS NOT NULL AND secret IS NOT NULL))"
                )
            ).scalars()
        )
    for project_id in due:
        with Session(engine) as session:
            project = session.get(Project, project_id)
            if project is None:
                continue
            connector = get(session, project, "label-studio")
            try:
                committed_with_retries(
                    session,
                    functools.partial(sync_label_studio, session, project, connector),
                )
            except (label_studio.SyncFailed, ValidationFailed) as exc:
                session.rollback()
                reason = exc.detail if isinstance(exc, ValidationFailed) else str(exc)
                log.warning("periodic sync of project %s failed: %s", project.name, reason)
                session.execute(
                    text(
                        "UPDATE connectors SET last_sync_at = now(), last_sync = CAST(:s AS "
                        "jsonb) WHERE project_id = :p AND tool = 'label-studio'"
                    ),
                    {"s": json.dumps({"error": reason}), "p": project_id},
                )
                session.commit()
    return due
