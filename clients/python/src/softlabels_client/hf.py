"""A Hugging Face `datasets.Dataset` of soft labels (the `datasets` extra)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from softlabels_client._extras import need


def to_hf_dataset(rows: Sequence[dict[str, Any]]) -> Any:
    datasets = need("datasets", "datasets", "Client.hf_dataset()")
    return datasets.Dataset.from_dict(
        {
            "item": [r["item"] for r in rows],
            "features": [r["features"] for r in rows],
            "soft_label": [r["distribution"] for r in rows],
            "n_votes": [r["n_votes"] for r in rows],
            "gold": [r["gold"] for r in rows],
        }
    )
