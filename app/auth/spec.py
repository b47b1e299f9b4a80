"""What a new API key is: its label, scopes and projects, validated once for the API's
`POST /v1/keys` body and for `softlabels keys create`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from app.auth.scopes import ALL_PROJECTS
from app.db.models import NAME_PATTERN

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
    rate_limit_per_s: float | None = Field(
        default=None,
        gt=0,
        le=1_000_000,
        description="This key's requests per second over the whole server (burst: 2 s worth); "
        "default: the server's SOFTLABELS_RATE_LIMIT_PER_S.",
    )

    @model_validator(mode="after")
    def _admin_is_global(self) -> KeyCreate:
        if isinstance(self.projects, list) and not self.projects:
            raise ValueError('`projects` must name at least one project, or be "*"')
        if "admin" in self.scopes and self.projects != ALL_PROJECTS:
            raise ValueError('an admin key covers every project: `projects` must be "*"')
        return self
