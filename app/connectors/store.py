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
from app.connectors.common import Applied, Parsed, apply, problem
from app.db.models import Connector, Project
from app.errors import NotFound, ValidationFailed
from app.outbound import Policy
from app.votes.ingest import committed_with_retries

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
        return label_studio.parse_event(body, label_studio.Mapping.from_config(c))
    return argilla.parse_event(
        body,
        c["question"],
        c.get("item_field", "external_id"),
        c.get("worker_field", "id"),
        c.get("content_field"),
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


REJECTIONS_SHOWN = 100  # rejected annotations listed in a sync's result; `rejected` counts all


def check_syncable(connector: Connector) -> None:
    """A 422 naming what the connector lacks for a sync (url, ls_project, token)."""
    missing = [k for k in ("url", "ls_project") if not connector.config.get(k)]
    missing += [] if connector.secret else ["token"]
    if missing:
        raise ValidationFailed(
            f"The connector needs {', '.join(missing)} for sync; PUT them first.",
            errors=[problem(k, "needed for sync") for k in missing],
        )


def read_export(session: Session, connector: Connector, policy: Policy | None = None) -> Any:
    """Label Studio's export for a sync, fetched while no transaction is open: the session's
    transaction, which has only read (the project, the connector), is committed first. Label
    Studio builds the whole export before it sends a byte, minutes on a large project (136-198 s
    for 20,000 tasks, benchmarks/results/ls_real_scale.md), and an open transaction was "idle in
    transaction" all that time, holding a pooled connection, an xmin, and share locks on
    projects and connectors that an ALTER TABLE (a migration) would queue behind, and every
    query after it (seen in pg_stat_activity and pg_locks during that run). The sync's database
    work (`sync_label_studio(..., data=)`) then runs in a transaction of its own, which a
    deadlock retry redoes without fetching again."""
    check_syncable(connector)
    config, token = dict(connector.config), connector.secret or ""
    session.commit()
    return label_studio.fetch_export(config["url"], int(config["ls_project"]), token, policy)


def sync_label_studio(
    session: Session,
    project: Project,
    connector: Connector,
    policy: Policy | None = None,
    data: Any = None,
) -> tuple[int, Applied]:
    """Pull Label Studio's export and reconcile (the caller commits): add what is missing,
    update what changed, remove what Label Studio no longer has. An annotation that cannot be
    a vote (a choice that is not a class, no result from the mapped control, the item field
    missing from its task...) is skipped and reported in `Applied.rejected`; a vote stored from
    it before is kept. Returns (annotations, what changed). Raises ValidationFailed when the
    connector lacks what sync needs, label_studio.SyncFailed when Label Studio cannot be read
    or its export is not a list of tasks. `data`: the export `read_export` fetched; without
    it, the export is fetched here, inside the caller's transaction."""
    c = connector.config
    check_syncable(connector)
    if data is None:
        token = connector.secret or ""
        data = label_studio.fetch_export(c["url"], int(c["ls_project"]), token, policy)
    parsed = label_studio.parse_export(data, label_studio.Mapping.from_config(c), lenient=True)
    if parsed.errors:
        where = ", ".join(f"{e['field']} {e['reason']}" for e in parsed.errors[:3])
        raise label_studio.SyncFailed(f"Label Studio's export could not be read: {where}")
    applied = apply(
        session, project, label_studio.SOURCE, parsed, "last", keep_only_refs=True, lenient=True
    )
    summary = sync_summary(parsed.rows, applied)
    session.execute(
        text(
            "UPDATE connectors SET last_sync_at = now(), last_sync = CAST(:s AS jsonb) "
            "WHERE project_id = :p AND tool = 'label-studio'"
        ),
        {"s": json.dumps(summary), "p": project.id},
    )
    if applied.rejected:
        log.warning(
            "sync of project %s: %d annotation(s) rejected, first at %s: %s",
            project.name,
            len(applied.rejected),
            applied.rejected[0].field,
            applied.rejected[0].reason,
        )
    return parsed.rows, applied


def sync_summary(annotations: int, applied: Applied) -> dict[str, Any]:
    """A sync's result, as the API answers it and `last_sync` keeps it (without the version)."""
    return {
        "annotations": annotations,
        "inserted": applied.inserted,
        "updated": applied.updated,
        "unchanged": applied.unchanged,
        "deleted": applied.deleted,
        "skipped": applied.skipped,
        "rejected": len(applied.rejected),
        "rejections": [r.out() for r in applied.rejected[:REJECTIONS_SHOWN]],
    }


def sync_due(engine: Engine) -> list[int]:
    """The worker's periodic task: sync every Label Studio connector whose `sync_interval_s`
    has passed since its last sync. A failure is recorded in `last_sync` (and logged without
    the token), and retried at the next interval. Rejected annotations do not fail it: the
    summary in `last_sync` lists them."""
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
                data = read_export(session, connector)
                committed_with_retries(
                    session,
                    functools.partial(sync_label_studio, session, project, connector, data=data),
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
