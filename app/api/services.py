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
    pool: AsyncConnectionPool
    projects: ProjectCache
    item_orders: OrderCache  # GET /items: computed sort orders, pinned by cursors
    fit_budget: SyncBudget  # what a fit inside a request may cost (app/labels/fits.py)

    @classmethod
    def open(cls, settings: Settings) -> Services:
        url = settings.database_url or ""
        engine = make_engine(url)
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
            # Autocommit: a vote batch is one statement, hence its own transaction. Opened by
            # `start`, inside the event loop that will use it.
            pool=AsyncConnectionPool(
                libpq_url(url),
                min_size=1,
                max_size=settings.write_pool_size,
                kwargs={"autocommit": True},
                open=False,
            ),
            projects=ProjectCache(),
            item_orders=OrderCache(),
            fit_budget=SyncBudget(
                settings.fit_sync_max_work,
                settings.fit_sync_max_s,
                threading.BoundedSemaphore(settings.fit_concurrency),
            ),
        )

    async def start(self) -> None:
        await self.pool.open()

    async def close(self) -> None:
        await self.pool.close()
        self.engine.dispose()
