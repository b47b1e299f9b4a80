"""Agreement figures, worker estimates and vote routing: /stats, /workers, /items/next."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, Query
from sqlalchemy import Engine

import app.api.paths  # noqa: F401  (registers the {worker:id} path convertor)
from app.aggregation import agreement
from app.aggregation.registry import get_method
from app.api.access import require
from app.api.deps import EngineDep, ProjectDep
from app.api.method_query import LabelerDep, WorkerLabelerDep
from app.api.schemas import NextItems, ProjectStats, WorkerDetail, WorkerList
from app.db.models import Project
from app.errors import NotFound, ValidationFailed
from app.labels import reads, task_analytics
from app.labels.fits import load_votes, locate
from app.labels.service import Labeler

router = APIRouter(prefix="/v1/projects/{project}", tags=["analytics"])


@router.get("/stats", response_model=ProjectStats, dependencies=[Depends(require("read"))])
def stats(
    project: ProjectDep,
    engine: EngineDep,
    labels: LabelerDep,
) -> ProjectStats:
    """Counts, votes-per-item histogram, Krippendorff's alpha (nominal; ordinal metric on an
    ordinal project; Jaccard distance between the sets on a multi-label one), Fleiss' kappa
    (one answer per vote: not multi-label), and the mean normalized entropy of the soft labels
    by `method` (multi-label: the mean binary entropy of each class's probability)."""
    multi = project.task_type == "multi_label"
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
        items = reads.item_counts(conn, project.id, len(project.classes))
        n_workers = reads.worker_count(conn, project.id)
        sets = load_votes(conn, project.id, len(project.classes), ticks=True) if multi else None
        conn.rollback()
    ids, n_votes, counts = items.ids, items.n_votes, items.counts
    voted = n_votes > 0
    alpha = task_analytics.project_agreement(
        project.task_type, counts[voted], sets.votes if sets is not None else None
    )
    entropy = None
    if voted.any():
        probs = labels.probs(ids[voted], counts[voted], n_votes[voted])
        entropy = float(task_analytics.uncertainty(project.task_type, probs, "entropy").mean())
    return ProjectStats(
        task_type=project.task_type,
        items=len(ids),
        items_with_votes=int(voted.sum()),
        votes=int(n_votes.sum()),
        workers=int(n_workers),
        votes_per_item=[
            {"n_votes": n, "items": c} for n, c in agreement.votes_per_item_histogram(n_votes)
        ],
        krippendorff_alpha=alpha.value,
        krippendorff_metric=alpha.metric,
        fleiss_kappa=alpha.kappa,
        fleiss_kappa_reason=alpha.kappa_reason,
        mean_normalized_entropy=entropy,
        method=labels.method,
        params=labels.params,
        as_of=labels.as_of,
        stale=labels.stale,
    )


@router.get(
    "/items/next",
    response_model=NextItems,
    dependencies=[Depends(require("read"))],
)
def next_items(
    project: ProjectDep,
    engine: EngineDep,
    labels: LabelerDep,
    strategy: Literal["entropy", "margin", "fewest-votes", "activelab"] = "entropy",
    limit: Annotated[int, Query(ge=1, le=10_000)] = 50,
    worker: Annotated[
        str | None, Query(max_length=256, description="Leave out items this worker labeled.")
    ] = None,
    max_votes: Annotated[
        int | None, Query(ge=1, le=2**31 - 1, description="Only items with fewer votes.")
    ] = None,
) -> NextItems:
    """The items that most need another vote: most uncertain first (`entropy`: normalized
    entropy of the soft label; `margin`: 1 - (p1 - p2); `activelab`: 1 - the quality of the
    crowdlab estimate, unlabeled items scored by the model, Goh & Mueller 2023), or fewest
    votes first. Items with no
    votes count as maximally uncertain. Ties go to fewer votes, then older items. On a
    multi-label project, whose soft label is one probability per class, `entropy` is the mean
    binary entropy over the classes and `margin` is 1 - the smallest |P(in) - P(out)| of any
    class (the least settled class decides)."""
    with engine.connect() as conn:
        found = reads.routing_candidates(conn, project.id, len(project.classes), max_votes, worker)
    if not found.external_ids:
        return NextItems(strategy=strategy, method=labels.method, items=[])
    id_arr, n_arr, count_arr, ext = found.ids, found.n_votes, found.counts, found.external_ids
    if strategy == "fewest-votes":
        score = -n_arr.astype(np.float64)
        uncertainty = None
    elif strategy == "activelab":  # 1 - ActiveLab-style score of the crowdlab estimate
        if labels.routing is None:
            raise ValidationFailed(
                "strategy=activelab needs method=crowdlab (optionally job=<training job id>).",
                errors=[{"index": None, "field": "method", "reason": "must be crowdlab"}],
            )
        uncertainty = 1.0 - labels.routing(id_arr)
        score = uncertainty
    else:
        probs = labels.probs(id_arr, count_arr, n_arr)
        uncertainty = task_analytics.uncertainty(project.task_type, probs, strategy)
        uncertainty = np.where(n_arr == 0, 1.0, uncertainty)
        score = uncertainty
    order = np.lexsort((id_arr, n_arr, -score))[:limit]
    return NextItems(
        strategy=strategy,
        method=labels.method,
        items=[
            {
                "item": ext[i],
                "n_votes": int(n_arr[i]),
                "uncertainty": None if uncertainty is None else float(uncertainty[i]),
            }
            for i in order.tolist()
        ],
    )


def _worker_fit(labels: Labeler) -> Labeler:
    if labels.fit is None:
        raise ValidationFailed(
            f"Method {labels.method!r} has no worker model; use one of the worker-model methods.",
            errors=[{"index": None, "field": "method", "reason": "not a worker-model method"}],
        )
    return labels


def _worker_table(engine: Engine, project: Project, labels: Labeler) -> dict[str, Any]:
    # One snapshot: a vote from a worker created between the queries would otherwise point
    # past the worker list.
    assert labels.fit is not None
    multi = project.task_type == "multi_label"
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
        pv = load_votes(conn, project.id, len(project.classes), ticks=multi)
        names, excluded = reads.workers_in_order(conn, project.id)
        conn.rollback()
    v = pv.votes
    agree = task_analytics.worker_agreement(project.task_type, v)
    pos, known = locate(labels.fit.worker_ids, pv.worker_ids)
    # A multi-label item has no one gold class (gold is None there): no votes on gold.
    gold = v.gold if v.gold is not None else np.full(v.n_items, -1)
    on_gold = gold[v.item] >= 0
    n_gold = np.bincount(v.worker[on_gold], minlength=v.n_workers)
    gold_hits = np.bincount(
        v.worker[on_gold], weights=v.label[on_gold] == gold[v.item[on_gold]], minlength=v.n_workers
    )
    return {
        "n_gold": n_gold,
        "gold_hits": gold_hits,
        "pv": pv,
        "names": names,
        "excluded": excluded,
        "agree": agree.agreement,
        "scored": agree.n_scored,
        "spam": agree.spammer,
        "rules": (agree.rule, agree.spammer_rule),
        "pos": pos,
        "known": known,
        "n_votes": np.bincount(v.worker, minlength=v.n_workers),
        "skill": labels.fit.result.worker_skill,
    }


def _finite(x: float) -> float | None:
    # auto may choose a count method, which has no skill per worker (NaN in the fit).
    return float(x) if np.isfinite(x) else None


def _worker_row(t: dict[str, Any], w: int) -> dict[str, Any]:
    return {
        "worker": t["names"][w],
        "excluded": t["excluded"][w],
        "n_votes": int(t["n_votes"][w]),
        "agreement": float(t["agree"][w]) if t["scored"][w] else None,
        "n_scored": int(t["scored"][w]),
        "skill": _finite(t["skill"][t["pos"][w]]) if t["known"][w] else None,
        "spammer": bool(t["spam"][w]),
        "n_gold": int(t["n_gold"][w]),
        "gold_accuracy": float(t["gold_hits"][w] / t["n_gold"][w]) if t["n_gold"][w] else None,
    }


@router.get("/workers", response_model=WorkerList, dependencies=[Depends(require("read"))])
def list_workers(
    project: ProjectDep,
    engine: EngineDep,
    labeled: WorkerLabelerDep,
) -> WorkerList:
    """Every worker: votes, agreement with the other votes on the same items (by the project's
    task type: the leave-one-out majority for single-choice, partial credit for a near level on
    a scale, Jaccard similarity of multi-label sets; `agreement_rule` says which), the
    method's skill estimate and the spammer flag (rule in `spammer_rule`). Default method: a
    worker model of the project's type (dawid-skene; binary-relevance for multi-label)."""
    labels = _worker_fit(labeled)
    t = _worker_table(engine, project, labels)
    return WorkerList(
        method=labels.method,
        params=labels.params,
        as_of=labels.as_of,
        stale=labels.stale,
        skill=get_method(labels.method, project.task_type).summary,
        agreement_rule=t["rules"][0],
        spammer_rule=t["rules"][1],
        workers=[_worker_row(t, w) for w in range(len(t["names"]))],
        warnings=labels.fit.result.warnings if labels.fit is not None else [],
    )


@router.get(
    "/workers/{worker:id}", response_model=WorkerDetail, dependencies=[Depends(require("read"))]
)
def get_worker(
    project: ProjectDep,
    engine: EngineDep,
    labeled: WorkerLabelerDep,
    worker: str,
) -> WorkerDetail:
    """One worker, with a K x K confusion matrix (row = true class, column = given label) and
    class-wise accuracy: the model's where it has one (dawid-skene), otherwise counted against
    the model's most probable class for each item. On a multi-label project, per class the
    worker's sensitivity (P(tick | the class applies)) and specificity (P(no tick | it does
    not)) instead: the model's, or counted against the model's P > 0.5 decision."""
    labels = _worker_fit(labeled)
    t = _worker_table(engine, project, labels)
    if worker not in t["names"]:
        raise NotFound(f"No worker {worker!r} in project {project.name!r}.")
    w = t["names"].index(worker)
    fit, pv = labels.fit, t["pv"]
    assert fit is not None  # _worker_fit refused methods without a worker model
    k = len(project.classes)
    mine = pv.votes.worker == w
    common = {
        **_worker_row(t, w),
        "method": labels.method,
        "params": labels.params,
        "as_of": labels.as_of,
        "stale": labels.stale,
        "classes": project.classes,
    }
    if project.task_type == "multi_label":
        truth = fit.probs_for(pv.item_ids[pv.votes.item[mine]]) > 0.5
        position = int(t["pos"][w]) if t["known"][w] else None
        sens, spec, source = task_analytics.tick_rates(
            pv.votes.ticks[mine], truth, fit.result.state, position
        )
        return WorkerDetail(
            **common,
            confusion_source=source,
            sensitivity=[_finite(x) for x in sens],
            specificity=[_finite(x) for x in spec],
        )
    conf = fit.result.confusion
    if conf is not None and t["known"][w]:
        matrix, source = np.asarray(conf[t["pos"][w]], dtype=np.float64), "model"
    else:
        truth = fit.probs_for(pv.item_ids[pv.votes.item[mine]]).argmax(axis=1)
        matrix = np.zeros((k, k))
        np.add.at(matrix, (truth, pv.votes.label[mine]), 1.0)
        rows = matrix.sum(axis=1, keepdims=True)
        matrix = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
        source = "empirical"
    return WorkerDetail(
        **common,
        confusion=matrix.tolist(),
        confusion_source=source,
        class_accuracy=np.diag(matrix).tolist(),
    )
