"""Freeze a project's training data: items with features and votes, their counts, gold, the
items with features and no votes (scored and, with gold, tested on), and a content hash of the
votes, read in one REPEATABLE READ transaction so all of it is consistent.

Same labels everywhere: a worker-model method's targets are the project's cached fit
(app/labels/fits.py) for the snapshot's
votes_version, the very arrays `/soft-labels` exports for that
version; when the cache is older, the fit is computed the way the API computes it (warm start
from the cached fit) and stored, so the API then serves what the job trained on. While votes
keep arriving (a crowd still labeling), a fit made outside the snapshot is always one version
behind it: the last attempt fits on the snapshot's own votes, inside its transaction. The job
records `targets_hash` (see `targets_hash`) so anyone can check it against an export.

A job on content (texts, images) reads the items carrying that content instead of those with
features, and the content with them in the same transaction (app/training/stored_content.py);
its TrainingData has no feature columns until the encoder fills them (content_job.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Connection, Engine, text

from app.aggregation.base import Aggregator, WorkerAggregator
from app.aggregation.ordinal import scale_values
from app.aggregation.registry import resolve_method
from app.db import functions
from app.labels.fits import Fit, current_fit, fit_in_snapshot, store_fit
from app.training.data import TrainingData, build_training_data
from app.training.errors import JobError
from app.training.stored_content import StoredContent, read_items

FIT_ATTEMPTS = 3  # votes arriving between the fit and the snapshot: fit again, this many times


@dataclass(frozen=True)
class Snapshot:
    data: TrainingData
    data_hash: str  # sha256 over the project's votes (item id, worker id, label), sorted
    votes_version: int
    targets_hash: str  # targets_hash(data.item_ids, data.targets)
    content: StoredContent | None = None  # a content job's: row i is data's row i


def targets_hash(item_ids: Sequence[str], targets: np.ndarray) -> str:
    """sha256 over the item ids (in row order) and the float64 targets, bit for bit.

    JSON floats round-trip float64 exactly, so the hash of an export's (item, probs) rows in
    the job's item order equals the job's when they are the same labels."""
    h = hashlib.sha256()
    h.update("\n".join(item_ids).encode("utf-8"))
    h.update(b"\0")
    h.update(np.ascontiguousarray(targets, dtype="<f8").tobytes())
    return h.hexdigest()


def usable_items(conn: Any, project_id: int) -> int:
    return int(
        conn.execute(
            text(
                "SELECT count(*) FROM items WHERE project_id = :p "
                "AND features IS NOT NULL AND n_votes > 0"
            ),
            {"p": project_id},
        ).scalar_one()
    )


@dataclass(frozen=True)
class Shape:
    """What a project's votes are: its number of classes (or levels), its task type and, for
    an ordinal project, the levels' values."""

    n_classes: int
    task_type: str
    scale: np.ndarray | None


def project_shape(engine: Engine, project_id: int) -> Shape:
    with engine.connect() as conn:
        classes, task_type, values = conn.execute(
            text("SELECT classes, task_type, level_values FROM projects WHERE id = :p"),
            {"p": project_id},
        ).one()
    scale = scale_values(classes, values) if task_type == "ordinal" else None
    return Shape(len(classes), str(task_type), scale)


# Model-in-the-loop label methods (crowdlab) need a job's out-of-sample predictions: the hook
# is set by app/training/runner.py (a function of (conn, project id, the method, voted db ids)
# -> targets), so this module does not import it at load time.
ModelTargets = Any


def freeze(
    engine: Engine,
    project_id: int,
    labels: Mapping[str, Any],
    *,
    model_targets: ModelTargets = None,
    content: str | None = None,
) -> Snapshot:
    """`content`: "text" or "image" for a job whose encoder reads the items' content."""
    shape = project_shape(engine, project_id)
    method = resolve_method(
        str(labels["method"]),
        {k: v for k, v in labels.items() if k != "method"},
        shape.task_type,
    )
    fit: Fit | None = None
    k = shape.n_classes
    for attempt in range(FIT_ATTEMPTS):
        if isinstance(method, WorkerAggregator):
            fit = current_fit(engine, project_id, k, method, sync_max_votes=2**62)
        last = attempt == FIT_ATTEMPTS - 1
        in_snapshot = method if isinstance(method, WorkerAggregator) and last else None
        snap = _read(
            engine, project_id, labels, fit, model_targets, method, shape, in_snapshot, content
        )
        if snap is not None:
            return snap
    raise JobError("the project's votes kept changing while the job read them; retry the job")


def _read(
    engine: Engine,
    project_id: int,
    labels: Mapping[str, Any],
    fit: Fit | None,
    model_targets: ModelTargets,
    method: Aggregator,
    shape: Shape,
    fit_here: WorkerAggregator | None,
    content: str | None,
) -> Snapshot | None:
    """The snapshot, or None when `fit` is for another votes_version than the snapshot's.
    With `fit_here` (the worker method), such a fit is replaced by one made in the snapshot."""
    refit: Fit | None = None
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
        version = functions.votes_version(conn, project_id=project_id)
        if fit is not None and fit.votes_version != version:
            if fit_here is None:
                conn.rollback()
                return None
            fit = refit = fit_in_snapshot(conn, project_id, shape.n_classes, fit_here, warm=fit)
        stored: StoredContent | None = None
        rows: Sequence[Any]
        extra: Sequence[Any]
        if content is not None:
            rows, extra, stored = read_items(conn, project_id, content)
        else:
            rows = conn.execute(
                text(
                    "SELECT id, external_id, features, counts, coalesce(gold, -1), n_votes "
                    "FROM items WHERE project_id = :p AND features IS NOT NULL AND n_votes > 0 "
                    "ORDER BY id"
                ),
                {"p": project_id},
            ).all()
            extra = conn.execute(
                text(
                    "SELECT id, external_id, features, coalesce(gold, -1) FROM items "
                    "WHERE project_id = :p AND features IS NOT NULL AND n_votes = 0 ORDER BY id"
                ),
                {"p": project_id},
            ).all()
        data_hash = _votes_hash(conn, project_id)
        targets = None
        if rows and fit is not None:
            targets = fit.probs_for(np.asarray([r[0] for r in rows], dtype=np.int64))
        elif rows and model_targets is not None and labels["method"] == "crowdlab":
            targets = model_targets(
                conn, project_id, method, np.asarray([r[0] for r in rows], np.int64)
            )
        conn.rollback()
    if refit is not None:
        # Stored like any fit (never over a newer one), so the API serves these labels too.
        with engine.begin() as conn:
            store_fit(conn, project_id, refit)
    if not rows:
        raise JobError("the project has no items with both features and votes")
    db_ids, ids, features, counts, gold, n_votes = zip(*rows, strict=True)
    extra_arg = None
    if extra:
        e_db, e_ids, e_feats, e_gold = zip(*extra, strict=True)
        n_feat = len(features[0])
        keep = [i for i, f in enumerate(e_feats) if len(f) == n_feat]
        extra_arg = (
            [e_ids[i] for i in keep],
            np.asarray([e_feats[i] for i in keep], dtype=np.float32).reshape(len(keep), n_feat),
            np.asarray([e_gold[i] for i in keep], dtype=np.int64),
            np.asarray([e_db[i] for i in keep], dtype=np.int64),
        )
    data = build_training_data(
        list(ids),
        np.asarray(features, dtype=np.float32),
        np.asarray(counts, dtype=np.int64),
        np.asarray(gold, dtype=np.int64),
        labels,
        targets=targets,
        db_ids=np.asarray(db_ids, dtype=np.int64),
        extra=extra_arg,
        task_type=shape.task_type,
        # a multi-label item's counts are ticks per class; its voters are n_votes
        n_voters=np.asarray(n_votes, np.int64) if shape.task_type == "multi_label" else None,
        scale=shape.scale,
    )
    if stored is not None and (
        len(stored.voted) != len(data.item_ids) or len(stored.extra) != len(data.extra_ids)
    ):  # every row read has votes (n_votes > 0), so none was dropped: rows still line up
        raise RuntimeError("content rows do not line up with the snapshot's items")
    return Snapshot(
        data=data,
        data_hash=data_hash,
        votes_version=version,
        targets_hash=targets_hash(data.item_ids, data.targets),
        content=stored,
    )


def _votes_hash(conn: Connection, project_id: int) -> str:
    # Hashing in the database keeps the vote list off the wire; sha256 of the sorted
    # (item, worker, label) triples identifies exactly which votes the labels came from. A
    # multi-label vote's label is -1 for every vote: its set of ticks stands in its place
    # ({0,2}), so two crowds that ticked differently never share a hash.
    return str(
        conn.execute(
            text(
                "SELECT encode(sha256(convert_to(coalesce(string_agg("
                "item_id || ':' || worker_id || ':' || CASE WHEN ticks IS NULL THEN "
                "label::text ELSE '{' || array_to_string(ticks, ',') || '}' END, ',' "
                "ORDER BY item_id, worker_id), ''), 'UTF8')), 'hex') FROM votes "
                "WHERE project_id = :p AND worker_id "
                "NOT IN (SELECT id FROM workers WHERE project_id = :p AND excluded)"
            ),
            {"p": project_id},
        ).scalar_one()
    )
