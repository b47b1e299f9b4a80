"""The error responses documented on every route behind a key (create_app adds them), all in
the one error shape (app/errors.py)."""

from __future__ import annotations

from typing import Any

from app.api.schemas import ErrorBody


def _error(description: str, **extra: Any) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description, **extra}


# Documented on every route behind a key (create_app adds them): the errors of access control
# and those any route may give, all in the one error shape (app/errors.py).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error("The body could not be read (e.g. not UTF-8)."),
    401: _error("No valid API key (`Authorization: Bearer <key>`)."),
    403: _error("The key's scopes do not allow this endpoint."),
    404: _error("No such project or resource (or one the key does not cover)."),
    409: _error("Conflicts with the current state (e.g. a name taken, a job already ended)."),
    413: _error("The body (or the batch in it) is over the size limit: split it."),
    422: _error("Invalid request: every bad field is listed in `errors`."),
    429: _error(
        "Too many requests for this key.",
        headers={"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}},
    ),
    503: _error("The database is unreachable; retry shortly."),
}
