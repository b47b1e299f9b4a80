"""Request and response models of /training-sweeps and /items/suspect (kept apart
from schemas.py)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.training.config import Loss
from app.training.sweeps import Metric


class Baseline(BaseModel):
    model_config = ConfigDict(extra="forbid")
    labels: dict[str, Any] | None = Field(
        None,
        description='The label method, e.g. {"method": "majority"}; default: the project\'s '
        "task type's (see `SweepIn.baseline`).",
    )
    loss: Loss | None = Field(
        None, description="The loss, e.g. \"hard-ce\"; default: the project's task type's."
    )


class SweepIn(BaseModel):
    """A grid: every label method x every loss x every seed is one training job."""

    model_config = ConfigDict(extra="forbid")
    labels: list[dict[str, Any]] | None = Field(
        None,
        min_length=1,
        max_length=20,
        description='Label methods with parameters, e.g. [{"method": "normalized", "alpha": 1}]. '
        "Default by task type: majority, normalized, dawid-skene (single); normalized, "
        "distance-smoothed, rater-bias (ordinal); normalized, binary-relevance, "
        "tick-propensity (multi_label).",
    )
    losses: list[Loss] | None = Field(
        None,
        min_length=1,
        max_length=3,
        description="Default: every loss of the project's task type: hard-ce and soft-ce "
        "(single); hard-ce, soft-ce and squared-emd (ordinal); hard-bce and soft-bce "
        "(multi_label).",
    )
    seeds: list[Annotated[int, Field(ge=0, le=2**63 - 1)]] = Field(
        default_factory=lambda: [0, 1, 2],
        min_length=1,
        max_length=20,
        description="Model seeds (initialization, shuffling, dropout). Default [0, 1, 2].",
    )
    split_seed: int = Field(
        0, ge=0, le=2**63 - 1, description="One train/validation/test split for every cell."
    )
    base: dict[str, Any] = Field(
        default_factory=dict,
        description="Every other training-job field (model, epochs, lr, test_fraction, ...).",
    )
    metric: Metric | None = Field(
        None,
        description="The metric the ranking uses. Default by task type: accuracy (single), "
        "rps_human (ordinal), bce_human (multi_label); the report says which "
        "(`metric`, `metric_note`).",
    )
    split: Literal["auto", "test", "test_gold"] = Field(
        "auto",
        description='"test" (held-out voted items), "test_gold" (gold items with no votes) or '
        '"auto" (test_gold when every job has it, else test).',
    )
    baseline: Baseline | None = Field(
        None,
        description="The hard-label recipe every other is compared with. Default by task type: "
        "hard-ce on majority (single), hard-ce on normalized (ordinal: the majority level), "
        "hard-bce on normalized (multi_label: each class's majority).",
    )
    n_boot: int = Field(1000, ge=100, le=10000, description="Bootstrap resamples.")


class SweepCell(BaseModel):
    job_id: int
    name: str
    seed: int
    status: str


class SweepOut(BaseModel):
    id: int
    project: str
    status: Literal["running", "done"]
    created_at: dt.datetime
    config: dict[str, Any]
    jobs: dict[str, int]
    cells: list[SweepCell]
    report: dict[str, Any]


class SuspectItem(BaseModel):
    item: str
    n_votes: int
    score: float  # mean out-of-sample probability of the labels the votes gave
    majority: str
    model: str  # the model's top class
    model_prob: float
    consensus: str  # the crowdlab consensus (votes and model combined)
    consensus_quality: float


class SuspectItems(BaseModel):
    job: int
    score: str
    model_weight: float
    items: list[SuspectItem]
