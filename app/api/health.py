"""GET /healthz: 200 once the database is reachable and migrated, 503 otherwise. No auth."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from app.db.migrate import is_current
from app.errors import error_body

router = APIRouter(tags=["health"])


@router.get("/healthz", responses={503: {"description": "Database down or not migrated."}})
def healthz(request: Request) -> JSONResponse:
    state = request.app.state
    try:
        migrated = is_current(state.engine, state.settings.database_url)
    except (SQLAlchemyError, OSError):
        return JSONResponse(
            error_body("database_unavailable", "The database is unreachable."), status_code=503
        )
    if not migrated:
        return JSONResponse(
            error_body("database_not_migrated", "Run `softlabels migrate` first."),
            status_code=503,
        )
    return JSONResponse({"status": "ok"})
