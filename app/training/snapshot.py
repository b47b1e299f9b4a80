"""Freeze a project's training data: items with features and votes, their counts, gold, and a
content hash of the votes, read in one REPEATABLE READ transaction so all of it is consistent."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Engine, text

from app.aggregation.registry import needs_votes, resolve_method
from app.fits import load_votes
from app.training.data import TrainingData, build_training_data


@dataclass(frozen=True)
class Snapshot:
    data: TrainingData
    data_hash: str  # sha256 over the project's votes (item id, worker id, label), sorted
    votes_version: int


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


def freeze(engine: Engine, project_id: int, labels: Mapping[str, Any]) -> Snapshot:
    spec, params = resolve_method(
        str(labels["method"]), {k: v for k, v in labels.items() if k != "method"}
    )
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
        version = conn.execute(
            text("SELECT votes_version FROM projects WHERE id = :p"), {"p": project_id}
        ).scalar_one()
        rows = conn.execute(
            text(
                "SELECT id, external_id, features, counts, coalesce(gold, -1) FROM items "
                "WHERE project_id = :p AND features IS NOT NULL AND n_votes > 0 ORDER BY id"
            ),
            {"p": project_id},
        ).all()
        # Hashing in the database keeps the vote list off the wire; sha256 of the sorted
        # (item, worker, label) triples identifies exactly which votes the labels came from.
        data_hash = conn.execute(
            text(
                "SELECT encode(sha256(convert_to(coalesce(string_agg("
                "item_id || ':' || worker_id || ':' || label, ',' ORDER BY item_id, worker_id"
                "), ''), 'UTF8')), 'hex') FROM votes WHERE project_id = :p AND worker_id "
                "NOT IN (SELECT id FROM workers WHERE project_id = :p AND excluded)"
            ),
            {"p": project_id},
        ).scalar_one()
        targets = None
        if rows and needs_votes(spec):
            # Worker models are fitted on the whole project's votes, in this same snapshot.
            k = len(rows[0][3])
            pv = load_votes(conn, project_id, k)
            fit = spec.fit(pv.votes, params, None)  # type: ignore[union-attr]
            pos = np.searchsorted(pv.item_ids, np.asarray([r[0] for r in rows], dtype=np.int64))
            targets = fit.probs[pos]
        conn.rollback()
    if not rows:
        raise ValueError("the project has no items with both features and votes")
    _, ids, features, counts, gold = zip(*rows, strict=True)
    data = build_training_data(
        list(ids),
        np.asarray(features, dtype=np.float32),
        np.asarray(counts, dtype=np.int64),
        np.asarray(gold, dtype=np.int64),
        labels,
        targets=targets,
    )
    return Snapshot(data=data, data_hash=data_hash, votes_version=int(version))
