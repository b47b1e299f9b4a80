"""[5. trained] /training-sweeps: a grid of training jobs and its report (training/sweeps.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, status
from sqlalchemy import select

from app.api.access import require
from app.api.deps import ProjectDep, QueueDep, SessionDep
from app.api.sweep_schemas import SweepCell, SweepIn, SweepOut
from app.db.models import TrainingJob, TrainingSweep
from app.errors import NotFound, ValidationFailed
from app.labels import predictions
from app.labels.model_loop import check_crowdlab_job
from app.training.jobs import enqueue
from app.training.snapshot import usable_items
from app.training.stored_content import content_kind, no_content_reason, usable_content
from app.training.sweeps import (
    BASELINE,
    DEFAULT_LABELS,
    DEFAULT_LOSSES,
    Cell,
    build_grid,
    recipe_name,
    report,
)
from app.training.task_metrics import DEFAULT_SWEEP_METRIC, SWEEP_METRIC_NOTE, SWEEP_METRICS

router = APIRouter(prefix="/v1/projects/{project}", tags=["training"])
SweepId = Annotated[int, Path(ge=1, le=2**63 - 1)]


def _invalid(field: str, reason: str) -> ValidationFailed:
    return ValidationFailed.field(field, reason, f"Invalid sweep: {field}: {reason}")


@router.post(
    "/training-sweeps",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=SweepOut,
    dependencies=[Depends(require("train"))],
)
def create_sweep(
    body: SweepIn, project: ProjectDep, session: SessionDep, queue: QueueDep
) -> SweepOut:
    """Queue one training job per grid cell (any number of workers take them). The whole grid
    is validated first: one bad cell is a 422 naming it, and no job is queued. What the
    request leaves out (labels, losses, metric, baseline) is the project's task type's
    default; the stored config says what was used."""
    task = project.task_type
    if body.metric is not None and body.metric not in SWEEP_METRICS[task]:
        raise _invalid(
            "metric",
            f"{body.metric!r} does not rank {task} recipes; the metrics that do: "
            + ", ".join(SWEEP_METRICS[task]),
        )
    labels = body.labels if body.labels is not None else DEFAULT_LABELS[task]
    losses = body.losses if body.losses is not None else DEFAULT_LOSSES[task]
    given = body.baseline.model_dump(exclude_none=True) if body.baseline is not None else {}
    chosen = BASELINE[task] | given
    configs, baseline = build_grid(
        labels, losses, body.seeds, body.base, body.split_seed, chosen, task
    )
    conn = session.connection()
    kind = content_kind(configs[0].encoder.name)  # the base's: every cell has it
    if kind is not None:
        have, total = usable_content(conn, project.id, kind)
        if have == 0:
            raise _invalid("base.encoder", no_content_reason(kind, have, total))
    elif usable_items(conn, project.id) == 0:
        raise _invalid(
            "features",
            "the project has no item with both a feature vector and a vote; "
            "POST features to /items first",
        )
    for i, lab in enumerate(labels):
        if lab.get("method") == "crowdlab":
            check_crowdlab_job(conn, project.id, lab.get("job"), f"labels[{i}].job")
    jobs = []
    for cfg in configs:
        job = TrainingJob(project_id=project.id, config=cfg.model_dump(mode="json"))
        session.add(job)
        jobs.append(job)
    session.flush()
    for job in jobs:
        enqueue(conn, queue, job.id)  # same transaction as the rows
    metric = body.metric or DEFAULT_SWEEP_METRIC[task]
    config = body.model_dump(mode="json") | {
        "labels": labels,
        "losses": losses,
        "baseline": baseline,
        "metric": metric,
        "metric_note": None if body.metric else SWEEP_METRIC_NOTE[task],
        "task_type": task,
    }
    sweep = TrainingSweep(project_id=project.id, config=config, job_ids=[j.id for j in jobs])
    session.add(sweep)
    session.flush()
    session.refresh(sweep)
    return _out(session, sweep, project.name)


@router.get(
    "/training-sweeps/{sweep_id}",
    response_model=SweepOut,
    dependencies=[Depends(require("train"))],
)
def read_sweep(sweep_id: SweepId, project: ProjectDep, session: SessionDep) -> SweepOut:
    """The cells' states and the report over the cells that have succeeded so far."""
    sweep = session.get(TrainingSweep, sweep_id)
    if sweep is None or sweep.project_id != project.id:
        raise NotFound(f"No training sweep {sweep_id} in project {project.name!r}.")
    return _out(session, sweep, project.name)


def _out(session: SessionDep, sweep: TrainingSweep, project: str) -> SweepOut:
    task = sweep.config.get("task_type", "single")  # sweeps from before task types: single
    rows = session.scalars(select(TrainingJob).where(TrainingJob.id.in_(sweep.job_ids))).all()
    by_id = {j.id: j for j in rows}
    cells = [
        Cell(
            job_id=j.id,
            labels=j.config["labels"],
            loss=j.config["loss"],
            seed=j.config["seed"],
            status=j.status,
            metrics=j.metrics,
        )
        for j in (by_id[i] for i in sweep.job_ids if i in by_id)
    ]
    done = [c.job_id for c in cells if c.status == "succeeded"]
    preds = predictions.load_many(session.connection(), done) if done else {}
    cfg = sweep.config
    rep = report(
        cells,
        preds,
        metric=cfg["metric"],
        split=cfg["split"],
        baseline=cfg["baseline"],
        n_boot=cfg["n_boot"],
        task_type=task,
    )
    rep["metric_note"] = cfg.get("metric_note")
    counts: dict[str, int] = {}
    for c in cells:
        counts[c.status] = counts.get(c.status, 0) + 1
    running = any(c.status in ("queued", "running") for c in cells)
    return SweepOut(
        id=sweep.id,
        project=project,
        status="running" if running else "done",
        created_at=sweep.created_at,
        config=cfg,
        jobs=counts,
        cells=[
            SweepCell(
                job_id=c.job_id,
                name=recipe_name(c.labels, c.loss, task),
                seed=c.seed,
                status=c.status,
            )
            for c in cells
        ],
        report=rep,
    )
