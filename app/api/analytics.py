"""Agreement figures, worker estimates and vote routing: /stats, /workers, /items/next."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import text

from app.aggregation import agreement
from app.aggregation.registry import get_method
from app.api.deps import ProjectDep, SettingsDep, require
from app.api.schemas import NextItems, ProjectStats, WorkerDetail, WorkerList
from app.api.soft_labels import (
    MaxIterQuery,
    MethodQuery,
    SeedQuery,
    TolQuery,
    UseGoldQuery,
    labeler_from_query,
)
from app.errors import NotFound, ValidationFailed
from app.fits import load_votes, locate

router = APIRouter(prefix="/v1/projects/{project}", tags=["analytics"])

SPAMMER_RULE = (
    "flagged when a worker has >= 10 votes on items with other votes and agrees with the "
    "leave-one-out majority no more often than 1/K + 2*sqrt((1/K)(1-1/K)/n) (two binomial "
    "standard errors above random guessing)"
)


def _item_counts(engine: Any, project_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT id, n_votes, counts FROM items WHERE project_id = :p ORDER BY id"),
            {"p": project_id},
        ).all()
    if not rows:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty((0, 0), np.int64)
    ids, n, counts = zip(*rows, strict=True)
    return np.asarray(ids, np.int64), np.asarray(n, np.int64), np.asarray(counts, np.int64)


@router.get("/stats", response_model=ProjectStats, dependencies=[Depends(require("read"))])
def stats(
    request: Request,
    project: ProjectDep,
    settings: SettingsDep,
    method: MethodQuery = "normalized",
    max_iter: MaxIterQuery = None,
    tol: TolQuery = None,
    seed: SeedQuery = None,
    use_gold: UseGoldQuery = None,
) -> ProjectStats:
    """Counts, votes-per-item histogram, Krippendorff's alpha (nominal), Fleiss' kappa, and the
    mean normalized entropy of the soft labels by `method`."""
    labels = labeler_from_query(request, project, settings, method)
    engine = request.app.state.engine
    ids, n_votes, counts = _item_counts(engine, project.id)
    with engine.connect() as conn:
        n_workers = conn.execute(
            text("SELECT count(*) FROM workers WHERE project_id = :p"), {"p": project.id}
        ).scalar_one()
    voted = n_votes > 0
    kappa, kappa_reason = (
        agreement.fleiss_kappa(counts[voted]) if voted.any() else (None, "no item has votes")
    )
    entropy = None
    if voted.any():
        probs = labels.probs(ids[voted], counts[voted])
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


@router.get("/items/next", response_model=NextItems, dependencies=[Depends(require("read"))])
def next_items(
    request: Request,
    project: ProjectDep,
    settings: SettingsDep,
    strategy: Literal["entropy", "margin", "fewest-votes"] = "entropy",
    limit: Annotated[int, Query(ge=1, le=10_000)] = 50,
    worker: Annotated[
        str | None, Query(max_length=256, description="Leave out items this worker labeled.")
    ] = None,
    max_votes: Annotated[
        int | None, Query(ge=1, le=2**31 - 1, description="Only items with fewer votes.")
    ] = None,
    method: MethodQuery = "normalized",
    max_iter: MaxIterQuery = None,
    tol: TolQuery = None,
    seed: SeedQuery = None,
    use_gold: UseGoldQuery = None,
) -> NextItems:
    """The items that most need another vote: most uncertain first (`entropy`: normalized
    entropy of the soft label; `margin`: 1 - (p1 - p2)), or fewest votes first. Items with no
    votes count as maximally uncertain. Ties go to fewer votes, then older items."""
    labels = labeler_from_query(request, project, settings, method)
    with request.app.state.engine.connect() as conn:
        rows = conn.execute(
            text(
                """
                SELECT i.id, i.external_id, i.n_votes, i.counts FROM items i
                WHERE i.project_id = :p AND (CAST(:m AS integer) IS NULL OR i.n_votes < :m)
                  AND NOT EXISTS (
                      SELECT 1 FROM votes v JOIN workers w ON w.id = v.worker_id
                      WHERE v.item_id = i.id AND w.project_id = :p AND w.external_id = :w)
                ORDER BY i.id
                """
            ),
            {"p": project.id, "m": max_votes, "w": worker},
        ).all()
    if not rows:
        return NextItems(strategy=strategy, method=labels.method, items=[])
    ids, ext, n, counts = zip(*rows, strict=True)
    id_arr, n_arr = np.asarray(ids, np.int64), np.asarray(n, np.int64)
    count_arr = np.asarray(counts, np.int64)
    if strategy == "fewest-votes":
        score = -n_arr.astype(np.float64)
        uncertainty = None
    else:
        probs = labels.probs(id_arr, count_arr)
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


def _worker_fit(request: Request, project: Any, settings: Any, method: str) -> Any:
    labels = labeler_from_query(request, project, settings, method)
    if labels.fit is None:
        raise ValidationFailed(
            f"Method {method!r} has no worker model; use one of the worker-model methods.",
            errors=[{"index": None, "field": "method", "reason": "not a worker-model method"}],
        )
    return labels


def _worker_table(request: Request, project: Any, labels: Any) -> dict[str, Any]:
    # One snapshot: a vote from a worker created between the queries would otherwise point
    # past the worker list.
    engine = request.app.state.engine
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
        pv = load_votes(conn, project.id, len(project.classes))
        names = (
            conn.execute(
                text("SELECT external_id FROM workers WHERE project_id = :p ORDER BY id"),
                {"p": project.id},
            )
            .scalars()
            .all()
        )
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
        "names": list(names),
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
        "n_votes": int(t["n_votes"][w]),
        "agreement": float(t["agree"][w]) if t["scored"][w] else None,
        "n_scored": int(t["scored"][w]),
        "skill": float(t["skill"][t["pos"][w]]) if t["known"][w] else None,
        "spammer": bool(t["spam"][w]),
        "n_gold": int(t["n_gold"][w]),
        "gold_accuracy": float(t["gold_hits"][w] / t["n_gold"][w]) if t["n_gold"][w] else None,
    }


@router.get("/workers", response_model=WorkerList, dependencies=[Depends(require("read"))])
def list_workers(
    request: Request,
    project: ProjectDep,
    settings: SettingsDep,
    method: MethodQuery = "dawid-skene",
    max_iter: MaxIterQuery = None,
    tol: TolQuery = None,
    seed: SeedQuery = None,
    use_gold: UseGoldQuery = None,
) -> WorkerList:
    """Every worker: votes, agreement with the leave-one-out majority, the method's skill
    estimate and the spammer flag (rule in `spammer_rule`)."""
    labels = _worker_fit(request, project, settings, method)
    t = _worker_table(request, project, labels)
    return WorkerList(
        method=labels.method,
        params=labels.params,
        as_of=labels.as_of,
        stale=labels.stale,
        skill=get_method(labels.method).summary,
        spammer_rule=SPAMMER_RULE,
        workers=[_worker_row(t, w) for w in range(len(t["names"]))],
        warnings=labels.fit.result.warnings,
    )


@router.get(
    "/workers/{worker}", response_model=WorkerDetail, dependencies=[Depends(require("read"))]
)
def get_worker(
    request: Request,
    project: ProjectDep,
    settings: SettingsDep,
    worker: str,
    method: MethodQuery = "dawid-skene",
    max_iter: MaxIterQuery = None,
    tol: TolQuery = None,
    seed: SeedQuery = None,
    use_gold: UseGoldQuery = None,
) -> WorkerDetail:
    """One worker, with a K x K confusion matrix (row = true class, column = given label) and
    class-wise accuracy: the model's where it has one (dawid-skene), otherwise counted against
    the model's most probable class for each item."""
    labels = _worker_fit(request, project, settings, method)
    t = _worker_table(request, project, labels)
    if worker not in t["names"]:
        raise NotFound(f"No worker {worker!r} in project {project.name!r}.")
    w = t["names"].index(worker)
    fit, pv = labels.fit, t["pv"]
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
