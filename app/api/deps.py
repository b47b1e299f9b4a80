"""Dependencies every route uses, as `Annotated` aliases.

`Caller` is resolved once per request by `get_caller`: today every caller is trusted (no auth);
the access-control issue replaces this one function, and `require(scope)` already names what
each route needs, so the routes do not change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, Path, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import Settings
from app.db.models import Project
from app.db.session import session_scope
from app.errors import NotFound

Scope = Literal["admin", "annotate", "read", "train"]


@dataclass(frozen=True)
class Caller:
    name: str
    scopes: frozenset[str]

    def may(self, scope: str, project: str | None) -> bool:
        return "admin" in self.scopes or scope in self.scopes


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    yield from session_scope(request.app.state.sessionmaker)


def get_caller(request: Request) -> Caller:
    return Caller(name="anonymous", scopes=frozenset({"admin"}))


SettingsDep = Annotated[Settings, Depends(get_settings)]
# scope="function": the commit happens when the handler returns, before the response is sent,
# so a client is never told "stored" about a transaction that then failed to commit.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
CallerDep = Annotated[Caller, Depends(get_caller)]


def require(scope: Scope) -> Callable[..., Caller]:
    """A dependency that admits callers holding `scope` (on the path's project, if any)."""

    def check(caller: CallerDep, request: Request) -> Caller:
        # The access-control issue adds the 401/403 decisions here.
        caller.may(scope, request.path_params.get("project"))
        return caller

    return check


def get_project(
    session: SessionDep,
    project: Annotated[str, Path(description="Project name", max_length=200)],
) -> Project:
    row = session.scalars(select(Project).where(Project.name == project)).one_or_none()
    if row is None:
        raise NotFound(f"No project named {project!r}.")
    return row


ProjectDep = Annotated[Project, Depends(get_project)]
