"""Pydantic request/response models. Never ORM classes: app/db/models.py is the storage side."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from app.db.models import NAME_PATTERN
from app.votes.records import (
    ClassName,
    ExternalId,
    Feature,
    ImageBytes,
    ItemIn,
    Strict,
    Text,
    VoteIn,
    no_nul,
)

# --- projects ---------------------------------------------------------------------------------


def _distinct(classes: list[str]) -> list[str]:
    seen: set[str] = set()
    dups = sorted({c for c in classes if c in seen or seen.add(c)})  # type: ignore[func-returns-value]
    if dups:
        raise ValueError(f"class names must be distinct; repeated: {dups}")
    return classes


ClassList = Annotated[
    list[ClassName], Field(min_length=2, max_length=1000), AfterValidator(_distinct)
]
Description = Annotated[str, StringConstraints(max_length=10_000), AfterValidator(no_nul)]


TaskType = Literal["single", "multi_label", "ordinal"]
TASK_TYPE_DOC = (
    "What a vote is: `single` (one class), `multi_label` (the set of classes that apply, "
    "possibly none) or `ordinal` (one level of the scale `classes` lists, lowest first). "
    "Fixed once the project has votes."
)
LevelValues = Annotated[
    list[Annotated[float, Field(allow_inf_nan=False)]],
    Field(
        min_length=2,
        max_length=1000,
        description="Ordinal projects: the numeric value of each level, strictly increasing, "
        "for the mean and median. Default: the level names when they are increasing numbers, "
        "else 0..K-1.",
    ),
]


def check_scale(
    task_type: str, classes: list[str], level_values: list[float] | None
) -> list[float] | None:
    """`level_values` belong to an ordinal project and give one increasing value per level."""
    if level_values is None:
        return None
    if task_type != "ordinal":
        raise ValueError("level_values are for ordinal projects only")
    if len(level_values) != len(classes):
        raise ValueError(f"level_values has {len(level_values)} values for {len(classes)} levels")
    if any(b <= a for a, b in itertools.pairwise(level_values)):
        raise ValueError("level_values must increase strictly, lowest level first")
    return level_values


class ProjectCreate(Strict):
    name: Annotated[str, StringConstraints(pattern=NAME_PATTERN)] = Field(
        description="Lowercase letters, digits, '-' and '_'; at most 64 characters."
    )
    classes: ClassList = Field(
        description="The classes; for an ordinal project the levels of the scale, lowest first "
        '(names such as "low" or numbers such as "1", as strings).'
    )
    task_type: TaskType = Field(default="single", description=TASK_TYPE_DOC)
    level_values: LevelValues | None = None
    description: Description | None = None
    n_features: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="Length of every item's feature vector; if omitted, the first item sets it.",
    )

    @field_validator("level_values")
    @classmethod
    def _scale(cls, value: list[float] | None, info: ValidationInfo) -> list[float] | None:
        # Fields are validated in order: classes and task_type are known (if valid) here.
        if "classes" not in info.data:
            return value
        return check_scale(info.data.get("task_type", "single"), info.data["classes"], value)


class ProjectUpdate(Strict):
    """Fields sent replace the stored ones; `classes` and `task_type` only while the project has
    no votes."""

    classes: ClassList | None = None
    task_type: TaskType | None = Field(default=None, description=TASK_TYPE_DOC)
    level_values: LevelValues | None = Field(
        default=None, description="Ordinal projects: see POST /v1/projects; null: the default."
    )
    description: Description | None = None


class ProjectOut(BaseModel):
    name: str
    classes: list[str]
    task_type: TaskType
    level_values: list[float] | None = Field(
        description="Ordinal projects: each level's value, as mean and median use them (the "
        "given ones or the default); null for other task types."
    )
    description: str | None
    n_features: int | None
    votes_version: int
    created_at: dt.datetime
    n_items: int | None = None
    n_workers: int | None = None
    n_votes: int | None = None


class ProjectList(BaseModel):
    projects: list[ProjectOut]


# --- items and votes --------------------------------------------------------------------------


class ItemBatch(Strict):
    items: list[ItemIn] = Field(min_length=1)


class ItemResult(BaseModel):
    inserted: int
    updated: int


class VoteBatch(Strict):
    votes: list[VoteIn] = Field(min_length=1)


class VoteResult(BaseModel):
    inserted: int
    updated: int
    unchanged: int
    votes_version: int


# --- soft labels ------------------------------------------------------------------------------


class SoftLabel(BaseModel):
    item: str
    method: str
    params: dict[str, float | int]
    task_type: TaskType = "single"
    n_votes: int
    classes: list[str]
    probs: list[float] | None = Field(
        description="In the order of `classes`: a distribution over the classes (single) or "
        "the levels (ordinal); for a multi-label project each class's probability that it "
        "applies (they need not sum to 1). Null: no votes."
    )
    mean: float | None = Field(
        default=None, description="Ordinal: the distribution's mean, in the levels' values."
    )
    median: float | None = Field(
        default=None,
        description="Ordinal: the value of the first level where the cumulative probability "
        "reaches 0.5.",
    )
    spread: float | None = Field(
        default=None, description="Ordinal: the distribution's standard deviation."
    )
    gold: str | None = None
    as_of: int = Field(description="The project's votes_version these labels reflect.")
    stale: bool = Field(description="True while a newer worker-model fit is being computed.")
    warnings: list[str] = Field(
        default_factory=list,
        description="Worker-model methods: problems found in the fit (label switching, "
        "collapse); empty when none.",
    )


class WorkerPrediction(BaseModel):
    item: str
    worker: str
    method: str
    params: dict[str, float | int]
    task_type: TaskType
    classes: list[str]
    probs: list[float] = Field(
        description="The distribution of the answer this worker would give on this item (single "
        "and ordinal), or for a multi-label project each class's probability that the worker "
        "ticks it."
    )
    model: Literal["worker", "item"] = Field(
        description="`worker`: from the method's model of this worker (its confusion, rater "
        "bias and spread, or tick rates); `item`: the method has no per-worker model, so every "
        "worker is predicted to answer like the item's soft label."
    )
    worker_in_fit: bool = Field(
        description="False when the worker is newer than the fit: the crowd's average worker "
        "stands in."
    )
    mean: float | None = Field(default=None, description="Ordinal: the predicted answer's mean.")
    median: float | None = Field(default=None, description="Ordinal: its median.")
    spread: float | None = Field(default=None, description="Ordinal: its standard deviation.")
    n_votes: int
    as_of: int
    stale: bool


class MethodScore(BaseModel):
    method: str
    score: float | None = Field(description="Higher is better; null if the fit failed.")
    std_err: float | None = Field(
        default=None,
        description="Standard error of the difference between this score and the chosen "
        "method's, over the same held-out votes (or gold items); 0 for the chosen method.",
    )
    predicts: Literal["worker", "item"] | None = Field(
        default=None,
        description="How the method predicts a held-out vote: `worker`, that worker's answer "
        "through the worker's own model (perspectivist); `item`, the item's soft label (a "
        "count method: every worker answers like the crowd).",
    )


class MethodComparison(BaseModel):
    chosen: str = Field(description="The best-scoring method: what `method=auto` serves.")
    criterion: Literal[
        "held-out vote log-likelihood",
        "accuracy on gold items",
        "held-out tick log-likelihood",
        "held-out level log-likelihood",
    ] = Field(
        description="Single-choice: held-out votes, or gold with at least 30 gold items. "
        "Multi-label: the log probability of each held-out vote's set of ticks (classes "
        "independent given the item). Ordinal: the log probability of each held-out level."
    )
    decided: bool = Field(
        default=True,
        description="False when the criterion cannot tell the chosen method from others "
        "(listed in `indistinguishable`): scores within 2 standard errors.",
    )
    indistinguishable: list[str] = Field(
        default_factory=list,
        description="Methods whose score is within 2 standard errors of the chosen one's.",
    )
    note: str | None = Field(default=None, description="Why the choice is not decided, if so.")
    candidates: list[MethodScore]
    params: dict[str, float | int]
    as_of: int
    stale: bool
    warnings: list[str] = Field(default_factory=list, description="Problems in the chosen fit.")


class ErrorRow(BaseModel):
    index: int | None
    field: str | None
    reason: str


class ErrorBody(BaseModel):
    error: str
    detail: str
    errors: list[ErrorRow] | None = None


# --- training ---------------------------------------------------------------------------------


class TrainingJobOut(BaseModel):
    id: int
    project: str
    status: str
    config: dict[str, Any]
    progress: dict[str, Any] | None
    metrics: dict[str, Any] | None
    error: str | None
    data_hash: str | None
    votes_version: int | None
    attempts: int
    cancel_requested: bool
    device: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


class TrainingJobList(BaseModel):
    jobs: list[TrainingJobOut]


def _predict_url(value: str) -> str:
    if not value.startswith(("http://", "https://", "/")) or value.startswith("//"):
        raise ValueError("must be an http:// or https:// URL, or a Label Studio path (/data/...)")
    return value


PredictUrl = Annotated[
    str, StringConstraints(min_length=2, max_length=4096), AfterValidator(_predict_url)
]


class PredictIn(Strict):
    """Exactly one input: what the job's model reads (features for a job on features; texts,
    or images, for a job on content), or stored items by id (their features or content)."""

    features: list[list[Feature]] | None = Field(default=None, min_length=1, max_length=10_000)
    items: list[ExternalId] | None = Field(default=None, min_length=1, max_length=10_000)
    texts: list[Text] | None = Field(
        default=None, min_length=1, max_length=10_000, description="For a job on texts."
    )
    images: list[ImageBytes] | None = Field(
        default=None,
        min_length=1,
        max_length=1000,
        description="For a job on images: image files (PNG, JPEG, GIF, BMP, WebP), base64.",
    )
    image_urls: list[PredictUrl] | None = Field(
        default=None,
        min_length=1,
        max_length=1000,
        description="For a job on images: fetched by the service (the network policy applies; "
        "a Label Studio path with the project's Label Studio connector).",
    )


class PredictOut(BaseModel):
    classes: list[str]
    probs: list[list[float]]
    task_type: TaskType = Field(
        "single",
        description="The model's: for multi_label each row holds K separate probabilities "
        "that each class applies; otherwise a distribution over the classes or levels.",
    )


# --- analytics --------------------------------------------------------------------------------


class HistogramBin(BaseModel):
    n_votes: int
    items: int


class ProjectStats(BaseModel):
    task_type: TaskType = "single"
    items: int
    items_with_votes: int
    votes: int
    workers: int
    votes_per_item: list[HistogramBin]
    krippendorff_alpha: float | None = Field(
        description="With the metric `krippendorff_metric` names; null when undefined (fewer "
        "than 2 pairable votes, or no variation)."
    )
    krippendorff_metric: Literal["nominal", "ordinal", "jaccard"] = Field(
        default="nominal",
        description="nominal (single-choice); ordinal (a scale: a disagreement weighs by the "
        "votes between the two levels); jaccard (multi-label: 1 - |A & B| / |A | B| between "
        "two sets, 0 for two empty sets).",
    )
    fleiss_kappa: float | None = Field(description="Nominal; null on multi-label projects.")
    fleiss_kappa_reason: str | None = Field(description="Why fleiss_kappa is null, if it is.")
    mean_normalized_entropy: float | None = Field(
        description="Of the soft labels by `method`; multi-label: the mean over classes of the "
        "binary entropy (bits) of each class's probability."
    )
    method: str
    params: dict[str, float | int]
    as_of: int
    stale: bool


class NextItem(BaseModel):
    item: str
    n_votes: int
    uncertainty: float | None


class NextItems(BaseModel):
    strategy: str
    method: str
    items: list[NextItem]


class WorkerOut(BaseModel):
    worker: str
    excluded: bool = Field(
        False,
        description="Excluded by POST .../workers/{worker}/exclude: its votes are stored but "
        "left out of every count, fit and export (n_votes is then 0).",
    )
    n_votes: int
    agreement: float | None = Field(
        description="Agreement of the worker's scored votes (those on items with other votes) "
        "with the other votes: see the list's `agreement_rule`."
    )
    n_scored: int
    skill: float | None
    spammer: bool
    n_gold: int = Field(0, description="Votes on items with a gold label.")
    gold_accuracy: float | None = Field(
        None, description="Share of those votes that match the gold label (null without any)."
    )


class WorkerList(BaseModel):
    method: str
    params: dict[str, float | int]
    as_of: int
    stale: bool
    skill: str = Field(description="What `skill` means for this method.")
    agreement_rule: str = Field(
        default="", description="What `agreement` measures for this project's task type."
    )
    spammer_rule: str
    workers: list[WorkerOut]
    warnings: list[str] = Field(default_factory=list, description="Problems found in the fit.")


class WorkerDetail(WorkerOut):
    method: str
    params: dict[str, float | int]
    as_of: int
    stale: bool
    classes: list[str]
    confusion: list[list[float]] | None = Field(
        default=None, description="K x K; null on a multi-label project (see sensitivity)."
    )
    confusion_source: Literal["model", "empirical"]
    class_accuracy: list[float] | None = None
    sensitivity: list[float | None] | None = Field(
        default=None,
        description="Multi-label only: per class, P(the worker ticks it | it applies); null "
        "where no item of theirs has the class (empirical).",
    )
    specificity: list[float | None] | None = Field(
        default=None,
        description="Multi-label only: per class, P(the worker leaves it | it does not apply).",
    )
