"""One error base class for everything the service reports to a client.

Every error response has one JSON shape (the handlers live in app/api/error_handlers.py):

    {"error": "<machine-readable code>", "detail": "<human sentence>", "errors"?: [...],
     "request_id"?: "<the X-Request-ID of the request>"}

`errors` lists every bad row or field of a validation error: {"index", "field", "reason"}.
This module imports no web framework: the domain (ingest, fits, connectors) raises these too.
"""

from __future__ import annotations

from typing import Any


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


class Unauthorized(AppError):
    status = 401
    code = "unauthorized"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(AppError):
    status = 403
    code = "forbidden"


class NotFound(AppError):
    status = 404
    code = "not_found"


class Conflict(AppError):
    status = 409
    code = "conflict"


class PayloadTooLarge(AppError):
    status = 413
    code = "payload_too_large"


class ValidationFailed(AppError):
    status = 422
    code = "validation_error"

    @classmethod
    def field(cls, field: str, reason: str, detail: str | None = None) -> ValidationFailed:
        """One bad field (or query parameter), named in `errors`."""
        return cls(
            detail or f"Invalid {field!r}: {reason}.",
            errors=[{"index": None, "field": field, "reason": reason}],
        )


class RateLimited(AppError):
    status = 429
    code = "rate_limited"


class DatabaseUnavailable(AppError):
    status = 503
    code = "database_unavailable"

    def __init__(self) -> None:
        super().__init__(
            "The database is unreachable; retry shortly.", headers={"Retry-After": "1"}
        )


class DatabaseTimeout(AppError):
    """The database cancelled a statement that ran past its time limit."""

    status = 503
    code = "database_timeout"

    def __init__(self) -> None:
        super().__init__(
            "The database cancelled the statement for taking too long; retry, or send less.",
            headers={"Retry-After": "5"},
        )


class FitPending(AppError):
    """No fit exists yet for a large project; a worker is computing the first one."""

    status = 503
    code = "fit_pending"

    def __init__(self, method: str) -> None:
        super().__init__(
            f"The {method} model for this project is being fitted for the first time; "
            "retry in a few seconds.",
            headers={"Retry-After": "5"},
        )


class FitsBusy(AppError):
    """This API process already runs as many in-request fits as it may; retry shortly."""

    status = 503
    code = "fits_busy"

    def __init__(self) -> None:
        super().__init__(
            "The server is busy fitting other requests' models; retry in a few seconds.",
            headers={"Retry-After": "2"},
        )


class ToolUnreachable(AppError):
    """A labeling tool the service calls (a connector's sync) failed or could not be reached."""

    status = 502
    code = "tool_unreachable"


class InternalError(AppError):
    status = 500
    code = "internal_error"


def error_body(
    code: str, detail: str, errors: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"error": code, "detail": detail}
    if errors is not None:
        body["errors"] = errors
    return body


def plural(n: int, one: str, many: str | None = None) -> str:
    """'1 vote is', '3 votes are': counts in messages read as sentences."""
    return f"{n} {one if n == 1 else (many or one + 's')}"
