"""[2. stored] The API's vote write path, in two lanes: interactive (single votes and small
batches, group-committed) and bulk (large batches, admitted one at a time per process).

Why lanes. A single vote is cheap once group-committed; a 5,000-vote batch keeps one PostgreSQL
backend busy for ~150 ms of CPU (and costs this process ~25 ms, parsing and validating it in the
event loop). Before, every batch took a connection of the one pool and ran at once: four clients
importing 5,000-vote batches ran four such backends on a 2-core machine, and single votes waited
for the CPU behind them. The lanes:
- interactive: up to `group_max_votes` votes, group commit (app/votes/group_commit.py) on
  `group_pool` (connections that stop waiting for a row lock after a moment: the group is then
  redone request by request, on `pool`); batches between that and `bulk_min_votes`, a
  statement each on `pool`;
- bulk: from `bulk_min_votes` votes, `bulk_pool`, whose size (`bulk_concurrency`, 1) is the
  admission limit: a large batch that finds it taken waits for its turn there, holding no
  interactive connection, and the single votes keep the other core.
- the batches in between take turns too (`batch_concurrency`, 1 at a time per process): in
  benchmarks/load.py (32 clients; single votes, 20-500-vote batches, reads, exports; 2 API
  processes on 2 cores, 2026-12-04) they ran at 168, 167-187 and 174 req/s with 1, 2 and 4 at once
  (CPU-bound: the same work), and the single votes' p99 was 150, 255-289 and 338 ms: every
  batch more in PostgreSQL at once is a backend more before the single votes in the CPU queue.

The limit counts batches, not votes: a backend writing a large batch takes a whole core whatever
the batch's size. Measured with benchmarks/interference.py (wrk, 16 connections, single votes;
4 clients posting 5,000-vote batches without pause; 20 s phases; the shared 2-core machine at
load 4-7; benchmarks/results/interference.md, 2026-12-04), single-vote p99 alone -> under bulk,
and bulk votes/s alone / under the single votes:
- before (main 22d8cf8, one pool, no limit): 115 -> 397 ms (3.45x); 23.2k / 12.8k votes/s,
  with single votes at 102 req/s;
- bulk_concurrency 1: 57 -> 101 ms (1.77x); 20.9k / 8.5k votes/s, single votes at 717 req/s;
- bulk_concurrency 4 (every bulk client at once): 72 -> 303 ms (4.19x); 24.1k / 15.3k votes/s,
  single votes at 271 req/s; 2 (a 10 s run): 60 -> 303 ms (5.0x).
One batch at a time is the only setting that keeps single votes within 2x of their p99 alone;
an import then gets what the single votes leave (on 2 cores: one, shared), and alone it loses
little (20.9k against 24.1k votes/s with four at once: the backend, not the admission, is the
bound). With more cores, raise `bulk_concurrency` (each API process has its own limit).
Not done: parsing and validating a large body off the event loop (~25 ms per 5,000 votes):
the p99 under bulk is within its goal without it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import psycopg.errors
from psycopg_pool import AsyncConnectionPool

from app.db import functions
from app.db.functions import CLASSES_CHANGED, NO_PROJECT
from app.errors import ValidationFailed
from app.votes.group_commit import GroupCommitter, GroupKey
from app.votes.ingest import PreparedVotes, VoteCounts, prepare_votes, vote_counts
from app.votes.project_cache import ProjectCache, ProjectRef
from app.votes.records import VoteIn


@dataclass
class BulkStats:
    """Per process, since start: the bulk lane's batches and votes, and how many wait for
    their turn or are being written now."""

    requests: int = 0
    votes: int = 0
    waiting: int = 0
    running: int = 0


class VoteLanes:
    """`store` validates a batch against the cached project and writes it in its lane:
    - at most `group_max_votes` votes: the interactive lane's group commit (`group_pool`);
    - at least `bulk_min_votes`: the bulk lane, `bulk_pool`, whose size is how many large
      batches this process writes at once; the others wait for a connection (up to
      `bulk_wait_s`), never for one of the interactive lane's;
    - in between: one statement of its own on the interactive pool, `batch_concurrency` at
      a time.
    """

    def __init__(
        self,
        pool: AsyncConnectionPool,
        group_pool: AsyncConnectionPool,
        bulk_pool: AsyncConnectionPool,
        projects: ProjectCache,
        *,
        group_max_votes: int = 32,
        group_wait_s: float = 0.0,
        bulk_min_votes: int = 1000,
        batch_concurrency: int = 1,
        attempts: int = 4,
    ) -> None:
        self.pool = pool
        self.bulk_pool = bulk_pool
        self.projects = projects
        self.group_max_votes = group_max_votes
        self.bulk_min_votes = bulk_min_votes
        self.attempts = attempts
        self.committer = GroupCommitter(group_pool, wait_s=group_wait_s)
        self.bulk = BulkStats()
        self.batch_turns = asyncio.Semaphore(batch_concurrency)

    async def store(self, name: str, votes: Sequence[VoteIn]) -> VoteCounts:
        ref, batch = await self._validated(name, votes)
        n = len(votes)
        if n <= self.group_max_votes:
            key = GroupKey(ref.id, ref.classes, ref.task_type)
            return await self.committer.submit(
                key, batch, lambda: self._alone(name, votes, self.pool)
            )
        if n < self.bulk_min_votes:
            async with self.batch_turns:
                return await self._alone(name, votes, self.pool, (ref, batch))
        self.bulk.requests += 1
        self.bulk.votes += n
        self.bulk.waiting += 1
        try:
            return await self._alone(name, votes, self.bulk_pool, (ref, batch), self.bulk)
        finally:
            self.bulk.waiting -= 1

    async def _validated(
        self, name: str, votes: Sequence[VoteIn], retry_stale: bool = True
    ) -> tuple[ProjectRef, PreparedVotes]:
        ref, cached = await self.projects.lookup(self.pool, name)
        try:
            return ref, prepare_votes(ref.classes, votes, ref.task_type)
        except ValidationFailed:
            if not (cached and retry_stale):
                raise
        # A label unknown to a cached class list (or task type) may be known to the current
        # one (PATCH in another process): check once more against a fresh lookup.
        self.projects.forget(name)
        ref = await self.projects.get(self.pool, name)
        return ref, prepare_votes(ref.classes, votes, ref.task_type)

    async def _alone(
        self,
        name: str,
        votes: Sequence[VoteIn],
        pool: AsyncConnectionPool,
        first: tuple[ProjectRef, PreparedVotes] | None = None,
        bulk: BulkStats | None = None,
    ) -> VoteCounts:
        """One statement for this batch alone (an autocommit connection: the function call is
        its own transaction, all or nothing). Retried whole: a deadlock victim or an item
        deleted mid-batch (SQLSTATE class 40, rare: every writer locks in one order), and a
        stale cache entry (the project was
        deleted or its classes changed elsewhere), once."""
        stale_retry = True
        for attempt in range(self.attempts):
            if first is not None:
                (ref, batch), first = first, None
            else:
                ref, batch = await self._validated(name, votes, stale_retry)
            try:
                async with pool.connection() as conn, _running(bulk):
                    row = await functions.ingest_votes(
                        conn,
                        project_id=ref.id,
                        classes=ref.classes,
                        items=batch.items,
                        workers=batch.workers,
                        labels=batch.labels,
                        ticks=batch.ticks,
                    )
                return vote_counts(row)
            except psycopg.errors.TransactionRollback:  # SQLSTATE class 40: safe to redo
                if attempt == self.attempts - 1:
                    raise
                await asyncio.sleep(random.uniform(0, 0.02 * (attempt + 1)))
            except psycopg.Error as exc:
                if exc.sqlstate not in (NO_PROJECT, CLASSES_CHANGED) or not stale_retry:
                    raise
                self.projects.forget(name)
                stale_retry = False
        raise AssertionError("unreachable")


@asynccontextmanager
async def _running(bulk: BulkStats | None) -> AsyncIterator[None]:
    """Count a bulk batch as running (not waiting) while it holds its connection."""
    if bulk is None:
        yield
        return
    bulk.waiting -= 1
    bulk.running += 1
    try:
        yield
    finally:
        bulk.running -= 1
        bulk.waiting += 1
