"""/v1/keys: create (the secret is in that one response, and nowhere else), list, revoke."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Response, status
from pydantic import BaseModel, Field

from app.api.access import require
from app.api.deps import ServicesDep, SessionDep
from app.auth.keys import active_keys, create_key, revoke_key
from app.auth.scopes import ALL_PROJECTS
from app.auth.spec import KeyCreate, ScopeName
from app.db.models import ApiKey
from app.errors import NotFound

router = APIRouter(prefix="/v1/keys", tags=["keys"])


class KeyOut(BaseModel):
    id: int
    label: str
    scopes: list[ScopeName]
    projects: list[str] | Literal["*"]
    rate_limit_per_s: float | None
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
        rate_limit_per_s=row.rate_limit_per_s,
        created_at=row.created_at,
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=KeyCreated,
    dependencies=[Depends(require("admin"))],
)
def create(body: KeyCreate, session: SessionDep, services: ServicesDep) -> KeyCreated:
    projects = None if body.projects == ALL_PROJECTS else list(body.projects)
    row, secret = create_key(session, body.label, body.scopes, projects, body.rate_limit_per_s)
    services.keys.invalidate()
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
    key_id: Annotated[int, Path(ge=1, le=2**63 - 1)], session: SessionDep, services: ServicesDep
) -> Response:
    """Revoke a key: it stops working at once in this process (see app/auth/keys.py for others)."""
    if not revoke_key(session, key_id):
        raise NotFound(f"No active key {key_id}.")
    session.commit()  # before the cache is cleared, so no request re-caches the old row
    services.keys.invalidate()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
