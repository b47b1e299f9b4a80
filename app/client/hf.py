"""A Hugging Face `datasets.Dataset` of soft labels, where that package is installed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def to_hf_dataset(rows: Sequence[dict[str, Any]]) -> Any:
    try:
        import datasets
    except ImportError:
        raise ImportError(
            "hf_dataset() needs the Hugging Face `datasets` package: pip install datasets"
        ) from None
    return datasets.Dataset.from_dict(
        {
            "item": [r["item"] for r in rows],
            "features": [r["features"] for r in rows],
            "soft_label": [r["distribution"] for r in rows],
            "n_votes": [r["n_votes"] for r in rows],
            "gold": [r["gold"] for r in rows],
        }
    )
