"""Request and response models of /training-sweeps and /items/suspect (kept apart
from schemas.py)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.training.sweeps import DEFAULT_LABELS, Metric

Loss = Literal["soft-ce", "hard-ce"]


def _default_losses() -> list[Loss]:
    return ["hard-ce", "soft-ce"]


class Baseline(BaseModel):
    model_config = ConfigDict(extra="forbid")
    labels: dict[str, Any] = Field(default_factory=lambda: {"method": "majority"})
    loss: Literal["soft-ce", "hard-ce"] = "hard-ce"


class SweepIn(BaseModel):
    """A grid: every label method x every loss x every seed is one training job."""

    model_config = ConfigDict(extra="forbid")
    labels: list[dict[str, Any]] = Field(
        default_factory=lambda: [dict(x) for x in DEFAULT_LABELS],
        min_length=1,
        max_length=20,
        description='Label methods with parameters, e.g. [{"method": "normalized", "alpha": 1}].',
    )
    losses: list[Loss] = Field(default_factory=_default_losses, min_length=1, max_length=2)
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
    metric: Metric = Field("accuracy", description="The metric the ranking uses.")
    split: Literal["auto", "test", "test_gold"] = Field(
        "auto",
        description='"test" (held-out voted items), "test_gold" (gold items with no votes) or '
        '"auto" (test_gold when every job has it, else test).',
    )
    baseline: Baseline = Field(default_factory=Baseline)
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
