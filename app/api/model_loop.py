"""The model back in labeling: /items/suspect, and the export of a job's predictions
for items with no votes (`/soft-labels?method=model:<job id>`, called from soft_labels.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from sqlalchemy import text

from app.aggregation.crowdlab import crowdlab, suspect_scores
from app.aggregation.methods import majority_labels
from app.api.access import require
from app.api.deps import EngineDep, ProjectDep
from app.api.services import Services
from app.api.sweep_schemas import SuspectItem, SuspectItems
from app.api.task_types import not_for
from app.db.models import Project
from app.errors import Conflict, NotFound, ValidationFailed
from app.labels.export import MEDIA_TYPES, Chunk, Format, serialize
from app.labels.model_loop import model_view
from app.training.serving import checkpoint_bytes
from app.votes.records import index_text

router = APIRouter(prefix="/v1/projects/{project}", tags=["model in the loop"])


@router.get(
    "/items/suspect",
    response_model=SuspectItems,
    dependencies=[
        Depends(require("read")),
        Depends(not_for("multi_label", what="GET /items/suspect")),
    ],
)
def suspect_items(
    engine: EngineDep,
    project: ProjectDep,
    job: Annotated[
        int | None,
        Query(ge=1, description="Training job with oos_folds; default: the newest such job."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 50,
) -> SuspectItems:
    """Voted items whose votes disagree most with an out-of-sample model: likely label errors
    (lowest score first). score = mean over the item's votes of the model's probability of the
    voted class, from a model that never trained on the item (K-fold)."""
    k = len(project.classes)
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
        view = model_view(conn, project.id, k, job)  # NoModel: a 422 naming `job`
        score = suspect_scores(view.pv.votes, view.probs)
        combined = crowdlab(view.pv.votes, view.probs, view.has_model)
        rows = np.flatnonzero(view.oos & ~np.isnan(score))
        order = rows[np.lexsort((rows, score[rows]))][:limit]
        ext: dict[int, str] = dict(
            conn.execute(
                text("SELECT id, external_id FROM items WHERE id = ANY(:ids)"),
                {"ids": view.pv.item_ids[order].tolist()},
            ).all()
        )
        conn.rollback()
    votes = view.pv.votes
    counts = np.bincount(votes.item * k + votes.label, minlength=votes.n_items * k).reshape(-1, k)
    maj = majority_labels(counts[order]) if len(order) else np.zeros(0, np.int64)
    cls = project.classes
    return SuspectItems(
        job=view.job_id,
        score="mean out-of-sample model probability of the voted labels (low = suspect)",
        model_weight=combined.model_weight,
        items=[
            SuspectItem(
                item=ext[int(view.pv.item_ids[i])],
                n_votes=int(counts[i].sum()),
                score=float(score[i]),
                majority=cls[int(m)],
                model=cls[int(view.probs[i].argmax())],
                model_prob=float(view.probs[i].max()),
                consensus=cls[int(combined.consensus[i])],
                consensus_quality=float(combined.quality[i]),
            )
            for i, m in zip(order, maj, strict=True)
        ],
    )


def export_model_predictions(
    services: Services, project: Project, method: str, fmt: Format, chunk_rows: int
) -> StreamingResponse:
    """`method=model:<job id>`: the job's model scores every item with features and no votes
    (computed now, so items added after the job are included). Rows are predictions, not human
    labels: `"prediction": true` in JSONL, header `X-Predictions: true` in every format."""
    raw = method.removeprefix("model:")
    job_id = index_text(raw)
    if job_id is None or job_id < 1:
        raise ValidationFailed(
            "method=model:<job id> needs a numeric job id.",
            errors=[{"index": None, "field": "method", "reason": "expected model:<job id>"}],
        )
    engine = services.engine
    with engine.connect() as conn:
        job = conn.execute(
            text(
                "SELECT project_id, status, coalesce(config->'encoder'->>'name', 'features') "
                "AS encoder FROM training_jobs WHERE id = :j"
            ),
            {"j": job_id},
        ).one_or_none()
        if job is None or job.project_id != project.id:
            raise NotFound(f"No training job {job_id} in project {project.name!r}.")
        if job.encoder != "features":
            # Scoring by content here would encode (and fetch) every item on every export.
            raise ValidationFailed.field(
                "method",
                f"job {job_id} trains on content (encoder {job.encoder!r}), not on feature "
                f"vectors: POST /v1/training-jobs/{job_id}/predict with `items`, or train with "
                "predict_unlabeled",
            )
        if job.status != "succeeded":
            raise Conflict(
                f"Training job {job_id} is {job.status}; only a succeeded job has a model."
            )
        rows = conn.execute(
            text(
                "SELECT external_id, features, gold FROM items WHERE project_id = :p "
                "AND features IS NOT NULL AND n_votes = 0 ORDER BY id"
            ),
            {"p": project.id},
        ).all()

    def load() -> bytes:
        with engine.connect() as c:
            blob = checkpoint_bytes(c, job_id)
        assert blob is not None  # a succeeded job stored one with its status
        return blob

    loaded = services.models.get(job_id, load)
    model, n_feat = loaded.model, int(loaded.ckpt["n_features"])
    rows = [r for r in rows if len(r.features) == n_feat]
    from app.training.trainer import predict_probs  # torch: imported on first use only

    classes = project.classes
    chunks = [
        Chunk(
            items=[r.external_id for r in part],
            n_votes=np.zeros(len(part), np.int64),
            probs=predict_probs(
                model,
                np.asarray([r.features for r in part], np.float32),
                str(loaded.ckpt.get("task_type", "single")),
            ),
            gold=[None if r.gold is None else classes[r.gold] for r in part],
        )
        for part in (rows[i : i + chunk_rows] for i in range(0, len(rows), chunk_rows))
    ]
    body = _jsonl(chunks, job_id) if fmt == "jsonl" else serialize(iter(chunks), fmt, classes)
    return StreamingResponse(
        body,
        media_type=MEDIA_TYPES[fmt],
        headers={
            "Content-Disposition": f'attachment; filename="{project.name}-model-{job_id}.{fmt}"',
            "X-Predictions": "true",
        },
    )


def _jsonl(chunks: list[Chunk], job_id: int) -> Iterator[bytes]:
    for ch in chunks:
        lines = []
        for item, probs, gold in zip(ch.items, ch.probs.tolist(), ch.gold, strict=True):
            row: dict[str, Any] = {
                "item": item,
                "n_votes": 0,
                "probs": probs,
                "prediction": True,
                "job": job_id,
            }
            if gold is not None:
                row["gold"] = gold
            lines.append(json.dumps(row))  # ASCII: no raw line separators in a row
        if lines:
            yield ("\n".join(lines) + "\n").encode()
