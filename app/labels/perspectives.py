"""[3. aggregated] Each annotator's view: the answer one worker would give on one item, from the
fitted worker model (app/aggregation/perspectivist.py): the item's posterior pushed through the
worker's confusion (single-label, Dawid-Skene; ordinal, the rater model's answer kernel), or for
a multi-label project through the worker's tick rates. A method without a per-worker model
(count methods) predicts every worker to answer like the item's soft label: the baseline."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.aggregation.perspectivist import answer_distribution, tick_probabilities
from app.labels.fits import locate
from app.labels.service import Labeler


@dataclass(frozen=True)
class WorkerView:
    probs: np.ndarray  # (K,) answer distribution, or multi-label per-class tick probabilities
    model: str  # "worker": from the worker's own model; "item": the item's soft label
    in_fit: bool  # False: the worker is newer than the fit: the crowd's average worker


def worker_view(
    labels: Labeler,
    item_id: int,
    counts: np.ndarray,
    n_votes: int,
    worker_id: int,
    multi_label: bool,
) -> WorkerView:
    item = labels.probs(np.asarray([item_id]), counts[None, :], np.asarray([n_votes]))
    fit = labels.fit
    if fit is None:
        return WorkerView(item[0], "item", True)
    pos, known = locate(fit.worker_ids, np.asarray([worker_id]))
    result = fit.result
    one = np.zeros(1, dtype=np.int64)
    if multi_label:
        sens, spec = result.state.get("sensitivity"), result.state.get("specificity")
        if sens is None or spec is None:
            return WorkerView(item[0], "item", True)
        # A worker the (stale) fit has not seen: the average of the workers it has.
        s = sens[pos] if known[0] else sens.mean(axis=0, keepdims=True)
        f = spec[pos] if known[0] else spec.mean(axis=0, keepdims=True)
        return WorkerView(tick_probabilities(item, s, f, one, one)[0], "worker", bool(known[0]))
    if result.confusion is None:
        return WorkerView(item[0], "item", True)
    conf = result.confusion
    kernel = conf[pos] if known[0] else conf.mean(axis=0, keepdims=True)
    return WorkerView(answer_distribution(item, kernel, one, one)[0], "worker", bool(known[0]))
