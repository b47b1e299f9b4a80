"""One Python entry point per SQL function called on its own (app/db/sql), keyword arguments
only: each call is spelled here once, for the API, the CLI, the connectors and the tests.

An entry point takes the connection its caller has:
- a psycopg connection: the call runs on it directly, one statement, one round trip. An async
  one (the API's vote path) gets a coroutine to await;
- a SQLAlchemy Connection, or a Session (flushed first, as its `execute` autoflushes): the same
  text through `exec_driver_sql`, so errors arrive wrapped as SQLAlchemy's (a deadlock is an
  OperationalError, which `committed_with_retries` redoes).

softlabels_add_counts and the uses of softlabels_votes_version inside larger queries (the
`Project.votes_version` column) are parts of other statements, not calls: they have none.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from typing import Any, NamedTuple, TypeVar, overload

import numpy as np
import psycopg
from sqlalchemy import Connection
from sqlalchemy.orm import Session

R = TypeVar("R")

SyncConnection = psycopg.Connection[Any] | Connection | Session

# SQLSTATEs softlabels_ingest_votes raises: no such project; the caller's class list is stale.
NO_PROJECT, CLASSES_CHANGED = "SLNOP", "SLCLS"

# Batches of more votes than this go through softlabels_ingest_votes_batch, which plans every
# call for its batch's size (a cached generic plan turned one 10k batch into minutes); smaller
# ones keep the plain function and its cached plans (re-planning costs a single vote ~0.9 ms).
BATCH_PLAN_MIN = 32

_INGEST_ARGS = (
    "(%(project_id)s, %(classes)s, %(items)s, %(workers)s, %(labels)s::smallint[], %(source)s,"
    " %(refs)s, %(tasks)s, %(requests)s::integer[])"
)
_INGEST = "softlabels_ingest_votes" + _INGEST_ARGS
_INGEST_BATCH = "softlabels_ingest_votes_batch" + _INGEST_ARGS
# A multi-label batch: each vote's set as a smallint[] literal, '{0,3}' (a list of lists would
# be a 2-D array, which PostgreSQL wants rectangular).
_TICKS_ARGS = _INGEST_ARGS.replace("%(labels)s::smallint[]", "%(ticks)s")
_INGEST_TICKS = "softlabels_ingest_ticks" + _TICKS_ARGS
_INGEST_TICKS_BATCH = "softlabels_ingest_ticks_batch" + _TICKS_ARGS


class IngestResult(NamedTuple):
    inserted: int
    updated: int
    unchanged: int
    votes_version: int
    # With `requests`: each vote's fate, in input order (OUTCOME_*); else None.
    outcomes: list[int] | None = None


# softlabels_ingest_votes' per-vote outcomes (group commit: app/votes/group_commit.py).
OUTCOME_INSERTED, OUTCOME_UPDATED, OUTCOME_UNCHANGED = 0, 1, 2


def _int_array(values: np.ndarray | Sequence[int]) -> str:
    """Integers as a PostgreSQL array literal: psycopg takes ~0.1 s to adapt a 50,000-element
    list, the literal ~10 ms (benchmarks/ingest.py)."""
    ints = values.tolist() if isinstance(values, np.ndarray) else values
    return "{" + ",".join(map(str, ints)) + "}"


def _list(values: Sequence[Any] | None) -> list[Any] | None:
    return values if values is None or isinstance(values, list) else list(values)


@overload
def ingest_votes(
    conn: psycopg.AsyncConnection[Any],
    *,
    project_id: int,
    classes: Sequence[str],
    items: Sequence[str],
    workers: Sequence[str],
    labels: np.ndarray | Sequence[int] | None = None,
    ticks: Sequence[Sequence[int]] | None = None,
    source: str = "api",
    refs: Sequence[str | None] | None = None,
    tasks: Sequence[str | None] | None = None,
    requests: Sequence[int] | None = None,
) -> Coroutine[Any, Any, IngestResult]: ...


@overload
def ingest_votes(
    conn: SyncConnection,
    *,
    project_id: int,
    classes: Sequence[str],
    items: Sequence[str],
    workers: Sequence[str],
    labels: np.ndarray | Sequence[int] | None = None,
    ticks: Sequence[Sequence[int]] | None = None,
    source: str = "api",
    refs: Sequence[str | None] | None = None,
    tasks: Sequence[str | None] | None = None,
    requests: Sequence[int] | None = None,
) -> IngestResult: ...


def ingest_votes(
    conn: SyncConnection | psycopg.AsyncConnection[Any],
    *,
    project_id: int,
    classes: Sequence[str],
    items: Sequence[str],
    workers: Sequence[str],
    labels: np.ndarray | Sequence[int] | None = None,
    ticks: Sequence[Sequence[int]] | None = None,
    source: str = "api",
    refs: Sequence[str | None] | None = None,
    tasks: Sequence[str | None] | None = None,
    requests: Sequence[int] | None = None,
) -> IngestResult | Coroutine[Any, Any, IngestResult]:
    """Store a validated batch (vote i is `workers[i]` giving `items[i]` the class index
    `labels[i]`; `prepare_votes` validates) in one statement: create items and workers, upsert
    the votes, apply the count deltas, bump the votes version, record `item.settled` events.

    `classes` is the class list the labels index, as the caller knows it: a stale one raises
    CLASSES_CHANGED, a missing project NO_PROJECT. `refs` and `tasks` (aligned with the votes)
    are a labeling tool's annotation and task ids, `source` where the votes came from.

    A multi-label project's batch gives `ticks` instead of `labels`: vote i is the set of class
    indices `ticks[i]`, sorted and distinct (softlabels_ingest_ticks).

    `requests`: the batch is several requests' votes (group commit), vote i from request
    `requests[i]`; the result's `outcomes` then says what became of each vote, and the votes
    version rises once per request that changed something. The pairs (item, worker) must be
    distinct across the whole batch, as within one request's."""
    query, params = _ingest_call(
        project_id, classes, items, workers, labels, ticks, source, refs, tasks, requests
    )
    return _call(conn, "SELECT * FROM " + query, params, IngestResult._make)


class IngestCall(NamedTuple):
    """The arguments of one `ingest_votes` call, for `ingest_votes_many`."""

    project_id: int
    classes: Sequence[str]
    items: Sequence[str]
    workers: Sequence[str]
    labels: np.ndarray | Sequence[int] | None = None
    ticks: Sequence[Sequence[int]] | None = None
    requests: Sequence[int] | None = None


async def ingest_votes_many(
    conn: psycopg.AsyncConnection[Any], calls: Sequence[IngestCall]
) -> list[IngestResult]:
    """Several `ingest_votes` calls (source "api") in one statement, hence one transaction and
    one commit on an autocommit connection: all stored or none. Run in the order given: callers
    that lock several projects' rows list them in one order (project id), so two such
    statements never wait for each other in a cycle. Group commit (app/votes/group_commit.py)
    stores the requests of several projects this way."""
    arms, params = [], {}
    for n, c in enumerate(calls):
        query, one = _ingest_call(
            c.project_id,
            c.classes,
            c.items,
            c.workers,
            c.labels,
            c.ticks,
            "api",
            None,
            None,
            c.requests,
        )
        for name in one:
            query = query.replace(f"%({name})s", f"%({name}_{n})s")
        params.update({f"{name}_{n}": value for name, value in one.items()})
        arms.append(f"SELECT {n} AS call, r.* FROM {query} AS r")
    cur = await conn.execute(" UNION ALL ".join(arms), params)
    out: list[IngestResult | None] = [None] * len(calls)
    for row in await cur.fetchall():
        out[row[0]] = IngestResult._make(row[1:])
    assert all(r is not None for r in out)
    return out  # type: ignore[return-value]


def _ingest_call(
    project_id: int,
    classes: Sequence[str],
    items: Sequence[str],
    workers: Sequence[str],
    labels: np.ndarray | Sequence[int] | None,
    ticks: Sequence[Sequence[int]] | None,
    source: str,
    refs: Sequence[str | None] | None,
    tasks: Sequence[str | None] | None,
    requests: Sequence[int] | None,
) -> tuple[str, dict[str, Any]]:
    """The function call (`softlabels_ingest_...(%(project_id)s, ...)`) and its parameters."""
    if (labels is None) == (ticks is None):
        raise TypeError("give labels (single-label, ordinal) or ticks (multi-label)")
    params = {
        "project_id": project_id,
        "classes": _list(classes),
        "items": _list(items),
        "workers": _list(workers),
        "source": source,
        "refs": _list(refs),
        "tasks": _list(tasks),
        "requests": None if requests is None else _int_array(requests),
    }
    big = len(items) > BATCH_PLAN_MIN
    if ticks is not None:
        params["ticks"] = [_int_array(t) for t in ticks]
        query = _INGEST_TICKS_BATCH if big else _INGEST_TICKS
    else:
        assert labels is not None
        params["labels"] = _int_array(labels)
        query = _INGEST_BATCH if big else _INGEST
    return query, params


def votes_version(conn: SyncConnection, *, project_id: int) -> int:
    """The project's votes version (see app/db/sql/softlabels_votes_version.sql)."""
    return _call(conn, "SELECT softlabels_votes_version(%(p)s)", {"p": project_id}, _int)


def bump_votes_version(conn: SyncConnection, *, project_id: int) -> None:
    """Count one more change to the project's votes."""
    _call(conn, "SELECT softlabels_bump_votes_version(%(p)s)", {"p": project_id}, _none)


def emit_settled(conn: SyncConnection, *, project_id: int) -> int:
    """Record and queue `item.settled` for the items this transaction changed; how many."""
    return _call(conn, "SELECT softlabels_emit_settled(%(p)s)", {"p": project_id}, _int)


def _int(row: Sequence[Any]) -> int:
    return int(row[0])


def _none(row: Sequence[Any]) -> None:
    return None


@overload
def _call(
    conn: psycopg.AsyncConnection[Any],
    query: str,
    params: dict[str, Any],
    result: Callable[[Sequence[Any]], R],
) -> Coroutine[Any, Any, R]: ...


@overload
def _call(
    conn: SyncConnection,
    query: str,
    params: dict[str, Any],
    result: Callable[[Sequence[Any]], R],
) -> R: ...


def _call(
    conn: SyncConnection | psycopg.AsyncConnection[Any],
    query: str,
    params: dict[str, Any],
    result: Callable[[Sequence[Any]], R],
) -> R | Coroutine[Any, Any, R]:
    """Run `query` (psycopg's placeholders) on whichever connection the caller has; its one row
    through `result`."""
    if isinstance(conn, psycopg.AsyncConnection):
        return _call_async(conn, query, params, result)
    if isinstance(conn, psycopg.Connection):
        row = conn.execute(query, params).fetchone()
        assert row is not None
        return result(row)
    if isinstance(conn, Session):
        if conn.autoflush:
            conn.flush()
        conn = conn.connection()
    return result(conn.exec_driver_sql(query, params).one())


async def _call_async(
    conn: psycopg.AsyncConnection[Any],
    query: str,
    params: dict[str, Any],
    result: Callable[[Sequence[Any]], R],
) -> R:
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    assert row is not None
    return result(row)
