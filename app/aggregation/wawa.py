"""Wawa (worker agreement with aggregate): majority vote weighted by agreement with the majority.

1. majority vote per item (ties go to the lowest class index, like pandas' idxmax);
2. each worker's weight is the share of their votes that equal that majority label;
3. the soft label is the weight-weighted share of each class among the item's votes.

Not iterative. This is crowd-kit's Wawa (crowd-kit 1.4.2, `crowdkit.aggregation.Wawa`); crowd-kit
cites no paper for it.
"""

from __future__ import annotations

import numpy as np

from app.aggregation.base import WorkerAggregator, WorkerModelFit
from app.aggregation.votes import VoteArrays, normalize_rows, vote_fractions


class Wawa(WorkerAggregator):
    """Weighted majority vote with weights = agreement with the unweighted majority.

    Initialization: none (closed form); `warm` is accepted and ignored. `n_iter` is 1.

    Departure from crowd-kit: an item whose voters all have weight 0 (none of them ever agreed
    with a majority) gets NaN probabilities from crowd-kit (0 / 0); here it falls back to its
    unweighted vote shares. Items without votes get the uniform distribution.

    `worker_skill`: the weight, i.e. the worker's agreement rate with the majority, in [0, 1];
    0 for a worker without votes.
    """

    name = "wawa"
    summary = "majority vote weighted by each worker's agreement with the majority"
    source = "crowd-kit's Wawa (Ustalov et al., crowd-kit, 2021-2024)"

    def _fit(self, votes: VoteArrays, warm: WorkerModelFit | None) -> WorkerModelFit:
        sv = self.sorted_votes(votes)
        shares = vote_fractions(sv)
        majority = shares.argmax(axis=1)  # first maximum: lowest class index on ties
        agree = (majority[sv.item] == sv.label).astype(np.float64)
        weight = np.divide(
            sv.worker_sum(agree),
            sv.worker_votes,
            out=np.zeros(sv.n_workers),
            where=sv.worker_votes > 0,
        )
        weighted = sv.item_label_sum(weight[sv.worker])
        total = weighted.sum(axis=1)
        probs = normalize_rows(weighted)
        dead = total <= 0  # no votes (shares are uniform there) or only zero-weight voters
        probs[dead] = shares[dead]
        return WorkerModelFit(
            probs=probs,
            worker_skill=weight,
            confusion=None,
            class_prior=None,
            n_iter=1,
            converged=True,
            state={"skill": weight},
        )
