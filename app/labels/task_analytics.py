"""[3. aggregated] What /stats, /workers and /items/next compute, by the project's task type.

Single-choice projects keep the nominal statistics of app/aggregation/agreement.py. Ordinal
projects are scored on their scale (Krippendorff's alpha with the ordinal metric; a worker's
agreement gives partial credit for a near level) and multi-label projects on sets (alpha with
the Jaccard distance; agreement is the Jaccard similarity of the sets), through
app/aggregation/agreement_types.py. A multi-label soft label is K separate probabilities, so its
uncertainty is per class (binary entropy, per-class margin), not the entropy of a distribution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.aggregation import agreement, agreement_types
from app.aggregation.votes import TickVotes, VoteArrays

SPAMMER_RULE = (
    "flagged when a worker has >= 10 votes on items with other votes and agrees with the "
    "leave-one-out majority no more often than 1/K + 2*sqrt((1/K)(1-1/K)/n) (two binomial "
    "standard errors above random guessing)"
)
PAIRED_SPAMMER_RULE = (
    "flagged when a worker has >= 10 votes on items with other votes and their mean agreement "
    "exceeds chance by less than two standard errors; chance, per vote: its mean similarity to "
    "the votes on every other item (what answering without reading the item would get)"
)
AGREEMENT = {
    "single": "share of scored votes that agree with the majority of the other votes on the "
    "item (a tie for the top counts as agreement)",
    "ordinal": "mean over scored votes of 1 - |level - other level| / (K - 1), averaged over "
    "the other votes on the item (1: always the same level as the others)",
    "multi_label": "mean over scored votes of the Jaccard similarity |A & B| / |A | B| to each "
    "other vote on the item (two empty sets: 1)",
}
ALPHA_METRIC = {"single": "nominal", "ordinal": "ordinal", "multi_label": "jaccard"}


def answers(votes: VoteArrays) -> np.ndarray:
    """Each vote's answer: its row of ticks (multi-label) or its class or level index."""
    return votes.ticks if isinstance(votes, TickVotes) else votes.label


@dataclass(frozen=True)
class Alpha:
    value: float | None
    metric: str
    kappa: float | None
    kappa_reason: str | None


def project_agreement(task_type: str, counts: np.ndarray, votes: VoteArrays | None) -> Alpha:
    """Krippendorff's alpha with the type's metric, and Fleiss' kappa where it applies (one
    answer per vote: nominal, so on a scale it ignores the order). `counts`: the voted items'
    stored counts; `votes`: a multi-label project's vote sets (None for the other types)."""
    metric = ALPHA_METRIC[task_type]
    if task_type == "multi_label":
        assert isinstance(votes, TickVotes)
        why = (
            "Fleiss' kappa is for one answer per vote; a multi-label project's agreement is "
            "Krippendorff's alpha with the Jaccard distance between the sets."
        )
        return Alpha(
            agreement_types.krippendorff_alpha_sets(votes.item, votes.ticks), metric, None, why
        )
    if counts.shape[0] == 0:
        return Alpha(None, metric, None, "no item has votes")
    kappa, reason = agreement.fleiss_kappa(counts)
    if task_type == "ordinal":
        return Alpha(agreement_types.krippendorff_alpha_ordinal(counts), metric, kappa, reason)
    return Alpha(agreement.krippendorff_alpha_nominal(counts), metric, kappa, reason)


def uncertainty(task_type: str, probs: np.ndarray, strategy: str) -> np.ndarray:
    """Per item, how unsettled its soft label is, in [0, 1]: `entropy` or `margin`."""
    if task_type == "multi_label":
        if strategy == "entropy":
            return agreement_types.tick_entropy(probs)
        return agreement_types.tick_margin_uncertainty(probs)
    if strategy == "entropy":
        return agreement.normalized_entropy(probs)
    return agreement.margin_uncertainty(probs)


@dataclass(frozen=True)
class WorkerAgreement:
    agreement: np.ndarray  # (n_workers,)
    n_scored: np.ndarray  # (n_workers,)
    spammer: np.ndarray  # (n_workers,) bool
    rule: str  # how `agreement` is computed
    spammer_rule: str


def worker_agreement(task_type: str, votes: VoteArrays) -> WorkerAgreement:
    v = votes
    if task_type == "single":
        agree, scored = agreement.leave_one_out_agreement(
            v.item, v.worker, v.label, v.n_items, v.n_workers, v.n_classes
        )
        spam = agreement.spammer_flags(agree, scored, v.n_classes)
        return WorkerAgreement(agree, scored, spam, AGREEMENT[task_type], SPAMMER_RULE)
    agree, scored, spam = agreement_types.worker_agreement(
        v.item, v.worker, answers(v), v.n_workers, v.n_classes
    )
    return WorkerAgreement(agree, scored, spam, AGREEMENT[task_type], PAIRED_SPAMMER_RULE)


def tick_rates(
    ticks: np.ndarray, truth: np.ndarray, state: dict[str, np.ndarray], position: int | None
) -> tuple[np.ndarray, np.ndarray, str]:
    """One multi-label worker's per-class sensitivity (P(tick | the class applies)) and
    specificity (P(no tick | it does not)): the model's where it has them (`position`: the
    worker's row in the fit), else counted from `ticks` (their votes) against `truth` (the
    model's decision on those items, P > 0.5); NaN where a class never (or always) applies."""
    sens, spec = state.get("sensitivity"), state.get("specificity")
    k = ticks.shape[1]
    if sens is not None and spec is not None and position is not None:
        s, f = np.asarray(sens[position], float), np.asarray(spec[position], float)
        return np.broadcast_to(s, (k,)).copy(), np.broadcast_to(f, (k,)).copy(), "model"
    on, off = truth.sum(axis=0), (~truth).sum(axis=0)
    hit = (ticks & truth).sum(axis=0)
    reject = (~ticks & ~truth).sum(axis=0)
    s = np.divide(hit, on, out=np.full(k, np.nan), where=on > 0)
    f = np.divide(reject, off, out=np.full(k, np.nan), where=off > 0)
    return s, f, "empirical"
