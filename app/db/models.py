"""SQLAlchemy models: what is stored. Pydantic schemas live in app/api/schemas.py.

Physical design, chosen for the read paths:
- `votes` holds one row per (item, worker); its primary key makes retries idempotent.
- `items.counts` is the item's vote-count vector over the project's classes, maintained in the
  same transaction as the votes (app/votes/ingest.py). For a multi-label project a vote is a
  set of classes (`votes.ticks`), `counts[k]` is how many voters ticked class k and `n_votes`
  the number of voters, so a row need not sum to n_votes.
  Soft labels and exports read it directly, so a
  read never aggregates the vote table.
- A project's `votes_version` goes up with every batch that changes a vote (a striped counter,
  `project_vote_changes`, summed by `softlabels_votes_version()`): caches and training snapshots
  record which votes they reflect.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB, REAL
from sqlalchemy.orm import Mapped, column_property, mapped_column, relationship

from app.db.base import Base

NAME_PATTERN = r"^[a-z0-9_-]{1,64}$"
MAX_EXTERNAL_ID = 256
VOTE_SOURCES = "('api', 'label-studio', 'argilla', 'import')"
# What a project asks: one class, any set of classes, or one level of an ordered scale.
TASK_TYPES = ("single", "multi_label", "ordinal")


def _now() -> Mapped[dt.datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class Project(Base):
    __tablename__ = "projects"
    __table_args__ = (
        CheckConstraint(f"name ~ '{NAME_PATTERN}'", name="name_format"),
        CheckConstraint("cardinality(classes) BETWEEN 2 AND 1000", name="n_classes"),
        CheckConstraint("task_type IN ('single', 'multi_label', 'ordinal')", name="task_type"),
        CheckConstraint(
            "level_values IS NULL OR (task_type = 'ordinal' "
            "AND cardinality(level_values) = cardinality(classes))",
            name="level_values",
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    # For an ordinal project, the levels in order (lowest first).
    classes: Mapped[list[str]] = mapped_column(ARRAY(Text))
    # Fixed once the project has votes: the votes' meaning and storage depend on it.
    task_type: Mapped[str] = mapped_column(Text, server_default="single")
    # An ordinal scale's numeric values, one per level, for the mean and median; NULL: the level
    # names when they are increasing numbers, else the level indices (app/votes/task_types.py).
    level_values: Mapped[list[float] | None] = mapped_column(ARRAY(Float(precision=53)))
    description: Mapped[str | None] = mapped_column(Text)
    # Fixed by the first item that carries features (or at creation); every item then matches it.
    n_features: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = _now()
    # Read-only: the sum of the project's slots in project_vote_changes (why a striped counter:
    # app/db/sql/softlabels_bump_votes_version.sql), loaded with the row in the same query.
    votes_version: Mapped[int] = column_property(func.softlabels_votes_version(id))

    items: Mapped[list[Item]] = relationship(back_populates="project", lazy="raise")


class ProjectVoteChanges(Base):
    """A striped counter of vote changes: the project's votes_version is the sum of its slots
    (app/db/sql). Written only by SQL functions (softlabels_bump_votes_version)."""

    __tablename__ = "project_vote_changes"

    project_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    slot: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    changes: Mapped[int] = mapped_column(BigInteger)


class Item(Base):
    __tablename__ = "items"
    __table_args__ = (
        UniqueConstraint("project_id", "external_id"),
        Index("ix_items_project_id_id", "project_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(String(MAX_EXTERNAL_ID))
    features: Mapped[list[float] | None] = mapped_column(ARRAY(REAL))
    gold: Mapped[int | None] = mapped_column(SmallInteger)  # class index
    meta: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    counts: Mapped[list[int]] = mapped_column(ARRAY(Integer))
    n_votes: Mapped[int] = mapped_column(Integer, server_default="0")
    created_at: Mapped[dt.datetime] = _now()
    updated_at: Mapped[dt.datetime] = _now()

    project: Mapped[Project] = relationship(back_populates="items", lazy="raise")


class ItemContent(Base):
    """What an item is, for encoders: its text, or its image as bytes or as a URL the worker
    fetches (with the credentials of the connector named in `source`). Kept apart from `items`
    so that the vote path's counts updates never carry it. `digest` identifies the content, so
    a cached embedding of other content is never used."""

    __tablename__ = "item_content"
    __table_args__ = (
        CheckConstraint("image IS NULL OR image_url IS NULL", name="one_image"),
        CheckConstraint(
            "text IS NOT NULL OR image IS NOT NULL OR image_url IS NOT NULL", name="something"
        ),
    )

    item_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("items.id", ondelete="CASCADE"), primary_key=True
    )
    text: Mapped[str | None] = mapped_column(Text)
    image: Mapped[bytes | None] = mapped_column(LargeBinary)
    image_url: Mapped[str | None] = mapped_column(Text)
    media_type: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(Text)
    digest: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[dt.datetime] = _now()


class Embedding(Base):
    """An encoder's vector for one item's content, computed once by the worker and reused by
    every job that names the same encoder (`encoder` = its name, options and version)."""

    __tablename__ = "embeddings"

    item_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("items.id", ondelete="CASCADE"), primary_key=True
    )
    encoder: Mapped[str] = mapped_column(Text, primary_key=True)
    digest: Mapped[str] = mapped_column(Text)
    vector: Mapped[list[float]] = mapped_column(ARRAY(REAL))
    created_at: Mapped[dt.datetime] = _now()


class Worker(Base):
    __tablename__ = "workers"
    __table_args__ = (UniqueConstraint("project_id", "external_id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(String(MAX_EXTERNAL_ID))
    created_at: Mapped[dt.datetime] = _now()
    # Excluded workers keep their votes, but no method, count or export uses them (reversible).
    excluded: Mapped[bool] = mapped_column(Boolean, server_default="false")


class Vote(Base):
    __tablename__ = "votes"
    __table_args__ = (
        Index("ix_votes_project_id", "project_id"),
        Index("ix_votes_worker_id", "worker_id"),
        CheckConstraint(f"source IN {VOTE_SOURCES}", name="source"),
        CheckConstraint(
            "(ticks IS NULL AND label >= 0) OR (ticks IS NOT NULL AND label = -1)",
            name="label_or_ticks",
        ),
        Index(
            "ix_votes_tool_ref",
            "project_id",
            "source",
            "tool_ref",
            postgresql_where="tool_ref IS NOT NULL",
        ),
        Index(
            "ix_votes_tool_task",
            "project_id",
            "source",
            "tool_task",
            postgresql_where="tool_task IS NOT NULL",
        ),
    )

    # Both foreign keys are checked at commit (migration 0008: checked inside the ingest
    # function they were re-planned per row, most of a bulk batch's time); cascades stay immediate.
    item_id: Mapped[int] = mapped_column(
        ForeignKey("items.id", ondelete="CASCADE", deferrable=True, initially="DEFERRED"),
        primary_key=True,
    )
    worker_id: Mapped[int] = mapped_column(
        ForeignKey("workers.id", ondelete="CASCADE", deferrable=True, initially="DEFERRED"),
        primary_key=True,
    )
    # Denormalized so project-wide scans (worker models, stats) need no join. No foreign key:
    # the item's own (which cascades) already ties the vote to its project, and a third FK
    # check per vote cost ~20% of bulk-ingest time (benchmarks/results/ingest.md).
    project_id: Mapped[int] = mapped_column(BigInteger)
    label: Mapped[int] = mapped_column(SmallInteger)  # class or level index; -1: see ticks
    # A multi-label vote: the class indices the worker ticked, sorted and distinct, maybe none.
    ticks: Mapped[list[int] | None] = mapped_column(ARRAY(SmallInteger))
    created_at: Mapped[dt.datetime] = _now()
    updated_at: Mapped[dt.datetime] = _now()
    # Provenance (app/connectors): api, label-studio, argilla or import; the tool's annotation
    # (response) id and task (record) id, by which the tool's deletes find the vote.
    source: Mapped[str] = mapped_column(Text, server_default="api")
    tool_ref: Mapped[str | None] = mapped_column(Text)
    tool_task: Mapped[str | None] = mapped_column(Text)


class TrainingJob(Base):
    __tablename__ = "training_jobs"
    __table_args__ = (
        CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')", name="status"
        ),
        Index("ix_training_jobs_project_id_id", "project_id", "id"),
        Index("ix_training_jobs_running", "heartbeat_at", postgresql_where="status = 'running'"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(Text, server_default="queued")
    config: Mapped[dict[str, Any]] = mapped_column(JSONB)
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    error: Mapped[str | None] = mapped_column(Text)
    # What the job trained on: a content hash of the votes and the project's votes_version.
    data_hash: Mapped[str | None] = mapped_column(Text)
    votes_version: Mapped[int | None] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    cancel_requested: Mapped[bool] = mapped_column(Boolean, server_default="false")
    worker: Mapped[str | None] = mapped_column(Text)
    device: Mapped[str | None] = mapped_column(Text)
    queue_job_id: Mapped[int | None] = mapped_column(BigInteger)  # procrastinate's job id
    created_at: Mapped[dt.datetime] = _now()
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class TrainingArtifact(Base):
    """The checkpoint of a succeeded job, in the database so every worker and API replica
    reads the same file without shared disk."""

    __tablename__ = "training_artifacts"

    job_id: Mapped[int] = mapped_column(
        ForeignKey("training_jobs.id", ondelete="CASCADE"), primary_key=True
    )
    checkpoint: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = _now()
    # issue 12: npz of per-item predictions (app/labels/predictions.py); NULL for old jobs
    predictions: Mapped[bytes | None] = mapped_column(LargeBinary)


class TrainingSweep(Base):
    """A grid of training jobs (app/training/sweeps.py); its report is computed on read."""

    __tablename__ = "training_sweeps"
    __table_args__ = (Index("ix_training_sweeps_project_id_id", "project_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    config: Mapped[dict[str, Any]] = mapped_column(JSONB)
    job_ids: Mapped[list[int]] = mapped_column(ARRAY(BigInteger))
    created_at: Mapped[dt.datetime] = _now()


class LabelFit(Base):
    """A cached worker-model fit (app/labels/fits.py): numpy arrays in one npz blob, and the
    votes_version they reflect."""

    __tablename__ = "label_fits"

    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    method: Mapped[str] = mapped_column(Text, primary_key=True)
    params: Mapped[str] = mapped_column(Text, primary_key=True)  # canonical JSON
    votes_version: Mapped[int] = mapped_column(BigInteger)
    arrays: Mapped[bytes] = mapped_column(LargeBinary)
    n_iter: Mapped[int] = mapped_column(Integer)
    converged: Mapped[bool] = mapped_column(Boolean)
    seconds: Mapped[float] = mapped_column(Float)
    created_at: Mapped[dt.datetime] = _now()


class ApiKey(Base):
    """An API key: only its sha256 is stored (see app/auth/keys.py); the secret is shown once."""

    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint("char_length(key_hash) = 64", name="key_hash_sha256"),
        CheckConstraint("cardinality(scopes) >= 1", name="has_scope"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    label: Mapped[str] = mapped_column(Text)
    key_hash: Mapped[str] = mapped_column(Text, unique=True)
    scopes: Mapped[list[str]] = mapped_column(ARRAY(Text))
    # NULL: every project ("*"), present and future.
    projects: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    # Requests per second for this key, over all API processes; NULL: the server's default.
    rate_limit_per_s: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[dt.datetime] = _now()
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class Connector(Base):
    """A labeling tool's connection to a project (app/connectors): its field mapping in
    `config`, and its token or signing secret apart, never returned or logged."""

    __tablename__ = "connectors"
    __table_args__ = (CheckConstraint("tool IN ('label-studio', 'argilla')", name="tool"),)

    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    tool: Mapped[str] = mapped_column(Text, primary_key=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSONB)
    secret: Mapped[str | None] = mapped_column(Text)
    last_sync_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_sync: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[dt.datetime] = _now()
    updated_at: Mapped[dt.datetime] = _now()


class WebhookMessage(Base):
    """A Standard Webhooks message id a connector accepted, kept past the timestamp tolerance so
    a replayed event changes nothing (app/connectors/replay.py)."""

    __tablename__ = "webhook_messages"
    __table_args__ = (
        ForeignKeyConstraint(
            ["project_id", "tool"], ["connectors.project_id", "connectors.tool"], ondelete="CASCADE"
        ),
    )

    project_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    tool: Mapped[str] = mapped_column(Text, primary_key=True)
    msg_id: Mapped[str] = mapped_column(Text, primary_key=True)
    received_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False, index=True
    )


class WebhookSubscription(Base):
    """An outbound webhook (app/webhooks/deliver.py): where to send which events, and the
    signing key."""

    __tablename__ = "webhook_subscriptions"
    __table_args__ = (Index("ix_webhook_subscriptions_project_id", "project_id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column(ARRAY(Text))
    settle_votes: Mapped[int | None] = mapped_column(Integer)
    settle_entropy: Mapped[float | None] = mapped_column(Float)
    active: Mapped[bool] = mapped_column(Boolean, server_default="true")
    created_at: Mapped[dt.datetime] = _now()


class WebhookDelivery(Base):
    """One event for one subscription, and how its delivery went (the delivery log)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'delivered', 'failed')", name="status"),
        Index("ix_webhook_deliveries_subscription_id_id", "subscription_id", "id"),
        Index(
            "uq_webhook_deliveries_dedupe",
            "subscription_id",
            "dedupe_key",
            unique=True,
            postgresql_where="dedupe_key IS NOT NULL",
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    subscription_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_subscriptions.id", ondelete="CASCADE")
    )
    msg_id: Mapped[str] = mapped_column(Text)
    event: Mapped[str] = mapped_column(Text)
    order_key: Mapped[str] = mapped_column(Text)
    dedupe_key: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(Text, server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[dt.datetime] = _now()
