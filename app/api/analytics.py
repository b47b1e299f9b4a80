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
from app.api.task_types import not_for
from app.db.models import Project
from app.errors import NotFound, ValidationFailed
from app.labels import reads
from app.labels.fits import load_votes, locate
from app.labels.service import Labeler

router = APIRouter(prefix="/v1/projects/{project}", tags=["analytics"])

SPAMMER_RULE = (
    "flagged when a worker has >= 10 votes on items with other votes and agrees with the "
    "leave-one-out majority no more often than 1/K + 2*sqrt((1/K)(1-1/K)/n) (two binomial "
    "standard errors above random guessing)"
)


@router.get(
    "/stats",
    response_model=ProjectStats,
    dependencies=[Depends(require("read")), Depends(not_for("multi_label", what="GET /stats"))],
)
def stats(
    project: ProjectDep,
    engine: EngineDep,
    labels: LabelerDep,
) -> ProjectStats:
    """Counts, votes-per-item histogram, Krippendorff's alpha (nominal), Fleiss' kappa, and the
    mean normalized entropy of the soft labels by `method`."""
    with engine.connect() as conn:
        items = reads.item_counts(conn, project.id, len(project.classes))
        n_workers = reads.worker_count(conn, project.id)
    ids, n_votes, counts = items.ids, items.n_votes, items.counts
    voted = n_votes > 0
    kappa, kappa_reason = (
        agreement.fleiss_kappa(counts[voted]) if voted.any() else (None, "no item has votes")
    )
    entropy = None
    if voted.any():
        probs = labels.probs(ids[voted], counts[voted], n_votes[voted])
        entropy = float(agreement.normalized_entropy(probs).mean())
    return ProjectStats(
        items=len(ids),
        items_with_votes=int(voted.sum()),
        votes=int(n_votes.sum()),
        workers=int(n_workers),
        votes_per_item=[
            {"n_votes": n, "items": c} for n, c in agreement.votes_per_item_histogram(n_votes)
        ],
        krippendorff_alpha=agreement.krippendorff_alpha_nominal(counts[voted])
        if voted.any()
        else None,
        fleiss_kappa=kappa,
        fleiss_kappa_reason=kappa_reason,
        mean_normalized_entropy=entropy,
        method=labels.method,
        params=labels.params,
        as_of=labels.as_of,
        stale=labels.stale,
    )


@router.get(
    "/items/next",
    response_model=NextItems,
    dependencies=[
        Depends(require("read")),
        Depends(not_for("multi_label", what="GET /items/next")),
    ],
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
    votes count as maximally uncertain. Ties go to fewer votes, then older items."""
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
        if strategy == "entropy":
            uncertainty = agreement.normalized_entropy(probs)
        else:
            uncertainty = agreement.margin_uncertainty(probs)
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
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
        pv = load_votes(conn, project.id, len(project.classes))
        names, excluded = reads.workers_in_order(conn, project.id)
        conn.rollback()
    v = pv.votes
    agree, scored = agreement.leave_one_out_agreement(
        v.item, v.worker, v.label, v.n_items, v.n_workers, v.n_classes
    )
    pos, known = locate(labels.fit.worker_ids, pv.worker_ids)
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
        "agree": agree,
        "scored": scored,
        "spam": agreement.spammer_flags(agree, scored, v.n_classes),
        "pos": pos,
        "known": known,
        "n_votes": np.bincount(v.worker, minlength=v.n_workers),
        "skill": labels.fit.result.worker_skill,
    }


def _worker_row(t: dict[str, Any], w: int) -> dict[str, Any]:
    return {
        "worker": t["names"][w],
        "excluded": t["excluded"][w],
        "n_votes": int(t["n_votes"][w]),
        "agreement": float(t["agree"][w]) if t["scored"][w] else None,
        "n_scored": int(t["scored"][w]),
        "skill": float(t["skill"][t["pos"][w]]) if t["known"][w] else None,
        "spammer": bool(t["spam"][w]),
        "n_gold": int(t["n_gold"][w]),
        "gold_accuracy": float(t["gold_hits"][w] / t["n_gold"][w]) if t["n_gold"][w] else None,
    }


@router.get(
    "/workers",
    response_model=WorkerList,
    dependencies=[Depends(require("read")), Depends(not_for("multi_label", what="GET /workers"))],
)
def list_workers(
    project: ProjectDep,
    engine: EngineDep,
    labeled: WorkerLabelerDep,
) -> WorkerList:
    """Every worker: votes, agreement with the leave-one-out majority, the method's skill
    estimate and the spammer flag (rule in `spammer_rule`)."""
    labels = _worker_fit(labeled)
    t = _worker_table(engine, project, labels)
    return WorkerList(
        method=labels.method,
        params=labels.params,
        as_of=labels.as_of,
        stale=labels.stale,
        skill=get_method(labels.method, project.task_type).summary,
        spammer_rule=SPAMMER_RULE,
        workers=[_worker_row(t, w) for w in range(len(t["names"]))],
        warnings=labels.fit.result.warnings if labels.fit is not None else [],
    )


@router.get(
    "/workers/{worker:id}",
    response_model=WorkerDetail,
    dependencies=[
        Depends(require("read")),
        Depends(not_for("multi_label", what="GET /workers/{worker}")),
    ],
)
def get_worker(
    project: ProjectDep,
    engine: EngineDep,
    labeled: WorkerLabelerDep,
    worker: str,
) -> WorkerDetail:
    """One worker, with a K x K confusion matrix (row = true class, column = given label) and
    class-wise accuracy: the model's where it has one (dawid-skene), otherwise counted against
    the model's most probable class for each item."""
    labels = _worker_fit(labeled)
    t = _worker_table(engine, project, labels)
    if worker not in t["names"]:
        raise NotFound(f"No worker {worker!r} in project {project.name!r}.")
    w = t["names"].index(worker)
    fit, pv = labels.fit, t["pv"]
    assert fit is not None  # _worker_fit refused methods without a worker model
    k = len(project.classes)
    conf = fit.result.confusion
    if conf is not None and t["known"][w]:
        matrix, source = np.asarray(conf[t["pos"][w]], dtype=np.float64), "model"
    else:
        mine = pv.votes.worker == w
        truth = fit.probs_for(pv.item_ids[pv.votes.item[mine]]).argmax(axis=1)
        matrix = np.zeros((k, k))
        np.add.at(matrix, (truth, pv.votes.label[mine]), 1.0)
        rows = matrix.sum(axis=1, keepdims=True)
        matrix = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
        source = "empirical"
    return WorkerDetail(
        **_worker_row(t, w),
        method=labels.method,
        params=labels.params,
        as_of=labels.as_of,
        stale=labels.stale,
        classes=project.classes,
        confusion=matrix.tolist(),
        confusion_source=source,
        class_accuracy=np.diag(matrix).tolist(),
    )
