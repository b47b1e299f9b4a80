"""What a model's outputs mean for each task type, and the loss that trains them.

The network is the same for every type (app/training/models.py: K logits per item); the head
is how those logits are read and trained:

- single and ordinal: a softmax over the K classes or levels, a distribution. Losses: soft-ce
  and hard-ce (Uma et al., HCOMP 2020); for ordinal also squared-emd (Hou, Yu & Samaras 2016),
  which charges a prediction by how far its mass sits from the human levels.
- multi_label: K independent sigmoids, each the probability that its class applies (rows do
  not sum to 1). Losses: soft-bce, binary cross-entropy against each class's soft
  probability, and hard-bce, the same against those probabilities thresholded at 0.5.

Hard losses become their soft form on hard targets, converted once before the loop, so every
loss runs the same per-step code (see losses.hard_targets).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from app.training.config import LOSSES_BY_TASK
from app.training.errors import JobError
from app.training.losses import hard_bce_targets, hard_targets, soft_bce, soft_ce, squared_emd

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# loss name -> (the per-step loss, the target conversion done once before training)
_LOSSES: dict[str, tuple[LossFn, Callable[[torch.Tensor], torch.Tensor] | None]] = {
    "soft-ce": (soft_ce, None),
    "hard-ce": (soft_ce, hard_targets),
    "squared-emd": (squared_emd, None),
    "soft-bce": (soft_bce, None),
    "hard-bce": (soft_bce, hard_bce_targets),
}


def is_sigmoid(task_type: str) -> bool:
    return task_type == "multi_label"


def probs_of(logits: torch.Tensor, task_type: str) -> torch.Tensor:
    """Probabilities from logits in float64: per-class sigmoids (multi-label) or a softmax."""
    z = logits.double()
    return torch.sigmoid(z) if is_sigmoid(task_type) else torch.softmax(z, dim=1)


@dataclass(frozen=True)
class Head:
    task_type: str
    loss_name: str

    def __post_init__(self) -> None:
        allowed = LOSSES_BY_TASK.get(self.task_type, ())
        if self.loss_name not in allowed:
            # The API checks this before queuing (TrainingConfig.for_task); a job reaching
            # here was stored before the project's type changed, or by hand.
            raise JobError(
                f"loss {self.loss_name!r} does not train a {self.task_type} project "
                f"(its losses: {', '.join(allowed)})"
            )

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return _LOSSES[self.loss_name][0](logits, targets)

    def targets(self, targets: torch.Tensor) -> torch.Tensor:
        """The targets the loss is computed against: the hard ones for a hard loss."""
        convert = _LOSSES[self.loss_name][1]
        return targets if convert is None else convert(targets)

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        return probs_of(logits, self.task_type)
