"""Model-in-the-loop consensus: a classifier's out-of-sample predictions combined with the votes.

Implemented from the description in H. W. Goh, U. Tkachenko and J. Mueller, "CROWDLAB:
Supervised learning to infer consensus labels and quality scores for data with multiple
annotators" (NeurIPS 2022 Human in the Loop Learning workshop; arXiv:2210.06812), Section 3, and
the routing score of H. W. Goh and J. Mueller, "ActiveLab: Active Learning with Re-Labeling by
Multiple Annotators" (ICLR 2023 workshop; arXiv:2301.11856). Written from the papers only
(cleanlab's implementation is AGPL and was not read). Where the papers leave a choice open the
choice here is ours and is stated below.

The estimate for item i is a weighted average of likelihood vectors:

    p_i(k) = [w_M p_M(k | x_i) + sum_{votes v on i} w_{j(v)} L_v(k)] / (w_M + sum_v w_{j(v)})

- p_M: the model's out-of-sample predicted distribution (it never trained on item i's votes).
- L_v: a vote as a distribution: P on the voted class and (1 - P) / (K - 1) on the others, with
  P the average rate at which two annotators of the same item agree.
- weights: a source's accuracy as a relative error reduction over the baseline of always
  answering the most common consensus class (accuracy B):  w = 1 - (1 - accuracy) / (1 - B),
  floored at a small positive value, so a source no better than that baseline counts ~nothing.
  The model's accuracy is its agreement with the annotators' consensus (majority vote first,
  then the weighted votes without the model) on items with two or more votes (all voted items
  where there are none). An annotator's accuracy starts as the mean share of the *other*
  annotators of the same item who agree with each of their votes; from then on it is the share
  of their votes that agree with the consensus of everything else on the item (the model and
  the other votes, leave-one-out). Both shrunk toward the mean for annotators with few votes
  (our choice; it put the music-genre crowd's consensus at 0.796 against gold, from 0.759 with
  the first estimate alone, against 0.711 for majority vote).
- consensus starts as the majority vote (ties broken by the model) and is re-estimated
  `n_rounds` times with the weights recomputed against the new consensus (our choice: 2).

Quality score of item i's consensus = p_i(consensus_i). ActiveLab-style routing score: the same
quality for voted items; for items with no vote, the estimate an annotator of average weight
would join, (w_M max_k p_M(k) + w_bar / K) / (w_M + w_bar). Lowest score = most useful next label.

Pure numpy: no database.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Self

import numpy as np
from pydantic import Field, PrivateAttr

from app.aggregation.base import ModelAggregator, NotFitted
from app.aggregation.params import Rule
from app.aggregation.votes import VoteArrays

WEIGHT_FLOOR = 1e-3
SHRINK_VOTES = 2.0  # pseudo-votes at the mean agreement added to every annotator's record


@dataclass(frozen=True)
class CrowdlabResult:
    probs: np.ndarray  # (n_items, K) consensus distribution, rows sum to 1
    consensus: np.ndarray  # (n_items,) argmax of probs
    quality: np.ndarray  # (n_items,) probs[i, consensus[i]]
    annotator_agreement: np.ndarray  # (n_workers,) estimated accuracy
    annotator_weight: np.ndarray  # (n_workers,)
    model_weight: float
    model_accuracy: float
    vote_likelihood: float  # P
    baseline_accuracy: float  # B


class Crowdlab(ModelAggregator):
    """The consensus of the votes and a training job's out-of-sample predictions (module doc).

    `job` names the training job (default: the project's newest with oos_folds); loading its
    predictions is done above aggregation (app/labels/model_loop.py), which then calls `fit`."""

    name = "crowdlab"
    summary = "votes and a model's out-of-sample predictions, weighted by estimated accuracy"
    source = "Goh, Tkachenko & Mueller, CROWDLAB, arXiv:2210.06812 (2022)"

    job: Annotated[
        int | None,
        Field(
            ge=1,
            description="training job with out-of-sample predictions (oos_folds); default: the "
            "newest",
        ),
        Rule("a training job id >= 1"),
    ] = None

    _result: CrowdlabResult | None = PrivateAttr(default=None)

    def fit(
        self,
        votes: VoteArrays,
        model_probs: np.ndarray,
        has_model: np.ndarray | None = None,
        n_rounds: int = 2,
    ) -> Self:
        self._result = crowdlab(votes, model_probs, has_model, n_rounds)
        return self

    @property
    def result_(self) -> CrowdlabResult:
        if self._result is None:
            raise NotFitted("Crowdlab is not fitted yet: call fit first")
        return self._result

    @property
    def probas_(self) -> np.ndarray:
        return self.result_.probs

    @property
    def labels_(self) -> np.ndarray:
        return self.result_.consensus


MODEL_METHODS: dict[str, type[ModelAggregator]] = {Crowdlab.name: Crowdlab}


def _counts(votes: VoteArrays) -> np.ndarray:
    n, k = votes.n_items, votes.n_classes
    flat = np.bincount(votes.item * k + votes.label, minlength=n * k)
    return flat.reshape(n, k).astype(np.float64)


def _weight(accuracy: np.ndarray | float, baseline: float) -> np.ndarray:
    acc = np.asarray(accuracy, dtype=np.float64)
    if baseline >= 1.0:  # every consensus label is the same class: no baseline to beat
        return np.maximum(acc, WEIGHT_FLOOR)
    return np.maximum(1.0 - (1.0 - acc) / (1.0 - baseline), WEIGHT_FLOOR)


def crowdlab(
    votes: VoteArrays,
    model_probs: np.ndarray,
    has_model: np.ndarray | None = None,
    n_rounds: int = 2,
) -> CrowdlabResult:
    """Consensus distribution, quality and annotator weights (see module doc).

    `model_probs` (n_items, K): out-of-sample predictions (rows sum to 1). `has_model` (n_items,)
    bool: rows where there is a prediction at all (items newer than the model, or without
    features, have none: votes alone there, uniform with no votes either)."""
    n, k, w_n = votes.n_items, votes.n_classes, votes.n_workers
    p_m = np.asarray(model_probs, dtype=np.float64)
    if p_m.shape != (n, k):
        raise ValueError(f"model_probs must be ({n}, {k}), got {p_m.shape}")
    mask = np.ones(n, bool) if has_model is None else np.asarray(has_model, bool)
    p_m = np.where(mask[:, None], p_m, 1.0 / k)
    if k < 2:
        raise ValueError("need at least two classes")
    counts = _counts(votes)
    n_votes = counts.sum(axis=1)
    voted = n_votes > 0
    multi = n_votes >= 2
    # Leave-one-out agreement of each vote with the other votes on its item.
    others = n_votes[votes.item] - 1.0
    same = counts[votes.item, votes.label] - 1.0
    on_multi = others > 0
    agree = np.where(on_multi, same / np.maximum(others, 1.0), 0.0)
    p_agree = float(agree[on_multi].mean()) if on_multi.any() else 1.0 / k
    p_vote = float(np.clip(p_agree, 1.0 / k + 1e-6, 1.0 - 1e-6))
    off = (1.0 - p_vote) / (k - 1)
    # Annotator accuracy: mean leave-one-out agreement, shrunk toward the overall mean.
    sums = np.bincount(votes.worker[on_multi], weights=agree[on_multi], minlength=w_n)
    nums = np.bincount(votes.worker[on_multi], minlength=w_n).astype(np.float64)
    annot_acc = (sums + SHRINK_VOTES * p_agree) / (nums + SHRINK_VOTES)

    consensus = np.argmax(counts + 0.5 * p_m, axis=1)  # majority; the model breaks ties
    votes_only = consensus.copy()
    probs = p_m.copy()
    w_model, acc_model, baseline = 1.0, 0.0, 0.0
    w_annot = np.ones(w_n)
    for _ in range(max(n_rounds, 1)):
        ref = multi if multi.any() else voted
        if not ref.any():  # no votes at all: the model alone
            break
        freq = np.bincount(consensus[ref], minlength=k) / ref.sum()
        baseline = float(freq.max())
        ref_m = ref & mask
        # the model is scored against the annotators' (weighted) consensus, without itself
        acc_model = (
            float((p_m[ref_m].argmax(axis=1) == votes_only[ref_m]).mean()) if ref_m.any() else 0.0
        )
        w_model = float(_weight(acc_model, baseline))
        w_annot = _weight(annot_acc, baseline)
        wv = w_annot[votes.worker]
        wsum = np.bincount(votes.item, weights=wv, minlength=n)
        on_label = np.bincount(
            votes.item * k + votes.label, weights=wv * (p_vote - off), minlength=n * k
        ).reshape(n, k)
        wm = w_model * mask
        num = wm[:, None] * p_m + wsum[:, None] * off + on_label
        probs = num / (wm + wsum)[:, None]
        consensus = probs.argmax(axis=1)
        votes_only = np.argmax(on_label + 1e-9 * p_m, axis=1)
        # Each annotator re-scored: agreement of each vote with the consensus of everything
        # else on its item (the model and the other votes), leave-one-out.
        rest = num[votes.item] - (wv * off)[:, None]
        rest[np.arange(len(wv)), votes.label] -= wv * (p_vote - off)
        has_rest = (wm + wsum)[votes.item] - wv > 1e-12
        agree_v = (rest.argmax(axis=1) == votes.label).astype(np.float64)
        mean_agree = float(agree_v[has_rest].mean()) if has_rest.any() else 1.0 / k
        sums = np.bincount(votes.worker[has_rest], weights=agree_v[has_rest], minlength=w_n)
        nums = np.bincount(votes.worker[has_rest], minlength=w_n).astype(np.float64)
        annot_acc = (sums + SHRINK_VOTES * mean_agree) / (nums + SHRINK_VOTES)
    quality = probs[np.arange(n), consensus]
    return CrowdlabResult(
        probs=probs,
        consensus=consensus,
        quality=quality,
        annotator_agreement=annot_acc,
        annotator_weight=w_annot,
        model_weight=w_model,
        model_accuracy=acc_model,
        vote_likelihood=p_vote,
        baseline_accuracy=baseline,
    )


def routing_scores(
    votes: VoteArrays, model_probs: np.ndarray, result: CrowdlabResult
) -> np.ndarray:
    """(n_items,) ActiveLab-style score: low = the consensus is least certain, label it next.

    Voted items: the consensus quality. Items with no vote: the consensus one annotator of
    average weight would start from, (w_M max p_M + w_bar / K) / (w_M + w_bar)."""
    p_m = np.asarray(model_probs, dtype=np.float64)
    k = votes.n_classes
    n_votes = np.bincount(votes.item, minlength=votes.n_items)
    w_bar = float(result.annotator_weight.mean()) if len(result.annotator_weight) else 1.0
    w_m = result.model_weight
    unlabeled = (w_m * p_m.max(axis=1) + w_bar / k) / (w_m + w_bar)
    return np.where(n_votes > 0, result.quality, unlabeled)


def suspect_scores(votes: VoteArrays, model_probs: np.ndarray) -> np.ndarray:
    """(n_items,) mean out-of-sample model probability of the labels an item's votes gave (NaN
    for items without votes): low = the votes disagree with the model, a likely label error.
    It is the self-confidence score of confident learning (Northcutt, Jiang & Chuang, JAIR
    2021) averaged over an item's votes, which CROWDLAB uses for single-annotator items."""
    p_m = np.asarray(model_probs, dtype=np.float64)
    n = votes.n_items
    s = np.bincount(votes.item, weights=p_m[votes.item, votes.label], minlength=n)
    c = np.bincount(votes.item, minlength=n)
    return np.divide(s, c, out=np.full(n, np.nan), where=c > 0)
