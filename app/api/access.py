"""Who may call what: `require(scope)`, which every route declares, decides (403, or 404 for
another project's resources), checks the query for unknown parameters and takes a token from
the key's rate-limit bucket (429).

Not revealing other projects: a key that does not cover project B gets, for B and for every
resource under it (training jobs included), exactly the 404 a missing project or job gets, so it
cannot tell B from a project that does not exist. Whether the key's scopes allow the endpoint at
all is decided first (403), from the key alone, so that answer says nothing about B either.
Which project a path concerns is the path's `{project}`, or what the route's domain says
(`project_of`: a training job's project, app/api/training.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials

from app.api.deps import bearer, get_caller, project_not_found
from app.api.services import Services
from app.api.strict_query import reject_unknown_query
from app.auth.scopes import Caller
from app.errors import AppError, Forbidden

Scope = Literal["admin", "annotate", "read", "train"]
# The project a request's path concerns and the error a key that does not cover it gets (the
# resource's own 404, raised too when there is no such resource), or None to let the route
# answer (e.g. a malformed id, which is the route's 422).
ProjectOf = Callable[[Request, Services], Awaitable[tuple[str, AppError] | None]]


def require(scope: Scope, project_of: ProjectOf | None = None) -> Callable[..., Awaitable[Caller]]:
    """A dependency that admits callers holding `scope` on the project the path concerns."""

    # One dependency with one sub-dependency (the bearer scheme, which is also what documents
    # the key in the OpenAPI schema): every route solves it, and each level of FastAPI's
    # dependency tree costs a single vote measurable CPU (benchmarks/results/single_vote.md).
    async def check(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Caller:
        services: Services = request.app.state.services
        caller = await get_caller(request, services, credentials)
        return await admit(scope, caller, request, services, project_of)

    check.required_scope = scope  # type: ignore[attr-defined]  # read by route_scope()
    return check


async def admit(
    scope: Scope,
    caller: Caller,
    request: Request,
    services: Services,
    project_of: ProjectOf | None = None,
) -> Caller:
    """`require(scope)`'s decision for a known caller (also for routes that find the caller
    their own way first: app/api/connectors.py)."""
    services.limiter.check(caller)
    reject_unknown_query(request)
    if caller.is_admin:
        return caller
    if not caller.has(scope):
        raise Forbidden(f"This endpoint needs the {scope!r} scope; the key lacks it.")
    if project_of is not None:
        found = await project_of(request, services)
        if found is not None and not caller.covers(found[0]):
            raise found[1]
    elif "project" in request.path_params:
        if not caller.covers(request.path_params["project"]):
            raise project_not_found(request.path_params["project"])
    elif not caller.covers(None):
        # Not about one project (e.g. the project list): only for keys on every project.
        raise Forbidden("This endpoint spans every project; the key covers only some.")
    return caller


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
