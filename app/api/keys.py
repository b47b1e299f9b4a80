"""/v1/keys: create (the secret is in that one response, and nowhere else), list, revoke."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from app.api.deps import SessionDep, require
from app.auth import ALL_PROJECTS, active_keys, create_key, revoke_key
from app.db.models import NAME_PATTERN, ApiKey
from app.errors import NotFound

router = APIRouter(prefix="/v1/keys", tags=["keys"])

ScopeName = Literal["admin", "annotate", "read", "train"]
ProjectName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
Label = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00]*$")]


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: Label = Field(description="What the key is for, e.g. the labeling tool's name.")
    scopes: list[ScopeName] = Field(min_length=1, max_length=4)
    projects: Annotated[list[ProjectName], Field(max_length=1000)] | Literal["*"] = Field(
        description='Project names, or "*" for every project (required with `admin`).',
    )

    @model_validator(mode="after")
    def _admin_is_global(self) -> KeyCreate:
        if isinstance(self.projects, list) and not self.projects:
            raise ValueError('`projects` must name at least one project, or be "*"')
        if "admin" in self.scopes and self.projects != ALL_PROJECTS:
            raise ValueError('an admin key covers every project: `projects` must be "*"')
        return self


class KeyOut(BaseModel):
    id: int
    label: str
    scopes: list[ScopeName]
    projects: list[str] | Literal["*"]
    created_at: dt.datetime


class KeyCreated(KeyOut):
    key: str = Field(description="The secret. Shown in this response only; store it now.")


class KeyList(BaseModel):
    keys: list[KeyOut]


def key_out(row: ApiKey) -> KeyOut:
    return KeyOut(
        id=row.id,
        label=row.label,
        scopes=row.scopes,  # type: ignore[arg-type]
        projects=ALL_PROJECTS if row.projects is None else row.projects,
        created_at=row.created_at,
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=KeyCreated,
    dependencies=[Depends(require("admin"))],
)
def create(body: KeyCreate, session: SessionDep, request: Request) -> KeyCreated:
    projects = None if body.projects == ALL_PROJECTS else list(body.projects)
    row, secret = create_key(session, body.label, body.scopes, projects)
    request.app.state.keys.invalidate()
    return KeyCreated(**key_out(row).model_dump(), key=secret)


@router.get("", response_model=KeyList, dependencies=[Depends(require("admin"))])
def list_keys(session: SessionDep) -> KeyList:
    """Every active key, by id and label; never its secret (only its hash is stored)."""
    return KeyList(keys=[key_out(k) for k in active_keys(session)])


@router.delete(
    "/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    dependencies=[Depends(require("admin"))],
)
def revoke(
    key_id: Annotated[int, Path(ge=1, le=2**63 - 1)], session: SessionDep, request: Request
) -> Response:
    """Revoke a key: it stops working at once in this process (see app/auth.py for others)."""
    if not revoke_key(session, key_id):
        raise NotFound(f"No active key {key_id}.")
    session.commit()  # before the cache is cleared, so no request re-caches the old row
    request.app.state.keys.invalidate()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
