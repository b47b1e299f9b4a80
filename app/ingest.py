"""[2. stored] Validate a batch of items or votes against its project and write it atomically.

Used by the API and by `softlabels import-votes`, so both paths share one set of rules:
- every row is checked before anything is written; any bad row -> ValidationFailed listing all of
  them, and the caller's transaction is rolled back, so nothing is half-stored;
- a vote already stored is `unchanged`, a new label for the same (item, worker) is `updated`:
  retries never double-count;
- `items.counts` changes in the same statement as `votes`, under row locks on the batch's items
  (taken in id order), so concurrent writers never lose or double an increment.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import psycopg.errors
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from app.api.schemas import ItemIn, VoteIn
from app.db.models import Project
from app.errors import ValidationFailed
from app.webhooks import emit_settled

T = TypeVar("T")


@dataclass(frozen=True)
class VoteCounts:
    inserted: int
    updated: int
    unchanged: int
    votes_version: int


@dataclass(frozen=True)
class ItemCounts:
    inserted: int
    updated: int


def committed_with_retries(session: Session, write: Callable[[], T], attempts: int = 4) -> T:
    """Run `write` and commit, retrying when PostgreSQL aborts it as a deadlock victim.

    Rare, and only between batches that share items; the whole batch is redone, so the result
    is still all or nothing.
    """
    for attempt in range(attempts):
        try:
            result = write()
            session.commit()
            return result
        except OperationalError as exc:
            session.rollback()
            # SQLSTATE class 40: deadlock victim or serialization failure; safe to redo.
            retryable = isinstance(exc.orig, psycopg.errors.TransactionRollback)
            if not retryable or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def _error(index: int, field: str, reason: str) -> dict[str, Any]:
    return {"index": index, "field": field, "reason": reason}


def _fail(errors: list[dict[str, Any]], what: str) -> ValidationFailed:
    errors.sort(key=lambda e: (e["index"], e["field"]))
    return ValidationFailed(
        f"{len({e['index'] for e in errors})} of the {what} are invalid; nothing was stored.",
        errors=errors,
    )


def class_indices(
    classes: Sequence[str], refs: Sequence[str | int | None], field: str
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Map class names or 0-based indices to indices (None -> -1). Returns (indices, errors)."""
    k = len(classes)
    lookup: dict[str | int | None, int] = {name: i for i, name in enumerate(classes)}
    lookup.update({i: i for i in range(k)})
    lookup[None] = -1
    idx = np.fromiter(map(lookup.get, refs, [-2] * len(refs)), dtype=np.int64, count=len(refs))
    errors = []
    for row in np.flatnonzero(idx == -2):
        ref = refs[row]
        reason = (
            f"class index {ref} is out of range 0..{k - 1}"
            if isinstance(ref, int)
            else f"unknown class {ref!r}; the project's classes are {list(classes[:20])}"
        )
        errors.append(_error(int(row), field, reason))
    return idx, errors


def _factorize(values: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values (sorted) and each row's position among them."""
    uniq, inverse = np.unique(np.asarray(values, dtype=object), return_inverse=True)
    return uniq, inverse.astype(np.int64)


def _lock_items(session: Session, project_id: int, k: int, external_ids: np.ndarray) -> np.ndarray:
    """Create missing items, lock all of them (id order), return their ids aligned to the input.

    Inserting in sorted order and locking in id order keeps concurrent batches from deadlocking
    in the common case; the rare remaining deadlock is retried by the caller.
    """
    ids = external_ids.tolist()
    session.execute(
        text(
            "INSERT INTO items (project_id, external_id, counts) "
            "SELECT :p, x, array_fill(0, ARRAY[:k]) FROM unnest(CAST(:ids AS text[])) AS x "
            "ORDER BY x ON CONFLICT (project_id, external_id) DO NOTHING"
        ),
        {"p": project_id, "k": k, "ids": ids},
    )
    rows = session.execute(
        text(
            "SELECT id, external_id FROM items WHERE project_id = :p "
            "AND external_id = ANY(CAST(:ids AS text[])) ORDER BY id FOR UPDATE"
        ),
        {"p": project_id, "ids": ids},
    ).all()
    by_ext = dict((ext, pk) for pk, ext in rows)
    return np.fromiter(map(by_ext.__getitem__, ids), dtype=np.int64, count=len(ids))


def _ensure_workers(session: Session, project_id: int, external_ids: np.ndarray) -> np.ndarray:
    # FOR SHARE: excluding a worker (app/lifecycle.py) waits for this batch, and this batch for
    # it, so the counts never include an excluded worker's vote or miss an included one's.
    ids = external_ids.tolist()
    session.execute(
        text(
            "INSERT INTO workers (project_id, external_id) "
            "SELECT :p, x FROM unnest(CAST(:ids AS text[])) AS x ORDER BY x "
            "ON CONFLICT (project_id, external_id) DO NOTHING"
        ),
        {"p": project_id, "ids": ids},
    )
    rows = session.execute(
        text(
            "SELECT id, external_id FROM workers WHERE project_id = :p "
            "AND external_id = ANY(CAST(:ids AS text[])) ORDER BY id FOR SHARE"
        ),
        {"p": project_id, "ids": ids},
    ).all()
    by_ext = dict((ext, pk) for pk, ext in rows)
    return np.fromiter(map(by_ext.__getitem__, ids), dtype=np.int64, count=len(ids))


# One statement, one snapshot: `old` sees the votes as they were before `up` writes, which is
# what the counts delta needs. The batch's items are locked, so nobody else changes them between.
_UPSERT_VOTES = text(
    """
WITH s AS (
    SELECT * FROM unnest(CAST(:item_ids AS bigint[]), CAST(:worker_ids AS bigint[]),
                         CAST(:labels AS smallint[]), CAST(:refs AS text[]),
                         CAST(:tasks AS text[])) AS s(item_id, worker_id, label, ref, task)
), old AS (
    SELECT s.item_id, s.worker_id, s.label AS new_label, v.label AS old_label, s.ref, s.task,
           -- a tool's vote with a new annotation id or task is rewritten, same label or not
           (s.ref IS NOT NULL AND (v.tool_ref, v.tool_task) IS DISTINCT FROM (s.ref, s.task))
               AS new_ref,
           w.excluded
    FROM s LEFT JOIN votes v ON v.item_id = s.item_id AND v.worker_id = s.worker_id
    JOIN workers w ON w.id = s.worker_id
), up AS (
    INSERT INTO votes (item_id, worker_id, project_id, label, source, tool_ref, tool_task)
    SELECT item_id, worker_id, :p, new_label, :source, ref, task FROM old
    WHERE old_label IS DISTINCT FROM new_label OR new_ref
    ON CONFLICT (item_id, worker_id)
    DO UPDATE SET label = EXCLUDED.label, updated_at = now(), source = EXCLUDED.source,
                  tool_ref = EXCLUDED.tool_ref, tool_task = EXCLUDED.tool_task
    RETURNING 1
), delta AS (
    -- Excluded workers' votes are stored but never counted (app/lifecycle.py).
    SELECT item_id, new_label AS k, 1 AS d FROM old
    WHERE old_label IS DISTINCT FROM new_label AND NOT excluded
    UNION ALL
    SELECT item_id, old_label, -1 FROM old WHERE old_label <> new_label AND NOT excluded
), per_item AS (
    SELECT item_id, array_agg(k) AS ks, array_agg(d) AS ds, sum(d) AS dn
    FROM (SELECT item_id, k, sum(d)::int AS d FROM delta GROUP BY item_id, k) t
    WHERE d <> 0 GROUP BY item_id
), upd AS (
    UPDATE items i
    SET counts = softlabels_add_counts(i.counts, p.ks, p.ds), n_votes = i.n_votes + p.dn,
        updated_at = now()
    FROM per_item p WHERE i.id = p.item_id
    RETURNING 1
)
SELECT count(*) FILTER (WHERE old_label IS NULL) AS inserted,
       count(*) FILTER (WHERE old_label <> new_label) AS updated,
       count(*) FILTER (WHERE old_label = new_label) AS unchanged,
       (SELECT count(*) FROM up) AS written,
       (SELECT count(*) FROM upd) AS items_changed
FROM old
"""
)


def _pg_int_array(values: np.ndarray) -> str:
    """An integer array as a PostgreSQL array literal, for CAST(:x AS bigint[]).

    Benchmarked (benchmarks/ingest.py): psycopg takes ~0.1 s to adapt a 50,000-element Python
    list, the literal ~10 ms; three such arrays were ~10% of a 50k-vote request.
    """
    return "{" + ",".join(map(str, values.tolist())) + "}"


def ingest_votes(
    session: Session,
    project: Project,
    votes: Sequence[VoteIn],
    *,
    source: str = "api",
    refs: Sequence[str | None] | None = None,
    tasks: Sequence[str | None] | None = None,
) -> VoteCounts:
    """Validate and store one batch of votes. Raises ValidationFailed before writing anything.

    `source` records where the votes came from; `refs` and `tasks` (aligned with `votes`) are a
    labeling tool's annotation and task ids (app/connectors), kept so its deletes find them.
    """
    item_ext = [v.item for v in votes]
    worker_ext = [v.worker for v in votes]
    labels, errors = class_indices(project.classes, [v.label for v in votes], "label")

    items, item_pos = _factorize(item_ext)
    workers, worker_pos = _factorize(worker_ext)
    pair = item_pos * len(workers) + worker_pos
    _, first_row, counts = np.unique(pair, return_index=True, return_counts=True)
    if (counts > 1).any():
        dup_pairs = set(pair[first_row[counts > 1]].tolist())
        is_dup = np.isin(pair, list(dup_pairs))
        first_of = dict(zip(pair[first_row].tolist(), first_row.tolist(), strict=True))
        for row in np.flatnonzero(is_dup):
            if first_of[int(pair[row])] != row:
                errors.append(
                    _error(
                        int(row),
                        "item",
                        (
                            f"duplicate vote in this batch: worker {worker_ext[row]!r} already "
                            f"voted on item {item_ext[row]!r} at index {first_of[int(pair[row])]}"
                        ),
                    )
                )
    if errors:
        raise _fail(errors, "votes")

    item_ids = _lock_items(session, project.id, len(project.classes), items)[item_pos]
    worker_ids = _ensure_workers(session, project.id, workers)[worker_pos]
    # No JIT for the upsert (this transaction only). A large batch beside a large votes table
    # has a plan cost over jit_above_cost; compiling buys nothing for one pass over the batch
    # and cost 30-40 ms per 50k batch beside 2M votes, ~0.6 s once a plan's cost also crossed
    # the optimize/inline thresholds (measured with benchmarks/ingest.py).
    session.execute(text("SET LOCAL jit = off"))
    row = session.execute(
        _UPSERT_VOTES,
        {
            "p": project.id,
            "item_ids": _pg_int_array(item_ids),
            "worker_ids": _pg_int_array(worker_ids),
            "labels": _pg_int_array(labels),
            "refs": None if refs is None else list(refs),
            "tasks": None if tasks is None else list(tasks),
            "source": source,
        },
    ).one()
    version = project.votes_version
    if row.written:
        emit_settled(session, project.id)  # outbound `item.settled` webhooks (app/webhooks.py)
        # Last statement before commit: the project row lock it takes is held only briefly.
        version = session.execute(
            text(
                "UPDATE projects SET votes_version = votes_version + 1 WHERE id = :p "
                "RETURNING votes_version"
            ),
            {"p": project.id},
        ).scalar_one()
    return VoteCounts(row.inserted, row.updated, row.unchanged, version)


def _duplicate_ids(ids: Sequence[str], field: str) -> list[dict[str, Any]]:
    _, inverse, counts = np.unique(
        np.asarray(ids, dtype=object), return_inverse=True, return_counts=True
    )
    if not (counts > 1).any():
        return []
    errors, first = [], {}
    for row in np.flatnonzero(counts[inverse] > 1).tolist():
        key = int(inverse[row])
        if key in first:
            errors.append(_error(row, field, f"duplicate id in this batch (first at {first[key]})"))
        else:
            first[key] = row
    return errors


def _pg_real_array(values: list[float] | None) -> str | None:
    return None if values is None else "{" + ",".join(map(repr, values)) + "}"


_ITEM_ROWS = """
    unnest(CAST(:ids AS text[]), CAST(:f AS text[]), CAST(:g AS smallint[]), CAST(:m AS text[]),
           CAST(:has_f AS boolean[]), CAST(:has_g AS boolean[]), CAST(:has_m AS boolean[]))
    AS s(id, f, g, m, has_f, has_g, has_m)
"""
_INSERT_ITEMS = text(
    f"""
INSERT INTO items (project_id, external_id, counts, features, gold, meta)
SELECT :p, s.id, array_fill(0, ARRAY[:k]), CAST(s.f AS real[]), s.g, CAST(s.m AS jsonb)
FROM {_ITEM_ROWS} ORDER BY s.id
ON CONFLICT (project_id, external_id) DO NOTHING
RETURNING external_id
"""
)
# Rows that already existed: only the fields the client sent change (ON CONFLICT's EXCLUDED
# cannot tell "sent as null" from "not sent", hence a separate UPDATE).
_UPDATE_ITEMS = text(
    f"""
UPDATE items i SET
    features = CASE WHEN s.has_f THEN CAST(s.f AS real[]) ELSE i.features END,
    gold = CASE WHEN s.has_g THEN s.g ELSE i.gold END,
    meta = CASE WHEN s.has_m THEN CAST(s.m AS jsonb) ELSE i.meta END,
    updated_at = now()
FROM {_ITEM_ROWS}
WHERE i.project_id = :p AND i.external_id = s.id
"""
)


def ingest_items(session: Session, project: Project, rows: Sequence[ItemIn]) -> ItemCounts:
    """Upsert items. Fields a row gives replace the stored ones; fields it omits are kept.

    Features are stored as float32 (`real[]`): plenty for model inputs, half the space.
    """
    golds, errors = class_indices(project.classes, [r.gold for r in rows], "gold")
    errors += _duplicate_ids([r.id for r in rows], "id")
    # Lock the project row: the first feature vector ever stored fixes the project's length,
    # and two batches must not each fix a different one.
    stored_n = session.execute(
        text("SELECT n_features FROM projects WHERE id = :p FOR UPDATE"), {"p": project.id}
    ).scalar_one()
    n_features = stored_n
    metas: list[str | None] = []
    for i, r in enumerate(rows):
        if r.features is not None:
            n_features = n_features or len(r.features)
            if len(r.features) != n_features:
                errors.append(
                    _error(
                        i,
                        "features",
                        (
                            f"has {len(r.features)} values; this project's feature vectors have "
                            f"{n_features}"
                        ),
                    )
                )
        meta = None if r.meta is None else json.dumps(r.meta)
        if meta is not None and "\\u0000" in meta:
            errors.append(_error(i, "meta", "must not contain the NUL character (U+0000)"))
        metas.append(meta)
    if errors:
        raise _fail(errors, "items")
    if n_features != stored_n:
        session.execute(
            text("UPDATE projects SET n_features = :n WHERE id = :p"),
            {"n": n_features, "p": project.id},
        )

    columns = {
        "ids": [r.id for r in rows],
        "f": [_pg_real_array(r.features) for r in rows],
        "g": [None if g < 0 else g for g in golds.tolist()],
        "m": metas,
        "has_f": ["features" in r.model_fields_set for r in rows],
        "has_g": ["gold" in r.model_fields_set for r in rows],
        "has_m": ["meta" in r.model_fields_set for r in rows],
    }
    new_ids = set(
        session.execute(
            _INSERT_ITEMS, {"p": project.id, "k": len(project.classes), **columns}
        ).scalars()
    )
    keep = [i for i, item_id in enumerate(columns["ids"]) if item_id not in new_ids]
    if keep:
        session.execute(
            _UPDATE_ITEMS,
            {"p": project.id, **{name: [col[i] for i in keep] for name, col in columns.items()}},
        )
    return ItemCounts(inserted=len(new_ids), updated=len(keep))
