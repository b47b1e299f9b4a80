"""Read-side queries behind the analytics routes (/stats, /items/next, /workers): the stored
per-item counts and the worker list, as numpy arrays. No HTTP here; the routes stay thin."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlalchemy import Connection, text


@dataclass(frozen=True)
class ItemCounts:
    ids: np.ndarray  # items.id, ascending
    n_votes: np.ndarray  # (n,)
    counts: np.ndarray  # (n, K)
    external_ids: list[str]


def _arrays(rows: list[tuple], k: int) -> ItemCounts:
    if not rows:
        empty = np.empty(0, np.int64)
        return ItemCounts(empty, empty, np.empty((0, k), np.int64), [])
    ids, ext, n, counts = zip(*rows, strict=True)
    return ItemCounts(
        np.asarray(ids, np.int64),
        np.asarray(n, np.int64),
        np.asarray(counts, np.int64),
        list(ext),
    )


def item_counts(conn: Connection, project_id: int, k: int) -> ItemCounts:
    rows = conn.execute(
        text(
            "SELECT id, external_id, n_votes, counts FROM items WHERE project_id = :p ORDER BY id"
        ),
        {"p": project_id},
    ).all()
    return _arrays([tuple(r) for r in rows], k)


def routing_candidates(
    conn: Connection, project_id: int, k: int, max_votes: int | None, worker: str | None
) -> ItemCounts:
    """Items that could take another vote: fewer than `max_votes` votes (if given), and none
    from `worker` (if given)."""
    rows = conn.execute(
        text(
            """
            SELECT i.id, i.external_id, i.n_votes, i.counts FROM items i
            WHERE i.project_id = :p AND (CAST(:m AS integer) IS NULL OR i.n_votes < :m)
              AND NOT EXISTS (
                  SELECT 1 FROM votes v JOIN workers w ON w.id = v.worker_id
                  WHERE v.item_id = i.id AND w.project_id = :p AND w.external_id = :w)
            ORDER BY i.id
            """
        ),
        {"p": project_id, "m": max_votes, "w": worker},
    ).all()
    return _arrays([tuple(r) for r in rows], k)


def worker_count(conn: Connection, project_id: int) -> int:
    return int(
        conn.execute(
            text("SELECT count(*) FROM workers WHERE project_id = :p"), {"p": project_id}
        ).scalar_one()
    )


def workers_in_order(conn: Connection, project_id: int) -> tuple[list[str], list[bool]]:
    """External ids of the project's workers in id order (the order of the vote arrays), and
    whether each is excluded (its votes stored but left out of every count and fit)."""
    rows = conn.execute(
        text("SELECT external_id, excluded FROM workers WHERE project_id = :p ORDER BY id"),
        {"p": project_id},
    ).all()
    return [r[0] for r in rows], [bool(r[1]) for r in rows]
