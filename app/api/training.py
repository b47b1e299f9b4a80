"""[5. trained] /training-jobs: queue a job, follow it, cancel it, fetch or use its model."""

from __future__ import annotations

import itertools
import math
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from sqlalchemy import Connection, Engine, func, select

from app.api.access import require
from app.api.deps import ProjectDep, QueueDep, SessionDep, SettingsDep
from app.api.schemas import TrainingJobList, TrainingJobOut
from app.api.services import Services
from app.config import Settings
from app.db.models import Project, TrainingJob
from app.errors import Conflict, NotFound, ValidationFailed
from app.labels.model_loop import check_crowdlab_job
from app.training.config import TrainingConfig
from app.training.encoders.options import head_input_width, trunk_params
from app.training.jobs import enqueue, project_of_job, request_cancel
from app.training.serving import checkpoint_bytes
from app.training.snapshot import usable_items
from app.training.stored_content import content_kind, no_content_reason, usable_content
from app.webhooks.deliver import emit_job_finished

router = APIRouter(tags=["training"])
JobId = Annotated[int, Path(ge=1, le=2**63 - 1)]


def job_out(job: TrainingJob, project: str) -> TrainingJobOut:
    return TrainingJobOut.model_validate({**job.__dict__, "project": project})


def get_job(session: SessionDep, job_id: JobId) -> tuple[TrainingJob, Project]:
    row = session.execute(
        select(TrainingJob, Project)
        .join(Project, Project.id == TrainingJob.project_id)
        .where(TrainingJob.id == job_id)
    ).one_or_none()
    if row is None:
        raise job_not_found(job_id)
    return row[0], row[1]


JobDep = Annotated[tuple[TrainingJob, Project], Depends(get_job)]


def job_not_found(job_id: int) -> NotFound:
    return NotFound(f"No training job {job_id}.")


def _project_of(engine: Engine, job_id: int) -> str | None:
    with engine.connect() as conn:
        return project_of_job(conn, job_id)


async def job_project(request: Request, services: Services) -> tuple[str, NotFound] | None:
    """A job path's project, for `require`: a key that does not cover it gets the job's 404,
    word for word what a missing job gets (get_job)."""
    try:
        job_id = int(request.path_params["job_id"])
    except ValueError:
        return None  # the route answers 422 for it
    if not 1 <= job_id < 2**63:
        return None
    project = await run_in_threadpool(_project_of, services.engine, job_id)
    if project is None:
        raise job_not_found(job_id)
    return project, job_not_found(job_id)


def _invalid(field: str, reason: str) -> ValidationFailed:
    return ValidationFailed.field(field, reason, f"Invalid training config: {field}: {reason}")


def for_project(config: TrainingConfig, project: Project) -> TrainingConfig:
    """The request's config for this project's task type (TrainingConfig.for_task): its label
    method from the type's methods, a loss that trains the type (its soft loss when none was
    named), no softmax-only option on a multi-label project; else a 422 naming the field."""
    try:
        return config.for_task(project.task_type)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise _invalid(".".join(str(x) for x in err["loc"]), err["msg"]) from None


@router.post(
    "/v1/projects/{project}/training-jobs",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TrainingJobOut,
    dependencies=[Depends(require("train"))],
)
def create_training_job(
    config: TrainingConfig,
    project: ProjectDep,
    session: SessionDep,
    queue: QueueDep,
    settings: SettingsDep,
) -> TrainingJobOut:
    """Queue a training job. The config is checked now: an impossible one is a 422 here,
    never a job that fails later; one past the server's training limits is a 422 naming the
    limit (an admin raises them, docs/security.md). A job on content (texts, images) needs
    voted items that carry it: none is a 422 naming `encoder`."""
    config = for_project(config, project)
    conn = session.connection()
    n_items, width = check_inputs(conn, project.id, config, project.n_features)
    check_limits(config, settings, n_items, width, len(project.classes))
    active = session.scalar(
        select(func.count())
        .select_from(TrainingJob)
        .where(TrainingJob.project_id == project.id, TrainingJob.status.in_(("queued", "running")))
    )
    if (active or 0) >= settings.training_max_active_per_project:
        raise Conflict(
            f"The project has {active} training jobs queued or running, the most it may "
            "(SOFTLABELS_TRAINING_MAX_ACTIVE_PER_PROJECT); wait for one to end or cancel one."
        )
    if config.label_method == "crowdlab":  # needs an out-of-sample job
        check_crowdlab_job(conn, project.id, config.label_params.get("job"), "labels.job")
    if config.distill is not None:
        teacher = session.get(TrainingJob, config.distill.teacher_job)
        if teacher is None or teacher.project_id != project.id:
            raise _invalid(
                "distill.teacher_job",
                f"no training job {config.distill.teacher_job} in project {project.name!r}",
            )
        if teacher.status != "succeeded":
            raise _invalid(
                "distill.teacher_job",
                f"job {teacher.id} is {teacher.status}; a teacher must have succeeded",
            )
    job = TrainingJob(project_id=project.id, config=config.model_dump(mode="json"))
    session.add(job)
    session.flush()
    enqueue(conn, queue, job.id)  # same transaction as the row
    session.refresh(job)
    return job_out(job, project.name)


def check_inputs(
    conn: Connection, project_id: int, config: TrainingConfig, n_features: int | None
) -> tuple[int, int | None]:
    """(items the job will train on, width of its model's input rows, None if unknown yet).
    A 422 when there are none: it names `features`, or `encoder` for a job on content."""
    kind = content_kind(config.encoder.name)
    if kind is None:
        n_items = usable_items(conn, project_id)
        if n_items == 0:
            raise _invalid(
                "features",
                "the project has no item with both a feature vector and a "
                "vote; POST features to /items first",
            )
        return n_items, n_features or 0
    if config.distill is not None:  # the teacher's inputs would be other rows than these
        raise _invalid("distill", "distillation needs features: a job on content cannot use it")
    have, total = usable_content(conn, project_id, kind)
    if have == 0:
        raise _invalid("encoder", no_content_reason(kind, have, total))
    return have, head_input_width(config.encoder)


def model_params(config: TrainingConfig, n_features: int, n_classes: int) -> int:
    """Weights and biases of the configured model (an end-to-end encoder's network too)."""
    widths = [n_features, *getattr(config.model, "hidden", []), n_classes]
    head = sum(a * b + b for a, b in itertools.pairwise(widths))
    return head + trunk_params(config.encoder)


def check_limits(
    config: TrainingConfig,
    settings: Settings,
    n_items: int,
    n_features: int | None,
    n_classes: int,
) -> None:
    """The server's training limits: a job that would run for hours or build a model of
    billions of weights is refused before it is queued. `n_features` None: the input width
    is a pretrained encoder's, unknown until its weights load, and the model is not counted
    (its frozen backbone does not train; the head on it is small)."""
    steps = config.epochs * math.ceil(n_items / config.batch_size)
    checks = [
        ("epochs", config.epochs, settings.training_max_epochs, "SOFTLABELS_TRAINING_MAX_EPOCHS"),
        ("batch_size", steps, settings.training_max_steps, "SOFTLABELS_TRAINING_MAX_STEPS"),
    ]
    if n_features is not None:
        checks.append(
            (
                "model",
                model_params(config, n_features, n_classes),
                settings.training_max_params,
                "SOFTLABELS_TRAINING_MAX_PARAMS",
            )
        )
    what = {"epochs": "epochs", "batch_size": "optimizer steps", "model": "model weights"}
    for field, value, limit, env in checks:
        if value > limit:
            raise _invalid(
                field,
                f"{value} {what[field]} is over this server's limit of {limit} ({env})",
            )


@router.get(
    "/v1/projects/{project}/training-jobs",
    response_model=TrainingJobList,
    dependencies=[Depends(require("train"))],
)
def list_training_jobs(
    project: ProjectDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: Annotated[int | None, Query(ge=1, description="Only jobs with id < before.")] = None,
) -> TrainingJobList:
    """Newest first; page with `before=<smallest id seen>`."""
    q = select(TrainingJob).where(TrainingJob.project_id == project.id)
    if before is not None:
        q = q.where(TrainingJob.id < before)
    rows = session.scalars(q.order_by(TrainingJob.id.desc()).limit(limit)).all()
    return TrainingJobList(jobs=[job_out(j, project.name) for j in rows])


@router.get(
    "/v1/training-jobs/{job_id}",
    response_model=TrainingJobOut,
    dependencies=[Depends(require("train", job_project))],
)
def read_training_job(job: JobDep) -> TrainingJobOut:
    return job_out(job[0], job[1].name)


@router.post(
    "/v1/training-jobs/{job_id}/cancel",
    response_model=TrainingJobOut,
    dependencies=[Depends(require("train", job_project))],
)
def cancel_training_job(job: JobDep, session: SessionDep) -> TrainingJobOut:
    """A queued job is cancelled at once; a running one stops within one epoch."""
    row, project = job
    if not request_cancel(session.connection(), row.id):
        raise Conflict(f"Training job {row.id} has already ended ({row.status}).")
    emit_job_finished(session, row.id)  # a queued job ended here (cancelled); else no-op
    session.refresh(row)
    return job_out(row, project.name)


@router.get(
    "/v1/training-jobs/{job_id}/model",
    dependencies=[Depends(require("train", job_project))],
    response_class=Response,
    responses={
        200: {
            "content": {"application/octet-stream": {}},
            "description": "A torch checkpoint: weights, optimizer state, config.",
        }
    },
)
def download_model(job: JobDep, session: SessionDep) -> Response:
    """torch.load(..., weights_only=True) it, or use app.training.trainer.load_checkpoint."""
    blob = checkpoint_of(session, job[0])
    return Response(
        bytes(blob),
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="softlabels-job-{job[0].id}.pt"'},
    )


def checkpoint_of(session: SessionDep, job: TrainingJob) -> bytes:
    if job.status != "succeeded":
        raise Conflict(f"Training job {job.id} is {job.status}; only a succeeded job has a model.")
    blob = checkpoint_bytes(session.connection(), job.id)
    if blob is None:  # a succeeded job always stored one (same transaction as its status)
        raise RuntimeError(f"training job {job.id} succeeded but has no stored checkpoint")
    return blob
