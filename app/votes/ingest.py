"""[2. stored] Validate a batch of items or votes against its project and write it atomically.

Used by the API and by `softlabels import-votes`, so both paths share one set of rules:
- every row is checked before anything is written; any bad row -> ValidationFailed listing all of
  them, and the caller's transaction is rolled back, so nothing is half-stored;
- a vote already stored is `unchanged`, a new label for the same (item, worker) is `updated`:
  retries never double-count;
- `items.counts` changes in the same transaction as `votes`, by the change each vote made from
  what it was when its row was locked, under row locks on the items taken last (in external-id
  order, the order every writer uses), so concurrent writers never lose or double an increment
  (app/db/sql/softlabels_ingest_votes.sql).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar

import numpy as np
import psycopg.errors
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from app.db import functions
from app.db.models import Project
from app.errors import ValidationFailed
from app.votes.content import ContentIn, store_content
from app.votes.records import ItemIn, VoteIn

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
    """Run `write` and commit, retrying when PostgreSQL aborts it as a deadlock victim or a
    serialization failure (an item deleted while a batch voted on it).

    Rare; the whole batch is redone, so the result is still all or nothing.
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
            # A short random pause, so two victims of the same cycle do not meet again.
            time.sleep(random.uniform(0, 0.02 * (attempt + 1)))
    raise AssertionError("unreachable")


def _error(index: int, field: str, reason: str) -> dict[str, Any]:
    return {"index": index, "field": field, "reason": reason}


def _fail(errors: list[dict[str, Any]], what: str) -> ValidationFailed:
    errors.sort(key=lambda e: (e["index"], e["field"]))
    n = len({e["index"] for e in errors})
    return ValidationFailed(
        f"{n} of the {what} {'is' if n == 1 else 'are'} invalid; nothing was stored.",
        errors=errors,
    )


def class_indices(
    classes: Sequence[str], refs: Sequence[Any], field: str, noun: str = "class"
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Map class names or 0-based indices to indices (None -> -1). Returns (indices, errors).
    `noun` names what a class is in the messages ("level" on an ordinal scale)."""
    lookup = _class_lookup(tuple(classes))
    if len(refs) == 1:  # a single vote, the hot path: numpy's per-call costs are most of it
        found = lookup.get(refs[0], -2)
        idx = np.array([found], dtype=np.int64)
        bad = [0] if found == -2 else []
    else:
        idx = np.fromiter(map(lookup.get, refs, [-2] * len(refs)), dtype=np.int64, count=len(refs))
        bad = np.flatnonzero(idx == -2).tolist()
    errors = [_error(row, field, _unknown(classes, refs[row], noun)) for row in bad]
    return idx, errors


@lru_cache(maxsize=1024)
def _class_lookup(classes: tuple[str, ...]) -> dict[str | int | None, int]:
    """Class name or index -> index, None -> -1; per class list, built once."""
    lookup: dict[str | int | None, int] = {name: i for i, name in enumerate(classes)}
    lookup.update({i: i for i in range(len(classes))})
    lookup[None] = -1
    return lookup


def _unknown(classes: Sequence[str], ref: str | int, noun: str) -> str:
    if isinstance(ref, int):
        return f"{noun} index {ref} is out of range 0..{len(classes) - 1}"
    if noun == "level":
        return f"{ref!r} is not on this project's scale {list(classes[:20])}"
    return f"unknown {noun} {ref!r}; the project's classes are {list(classes[:20])}"


def _factorize(values: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values (sorted) and each row's position among them."""
    uniq, inverse = np.unique(np.asarray(values, dtype=object), return_inverse=True)
    return uniq, inverse.astype(np.int64)


@dataclass(frozen=True)
class PreparedVotes:
    """A validated batch, ready for `softlabels_ingest_votes` (single-label and ordinal:
    `labels`) or `softlabels_ingest_ticks` (multi-label: `ticks`)."""

    items: list[str]
    workers: list[str]
    labels: np.ndarray | None  # class or level indices
    ticks: list[list[int]] | None = None  # each vote's ticked class indices, sorted


def prepare_votes(
    classes: Sequence[str], votes: Sequence[VoteIn], task_type: str = "single"
) -> PreparedVotes:
    """Check every row against the project's classes (its task type says what a label is) and
    for repeats within the batch. Raises ValidationFailed listing every bad row; touches no
    database."""
    item_ext = [v.item for v in votes]
    worker_ext = [v.worker for v in votes]
    refs: list[Any] = [v.label for v in votes]
    labels: np.ndarray | None = None
    ticks: list[list[int]] | None = None
    if task_type == "multi_label":
        ticks, errors = tick_indices(classes, refs)
    else:
        noun = "level" if task_type == "ordinal" else "class"
        # A list is unhashable for the lookup: found first, reported as what it is.
        lists = [i for i, ref in enumerate(refs) if type(ref) is list]
        if lists:
            refs = [None if type(ref) is list else ref for ref in refs]
        labels, errors = class_indices(classes, refs, "label", noun)
        for row in lists:
            errors.append(
                _error(
                    row,
                    "label",
                    f"must be one {noun} (a name or an index), not a list: this project's "
                    f"task type is {task_type}",
                )
            )
    if len(votes) > 1:
        errors += _duplicate_pairs(item_ext, worker_ext)
    if errors:
        raise _fail(errors, "votes")
    return PreparedVotes(item_ext, worker_ext, labels, ticks)


def tick_indices(
    classes: Sequence[str], refs: Sequence[Any]
) -> tuple[list[list[int]], list[dict[str, Any]]]:
    """Each multi-label vote's list of classes (names or indices) as sorted class indices;
    an unknown class, a class given twice or a label that is not a list is an error on the
    row's `label`."""
    k = len(classes)
    lookup: dict[str | int, int] = {name: i for i, name in enumerate(classes)}
    lookup.update({i: i for i in range(k)})
    out: list[list[int]] = []
    errors: list[dict[str, Any]] = []
    for row, ref in enumerate(refs):
        if type(ref) is not list:
            errors.append(
                _error(
                    row,
                    "label",
                    "must be the list of classes the worker ticked ([] for none): this "
                    "project's task type is multi_label",
                )
            )
            out.append([])
            continue
        idx = [lookup.get(r, -1) for r in ref]
        bad = [r for r, i in zip(ref, idx, strict=True) if i < 0]
        if bad:
            errors.append(_error(row, "label", _unknown(classes, bad[0], "class")))
        elif len(set(idx)) < len(idx):
            seen: set[int] = set()
            twice = next(r for r, i in zip(ref, idx, strict=True) if i in seen or seen.add(i))  # type: ignore[func-returns-value]
            errors.append(
                _error(row, "label", f"class {twice!r} is listed twice (or by name and index)")
            )
        out.append(sorted(idx))
    return out, errors


def _duplicate_pairs(item_ext: list[str], worker_ext: list[str]) -> list[dict[str, Any]]:
    _, item_pos = _factorize(item_ext)
    workers, worker_pos = _factorize(worker_ext)
    pair = item_pos * len(workers) + worker_pos
    _, first_row, counts = np.unique(pair, return_index=True, return_counts=True)
    if not (counts > 1).any():
        return []
    first_of = dict(zip(pair[first_row].tolist(), first_row.tolist(), strict=True))
    errors = []
    for row in np.flatnonzero(np.isin(pair, pair[first_row[counts > 1]])).tolist():
        first = first_of[int(pair[row])]
        if first != row:
            errors.append(
                _error(
                    row,
                    "item",
                    f"duplicate vote in this batch: worker {worker_ext[row]!r} already "
                    f"voted on item {item_ext[row]!r} at index {first}",
                )
            )
    return errors


def vote_counts(row: functions.IngestResult) -> VoteCounts:
    return VoteCounts(row.inserted, row.updated, row.unchanged, row.votes_version)


def ingest_votes(
    session: Session,
    project: Project,
    votes: Sequence[VoteIn],
    *,
    source: str = "api",
    refs: Sequence[str | None] | None = None,
    tasks: Sequence[str | None] | None = None,
) -> VoteCounts:
    """Validate and store one batch of votes in the session's transaction (CLI, connectors).
    Raises ValidationFailed before writing anything.

    `source` records where the votes came from; `refs` and `tasks` (aligned with `votes`) are a
    labeling tool's annotation and task ids (app/connectors), kept so its deletes find them.
    """
    batch = prepare_votes(project.classes, votes, project.task_type)
    row = functions.ingest_votes(
        session,
        project_id=project.id,
        classes=project.classes,
        items=batch.items,
        workers=batch.workers,
        labels=batch.labels,
        ticks=batch.ticks,
        source=source,
        refs=refs,
        tasks=tasks,
    )
    return vote_counts(row)


def _duplicate_ids(ids: Sequence[str], field: str) -> list[dict[str, Any]]:
    _, inverse, counts = np.unique(
        np.asarray(ids, dtype=object), return_inverse=True, return_counts=True
    )
    if not (counts > 1).any():
        return []
    errors: list[dict[str, Any]] = []
    first: dict[int, int] = {}
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
# cannot tell "sent as null" from "not sent", hence a separate UPDATE). Locked first in
# external-id order, the order vote batches take, since an UPDATE ... FROM locks in join order.
_LOCK_ITEMS = text(
    "SELECT 1 FROM items WHERE project_id = :p AND external_id = ANY(CAST(:ids AS text[])) "
    "ORDER BY external_id FOR UPDATE"
)
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
    if project.task_type == "multi_label":
        # A gold label is one true class; a multi-label item's truth is a set.
        errors = [
            _error(i, "gold", "a multi-label project's items take no gold class")
            for i, r in enumerate(rows)
            if r.gold is not None
        ]
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

    columns: dict[str, list[Any]] = {
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
        session.execute(_LOCK_ITEMS, {"p": project.id, "ids": [columns["ids"][i] for i in keep]})
        session.execute(
            _UPDATE_ITEMS,
            {"p": project.id, **{name: [col[i] for i in keep] for name, col in columns.items()}},
        )
    store_content(
        session,
        project.id,
        [
            ContentIn(r.id, r.text, r.image, r.image_url, given=frozenset(r.model_fields_set))
            for r in rows
            if r.has_content()
        ],
    )
    return ItemCounts(inserted=len(new_ids), updated=len(keep))
