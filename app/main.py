"""create_app(): routers, error handlers, body limit, and the engine's lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.api import analytics, health, keys, methods, projects, soft_labels, training, votes
from app.api.deps import ERROR_RESPONSES
from app.auth import KeyStore, RateLimiter, refuse_open_no_auth, secret_value
from app.config import Settings, get_settings
from app.db.session import libpq_url, make_engine, make_sessionmaker
from app.errors import install_error_handlers
from app.limits import BodySizeLimit
from app.logging import RequestContext
from app.training.queue import make_queue


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    if not settings.database_url:
        raise RuntimeError(
            "create_app needs settings.database_url; `softlabels serve` starts an embedded "
            "PostgreSQL and fills it in when DATABASE_URL is unset."
        )
    refuse_open_no_auth(settings.auth, settings.host)  # access control: --no-auth on loopback only

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url)  # type: ignore[arg-type]
        app.state.engine = engine
        app.state.sessionmaker = make_sessionmaker(engine)
        # Only ever defers, on the request's own connection: its pool is never opened.
        app.state.queue = make_queue(libpq_url(settings.database_url))  # type: ignore[arg-type]
        app.state.models = training.ModelCache()
        try:
            yield
        finally:
            engine.dispose()

    app = FastAPI(
        title="softlabels",
        version="0.1.0",
        summary="Store crowd votes, serve soft labels, train on them.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    # Access control (app/auth.py, app/api/deps.py): key-lookup cache, per-key rate limits.
    app.state.keys = KeyStore(settings.key_cache_ttl_s, secret_value(settings.admin_key))
    app.state.limiter = RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
    install_error_handlers(app)
    for module in (health, projects, votes, soft_labels, analytics, methods, training, keys):
        # Access control: document the shared errors (401/403/404/422/429/503) on keyed routes.
        app.include_router(module.router, responses=None if module is health else ERROR_RESPONSES)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContext)  # outermost: X-Request-ID, access log (app/logging.py)
    return app
