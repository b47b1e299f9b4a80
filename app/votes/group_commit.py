"""[2. stored] Group commit: concurrent small vote requests of one API process share one
statement and one commit.

A single vote costs PostgreSQL far more than its one row: the call of softlabels_ingest_votes
(its checks, plans, the version bump) and a commit that waits for the WAL to reach the disk.
Requests that arrive while such statements are running wait in one queue; when a statement
ends, the queue's requests leave together as one group: one statement that calls the ingest
function once per project with every request's votes for that project (in project-id order, so
that two groups never lock two projects' rows in opposite orders), one commit. Nobody waits on
a timer: a lone request leaves at the next turn of the event loop, and the busier the process
the larger the groups (benchmarks/results/single_vote.md). Each request is answered only once
the group's statement, which is its own transaction on an autocommit connection, has returned,
that is after the commit.

Each request keeps its own answer:
- its validation errors come before it joins a group (the caller validates);
- its counts: the function says what became of each vote (`outcomes`), summed per request; the
  votes version is the group's, which includes the request's votes, and rose once per request
  that changed something, as if each had run alone;
- the function wants distinct (item, worker) pairs per call: a request naming a pair (of its
  project) that a group being formed or running already has waits for a later group, and so
  does every later request naming one of its pairs, so that arrival order decides which vote
  is kept;
- one request's wait is not the group's: the group's connections give up waiting for a row lock
  after LOCK_TIMEOUT_MS (a batch holding the items one vote names, until it commits), and the
  group is then redone one request at a time as below: only the request that names a locked
  row waits for it;
- a deadlock (SQLSTATE class 40) redoes the group whole: the statement rolled back, so nothing
  was counted twice. Any other error the server reports (the project deleted, its classes
  changed, anything about one request's votes) rolls the whole group back too, and then each
  request runs alone (`solo`: its own lookup, validation, retries), so each gets its own
  answer, never another request's error. A lost connection is an outage, told to the group's
  requests as it would have been told to each (the outcome of the commit is unknown, and a
  retry would misreport the counts).

The counters (`GroupStats`) are served by GET /v1/metrics: statements per request show whether
groups form.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np
import psycopg.errors
from psycopg_pool import AsyncConnectionPool

from app.db import functions
from app.db.functions import OUTCOME_INSERTED, OUTCOME_UNCHANGED, OUTCOME_UPDATED
from app.votes.ingest import PreparedVotes, VoteCounts, vote_counts

# A vote's row: (project id, item, worker). One call of the ingest function wants its pairs
# distinct; across projects the same names are other rows.
Pair = tuple[int, str, str]
# At most this many votes in one group, so that a group's statement stays short (one project's
# 32 votes measured ~3 ms of PostgreSQL CPU, 1 vote ~1.2 ms): a much larger group would hold its
# first request back for its last.
MAX_GROUP_VOTES = 256
# How long a group's statement waits for a row lock before the group is redone request by
# request (set on the group pool's connections: `lock_timeout_options`). In benchmarks/load.py
# batches of up to 500 votes hold their items until they commit, often for a second or more;
# without a limit every request grouped with a vote on such an item waited as long.
LOCK_TIMEOUT_MS = 100
# Groups in flight at once (see GroupCommitter): also the group pool's size.
MAX_RUNNING = 4


def lock_timeout_options() -> str:
    """libpq `options` for the connections groups are written on."""
    return f"-c lock_timeout={LOCK_TIMEOUT_MS}ms"


@dataclass(frozen=True)
class GroupKey:
    """What the votes of one call must share: a call is about one project, checked against one
    class list and task type (those the requests were validated with)."""

    project_id: int
    classes: tuple[str, ...]
    task_type: str


@dataclass
class GroupStats:
    """Per process, since start. `statements`: statements made for groups (retries included);
    `requests` / `statements` is the mean group size."""

    requests: int = 0
    votes: int = 0
    statements: int = 0
    largest: int = 0  # requests in the largest group
    deadlock_retries: int = 0
    lock_timeouts: int = 0  # groups that waited LOCK_TIMEOUT_MS for a row lock (then redone)
    solo_fallbacks: int = 0  # groups whose requests were redone one by one after an error


@dataclass
class _Request:
    key: GroupKey
    batch: PreparedVotes
    pairs: frozenset[Pair]
    solo: Callable[[], Awaitable[VoteCounts]]
    future: asyncio.Future[VoteCounts]


class GroupCommitter:
    """Coalesces `submit`ted requests, whatever their projects, into groups of at most
    `max_votes` votes (a request larger than that still goes, alone); `max_running` groups run
    at once (the next one forms while they commit); `wait_s` > 0 holds a group that long before
    it leaves (tests; 0 in service).

    Four groups at once: benchmarks/single_vote.py, 1 process, 10 s runs on the shared 2-core
    machine (2026-12-04, load 4-7), softlabels / ceiling req/s with 100 projects and with 1:
    1 group at a time 35% and 76%, 2: 36% and 86%, 4: 45-46% and 72-98%, 8: 35% and 93%. One
    or two leave a core idle while a group's PostgreSQL work (one function call per project)
    runs; eight split the requests into groups too small to share much.
    """

    def __init__(
        self,
        pool: AsyncConnectionPool,
        *,
        max_votes: int = MAX_GROUP_VOTES,
        max_running: int = MAX_RUNNING,
        wait_s: float = 0.0,
        attempts: int = 4,
    ) -> None:
        self.pool = pool
        self.max_votes = max_votes
        self.max_running = max_running
        self.wait_s = wait_s
        self.attempts = attempts
        self.stats = GroupStats()
        self._waiting: deque[_Request] = deque()
        self._running = 0  # groups in flight
        self._busy: set[Pair] = set()  # their pairs
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()  # held: the loop keeps only weak refs

    async def submit(
        self, key: GroupKey, batch: PreparedVotes, solo: Callable[[], Awaitable[VoteCounts]]
    ) -> VoteCounts:
        """Store a validated batch with whatever else is waiting; its own counts once
        committed. `solo` redoes the request alone (see the module's docstring)."""
        loop = asyncio.get_running_loop()
        p = key.project_id
        pairs = frozenset((p, i, w) for i, w in zip(batch.items, batch.workers, strict=True))
        request = _Request(key, batch, pairs, solo, loop.create_future())
        self._waiting.append(request)
        self.stats.requests += 1
        self.stats.votes += len(batch.items)
        self._schedule()
        return await request.future

    def _schedule(self) -> None:
        if self._scheduled or not self._waiting or self._running >= self.max_running:
            return
        self._scheduled = True
        loop = asyncio.get_running_loop()
        # call_soon: after the callbacks already due this turn, e.g. other requests whose bodies
        # arrived in the same read from the sockets, so those join this group at no wait.
        if self.wait_s > 0:
            loop.call_later(self.wait_s, self._form)
        else:
            loop.call_soon(self._form)

    def _form(self) -> None:
        self._scheduled = False
        while self._running < self.max_running and self._waiting:
            group = self._take()
            if not group:
                break  # everything waiting names a pair of a running group
            self._running += 1
            for request in group:
                self._busy |= request.pairs
            self.stats.largest = max(self.stats.largest, len(group))
            task = asyncio.get_running_loop().create_task(self._run(group))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _take(self) -> list[_Request]:
        """The next group, in arrival order: requests that fit, skipping (for now) those that
        name a pair already taken, and any later one that names a pair of a skipped one."""
        group: list[_Request] = []
        taken: set[Pair] = set()
        blocked = set(self._busy)
        votes = 0
        kept: deque[_Request] = deque()
        while self._waiting:
            request = self._waiting.popleft()
            if request.future.done():  # its client went away before it was stored
                continue
            n = len(request.batch.items)
            if group and votes + n > self.max_votes:
                kept.append(request)
                kept.extend(self._waiting)
                self._waiting.clear()
                break
            if not request.pairs.isdisjoint(blocked) or not request.pairs.isdisjoint(taken):
                blocked |= request.pairs
                kept.append(request)
                continue
            group.append(request)
            taken |= request.pairs
            votes += n
        self._waiting = kept
        return group

    async def _run(self, group: list[_Request]) -> None:
        try:
            await self._store(group)
        except Exception as exc:  # told to each of the group's requests
            for request in group:
                if not request.future.done():
                    request.future.set_exception(exc)
        except asyncio.CancelledError:  # shutting down
            for request in group:
                request.future.cancel()
            raise
        finally:
            self._running -= 1
            for request in group:
                self._busy -= request.pairs
            self._schedule()

    async def _store(self, group: list[_Request]) -> None:
        for attempt in range(self.attempts):
            self.stats.statements += 1
            try:
                counts = await self._call(group)
            except psycopg.errors.TransactionRollback:  # class 40: rolled back whole; redo
                if attempt == self.attempts - 1:
                    break
                self.stats.deadlock_retries += 1
                await asyncio.sleep(random.uniform(0, 0.02 * (attempt + 1)))
                continue
            except psycopg.errors.LockNotAvailable:  # lock_timeout: someone's row is held
                self.stats.lock_timeouts += 1
                break
            except psycopg.Error as exc:
                if exc.sqlstate is None or exc.sqlstate.startswith("08"):
                    raise  # the connection, not a statement: nobody knows what was committed
                break  # the server refused the statement (and rolled it back): one by one
            for request, result in zip(group, counts, strict=True):
                if not request.future.done():
                    request.future.set_result(result)
            return
        self.stats.solo_fallbacks += 1
        await asyncio.gather(*(self._alone(request) for request in group))

    @staticmethod
    async def _alone(request: _Request) -> None:
        if request.future.done():
            return
        try:
            result = await request.solo()
        except Exception as exc:  # its own error, for its own request
            if not request.future.done():
                request.future.set_exception(exc)
        else:
            if not request.future.done():
                request.future.set_result(result)

    async def _call(self, group: list[_Request]) -> list[VoteCounts]:
        """One statement for the group: one call of the ingest function per project, in
        project-id order (so that groups lock projects' rows in one order), each call with its
        requests' votes in arrival order; each request's counts from its votes' outcomes."""
        if len(group) == 1:  # no one to share with: the plain call, its totals are the answer
            request = group[0]
            batch = request.batch
            async with self.pool.connection() as conn:
                row = await functions.ingest_votes(
                    conn,
                    project_id=request.key.project_id,
                    classes=request.key.classes,
                    items=batch.items,
                    workers=batch.workers,
                    labels=batch.labels,
                    ticks=batch.ticks,
                )
            return [vote_counts(row)]
        by_key: dict[GroupKey, list[_Request]] = {}
        for request in group:
            by_key.setdefault(request.key, []).append(request)
        keys = sorted(by_key, key=lambda k: (k.project_id, k.classes, k.task_type))
        calls = [_call_of(key, by_key[key]) for key in keys]
        async with self.pool.connection() as conn:
            rows = await functions.ingest_votes_many(conn, calls)
        answers: dict[int, VoteCounts] = {}
        for key, row in zip(keys, rows, strict=True):
            assert row.outcomes is not None
            start = 0
            for request in by_key[key]:
                n = len(request.batch.items)
                mine = row.outcomes[start : start + n]
                start += n
                answers[id(request)] = VoteCounts(
                    inserted=mine.count(OUTCOME_INSERTED),
                    updated=mine.count(OUTCOME_UPDATED),
                    unchanged=mine.count(OUTCOME_UNCHANGED),
                    votes_version=row.votes_version,
                )
        return [answers[id(request)] for request in group]


def _call_of(key: GroupKey, requests: list[_Request]) -> functions.IngestCall:
    batches = [r.batch for r in requests]
    multi = key.task_type == "multi_label"
    return functions.IngestCall(
        project_id=key.project_id,
        classes=key.classes,
        items=[i for b in batches for i in b.items],
        workers=[w for b in batches for w in b.workers],
        labels=None if multi else np.concatenate([b.labels for b in batches]),  # type: ignore[misc]
        ticks=[t for b in batches for t in b.ticks] if multi else None,  # type: ignore[union-attr]
        requests=[n for n, b in enumerate(batches) for _ in b.items],
    )
