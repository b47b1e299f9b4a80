"""Response models of the item read endpoints (app/api/items.py)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, Field


class ItemRow(BaseModel):
    item: str
    n_votes: int
    distribution: list[float] | None = Field(
        description="The item's soft label under `method` (order of `classes`); null: no votes."
    )
    gold: str | None
    entropy: float | None = Field(
        description="Normalized entropy of the distribution, 0..1; multi-label: the classes' "
        "mean binary entropy of P(applies), in bits."
    )
    margin: float | None = Field(
        description="p(top class) - p(second class), 0..1; multi-label: the least decided "
        "class's |2p - 1|."
    )
    gold_disagreement: float | None = Field(
        description="1 - p(gold class); null without gold or votes."
    )
    features: list[float] | None = Field(
        default=None, description="The item's feature vector, with `features=true` only."
    )


class ItemPage(BaseModel):
    method: str
    params: dict[str, float | int]
    as_of: int
    stale: bool
    classes: list[str]
    sort: str
    order: str
    total: int = Field(description="Items matching the filter (all pages).")
    items: list[ItemRow]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null: last.")


class ItemVote(BaseModel):
    worker: str
    label: str | list[str] = Field(
        description="The class or level; for a multi-label project the classes ticked."
    )
    created_at: dt.datetime
    updated_at: dt.datetime


class ItemDetail(BaseModel):
    item: str
    classes: list[str]
    n_votes: int
    counts: list[int] = Field(
        description="Votes per class, in the order of `classes` (multi-label: how many voters "
        "ticked each class; `n_votes` is the number of voters)."
    )
    gold: str | None
    features: list[float] | None
    meta: dict[str, Any] | None
    text: str | None = Field(description="The item's text, if it has one.")
    image_url: str | None = Field(description="Where the worker fetches the item's image.")
    image: str | None = Field(
        description="The stored image's URL on this service (`.../image`), if one was uploaded."
    )
    created_at: dt.datetime
    updated_at: dt.datetime
    votes: list[ItemVote]
