"""The models a training job can build: linear (multinomial logistic) or an MLP.

Each model starts with a `Standardize` layer whose mean and std are buffers, so a saved
state_dict is self-contained: predicting from a checkpoint needs raw features only.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from app.training.config import LinearModel, MLPModel


class Standardize(nn.Module):
    """(x - mean) / std with per-feature buffers (saved in the state_dict, never trained)."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))

    def fit(self, features: np.ndarray) -> None:
        """Set mean/std from (training) features. Constant features (std 0, e.g. the always-blank
        corner pixels of digits) keep std 1 so they map to 0 instead of NaN."""
        x = np.asarray(features, dtype=np.float64)
        mean = x.mean(axis=0)
        std = x.std(axis=0)
        std = np.where(std > 1e-12, std, 1.0)
        self.mean.copy_(torch.from_numpy(mean))
        self.std.copy_(torch.from_numpy(std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def build_model(
    model_cfg: LinearModel | MLPModel,
    n_features: int,
    n_classes: int,
    trunk: nn.Module | None = None,
) -> nn.Sequential:
    """Standardize, then Linear (linear) or [Linear, ReLU, Dropout] * len(hidden) + Linear (mlp).

    The result maps raw (n, n_features) float32 features to (n, n_classes) logits. With a
    `trunk` (an end-to-end encoder's network, e.g. the small CNN, with an `out_dim`), it sits
    between the standardization and that head, and trains with it. Parameters are initialized
    from torch's global RNG: seed it first (the trainer does).
    """
    if n_features < 1 or n_classes < 2:
        raise ValueError(f"need n_features >= 1 and n_classes >= 2, got {n_features}, {n_classes}")
    layers: list[nn.Module] = [Standardize(n_features)]
    width = n_features
    if trunk is not None:
        layers.append(trunk)
        width = int(getattr(trunk, "out_dim"))  # noqa: B009  (nn.Module hides attributes from mypy)
    if isinstance(model_cfg, MLPModel):
        for hidden in model_cfg.hidden:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            if model_cfg.dropout > 0:
                layers.append(nn.Dropout(model_cfg.dropout))
            width = hidden
    layers.append(nn.Linear(width, n_classes))
    return nn.Sequential(*layers)


def standardizer(model: nn.Module) -> Standardize:
    """The model's input standardization layer (the first module of `build_model`'s output)."""
    first = next(iter(model.children()))
    if not isinstance(first, Standardize):
        raise TypeError("model was not built by build_model (no leading Standardize layer)")
    return first
