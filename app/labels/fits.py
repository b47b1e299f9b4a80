"""Worker-model soft labels from the database: load the vote list, fit, cache the fit.

A fit is stored per (project, method, parameters) with the project's `votes_version` it
reflects. A read whose version matches uses it; otherwise small projects refit at once (warm
started from the stored fit), and projects past `fit_sync_max_votes` get a refit queued in the
worker while the read answers with the last fit, marked stale, so reads never wait on a long fit.
"""

from __future__ import annotations

import io
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Connection, Engine, text

from app.aggregation.base import WorkerAggregator, WorkerModelFit
from app.aggregation.budget import FitOverBudget, time_budget
from app.aggregation.params import ParamError
from app.aggregation.registry import resolve_method
from app.aggregation.votes import TickVotes, VoteArrays
from app.db import functions
from app.errors import FitPending, FitsBusy

# PostgreSQL's binary COPY row for (bigint, bigint, smallint): a field count, then each field
# as (length, value), all big-endian. Parsing it with one np.frombuffer keeps 10M votes cheap.
_ROW = np.dtype(
    [
        ("n", ">i2"),
        ("l1", ">i4"),
        ("item", ">i8"),
        ("l2", ">i4"),
        ("worker", ">i8"),
        ("l3", ">i4"),
        ("label", ">i2"),
    ]
)
_HEADER = 19  # signature (11) + flags (4) + header extension length (4)


@dataclass(frozen=True)
class ProjectVotes:
    item_ids: np.ndarray  # database ids, ascending: the fit's item index
    worker_ids: np.ndarray  # database ids, ascending: the fit's worker index
    votes: VoteArrays


@dataclass
class Fit:
    method: str
    params: dict[str, Any]
    votes_version: int
    item_ids: np.ndarray
    worker_ids: np.ndarray
    result: WorkerModelFit
    seconds: float
    stale: bool = False
    gold_key: str = ""  # see gold_key(); "" for fits that do not use gold

    def probs_for(self, item_ids: np.ndarray) -> np.ndarray:
        """Rows for these database item ids (items newer than the fit get the class prior)."""
        pos, known = locate(self.item_ids, item_ids)
        k = self.result.probs.shape[1]
        prior = (
            self.result.class_prior if self.result.class_prior is not None else np.full(k, 1 / k)
        )
        return np.where(known[:, None], self.result.probs[pos], prior[None, :])


def locate(sorted_ids: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each of `ids`' row in the ascending `sorted_ids` (a fit's index), and whether it is there
    at all: a stale fit predates the newest items and workers."""
    if len(sorted_ids) == 0:
        return np.zeros(len(ids), np.int64), np.zeros(len(ids), bool)
    pos = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
    return pos, sorted_ids[pos] == ids


def _ids(conn: Connection, table: str, project_id: int) -> np.ndarray:
    rows = (
        conn.execute(
            text(f"SELECT id FROM {table} WHERE project_id = :p ORDER BY id"), {"p": project_id}
        )
        .scalars()
        .all()
    )
    return np.asarray(rows, dtype=np.int64)


def _items(conn: Connection, project_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Item ids ascending and each item's gold class (-1 where none)."""
    rows = conn.execute(
        text("SELECT id, coalesce(gold, -1) FROM items WHERE project_id = :p ORDER BY id"),
        {"p": project_id},
    ).all()
    arr = np.asarray(rows, dtype=np.int64).reshape(-1, 2)
    return arr[:, 0].copy(), arr[:, 1].copy()


# Gold labels change without a new votes_version (they are item fields): a fit that uses them
# also records this fingerprint and is refit when it changes.
_GOLD_KEY = text(
    "SELECT coalesce(md5(string_agg(id::text || ':' || gold::text, ',' ORDER BY id)), '') "
    "FROM items WHERE project_id = :p AND gold IS NOT NULL"
)


def gold_key(conn: Connection, project_id: int) -> str:
    return str(conn.execute(_GOLD_KEY, {"p": project_id}).scalar_one())


def load_votes(
    conn: Connection, project_id: int, n_classes: int, ticks: bool = False
) -> ProjectVotes:
    """The project's counted votes as arrays indexed by item and worker (database-id order).
    `ticks`: a multi-label project's, as TickVotes (each vote's set of ticked classes)."""
    item_ids, gold = _items(conn, project_id)
    worker_ids = _ids(conn, "workers", project_id)
    # Excluded workers' votes stay stored but no method sees them (app/votes/lifecycle.py); with
    # none excluded, the scan is the plain one.
    excluded = [
        int(w)
        for w in conn.execute(
            text("SELECT id FROM workers WHERE project_id = :p AND excluded"), {"p": project_id}
        ).scalars()
    ]
    skip = " AND worker_id <> ALL(%s)" if excluded else ""
    # A multi-label vote comes as one row per ticked class (-1 for a vote that ticked none), so
    # that every row keeps the fixed (bigint, bigint, smallint) layout parsed below.
    select = (
        "SELECT item_id, worker_id, coalesce(t, -1)::smallint FROM votes "
        "LEFT JOIN LATERAL unnest(ticks) AS t ON true"
        if ticks
        else "SELECT item_id, worker_id, label FROM votes"
    )
    buf = io.BytesIO()
    raw = conn.connection.driver_connection
    assert raw is not None  # an open SQLAlchemy connection always has its psycopg one
    with (
        raw.cursor() as cur,
        cur.copy(
            f"COPY ({select} WHERE project_id = %s" + skip + ") TO STDOUT (FORMAT BINARY)",
            (project_id, excluded) if excluded else (project_id,),
        ) as copy,
    ):
        for block in copy:
            buf.write(block)
    data = buf.getbuffer()
    n = (len(data) - _HEADER - 2) // _ROW.itemsize
    rows = np.frombuffer(data, dtype=_ROW, count=n, offset=_HEADER) if n > 0 else np.empty(0, _ROW)
    if ticks:
        return ProjectVotes(
            item_ids, worker_ids, _tick_votes(rows, item_ids, worker_ids, n_classes, gold)
        )
    votes = VoteArrays(
        item=np.searchsorted(item_ids, rows["item"].astype(np.int64)),
        worker=np.searchsorted(worker_ids, rows["worker"].astype(np.int64)),
        label=rows["label"].astype(np.int64),
        n_items=len(item_ids),
        n_workers=len(worker_ids),
        n_classes=n_classes,
        gold=gold,
    )
    return ProjectVotes(item_ids, worker_ids, votes)


def _tick_votes(
    rows: np.ndarray, item_ids: np.ndarray, worker_ids: np.ndarray, k: int, gold: np.ndarray
) -> TickVotes:
    """One vote per (item, worker) from the rows of its ticks."""
    item = np.searchsorted(item_ids, rows["item"].astype(np.int64))
    worker = np.searchsorted(worker_ids, rows["worker"].astype(np.int64))
    pair, vote = np.unique(item * max(len(worker_ids), 1) + worker, return_inverse=True)
    ticks = np.zeros((len(pair), k), dtype=bool)
    tick = rows["label"].astype(np.int64)
    has = tick >= 0
    ticks[vote[has], tick[has]] = True
    return TickVotes(
        item=pair // max(len(worker_ids), 1),
        worker=pair % max(len(worker_ids), 1),
        label=np.zeros(len(pair), dtype=np.int64),
        n_items=len(item_ids),
        n_workers=len(worker_ids),
        n_classes=k,
        gold=None,  # a multi-label item's gold is not one class
        ticks=ticks,
    )


def params_key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True)


def _pack(arrays: dict[str, np.ndarray | None]) -> bytes:
    buf = io.BytesIO()
    present: dict[str, Any] = {k: v for k, v in arrays.items() if v is not None}
    np.savez(buf, **present)
    return buf.getvalue()


def load_fit(conn: Connection, project_id: int, method: str, params: dict[str, Any]) -> Fit | None:
    row = conn.execute(
        text(
            "SELECT votes_version, arrays, n_iter, converged, seconds FROM label_fits "
            "WHERE project_id = :p AND method = :m AND params = :k"
        ),
        {"p": project_id, "m": method, "k": params_key(params)},
    ).one_or_none()
    if row is None:
        return None
    with np.load(io.BytesIO(bytes(row.arrays))) as z:
        a = {k: z[k] for k in z.files}
    state = {k[6:]: v for k, v in a.items() if k.startswith("state_")}
    warnings = [str(w) for w in a["warnings"]] if "warnings" in a else []
    result = WorkerModelFit(
        probs=a["probs"],
        worker_skill=a["worker_skill"],
        confusion=a.get("confusion"),
        class_prior=a.get("class_prior"),
        n_iter=row.n_iter,
        converged=row.converged,
        state=state,
        warnings=warnings,
    )
    key = str(a["gold_key"]) if "gold_key" in a else ""
    return Fit(
        method,
        params,
        row.votes_version,
        a["item_ids"],
        a["worker_ids"],
        result,
        row.seconds,
        gold_key=key,
    )


def store_fit(conn: Connection, project_id: int, fit: Fit) -> None:
    r = fit.result
    arrays = {
        "item_ids": fit.item_ids,
        "worker_ids": fit.worker_ids,
        "probs": r.probs,
        "worker_skill": r.worker_skill,
        "confusion": r.confusion,
        "class_prior": r.class_prior,
        "warnings": np.asarray(r.warnings, dtype=str) if r.warnings else None,
        "gold_key": np.asarray(fit.gold_key, dtype=str),
        **{f"state_{k}": v for k, v in r.state.items()},
    }
    conn.execute(
        text(
            """
            INSERT INTO label_fits (project_id, method, params, votes_version, arrays, n_iter,
                                    converged, seconds)
            VALUES (:p, :m, :k, :v, :a, :n, :c, :s)
            ON CONFLICT (project_id, method, params) DO UPDATE SET
                votes_version = EXCLUDED.votes_version, arrays = EXCLUDED.arrays,
                n_iter = EXCLUDED.n_iter, converged = EXCLUDED.converged,
                seconds = EXCLUDED.seconds, created_at = now()
            WHERE label_fits.votes_version <= EXCLUDED.votes_version
            """
        ),
        {
            "p": project_id,
            "m": fit.method,
            "k": params_key(fit.params),
            "v": fit.votes_version,
            "a": _pack(arrays),
            "n": r.n_iter,
            "c": r.converged,
            "s": fit.seconds,
        },
    )


def fit_in_snapshot(
    conn: Connection,
    project_id: int,
    n_classes: int,
    method: WorkerAggregator,
    warm: Fit | None = None,
) -> Fit:
    """Fit on the votes `conn` sees: the caller holds the REPEATABLE READ transaction, so the
    fit is for exactly the votes (and votes_version) of that snapshot. Not stored."""
    version = functions.votes_version(conn, project_id=project_id)
    pv = load_votes(conn, project_id, n_classes, ticks=method.task_type == "multi_label")
    key = gold_key(conn, project_id) if method.uses_gold else ""
    started = time.perf_counter()
    # Indices are database-id order, and ids only grow, so the stored fit's rows line up with
    # the first rows of the new one: a valid warm start even after new items or workers.
    usable = warm is not None and np.array_equal(warm.item_ids, pv.item_ids[: len(warm.item_ids)])
    result = method.fit(pv.votes, warm.result if usable and warm else None).result_
    return Fit(
        method.name,
        method.params(),
        int(version),
        pv.item_ids,
        pv.worker_ids,
        result,
        time.perf_counter() - started,
        gold_key=key,
    )


def compute_fit(
    engine: Engine,
    project_id: int,
    n_classes: int,
    method: WorkerAggregator,
    warm: Fit | None = None,
) -> Fit:
    """Fit on the project's current votes (one REPEATABLE READ snapshot) and store it."""
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
        fit = fit_in_snapshot(conn, project_id, n_classes, method, warm)
        conn.rollback()
    with engine.begin() as conn:
        store_fit(conn, project_id, fit)
    return fit


def n_votes(conn: Connection, project_id: int) -> int:
    return int(
        conn.execute(
            text("SELECT coalesce(sum(n_votes), 0) FROM items WHERE project_id = :p"),
            {"p": project_id},
        ).scalar_one()
    )


@dataclass(frozen=True)
class SyncBudget:
    """What a fit inside an API request may cost; more goes to the worker (see module doc).

    `max_work`: votes x iterations x starts (x Newton rounds for GLAD), the estimate of the
    fit's cost its method makes before it starts (WorkerAggregator.work); `max_s`: wall-clock
    seconds, checked each EM iteration; `slots`: fits this process runs at once (a request
    finding none free gets 503)."""

    max_work: float
    max_s: float
    slots: threading.BoundedSemaphore


def current_fit(
    engine: Engine,
    project_id: int,
    n_classes: int,
    method: WorkerAggregator,
    *,
    sync_max_votes: int,
    request_refit: Any = None,
    budget: SyncBudget | None = None,
) -> Fit:
    """The fit for the project's current votes, or the last one marked stale (see module doc).

    With `budget` (the API), a fit is done in the request only while it stays within it: one
    estimated too costly, one that runs past the time budget, goes to the worker like a large
    project's."""
    with engine.connect() as conn:
        version = functions.votes_version(conn, project_id=project_id)
        cached = load_fit(conn, project_id, method.name, method.params())
        size = n_votes(conn, project_id)
        key = gold_key(conn, project_id) if method.uses_gold else ""
    if cached is not None and cached.votes_version == version and cached.gold_key == key:
        return cached
    if request_refit is None or (budget is None and size <= sync_max_votes):
        return compute_fit(engine, project_id, n_classes, method, warm=cached)
    if budget is not None and size <= sync_max_votes and method.work(size) <= budget.max_work:
        if not budget.slots.acquire(blocking=False):
            raise FitsBusy()
        try:
            with time_budget(budget.max_s):
                return compute_fit(engine, project_id, n_classes, method, warm=cached)
        except FitOverBudget:
            pass  # the worker fits it without a deadline
        finally:
            budget.slots.release()
    request_refit()
    if cached is None:
        raise FitPending(method.name)  # a 503 with Retry-After (app/errors.py)
    cached.stale = True
    return cached


def refit_now(engine: Engine, project_id: int, method: str, params: dict[str, Any]) -> None:
    """The worker's `refit` task: bring the stored fit up to the project's current votes."""
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT cardinality(classes), task_type FROM projects WHERE id = :p"),
            {"p": project_id},
        ).one_or_none()
    if row is None:
        return  # project deleted meanwhile
    # The method's name means the class of the project's task type.
    try:
        aggregator = resolve_method(method, params, row[1])
    except ParamError:
        return  # the task type changed since the refit was queued (an empty project)
    if not isinstance(aggregator, WorkerAggregator):
        return  # count methods have no fit to refresh
    with engine.connect() as conn:
        warm = load_fit(conn, project_id, method, aggregator.params())
    compute_fit(engine, project_id, int(row[0]), aggregator, warm=warm)
