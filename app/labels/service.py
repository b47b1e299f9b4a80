"""[3. aggregated] A project's soft labels by any method: count methods read the maintained
per-item counts; worker-model methods use the project's cached fit (app/labels/fits.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import procrastinate
from sqlalchemy import Engine

from app.aggregation.base import Aggregator, CountsAggregator, WorkerAggregator
from app.aggregation.crowdlab import Crowdlab, routing_scores
from app.aggregation.ordinal import scale_values
from app.aggregation.task_methods import TickCountsAggregator
from app.db import functions
from app.db.models import Project
from app.labels.fits import Fit, SyncBudget, current_fit, locate, params_key
from app.labels.model_loop import crowdlab_view
from app.tasks import defer_refit


def project_scale(project: Project) -> np.ndarray | None:
    """An ordinal project's level values (for mean, median and spread); None for other types."""
    if project.task_type != "ordinal":
        return None
    return scale_values(project.classes, project.level_values)


@dataclass
class Labeler:
    method: str
    params: dict[str, Any]
    as_of: int  # the votes_version the labels reflect
    stale: bool  # True: a newer fit is being computed; these labels are from `as_of`
    # (item db ids, counts, n_votes) -> (n, K): distributions over the classes or levels, or
    # for a multi-label project each class's probability that it applies
    probs: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
    fit: Fit | None = None
    # crowdlab only; (item db ids) -> ActiveLab-style score, low = label next
    routing: Callable[[np.ndarray], np.ndarray] | None = None


def labeler(
    engine: Engine,
    project_id: int,
    n_classes: int,
    votes_version: int,
    method: Aggregator,
    *,
    sync_max_votes: int,
    queue: procrastinate.App | None = None,
    budget: SyncBudget | None = None,
) -> Labeler:
    """`queue` given (the API): large projects refit in the worker and reads get the last fit.
    None (CLI, worker): always fit now."""
    if isinstance(method, Crowdlab):  # a job's out-of-sample predictions and the votes
        return _model_labeler(engine, project_id, n_classes, method)
    if isinstance(method, CountsAggregator):
        counts_method = method  # narrowed, for the closure
        return Labeler(
            method.name,
            method.params(),
            votes_version,
            False,
            lambda ids, counts, n_votes: counts_method.compute(counts),
        )
    if isinstance(method, TickCountsAggregator):
        tick_method = method
        return Labeler(
            method.name,
            method.params(),
            votes_version,
            False,
            lambda ids, counts, n_votes: tick_method.compute(counts, n_votes),
        )
    if not isinstance(method, WorkerAggregator):
        raise TypeError(f"no labels for {type(method).__name__}")
    worker_method = method  # narrowed, for the closures below
    params = method.params()

    def request_refit() -> None:
        assert queue is not None
        # Autocommit: a refit already waiting makes the insert fail, which must not poison a
        # transaction.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            defer_refit(
                queue,
                conn.connection.driver_connection,
                project_id,
                worker_method.name,
                params,
                f"{worker_method.name}:{params_key(params)}",
            )

    fit = current_fit(
        engine,
        project_id,
        n_classes,
        worker_method,
        sync_max_votes=sync_max_votes,
        request_refit=request_refit if queue is not None else None,
        budget=budget,
    )
    return Labeler(
        method.name,
        params,
        fit.votes_version,
        fit.stale,
        lambda ids, counts, n_votes: fit.probs_for(ids),
        fit,
    )


def _model_labeler(engine: Engine, project_id: int, n_classes: int, method: Crowdlab) -> Labeler:
    """crowdlab: computed on each read (pure numpy over the vote list; no cache yet)."""
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
        version = functions.votes_version(conn, project_id=project_id)
        view, result = crowdlab_view(conn, project_id, n_classes, method.job)
        conn.rollback()
    route = routing_scores(view.pv.votes, view.probs, result)

    def probs(ids: np.ndarray, counts: np.ndarray, n_votes: np.ndarray) -> np.ndarray:
        pos, known = locate(view.pv.item_ids, ids)
        return np.where(known[:, None], result.probs[pos], 1.0 / n_classes)

    def routing(ids: np.ndarray) -> np.ndarray:
        pos, known = locate(view.pv.item_ids, ids)
        return np.where(known, route[pos], 0.0)  # items newer than the view: label them

    params = {**method.params(), "job": view.job_id}
    return Labeler(method.name, params, int(version), False, probs, routing=routing)
