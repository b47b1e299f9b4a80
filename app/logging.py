"""Structured logs: one JSON object per line, each carrying the request id of its request.

`RequestContext` (pure ASGI) gives every request an id (the client's `X-Request-ID` when it is a
sane token, else a new one), returns it in the `X-Request-ID` response header, and writes one
access line per request. What is logged is deliberately narrow: the route *template* (never the
raw path or query string), the project and job from the path, the status, the duration and the
key's id. Never a header (so never a key), never a body (so never a vote).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import time
import uuid
from contextvars import ContextVar
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import error_body

log = logging.getLogger("softlabels.errors")
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
access_log = logging.getLogger("softlabels.access")

HEADER = b"x-request-id"
_SANE_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
# Extra fields a log call may attach (logger.info(..., extra={"http": {...}})); any other
# `extra` key is dropped from the JSON line.
EXTRA_FIELDS = ("http", "connector")
QUIET_PATHS = ("/healthz",)  # polled by load balancers and tests: logged at DEBUG


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = getattr(record, "request_id", None)
        if rid:
            out["request_id"] = rid
        for name in EXTRA_FIELDS:
            if hasattr(record, name):
                out[name] = getattr(record, name)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        # orjson: a tenth of json.dumps' time, and one line per request is written (the access
        # log cost a single vote ~7% of its API CPU); json.dumps for what orjson refuses (a
        # lone surrogate in a path, an int past 64 bits).
        try:
            return orjson.dumps(out, default=str).decode()
        except TypeError:
            return json.dumps(out, default=str)


class RequestIdFilter(logging.Filter):
    """Stamp each record with the request id of the request it was logged in (if any)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id.get()
        return True


def configure_logging(level: int = logging.INFO) -> None:
    """JSON lines on stderr for everything (uvicorn's loggers included, its access log off)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # ours has the request id, no query
    logging.getLogger("procrastinate").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # /healthz checks the migration


def internal_error_body(rid: str | None) -> dict[str, Any]:
    body = error_body(
        "internal_error",
        "An unexpected error occurred; it has been logged. Quote the request id when reporting it.",
    )
    body["request_id"] = rid
    return body


async def send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class RequestContext:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(HEADER)
        rid = given.decode() if given and _SANE_ID.match(given) else uuid.uuid4().hex
        token = request_id.set(rid)
        status = 500  # if the app dies before it answers
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != HEADER]
                message = {**message, "headers": [*headers, (HEADER, rid.encode())]}
            await send(message)

        started_response = False

        async def send_tracked(message: Message) -> None:
            nonlocal started_response
            started_response = started_response or message["type"] == "http.response.start"
            await send_with_id(message)

        try:
            await self.app(scope, receive, send_tracked)
        except Exception:
            # The one catch-all: a bug anywhere below answers 500 in the one error shape, with
            # the request id, and its traceback goes to the log (never to the client).
            log.exception("unhandled error in %s %s", scope["method"], scope.get("path"))
            if started_response:
                raise  # half a response is out; the server can only drop the connection
            status = 500
            await send_json(send_with_id, 500, internal_error_body(rid))
        finally:
            self._log(scope, status, time.perf_counter() - started)
            request_id.reset(token)

    @staticmethod
    def _log(scope: Scope, status: int, seconds: float) -> None:
        route = scope.get("route")
        params = scope.get("path_params") or {}
        caller = (scope.get("state") or {}).get("caller")
        http: dict[str, Any] = {
            "method": scope["method"],
            "route": getattr(route, "path", None),  # the template, e.g. /v1/projects/{project}
            "status": status,
            "ms": round(seconds * 1000, 2),
            "key_id": getattr(caller, "key_id", None),
        }
        for name in ("project", "job_id"):
            if name in params:
                http[name] = params[name]
        quiet = scope.get("path") in QUIET_PATHS and status < 400
        access_log.log(
            logging.DEBUG if quiet else logging.INFO,
            "%s %s %s",
            scope["method"],
            http["route"] or "(no route)",
            status,
            extra={"http": http, "request_id": request_id.get()},
        )
