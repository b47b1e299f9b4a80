"""create_app(): routers, error handlers, body limit, and the services' lifespan."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.api import (
    analytics,
    connectors,
    health,
    imports,
    items,
    keys,
    methods,
    metrics,
    model_loop,
    predict,
    projects,
    soft_labels,
    sweeps,
    training,
    votes,
    webhooks,
)
from app.api.error_handlers import install_error_handlers
from app.api.limits import BodySizeLimit
from app.api.paths import RawPathRouting
from app.api.responses import ERROR_RESPONSES
from app.api.services import Services
from app.auth.bootstrap import refuse_open_no_auth
from app.config import Settings, get_settings
from app.logging import RequestContext
from app.ui import install_ui

# The items router comes last: its /items/{item} must not shadow /items/next. Routes are
# matched in order, and votes (the hot path: one request per annotation) come first.
ROUTERS = (
    health,
    votes,
    projects,
    soft_labels,
    analytics,
    methods,
    training,
    predict,
    sweeps,
    model_loop,
    keys,
    metrics,
    connectors,
    imports,
    webhooks,
    items,
)


def create_app(
    settings: Settings | None = None, *, after_shutdown: Callable[[], None] | None = None
) -> FastAPI:
    """`after_shutdown`: for `serve`'s processes only, which must end once stopped even while a
    thread still runs a request's work (app/cli/serverctl.py passes `exit_soon`)."""
    settings = settings or get_settings()
    if not settings.database_url:
        raise RuntimeError(
            "create_app needs settings.database_url; `softlabels serve` starts an embedded "
            "PostgreSQL and fills it in when DATABASE_URL is unset."
        )
    refuse_open_no_auth(settings.auth, settings.host)  # access control: --no-auth on loopback only

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = Services.open(settings)
        await services.start()
        app.state.services = services  # read only by app/api/deps.py
        # What start-up made lives as long as the process: out of the collector's sight, so a
        # full collection that a large export's allocations trigger does not walk it each time.
        # The 10k-item JSONL export went from 0.18-0.21 s to 0.06 s (benchmarks/export_time.py);
        # it was 0.07-0.08 s while torch's import filled the heap and made full collections rare.
        gc.freeze()
        try:
            yield
        finally:
            await services.close()
            if after_shutdown is not None:
                after_shutdown()

    app = FastAPI(
        title="softlabels",
        version="0.1.0",
        summary="Store crowd votes, serve soft labels, train on them.",
        lifespan=lifespan,
        # `/v1/projects/` is a 404 that names the right path (app/api/error_handlers.py), not
        # an empty 307 that clients may not follow for a POST.
        redirect_slashes=False,
        docs_url=None,  # /docs and /redoc are served from packaged assets (app/ui)
        redoc_url=None,
    )
    install_error_handlers(app)
    for module in ROUTERS:
        # Access control: document the shared errors (401/403/404/422/429/503) on keyed routes.
        app.include_router(module.router, responses=None if module is health else ERROR_RESPONSES)
    install_ui(app)  # the dashboard at /ui, offline /docs and /redoc
    # Innermost: routing sees each path segment as sent, so an id holding "/" stays one id.
    app.add_middleware(RawPathRouting)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContext)  # outermost: X-Request-ID, access log, the 500 catch-all
    return app
