"""Ids in paths reach exactly the item or worker they name, whatever characters they hold.

Item ids are often file paths ("train/cat_01.jpg"). The ASGI server percent-decodes the path
before routing, so `/items/amb%2Fvotes%2Fw0` (item "amb/votes/w0") and
`/items/amb/votes/w0` (worker w0's vote on item "amb") arrive as the same string, and a
greedy route picks one of them: a well-formed DELETE then removed the wrong vote.

`RawPathRouting` routes on the path as sent instead: it decodes each "/"-separated segment on
its own and re-encodes any "/" and "%" inside it, so a segment can never split into two. The
`id` convertor (one segment) decodes those two back. Clients encode ids with
`encodeURIComponent` / `quote(id, safe="")`, as the Python client and the dashboard do.
"""

from __future__ import annotations

from urllib.parse import unquote

from starlette.convertors import Convertor, register_url_convertor
from starlette.types import ASGIApp, Receive, Scope, Send


def _segment(raw: str) -> str:
    return unquote(raw, errors="replace").replace("%", "%25").replace("/", "%2F")


def routing_path(raw_path: bytes) -> str:
    """`/a%2Fb/c` -> `/a%2Fb/c` with every other escape decoded; "/" and "%" inside a segment
    stay encoded."""
    return "/".join(_segment(s) for s in raw_path.decode("utf-8", "replace").split("/"))


class RawPathRouting:
    """Pure ASGI middleware: route on the path the client sent, segment by segment."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path") if scope["type"] == "http" else None
        if raw:  # absent only with servers that do not keep it; then routing is as before
            # In place: the access log (outer middleware) reads the route the router sets here.
            scope["path"] = routing_path(raw)
        await self.app(scope, receive, send)


class IdConvertor(Convertor[str]):
    """One path segment holding any item or worker id: "/" and "%" arrive as %2F and %25."""

    regex = r"[^/]+"

    def convert(self, value: str) -> str:
        return unquote(value)

    def to_string(self, value: str) -> str:
        return value.replace("%", "%25").replace("/", "%2F")


register_url_convertor("id", IdConvertor())
