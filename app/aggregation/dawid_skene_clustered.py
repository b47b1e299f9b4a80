"""Dawid-Skene with clustered workers: L confusion matrices shared by clusters of workers.

Each worker belongs to one of L clusters (prior tau); all workers of a cluster share its K x K
confusion matrix. With thousands of workers who give a handful of votes each, a matrix per
worker is estimated from three votes and overfits; a matrix per cluster is estimated from the
votes of every worker in it, while constant-label spammers, adversaries and experts still get
clusters of their own.

Y. Imamura, I. Sato and M. Sugiyama (2018). "Analysis of Minimax Error Rate for Crowdsourcing
and Its Application to Worker Clustering Model." Proceedings of the 35th International Conference
on Machine Learning (ICML), PMLR 80, 2147-2156. (peerannot implements it as `DawidSkeneClust`.)

Fitted by mean-field variational EM: q(true class of each item) and q(cluster of each worker)
alternate with the M-step (cluster confusions, class prior, cluster prior). Per iteration this
is two sparse products over the votes, like Dawid-Skene, plus (W, K^2) x (K^2, L) products.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import Field

from app.aggregation.base import WorkerAggregator, WorkerModelFit
from app.aggregation.dawid_skene import SMOOTHING_DOC
from app.aggregation.em import (
    EMModel,
    State,
    em_work,
    fit_result,
    multi_start,
    posterior_starts,
)
from app.aggregation.params import MaxIter, NonNegative, NStarts, Tol, UseGold
from app.aggregation.votes import EPS, SortedVotes, VoteArrays, class_prior, posteriors_from_log


class ClusteredDawidSkeneEM(EMModel):
    """State: "class_prior" (K,), "cluster_confusion" (L, K, K) [cluster, true, label],
    "cluster_prior" (L,), "membership" (W, L) q(cluster of each worker)."""

    def __init__(self, sv: SortedVotes, n_clusters: int, smoothing: float) -> None:
        self.sv, self.smoothing = sv, smoothing
        self.n_clusters = max(1, min(n_clusters, sv.n_workers))

    def _worker_counts(self, post: np.ndarray) -> np.ndarray:
        """(W, K, K) expected counts [worker, true class, label]."""
        k = self.sv.n_classes
        counts = np.asarray(self.sv.wl_by_item @ post)  # [worker * K + label, class]
        return np.ascontiguousarray(counts.reshape(-1, k, k).transpose(0, 2, 1))

    def _initial_membership(self, n: np.ndarray) -> np.ndarray:
        """Workers split into L groups by their agreement with the posteriors (hard)."""
        w, L = n.shape[0], self.n_clusters
        votes = n.sum(axis=(1, 2))
        acc = np.einsum("wcc->w", n) / np.maximum(votes, EPS)
        order = np.argsort(acc, kind="stable")
        member = np.zeros((w, L))
        member[order, (np.arange(w) * L) // max(w, 1)] = 1.0
        return member

    def m_step(self, post: np.ndarray, state: State | None) -> State:
        sv, k = self.sv, self.sv.n_classes
        n = self._worker_counts(post)
        if state is None:
            member = self._initial_membership(n)
        else:
            # Worker step: log q(cluster l) = log tau_l + sum_{c, label} N_w[c, label] log
            # conf_l[c, label].
            log_conf = np.log(np.maximum(state["cluster_confusion"], EPS)).reshape(-1, k * k)
            log_r = n.reshape(-1, k * k) @ log_conf.T + np.log(state["cluster_prior"])
            member, _ = posteriors_from_log(log_r)
        conf = np.einsum("wl,wck->lck", member, n) + self.smoothing
        conf /= conf.sum(axis=2, keepdims=True)
        tau = np.maximum(member.mean(axis=0), EPS)
        return {
            "class_prior": class_prior(sv, post),
            "cluster_confusion": conf,
            "cluster_prior": tau / tau.sum(),
            "membership": member,
        }

    def worker_confusion(self, state: State) -> np.ndarray:
        """(W, K, K) expected log-confusions under q(cluster), exponentiated per cell: the
        geometric mixture the item step uses."""
        k = self.sv.n_classes
        log_conf = np.log(np.maximum(state["cluster_confusion"], EPS)).reshape(-1, k * k)
        return (state["membership"] @ log_conf).reshape(-1, k, k)

    def e_step(self, state: State) -> tuple[np.ndarray, float]:
        k = self.sv.n_classes
        table = self.worker_confusion(state).transpose(0, 2, 1).reshape(-1, k)
        log_joint = np.asarray(self.sv.item_by_wl @ table) + np.log(state["class_prior"])
        post, log_norm = posteriors_from_log(log_joint)
        return post, float(log_norm.sum())


class DawidSkeneClustered(WorkerAggregator):
    """Clustered Dawid-Skene EM over the sparse vote list.

    Starts: vote fractions and majority vote (`n_starts`), each followed by an M-step in which
    workers are split into L equal groups by their agreement with those posteriors; see
    app/aggregation/em.py for how the run is chosen. Each iteration: item step (posteriors),
    then worker step (cluster memberships), then cluster confusions and priors.

    Warm start: the stored cluster confusions and priors; every worker's membership is
    re-estimated from them (new workers included).

    `confusion[w]` is the membership-weighted mixture of the cluster matrices; `worker_skill`
    its expected accuracy under the class prior. `state` also holds "membership" (W, L).
    """

    name = "dawid-skene-clustered"
    summary = (
        "Dawid-Skene with K x K confusion matrices shared by clusters of workers, for crowds "
        "of many workers with few votes each"
    )
    source = "Imamura, Sato & Sugiyama (2018), ICML, PMLR 80, 2147-2156"

    n_clusters: Annotated[
        int,
        Field(
            ge=1,
            le=1000,
            description="number of worker clusters L (at most the number of workers is used)",
        ),
    ] = 10
    max_iter: MaxIter = 100
    tol: Tol = 1e-5
    smoothing: Annotated[
        NonNegative,
        Field(
            description=SMOOTHING_DOC.replace("worker's", "cluster's").replace(
                "0 = maximum likelihood, as in the paper", "keeps unused clusters finite"
            )
        ),
    ] = 0.01
    n_starts: NStarts = 2
    use_gold: UseGold = False

    def work(self, n_votes: int) -> float:
        return em_work(n_votes, self.max_iter, self.n_starts)

    def _fit(self, votes: VoteArrays, warm: WorkerModelFit | None) -> WorkerModelFit:
        k = votes.n_classes
        sv = self.sorted_votes(votes)
        model = ClusteredDawidSkeneEM(sv, self.n_clusters, self.smoothing)
        warm_state = None
        if warm is not None:
            conf = warm.state.get("cluster_confusion")
            tau = warm.state.get("cluster_prior")
            prior = warm.state.get("class_prior")
            if (
                conf is not None
                and tau is not None
                and prior is not None
                and conf.shape == (model.n_clusters, k, k)
                and prior.shape == (k,)
            ):
                n = model._worker_counts(sv.clamp(np.full((votes.n_items, k), 1.0 / k)))
                log_conf = np.log(np.maximum(conf, EPS)).reshape(-1, k * k)
                member, _ = posteriors_from_log(n.reshape(-1, k * k) @ log_conf.T + np.log(tau))
                warm_state = {
                    "class_prior": prior,
                    "cluster_confusion": conf,
                    "cluster_prior": tau,
                    "membership": member,
                }
        run = multi_start(
            sv,
            model,
            max_iter=self.max_iter,
            tol=self.tol,
            warm=warm_state,
            posteriors=posterior_starts(sv, self.n_starts),
        )
        st = run.state
        prior = st["class_prior"]
        conf = np.einsum("wl,lck->wck", st["membership"], st["cluster_confusion"])
        diag = np.einsum("wcc->wc", conf)
        return fit_result(sv, run, prior, worker_skill=diag @ prior, confusion=conf, state=dict(st))
