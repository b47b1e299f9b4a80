"""One error base class and one JSON shape for every error the API returns:

    {"error": "<machine-readable code>", "detail": "<human sentence>", "errors"?: [...]}

`errors` lists every bad row or field of a validation error: {"index", "field", "reason"}.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class AppError(Exception):
    status = 400
    code = "bad_request"

    def __init__(
        self,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.headers = headers


class NotFound(AppError):
    status = 404
    code = "not_found"


class Conflict(AppError):
    status = 409
    code = "conflict"


class ValidationFailed(AppError):
    status = 422
    code = "validation_error"


class PayloadTooLarge(AppError):
    status = 413
    code = "payload_too_large"


class FitPendingError(AppError):
    status = 503
    code = "fit_pending"


class DatabaseUnavailable(AppError):
    status = 503
    code = "database_unavailable"


def error_body(
    code: str, detail: str, errors: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"error": code, "detail": detail}
    if errors is not None:
        body["errors"] = errors
    return body


# Top-level lists whose elements are the "rows" of a batch: errors there carry the row index.
BATCH_FIELDS = ("votes", "items", "features")


def _loc_to_row(loc: tuple[int | str, ...]) -> dict[str, Any]:
    """("body", "votes", 3, "label") -> index 3, field "label"; other paths become dotted fields."""
    parts = [p for p in loc if p not in ("body", "query", "path")]
    if len(parts) >= 2 and parts[0] in BATCH_FIELDS and isinstance(parts[1], int):
        return {"index": parts[1], "field": ".".join(map(str, parts[2:])) or None}
    return {"index": None, "field": ".".join(map(str, parts)) or None}


def validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors():
        row = _loc_to_row(tuple(err.get("loc", ())))
        if err.get("type") == "json_invalid":
            row = {"index": None, "field": "body"}
        out.append({**row, "reason": err.get("msg", "invalid")})
    return out


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(_: Request, exc: AppError) -> JSONResponse:
        return JSONResponse(
            error_body(exc.code, exc.detail, exc.errors),
            status_code=exc.status,
            headers=exc.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = validation_errors(exc)
        malformed = any(e["field"] == "body" for e in errors)
        code = "malformed_json" if malformed else "validation_error"
        detail = (
            "The request body is not valid JSON."
            if malformed
            else f"The request has {len(errors)} invalid field(s); see `errors`."
        )
        return JSONResponse(error_body(code, detail, errors), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {
            400: "malformed_body",
            404: "not_found",
            405: "method_not_allowed",
            413: "payload_too_large",
        }
        code = codes.get(exc.status_code, "http_error")
        detail = exc.detail if isinstance(exc.detail, str) else "HTTP error"
        if exc.status_code == 404 and detail == "Not Found":
            detail = "No such endpoint."
        return JSONResponse(
            error_body(code, detail),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    # Only connection-level failures map to 503; any other database error is a bug and must
    # surface as one (a 500 in the logs), not be dressed up as the client's fault.
    @app.exception_handler(OperationalError)
    async def _db_down(_: Request, exc: DBAPIError) -> JSONResponse:
        log.warning("database unavailable: %s", type(exc.orig).__name__ if exc.orig else exc)
        return JSONResponse(
            error_body("database_unavailable", "The database is unreachable; retry shortly."),
            status_code=503,
            headers={"Retry-After": "1"},
        )
