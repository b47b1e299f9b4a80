"""The model back in labeling: a training job's out-of-sample predictions joined with the
project's votes (crowdlab labels, routing scores, the suspect list, model predictions export).

Reads the database; the arithmetic is app/aggregation/crowdlab.py (pure numpy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Connection, text

from app.aggregation.crowdlab import Crowdlab, CrowdlabResult, crowdlab
from app.errors import ValidationFailed
from app.labels import predictions
from app.labels.fits import ProjectVotes, load_votes, locate


class NoModel(ValidationFailed):
    """No usable training job: none with out-of-sample predictions, or not this project's.
    A 422 naming the `job` parameter."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"{reason[0].upper()}{reason[1:]}.",
            errors=[{"index": None, "field": "job", "reason": reason}],
        )


@dataclass
class ModelView:
    job_id: int
    pv: ProjectVotes  # the project's votes, items in database-id order
    probs: np.ndarray  # (n_items, K) model predictions, uniform where has_model is False
    has_model: np.ndarray  # (n_items,) bool
    oos: np.ndarray  # (n_items,) bool: an out-of-sample prediction of a voted item


def latest_oos_job(conn: Connection, project_id: int) -> int | None:
    return conn.execute(
        text(
            "SELECT j.id FROM training_jobs j JOIN training_artifacts a ON a.job_id = j.id "
            "WHERE j.project_id = :p AND j.status = 'succeeded' "
            "AND (j.config->>'oos_folds') IS NOT NULL AND a.predictions IS NOT NULL "
            "ORDER BY j.id DESC LIMIT 1"
        ),
        {"p": project_id},
    ).scalar_one_or_none()


def model_view(
    conn: Connection, project_id: int, n_classes: int, job_id: int | None, *, need_oos: bool = True
) -> ModelView:
    """The project's votes and job `job_id`'s predictions per item (None: the newest job with
    out-of-sample predictions). Raises NoModel with a sentence saying what is missing."""
    if job_id is None:
        job_id = latest_oos_job(conn, project_id)
        if job_id is None:
            raise NoModel(
                "no succeeded training job with out-of-sample predictions in this project; "
                'run one with "oos_folds": 5'
            )
    owner = conn.execute(
        text("SELECT project_id, status FROM training_jobs WHERE id = :j"), {"j": job_id}
    ).one_or_none()
    if owner is None or owner.project_id != project_id:
        raise NoModel(f"no training job {job_id} in this project")
    preds = predictions.load(conn, job_id)
    if owner.status != "succeeded" or preds is None:
        raise NoModel(f"training job {job_id} has no stored predictions ({owner.status})")
    if need_oos and "oos_probs" not in preds:
        raise NoModel(f'training job {job_id} has no out-of-sample predictions (run "oos_folds")')
    pv = load_votes(conn, project_id, n_classes)
    n = len(pv.item_ids)
    probs = np.full((n, n_classes), 1.0 / n_classes)
    has = np.zeros(n, bool)
    oos = np.zeros(n, bool)
    for prefix, flag in (("unlabeled", None), ("oos", oos)):
        ids = preds.get(f"{prefix}_db_ids")
        if ids is None:
            continue
        pos, known = locate(pv.item_ids, ids)
        probs[pos[known]] = preds[f"{prefix}_probs"][known]
        has[pos[known]] = True
        if flag is not None:
            flag[pos[known]] = True
    return ModelView(job_id, pv, probs, has, oos)


def crowdlab_view(
    conn: Connection, project_id: int, n_classes: int, job_id: int | None
) -> tuple[ModelView, CrowdlabResult]:
    view = model_view(conn, project_id, n_classes, job_id)
    return view, crowdlab(view.pv.votes, view.probs, view.has_model)


def crowdlab_targets(
    conn: Connection, project_id: int, method: Crowdlab, db_ids: np.ndarray
) -> np.ndarray:
    """Training targets by the crowdlab method for these item ids (app/training/snapshot.py)."""
    k = int(
        conn.execute(
            text("SELECT cardinality(classes) FROM projects WHERE id = :p"), {"p": project_id}
        ).scalar_one()
    )
    view, result = crowdlab_view(conn, project_id, k, method.job)
    pos, _ = locate(view.pv.item_ids, db_ids)
    return result.probs[pos]


def check_crowdlab_job(conn: Any, project_id: int, job: int | None, field: str) -> None:
    """A crowdlab training target needs a usable out-of-sample job now, not a failed job later."""
    if job is None:
        if latest_oos_job(conn, project_id) is None:
            raise ValidationFailed(
                "crowdlab needs a succeeded training job with oos_folds in this project.",
                errors=[{"index": None, "field": field, "reason": "no out-of-sample job yet"}],
            )
        return
    row = conn.execute(
        text(
            "SELECT j.project_id, j.status, (j.config->>'oos_folds') IS NOT NULL AS oos "
            "FROM training_jobs j WHERE j.id = :j"
        ),
        {"j": job},
    ).one_or_none()
    if row is None or row.project_id != project_id or row.status != "succeeded" or not row.oos:
        reason = f"job {job} is not a succeeded training job with oos_folds in this project"
        raise ValidationFailed(
            f"Invalid labels: {reason}.",
            errors=[{"index": None, "field": field, "reason": reason}],
        )
