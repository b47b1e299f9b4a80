"""What one API process holds for its lifetime: the engine (sync SQLAlchemy, most routes), an
async psycopg pool (the vote write path, which must not cost a thread hop per request), the
queue it defers on, and the per-process caches: models, key lookups, projects, rate limits.
Built by create_app's lifespan; routes reach each through an `Annotated` dependency
(app/api/deps.py), never through app.state directly."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import procrastinate
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.auth.bootstrap import secret_value
from app.auth.keys import KeyStore
from app.auth.ratelimit import RateLimiter
from app.config import Settings
from app.db.session import libpq_url, make_engine, make_sessionmaker
from app.labels.fits import SyncBudget
from app.labels.items import OrderCache
from app.tasks import make_queue
from app.training.serving import ModelCache
from app.votes.group_commit import MAX_RUNNING, lock_timeout_options
from app.votes.lanes import VoteLanes
from app.votes.project_cache import ProjectCache


@dataclass
class Services:
    settings: Settings
    engine: Engine
    sessionmaker: sessionmaker[Session]
    queue: procrastinate.App
    models: ModelCache
    keys: KeyStore
    limiter: RateLimiter
    pool: AsyncConnectionPool  # the vote write path's interactive lane, and project lookups
    group_pool: (
        AsyncConnectionPool  # its group commit: short lock waits (app/votes/group_commit.py)
    )
    bulk_pool: AsyncConnectionPool  # its bulk lane: one connection per large batch written
    projects: ProjectCache
    votes: VoteLanes  # the vote write path (app/votes/lanes.py)
    item_orders: OrderCache  # GET /items: computed sort orders, pinned by cursors
    fit_budget: SyncBudget  # what a fit inside a request may cost (app/labels/fits.py)

    @classmethod
    def open(cls, settings: Settings) -> Services:
        url = settings.database_url or ""
        engine = make_engine(url)
        # Autocommit: a vote batch is one statement, hence its own transaction. Opened by
        # `start`, inside the event loop that will use them.
        pool = AsyncConnectionPool(
            libpq_url(url),
            min_size=1,
            max_size=settings.write_pool_size,
            kwargs={"autocommit": True},
            open=False,
        )
        group_pool = AsyncConnectionPool(
            libpq_url(url),
            min_size=1,
            max_size=MAX_RUNNING,
            kwargs={"autocommit": True, "options": lock_timeout_options()},
            open=False,
        )
        bulk_pool = AsyncConnectionPool(
            libpq_url(url),
            min_size=0,
            max_size=settings.bulk_concurrency,
            timeout=settings.bulk_wait_s,
            kwargs={"autocommit": True},
            open=False,
        )
        projects = ProjectCache()
        return cls(
            settings=settings,
            engine=engine,
            sessionmaker=make_sessionmaker(engine),
            # Only ever defers, on the request's own connection: its pool is never opened.
            queue=make_queue(libpq_url(url)),
            models=ModelCache(),
            keys=KeyStore(settings.key_cache_ttl_s, secret_value(settings.admin_key)),
            limiter=RateLimiter(
                settings.rate_limit_per_s, settings.rate_limit_burst, settings.api_processes
            ),
            pool=pool,
            group_pool=group_pool,
            bulk_pool=bulk_pool,
            projects=projects,
            votes=VoteLanes(
                pool,
                group_pool,
                bulk_pool,
                projects,
                group_max_votes=settings.group_commit_max_votes,
                group_wait_s=settings.group_commit_wait_ms / 1000,
                bulk_min_votes=settings.bulk_min_votes,
                batch_concurrency=settings.batch_concurrency,
            ),
            item_orders=OrderCache(),
            fit_budget=SyncBudget(
                settings.fit_sync_max_work,
                settings.fit_sync_max_s,
                threading.BoundedSemaphore(settings.fit_concurrency),
            ),
        )

    async def start(self) -> None:
        await self.pool.open()
        await self.group_pool.open()
        await self.bulk_pool.open()

    async def close(self) -> None:
        await self.bulk_pool.close()
        await self.group_pool.close()
        await self.pool.close()
        self.engine.dispose()
