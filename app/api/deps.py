"""The dependencies every route uses, as `Annotated` aliases: what the process holds
(app/api/services.py), a database session, the caller (its API key) and the path's project.
Authorization is app/api/access.py's; the error tables app/api/responses.py's."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import procrastinate
from fastapi import Depends, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from app.api.services import Services
from app.auth.scopes import ANONYMOUS_ADMIN, Caller
from app.config import Settings
from app.db.models import Project
from app.db.session import session_scope
from app.errors import NotFound, Unauthorized
from app.training.serving import ModelCache

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


def get_project(
    session: SessionDep,
    project: Annotated[str, Path(description="Project name", max_length=200)],
) -> Project:
    row = session.scalars(select(Project).where(Project.name == project)).one_or_none()
    if row is None:
        raise project_not_found(project)
    return row


ProjectDep = Annotated[Project, Depends(get_project)]
