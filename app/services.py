"""What one API process holds for its lifetime: the engine, the queue it defers on, the model
cache, the key-lookup cache and the rate limiter. Built by create_app's lifespan; routes reach
each through an `Annotated` dependency (app/api/deps.py), never through app.state directly."""

from __future__ import annotations

from dataclasses import dataclass

import procrastinate
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.auth.bootstrap import secret_value
from app.auth.keys import KeyStore
from app.auth.ratelimit import RateLimiter
from app.config import Settings
from app.db.session import libpq_url, make_engine, make_sessionmaker
from app.tasks import make_queue
from app.training.serving import ModelCache


@dataclass
class Services:
    settings: Settings
    engine: Engine
    sessionmaker: sessionmaker[Session]
    queue: procrastinate.App
    models: ModelCache
    keys: KeyStore
    limiter: RateLimiter

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
            limiter=RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst),
        )

    def close(self) -> None:
        self.engine.dispose()
