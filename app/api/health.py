"""GET /healthz: 200 once the database is reachable and migrated, 503 otherwise. No auth."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from app.api.deps import EngineDep, SettingsDep
from app.db.migrate import is_current
from app.errors import DatabaseUnavailable, error_body

router = APIRouter(tags=["health"])


@router.get("/healthz", responses={503: {"description": "Database down or not migrated."}})
def healthz(engine: EngineDep, settings: SettingsDep) -> JSONResponse:
    try:
        migrated = is_current(engine, settings.database_url or "")
    except (SQLAlchemyError, OSError):
        down = DatabaseUnavailable()
        return JSONResponse(error_body(down.code, down.detail), status_code=503)
    if not migrated:
        return JSONResponse(
            error_body("database_not_migrated", "Run `softlabels migrate` first."),
            status_code=503,
        )
    return JSONResponse({"status": "ok"})
