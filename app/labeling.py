"""[3. aggregated] A project's soft labels by any method: count methods read the maintained
per-item counts; worker-model methods use the project's cached fit (app/fits.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import procrastinate
from sqlalchemy import Engine

from app.aggregation.methods import CountsMethod
from app.aggregation.params import MethodParams
from app.aggregation.registry import Method
from app.fits import Fit, current_fit, params_key
from app.training.queue import defer_refit


@dataclass
class Labeler:
    method: str
    params: dict[str, Any]
    as_of: int  # the votes_version the labels reflect
    stale: bool  # True: a newer fit is being computed; these labels are from `as_of`
    probs: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (item db ids, counts) -> (n, K)
    fit: Fit | None = None


def labeler(
    engine: Engine,
    project_id: int,
    n_classes: int,
    votes_version: int,
    spec: Method,
    params: MethodParams,
    *,
    sync_max_votes: int,
    queue: procrastinate.App | None = None,
) -> Labeler:
    """`queue` given (the API): large projects refit in the worker and reads get the last fit.
    None (CLI, worker): always fit now."""
    if isinstance(spec, CountsMethod):
        return Labeler(
            spec.name,
            params,
            votes_version,
            False,
            lambda ids, counts: spec.compute(counts, params),
        )

    def request_refit() -> None:
        assert queue is not None
        # Autocommit: a refit already waiting makes the insert fail, which must not poison a
        # transaction.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            defer_refit(
                queue,
                conn.connection.driver_connection,
                project_id,
                spec.name,
                params,
                f"{spec.name}:{params_key(params)}",
            )

    fit = current_fit(
        engine,
        project_id,
        n_classes,
        spec,
        params,
        sync_max_votes=sync_max_votes,
        request_refit=request_refit if queue is not None else None,
    )
    return Labeler(
        spec.name, params, fit.votes_version, fit.stale, lambda ids, counts: fit.probs_for(ids), fit
    )
