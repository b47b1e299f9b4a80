"""The vote lifecycle after ingest: delete votes (one, a worker's, a tool's by its ids), exclude
or include a worker, delete an item or a project.

Every operation keeps `items.counts` / `n_votes` equal to a recount of the counted votes (those of
workers not excluded) and bumps the project's votes_version when anything changed, so cached fits
(app/labels/fits.py) and exports follow at once. Locks come in the order a vote batch takes
them (app/db/sql/softlabels_ingest_votes.sql): a worker row, then vote rows in (item, worker)
order, then item rows in external-id order, so a lifecycle write and a batch never wait on each
other in a cycle. The counts change in a later statement, whose snapshot sees every write
committed before the locks were granted; the vote rows and the count delta come from one
DELETE ... RETURNING, so what is subtracted is exactly what was removed. Callers run these
inside `committed_with_retries` (a rare deadlock is redone whole).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from app.db import functions
from app.db.models import Project
from app.errors import NotFound
from app.webhooks.deliver import emit_settled


@dataclass(frozen=True)
class Deleted:
    votes: int
    votes_version: int


def bump_version(session: Session, project_id: int) -> int:
    """One more change to the project's votes (the striped counter, project_vote_changes)."""
    functions.bump_votes_version(session, project_id=project_id)
    return _version(session, project_id)


def _version(session: Session, project_id: int) -> int:
    return functions.votes_version(session, project_id=project_id)


def _per_item(rows: str, where: str, sign: str) -> str:
    """SQL: per item of the vote rows `rows` (a table or CTE with item_id, label and ticks)
    matching `where`, the count deltas for softlabels_add_counts (`ks`, `ds`: each class's
    count times `sign`), the change of n_votes (`dn`) and the number of votes (`n`). A vote
    counts one for its class or level, or one for each class it ticked (multi-label, maybe
    none), and is one voter either way."""
    return f"""
    SELECT n.item_id, coalesce(c.ks, '{{}}') AS ks, coalesce(c.ds, '{{}}') AS ds,
           {sign} n.n AS dn, n.n
    FROM (SELECT item_id, count(*)::int AS n FROM {rows} WHERE {where} GROUP BY item_id) n
    LEFT JOIN (
        SELECT item_id, array_agg(k) AS ks, array_agg({sign} c) AS ds
        FROM (SELECT x.item_id, k::int AS k, count(*)::int AS c FROM {rows} x
              CROSS JOIN LATERAL unnest(coalesce(x.ticks, ARRAY[x.label])) AS k
              WHERE {where} GROUP BY x.item_id, k) t
        GROUP BY item_id
    ) c ON c.item_id = n.item_id"""


def delete_votes_where(
    session: Session, project: Project, where: str, params: dict[str, Any]
) -> Deleted:
    """Delete the project's votes matching `where` (SQL over `votes v`) and take them out of the
    counts. `where` is code, never user input; values travel in `params`."""
    args = {"p": project.id, **params}
    locked = session.execute(
        text(
            f"SELECT v.item_id FROM votes v WHERE v.project_id = :p AND ({where}) "
            "ORDER BY v.item_id, v.worker_id FOR UPDATE"
        ),
        args,
    ).all()
    if not locked:  # nothing matched (the common case for a tool's redelivered event)
        return Deleted(0, project.votes_version)
    session.execute(
        text(
            "SELECT id FROM items WHERE id = ANY(CAST(:ids AS bigint[])) "
            "ORDER BY external_id FOR UPDATE"
        ),
        {"ids": sorted({row[0] for row in locked})},
    )
    n = session.execute(
        text(
            f"""
WITH d AS (
    DELETE FROM votes v USING workers w
    WHERE v.project_id = :p AND ({where}) AND w.id = v.worker_id
    RETURNING v.item_id, v.label, v.ticks, w.excluded
), per_item AS ({_per_item("d", "NOT excluded", "-")}
), upd AS (
    UPDATE items i
    SET counts = softlabels_add_counts(i.counts, p.ks, p.ds), n_votes = i.n_votes + p.dn,
        updated_at = now()
    FROM per_item p WHERE i.id = p.item_id
    RETURNING 1
)
SELECT (SELECT count(*) FROM d), (SELECT count(*) FROM upd)
"""
        ),
        args,
    ).one()[0]
    if not n:
        return Deleted(0, _version(session, project.id))
    emit_settled(session, project.id)  # fewer votes can settle an item (lower entropy)
    return Deleted(int(n), bump_version(session, project.id))


def _worker_id(session: Session, project: Project, worker: str) -> int:
    row = session.execute(
        text("SELECT id FROM workers WHERE project_id = :p AND external_id = :w"),
        {"p": project.id, "w": worker},
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(f"No worker {worker!r} in project {project.name!r}.")
    return int(row)


def _item_id(session: Session, project: Project, item: str) -> int:
    row = session.execute(
        text("SELECT id FROM items WHERE project_id = :p AND external_id = :i"),
        {"p": project.id, "i": item},
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(f"No item {item!r} in project {project.name!r}.")
    return int(row)


def delete_vote(session: Session, project: Project, item: str, worker: str) -> Deleted:
    item_id = _item_id(session, project, item)
    worker_id = _worker_id(session, project, worker)
    out = delete_votes_where(
        session, project, "v.item_id = :i AND v.worker_id = :w", {"i": item_id, "w": worker_id}
    )
    if not out.votes:
        raise NotFound(f"Worker {worker!r} has no vote on item {item!r}.")
    return out


def delete_worker_votes(session: Session, project: Project, worker: str) -> Deleted:
    """Every vote of one worker (spammer removal). The worker row stays."""
    worker_id = _worker_id(session, project, worker)
    return delete_votes_where(session, project, "v.worker_id = :w", {"w": worker_id})


def delete_tool_votes(
    session: Session,
    project: Project,
    source: str,
    *,
    refs: Sequence[str] = (),
    tasks: Sequence[str] = (),
) -> Deleted:
    """Votes a labeling tool recorded, by its annotation ids and/or its task ids."""
    return delete_votes_where(
        session,
        project,
        "v.source = :s AND (v.tool_ref = ANY(CAST(:refs AS text[])) "
        "OR v.tool_task = ANY(CAST(:tasks AS text[])))",
        {"s": source, "refs": list(refs), "tasks": list(tasks)},
    )


@dataclass(frozen=True)
class Excluded:
    worker: str
    excluded: bool
    changed: bool
    votes: int  # the worker's votes, now counted or not
    votes_version: int


def set_excluded(session: Session, project: Project, worker: str, excluded: bool) -> Excluded:
    """Exclude a worker (its votes stay stored but stop counting everywhere) or include it back.

    Locks in ingest's order: the worker row first (a vote batch for the worker holds it FOR
    SHARE from before it writes a vote: this waits for it to commit, and later batches for the
    worker wait for this and then see the new flag), then the worker's items, every vote of the
    worker being committed by then.
    """
    worker_id = _worker_id(session, project, worker)
    current = session.execute(
        text("SELECT excluded FROM workers WHERE id = :w FOR UPDATE"), {"w": worker_id}
    ).scalar_one()
    if current == excluded:
        n = session.execute(
            text("SELECT count(*) FROM votes WHERE worker_id = :w"), {"w": worker_id}
        ).scalar_one()
        return Excluded(worker, excluded, False, int(n), _version(session, project.id))
    session.execute(
        text(
            "SELECT id FROM items WHERE id IN (SELECT item_id FROM votes WHERE worker_id = :w) "
            "ORDER BY external_id FOR UPDATE"
        ),
        {"w": worker_id},
    )
    n = session.execute(
        text(
            f"""
WITH per_item AS ({_per_item("votes", "worker_id = :w", "CAST(:d AS int) *")}
), upd AS (
    UPDATE items i
    SET counts = softlabels_add_counts(i.counts, p.ks, p.ds), n_votes = i.n_votes + p.dn,
        updated_at = now()
    FROM per_item p WHERE i.id = p.item_id
    RETURNING 1
), flag AS (
    UPDATE workers SET excluded = :x WHERE id = :w RETURNING 1
)
SELECT coalesce(sum(n), 0) FROM per_item
"""
        ),
        {"w": worker_id, "d": -1 if excluded else 1, "x": excluded},
    ).scalar_one()
    emit_settled(session, project.id)
    return Excluded(worker, excluded, True, int(n), bump_version(session, project.id))


def delete_item(session: Session, project: Project, item: str) -> Deleted:
    """The item, its votes (cascade), features, gold and meta."""
    item_id = _item_id(session, project, item)
    session.execute(  # its votes first, in the order a batch locks them
        text("SELECT 1 FROM votes WHERE item_id = :i ORDER BY worker_id FOR UPDATE"),
        {"i": item_id},
    )
    session.execute(text("SELECT id FROM items WHERE id = :i FOR UPDATE"), {"i": item_id})
    n = session.execute(
        text("SELECT count(*) FROM votes WHERE item_id = :i"), {"i": item_id}
    ).scalar_one()
    session.execute(text("DELETE FROM items WHERE id = :i"), {"i": item_id})
    return Deleted(int(n), bump_version(session, project.id))


def delete_project(session: Session, project: Project) -> int:
    """Everything under the project goes with it (foreign keys cascade): items, votes, workers,
    fits, training jobs and checkpoints, connectors, webhook subscriptions. Returns the number
    of votes removed."""
    session.execute(text("SELECT id FROM projects WHERE id = :p FOR UPDATE"), {"p": project.id})
    n = session.execute(
        text("SELECT count(*) FROM votes WHERE project_id = :p"), {"p": project.id}
    ).scalar_one()
    session.execute(text("DELETE FROM projects WHERE id = :p"), {"p": project.id})
    return int(n)
