"""The dashboard (/ui), and /docs and /redoc served from assets inside the package.

Server-rendered Jinja2 page shells plus one small vanilla-JavaScript file (static/app.js) that
calls the JSON API with the key the user pasted. No build step, no npm at install time, no CDN:
everything the browser loads comes from this package (static/vendor holds Swagger UI and
ReDoc, with their licences). The pages carry no data and need no key; every figure on them is
fetched by the browser from /v1 with the user's own key, so what the key cannot see is not
shown, and the server never sees the key outside the API's Authorization header.

The pages are plain Starlette routes (not API routes): they are not in the OpenAPI schema and
not subject to API keys. Every page is sent with a Content-Security-Policy that lets it talk to
its own origin only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from app.aggregation.base import WorkerAggregator
from app.aggregation.registry import METHODS_BY_TASK

HERE = Path(__file__).parent
STATIC = "/ui/static"
templates = Jinja2Templates(directory=str(HERE / "templates"))

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)
# Swagger UI and ReDoc pages start with an inline script and ReDoc uses a blob: web worker.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self' data:; worker-src 'self' blob:; "
    "object-src 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {"Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff"}

# name -> template; the page's own parameters travel in the query string (item and worker ids
# may contain "/", which a query string carries untouched).
PAGES = {
    "": "projects.html",
    "project": "project.html",
    "items": "items.html",
    "item": "item.html",
    "workers": "workers.html",
    "worker": "worker.html",
    "routing": "routing.html",
    "jobs": "jobs.html",
    "job": "job.html",
    "compare": "compare.html",
    "exports": "exports.html",
    "keys": "keys.html",
}


def methods() -> dict[str, Any]:
    """Per task type, every method by kind, from the registry: count methods, then worker
    models. The page picks its project's list once it has read the project's task type."""
    by_type: dict[str, Any] = {}
    for task_type, table in METHODS_BY_TASK.items():
        out: dict[str, list[dict[str, Any]]] = {"count": [], "worker": []}
        for name, method in table.items():
            kind = "worker" if issubclass(method, WorkerAggregator) else "count"
            out[kind].append({"name": name, "summary": method.summary})
        by_type[task_type] = out
    return by_type


def _page(template: str, name: str) -> Any:
    async def endpoint(request: Request) -> Response:
        context = {
            "page": name,
            "static": STATIC,
            "page_data": json.dumps({"page": name, "methods": methods()}),
        }
        response = templates.TemplateResponse(request, template, context)
        response.headers.update({"Content-Security-Policy": CSP, **SECURITY_HEADERS})
        response.headers["Cache-Control"] = "no-store"
        return response

    return endpoint


async def _swagger(request: Request) -> Response:
    response = get_swagger_ui_html(
        openapi_url=request.app.openapi_url,
        title=f"{request.app.title} - API",
        swagger_js_url=f"{STATIC}/vendor/swagger-ui/swagger-ui-bundle.js",
        swagger_css_url=f"{STATIC}/vendor/swagger-ui/swagger-ui.css",
        swagger_favicon_url=f"{STATIC}/favicon.svg",
        # No validator badge: Swagger UI would send the schema to an outside validator.
        swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": False},
    )
    response.headers.update({"Content-Security-Policy": DOCS_CSP, **SECURITY_HEADERS})
    return response


async def _redoc(request: Request) -> Response:
    response = get_redoc_html(
        openapi_url=request.app.openapi_url,
        title=f"{request.app.title} - API reference",
        redoc_js_url=f"{STATIC}/vendor/redoc/redoc.standalone.js",
        redoc_favicon_url=f"{STATIC}/favicon.svg",
        with_google_fonts=False,
    )
    response.headers.update({"Content-Security-Policy": DOCS_CSP, **SECURITY_HEADERS})
    return response


async def _root(request: Request) -> Response:
    return RedirectResponse("/ui/", status_code=307)


def install_ui(app: FastAPI) -> None:
    """Add /, /ui/..., /ui/static, /docs and /redoc to `app`."""
    app.mount(STATIC, StaticFiles(directory=str(HERE / "static")), name="ui-static")
    app.add_route("/", _root, include_in_schema=False)
    app.add_route("/docs", _swagger, include_in_schema=False)
    app.add_route("/redoc", _redoc, include_in_schema=False)
    app.add_route("/ui", _root, include_in_schema=False)
    for name, template in PAGES.items():
        path = f"/ui/{name}" if name else "/ui/"
        app.add_route(path, _page(template, name), include_in_schema=False)
