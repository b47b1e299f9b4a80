"""The handler set: every error the API returns has the one shape of app/errors.py.

Registered once by create_app. Anything not handled here (a bug) is answered 500 in the same
shape, with the request id, by app/logging.py's RequestContext, which also logs the traceback.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.aggregation.params import ParamError
from app.errors import (
    AppError,
    DatabaseTimeout,
    DatabaseUnavailable,
    ValidationFailed,
    error_body,
    plural,
)

log = logging.getLogger(__name__)

QUERY_CANCELED = "57014"
# Class 08 (connection exception) and the server going away or not accepting connections yet.
SERVER_GONE = {"57P01", "57P02", "57P03"}


def connection_lost(sqlstate: str | None) -> bool:
    """A failure to reach the server (no SQLSTATE: the connection never answered) or to keep
    the connection, as opposed to an error the server reported about a statement."""
    return sqlstate is None or sqlstate.startswith("08") or sqlstate in SERVER_GONE


# Top-level lists whose elements are the "rows" of a batch: errors there carry the row index.
BATCH_FIELDS = ("votes", "items", "features")
# What each batch endpoint's body looks like, for the hint when a body has the wrong shape.
BODY_SHAPES = {
    "votes": '{"votes": [{"item": "...", "worker": "...", "label": "..."}]}',
    "items": '{"items": [{"id": "...", "features": [...], "gold": "..."}]}',
}


def _loc_to_row(loc: tuple[int | str, ...]) -> dict[str, Any]:
    """("body", "votes", 3, "label") -> index 3, field "label"; other paths become dotted fields."""
    parts = [p for p in loc if p not in ("body", "query", "path")]
    if len(parts) >= 2 and parts[0] in BATCH_FIELDS and isinstance(parts[1], int):
        return {"index": parts[1], "field": ".".join(map(str, parts[2:])) or None}
    return {"index": None, "field": ".".join(map(str, parts)) or None}


def _body_hint(request: Request, err: dict[str, Any]) -> str | None:
    """A sentence saying what the body should look like, when it is not an object at all."""
    if tuple(err.get("loc", ())) != ("body",) or err.get("type") not in (
        "model_attributes_type",
        "dict_type",
        "missing",
    ):
        return None
    content_type = request.headers.get("content-type", "")
    if "json" not in content_type:
        return f"send the body as JSON with `Content-Type: application/json` (got {content_type!r})"
    shape = next((s for k, s in BODY_SHAPES.items() if request.url.path.endswith(k)), None)
    return f"the body must be a JSON object{f' such as {shape}' if shape else ''}"


def validation_errors(request: Request, exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors():
        row = _loc_to_row(tuple(err.get("loc", ())))
        if err.get("type") == "json_invalid":
            row = {"index": None, "field": "body"}
        hint = _body_hint(request, err)
        if hint:
            row = {"index": None, "field": "body"}
        out.append({**row, "reason": hint or err.get("msg", "invalid")})
    return out


def _json(exc: AppError) -> JSONResponse:
    return JSONResponse(
        error_body(exc.code, exc.detail, exc.errors), status_code=exc.status, headers=exc.headers
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(_: Request, exc: AppError) -> JSONResponse:
        return _json(exc)

    @app.exception_handler(ParamError)
    async def _param_error(_: Request, exc: ParamError) -> JSONResponse:
        # Raised by the aggregation layer (which knows no HTTP) for a bad method parameter.
        return _json(
            ValidationFailed.field(
                exc.field, exc.reason, f"Invalid method parameter {exc.field!r}: {exc.reason}."
            )
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = validation_errors(request, exc)
        malformed = any(e.get("type") == "json_invalid" for e in exc.errors())
        code = "malformed_json" if malformed else "validation_error"
        detail = (
            "The request body is not valid JSON."
            if malformed
            else f"The request has {plural(len(errors), 'invalid field')}; see `errors`."
        )
        return JSONResponse(error_body(code, detail, errors), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {
            400: "malformed_body",
            404: "not_found",
            405: "method_not_allowed",
            413: "payload_too_large",
        }
        code = codes.get(exc.status_code, "http_error")
        detail = exc.detail if isinstance(exc.detail, str) else "HTTP error"
        if exc.status_code == 404 and detail == "Not Found":
            path = request.url.path
            detail = "No such endpoint." + (
                f" Did you mean {path.rstrip('/')!r} (no trailing slash)?"
                if path.endswith("/") and len(path) > 1
                else ""
            )
        return JSONResponse(
            error_body(code, detail),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    # Only a lost or refused connection is "database unavailable" (503); a statement the server
    # cancelled (statement timeout) is a 503 of its own; any other database error is a bug and
    # surfaces as one (a 500 with its traceback in the log), not dressed up as an outage.
    @app.exception_handler(OperationalError)
    async def _db_error(request: Request, exc: OperationalError) -> JSONResponse:
        return await _psycopg_error(request, exc.orig if exc.orig is not None else exc)

    # The async write path talks psycopg directly (app/votes/ingest.py).
    @app.exception_handler(psycopg.OperationalError)
    async def _psycopg_error(request: Request, exc: BaseException) -> JSONResponse:
        sqlstate = getattr(exc, "sqlstate", None)
        if connection_lost(sqlstate):
            log.warning("database unavailable: %s", type(exc).__name__)
            return _json(DatabaseUnavailable())
        if sqlstate == QUERY_CANCELED:
            log.warning("database statement cancelled: %s", exc)
            return _json(DatabaseTimeout())
        raise exc  # a bug: RequestContext (app/logging.py) answers 500 and logs the traceback
