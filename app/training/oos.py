"""K-fold out-of-sample predictions: every voted item scored by a model that never saw its votes.

Item i goes to fold fold_of(item id, split seed, K) (a keyed hash, so folds are stable as the
project grows). For each fold f a model with the job's config is trained on the other folds
(its own validation share of them for early stopping, no test split) and predicts fold f. These
predictions feed the crowdlab label method, the ActiveLab-style routing score and
/items/suspect (Goh, Tkachenko & Mueller 2022 need out-of-sample predictions: a model scored on
its own training labels would simply agree with them).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from torch import nn

from app.training.config import TrainingConfig
from app.training.data import TrainingData, fold_of
from app.training.trainer import predict_probs, train


def oos_predictions(
    cfg: TrainingConfig,
    data: TrainingData,
    folds: int,
    *,
    teacher: nn.Module | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, np.ndarray] | None:
    """{"oos_ids", "oos_probs", "oos_fold"[, "oos_db_ids"]}; None if stopped (cancelled)."""
    fold = fold_of(data.item_ids, cfg.effective_split_seed, folds)
    val = cfg.fractions[0] or 0.15
    fold_cfg = cfg.model_copy(
        update={
            "validation_fraction": val,
            "test_fraction": 0.0,
            "eval_fraction": None,
            "temperature_scaling": False,
            "oos_folds": None,
            "predict_unlabeled": False,
            "gold_test": False,
        }
    )
    probs = np.zeros((len(data.item_ids), data.n_classes))
    for f in range(folds):
        held = fold == f
        if not held.any():
            continue
        if should_stop is not None and should_stop():
            return None
        result = train(fold_cfg, data.subset(~held), teacher=teacher)
        probs[held] = predict_probs(result.model, data.features[held], data.task_type)
    out = {
        "oos_ids": np.asarray(data.item_ids, dtype=str),
        "oos_probs": probs,
        "oos_fold": fold,
    }
    if data.db_ids is not None:
        out["oos_db_ids"] = data.db_ids
    return out
