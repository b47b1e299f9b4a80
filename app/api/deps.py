"""Dependencies every route uses, as `Annotated` aliases.

`get_caller` resolves the request's API key once per request (401 without a valid one);
`require(scope)`, which every route declares, decides (403, or 404 for another project's
resources) and takes a token from the key's rate-limit bucket (429). The routes never change.

Not revealing other projects: a key that does not cover project B gets, for B and for every
resource under it (training jobs included), exactly the 404 a missing project or job gets, so it
cannot tell B from a project that does not exist. Whether the key's scopes allow the endpoint at
all is decided first (403), from the key alone, so that answer says nothing about B either.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated, Any, Literal

import procrastinate
from fastapi import Depends, FastAPI, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from app.api.services import Services
from app.auth.scopes import ANONYMOUS_ADMIN, Caller
from app.config import Settings
from app.db.models import Project
from app.db.session import session_scope
from app.errors import Forbidden, NotFound, Unauthorized, ValidationFailed
from app.training.jobs import project_of_job
from app.training.serving import ModelCache

Scope = Literal["admin", "annotate", "read", "train"]
__all__ = [
    "Caller",
    "CallerDep",
    "EngineDep",
    "ModelCacheDep",
    "ProjectDep",
    "QueueDep",
    "Scope",
    "SessionDep",
    "SettingsDep",
    "require",
]

# auto_error=False: a missing header is our 401 (in the one error shape), not FastAPI's 403.
bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer sl_...`.")


# Accessors are `async def`: they do no I/O, and a sync dependency costs a thread-pool hop.
async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services  # built by create_app's lifespan
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_settings(services: ServicesDep) -> Settings:
    return services.settings


async def get_engine(services: ServicesDep) -> Engine:
    return services.engine


async def get_queue(services: ServicesDep) -> procrastinate.App:
    return services.queue


async def get_model_cache(services: ServicesDep) -> ModelCache:
    return services.models


def get_session(services: ServicesDep) -> Iterator[Session]:
    yield from session_scope(services.sessionmaker)


async def get_caller(
    request: Request,
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Caller:
    if not services.settings.auth:
        caller = ANONYMOUS_ADMIN
    elif credentials is None or not credentials.credentials:
        raise Unauthorized("Send an API key: `Authorization: Bearer <key>`.")
    else:
        known, found = services.keys.cached(credentials.credentials)
        if not known:  # a database lookup: off the event loop
            found = await run_in_threadpool(
                services.keys.resolve, services.engine, credentials.credentials
            )
        if found is None:
            raise Unauthorized("The API key is not valid (unknown or revoked).")
        caller = found
    request.state.caller = caller  # for the access log: the key's id, never the secret
    return caller


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
QueueDep = Annotated[procrastinate.App, Depends(get_queue)]
ModelCacheDep = Annotated[ModelCache, Depends(get_model_cache)]
# scope="function": the commit happens when the handler returns, before the response is sent,
# so a client is never told "stored" about a transaction that then failed to commit.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
CallerDep = Annotated[Caller, Depends(get_caller)]


def project_not_found(project: str) -> NotFound:
    return NotFound(f"No project named {project!r}.")  # word for word what get_project says


def job_not_found(job_id: int) -> NotFound:
    return NotFound(f"No training job {job_id}.")  # word for word what training.get_job says


def _job_project(engine: Engine, raw: str) -> str | None:
    """The name of the project a training job belongs to; raises the job's 404 if none."""
    try:
        job_id = int(raw)
    except ValueError:
        return None  # the route answers 422 for it
    if not 1 <= job_id < 2**63:
        return None
    with engine.connect() as conn:
        name = project_of_job(conn, job_id)
    if name is None:
        raise job_not_found(job_id)
    return name


def require(scope: Scope) -> Callable[..., Awaitable[Caller]]:
    """A dependency that admits callers holding `scope` (on the path's project, if any)."""

    async def check(caller: CallerDep, request: Request, services: ServicesDep) -> Caller:
        services.limiter.check(caller)
        reject_unknown_query(request)
        if caller.is_admin:
            return caller
        if not caller.has(scope):
            raise Forbidden(f"This endpoint needs the {scope!r} scope; the key lacks it.")
        params = request.path_params
        if "job_id" in params:
            job_project = await run_in_threadpool(_job_project, services.engine, params["job_id"])
            if job_project is not None and not caller.covers(job_project):
                raise job_not_found(int(params["job_id"]))
        elif "project" in params:
            if not caller.covers(params["project"]):
                raise project_not_found(params["project"])
        elif not caller.covers(None):
            # Not about one project (e.g. the project list): only for keys on every project.
            raise Forbidden("This endpoint spans every project; the key covers only some.")
        return caller

    check.required_scope = scope  # type: ignore[attr-defined]  # read by route_scope()
    return check


_DECLARED: dict[tuple[str, frozenset[str]], frozenset[str]] = {}


def declared_query_params(route: APIRoute) -> frozenset[str]:
    """Every query parameter a route (or any of its dependencies) declares (cached by route)."""
    key = (route.path, frozenset(route.methods or ()))
    if key not in _DECLARED:
        _DECLARED[key] = _walk_query_params(route)
    return _DECLARED[key]


def _walk_query_params(route: APIRoute) -> frozenset[str]:

    def walk(dep: Dependant) -> Iterator[str]:
        yield from (p.alias for p in dep.query_params)
        for sub in dep.dependencies:
            yield from walk(sub)

    return frozenset(walk(route.dependant))


def reject_unknown_query(request: Request) -> None:
    """A query parameter no route reads is a client's typo: say so (422) instead of ignoring it.

    Routes that compute soft labels declare every method's parameters through a dependency
    (app/api/method_query.py, which then checks each against the chosen method)."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not request.query_params:
        return
    declared = declared_query_params(route)
    unknown = sorted(set(request.query_params) - declared)
    if unknown:
        takes = ", ".join(sorted(declared)) or "no query parameters"
        raise ValidationFailed(
            f"Unknown query parameter {unknown[0]!r}; this endpoint takes: {takes}.",
            errors=[
                {"index": None, "field": name, "reason": f"unknown query parameter; takes: {takes}"}
                for name in unknown
            ],
        )


def route_scope(route: Any) -> Scope | None:
    """The scope a route requires (from its `require(...)` dependency), or None if it has none."""
    for dep in route.dependant.dependencies:
        scope = getattr(dep.call, "required_scope", None)
        if scope is not None:
            return scope  # type: ignore[no-any-return]
    return None


def api_routes(app: FastAPI) -> list[tuple[str, str, Scope | None]]:
    """(method, path template, required scope) of every API route of `app`: the access rules."""
    try:  # FastAPI >= 0.16x keeps included routers nested; this walks them
        from fastapi.routing import iter_route_contexts

        routes: list[Any] = list(iter_route_contexts(app.routes))
    except ImportError:
        routes = list(app.routes)
    return [
        (method, route.path, route_scope(route))
        for route in routes
        if isinstance(getattr(route, "original_route", route), APIRoute)
        for method in sorted(route.methods or ())
    ]


def get_project(
    session: SessionDep,
    project: Annotated[str, Path(description="Project name", max_length=200)],
) -> Project:
    row = session.scalars(select(Project).where(Project.name == project)).one_or_none()
    if row is None:
        raise project_not_found(project)
    return row


ProjectDep = Annotated[Project, Depends(get_project)]


def _error(description: str, **extra: Any) -> dict[str, Any]:
    from app.api.schemas import ErrorBody

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
