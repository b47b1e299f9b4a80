"""A torch Dataset of (features, soft target) from soft labels. Imported (with torch) only
when Client.torch_dataset() is called: the `torch` extra."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset


class SoftLabelDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """(features, soft target) pairs as float32 tensors, ready for a DataLoader; `items` and
    `classes` name the rows and the target's columns."""

    def __init__(self, features: Any, targets: Any, items: list[str], classes: list[str]) -> None:
        self.features = torch.as_tensor(features, dtype=torch.float32)
        self.targets = torch.as_tensor(targets, dtype=torch.float32)
        self.items, self.classes = items, classes

    @classmethod
    def from_rows(cls, rows: Sequence[dict[str, Any]], project: dict[str, Any]) -> SoftLabelDataset:
        # torch.tensor from lists, not numpy: the torch extra does not promise numpy.
        k = len(project["classes"])
        n_features = project.get("n_features") or (len(rows[0]["features"]) if rows else 0)
        x = torch.tensor([r["features"] for r in rows], dtype=torch.float32)
        y = torch.tensor([r["distribution"] for r in rows], dtype=torch.float32)
        return cls(
            x.reshape(-1, n_features),
            y.reshape(-1, k),
            [r["item"] for r in rows],
            list(project["classes"]),
        )

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.features[i], self.targets[i]
