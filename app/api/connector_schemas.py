"""Pydantic request/response models of the connector, lifecycle and webhook routers."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl

Tool = Literal["label-studio", "argilla"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- lifecycle -----------------------------------------------------------------------------


class DeletedOut(BaseModel):
    deleted_votes: int = Field(description="Votes removed.")
    votes_version: int


class ExcludedOut(BaseModel):
    worker: str
    excluded: bool
    changed: bool = Field(description="False when the worker already had this state.")
    votes: int = Field(description="The worker's stored votes, now counted or not.")
    votes_version: int


class ProjectDeletedOut(BaseModel):
    deleted: str
    deleted_votes: int


# --- connectors ----------------------------------------------------------------------------


class LabelStudioConfig(Strict):
    from_name: str = Field(
        min_length=1,
        max_length=200,
        description="The `name` of the <Choices> control whose choices are the votes.",
    )
    item_field: str | None = Field(
        default=None,
        max_length=200,
        description="The task data field holding the item id; null: Label Studio's task id.",
    )
    content_field: str | None = Field(
        default=None,
        max_length=200,
        description="The task data field holding the item's content (a text, or an image URL "
        "the worker fetches with this connector's token), for training on content; null: "
        "`text` or `image` when the task has one; empty: store no content.",
    )
    # For sync (pull): where Label Studio is and which of its projects this is.
    url: HttpUrl | None = Field(default=None, description="Label Studio's base URL, for sync.")
    ls_project: int | None = Field(default=None, ge=1, description="Label Studio project id.")
    token: str | None = Field(
        default=None,
        min_length=1,
        max_length=4000,
        description="An API token for sync (personal access token or legacy token). Stored, "
        "never returned.",
    )
    sync_interval_s: int | None = Field(
        default=None, ge=60, description="Run a sync this often in the worker; null: never."
    )


class ArgillaConfig(Strict):
    question: str = Field(min_length=1, max_length=200, description="The label question's name.")
    secret: str = Field(
        min_length=1,
        max_length=4000,
        description="The webhook's signing secret as Argilla shows it (`whsec_...`). Stored, "
        "never returned.",
    )
    item_field: Literal["external_id", "id"] = Field(
        default="external_id",
        description="The item id: the record's external_id (falls back to its id), or its id.",
    )
    worker_field: Literal["id", "username"] = "id"
    content_field: str | None = Field(
        default=None,
        max_length=200,
        description="The record field holding the item's content (a text, or an image URL or "
        "data URI), for training on content; null: `text` or `image` when the record has one; "
        "empty: store no content.",
    )
    tolerance_s: int = Field(
        default=300,
        ge=1,
        le=300,
        description="Max timestamp age, seconds; at most the Standard Webhooks window of 300.",
    )


class ConnectorOut(BaseModel):
    tool: Tool
    config: dict[str, object] = Field(description="The mapping, without the token or secret.")
    secret_set: bool = Field(description="Whether a token / secret is stored (never shown).")
    events_url: str
    last_sync_at: dt.datetime | None = None
    last_sync: dict[str, object] | None = None


class EventResult(BaseModel):
    action: str
    ignored: bool = False
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    skipped: int = Field(default=0, description="Cancelled (skipped) or not-submitted answers.")
    votes_version: int | None = None


class Rejection(BaseModel):
    annotation: str | None = Field(description="Label Studio's annotation id.")
    task: str | None = Field(description="Label Studio's task id.")
    field: str = Field(description="JSON path of the problem in the export.")
    reason: str
    kept_vote: bool = Field(
        description="A vote stored from this annotation before (when it was readable) is kept "
        "as it was, neither updated nor deleted."
    )


class SyncQueued(BaseModel):
    queued: bool = Field(description="True: the worker syncs within a minute.")
    detail: str


class SyncResult(BaseModel):
    annotations: int = Field(description="Annotations Label Studio has for the project.")
    inserted: int
    updated: int
    unchanged: int
    deleted: int
    skipped: int = Field(description="Cancelled (skipped) annotations: not votes.")
    rejected: int = Field(
        default=0,
        description="Annotations that could not be read as a vote (a choice that is not a "
        "class, no result from the mapped control, the item field missing...): not stored.",
    )
    rejections: list[Rejection] = Field(
        default_factory=list, description="The first 100 rejected annotations, with why."
    )
    votes_version: int


class ImportResult(BaseModel):
    rows: int = Field(description="Rows read from the file.")
    duplicates: int = Field(description="(item, worker) pairs seen more than once.")
    inserted: int
    updated: int
    unchanged: int
    skipped: int
    votes_version: int


# --- outbound webhooks ---------------------------------------------------------------------

WebhookEvent = Literal["training_job.finished", "item.settled"]


class SubscriptionIn(Strict):
    url: HttpUrl
    events: list[WebhookEvent] = Field(min_length=1)
    settle_votes: int | None = Field(
        default=None, ge=1, description="item.settled when an item reaches this many votes."
    )
    settle_entropy: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="item.settled when the normalized entropy of its vote counts falls below "
        "this (with at least 2 votes).",
    )


class SubscriptionOut(BaseModel):
    id: int
    url: str
    events: list[str]
    settle_votes: int | None
    settle_entropy: float | None
    active: bool
    created_at: dt.datetime
    secret: str | None = Field(
        default=None, description="The signing secret (`whsec_...`), shown only at creation."
    )


class SubscriptionList(BaseModel):
    subscriptions: list[SubscriptionOut]


class DeliveryOut(BaseModel):
    id: int
    msg_id: str
    event: str
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    created_at: dt.datetime
    delivered_at: dt.datetime | None


class DeliveryList(BaseModel):
    deliveries: list[DeliveryOut]
