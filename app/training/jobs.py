"""Training-job rows: the state machine queued -> running -> succeeded | failed | cancelled.

Every transition is one conditional UPDATE, so two workers, a cancel and the stalled-job
recovery can race without a job ever running twice or ending in two states.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import procrastinate
from sqlalchemy import Connection, Engine, text

from app.tasks import defer_training
from app.webhooks.deliver import emit_job_finished

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 2  # a job whose worker dies is retried once, then marked failed


def raw_connection(conn: Connection) -> Any:
    return conn.connection.driver_connection


def enqueue(conn: Connection, queue: procrastinate.App, job_id: int) -> None:
    """Put job `job_id` (status queued) on the queue for its device, in the caller's
    transaction."""
    device = conn.execute(
        text("SELECT config->>'device' FROM training_jobs WHERE id = :id"), {"id": job_id}
    ).scalar_one_or_none()
    queue_job_id = defer_training(queue, job_id, raw_connection(conn), device)
    conn.execute(
        text("UPDATE training_jobs SET queue_job_id = :q WHERE id = :id"),
        {"q": queue_job_id, "id": job_id},
    )


def claim(engine: Engine, job_id: int, worker: str) -> dict[str, Any] | None:
    """queued -> running. None when the job is not queued (cancelled, or taken already)."""
    with engine.begin() as conn:
        row = conn.execute(
            text(
                "UPDATE training_jobs SET status = 'running', attempts = attempts + 1, "
                "started_at = now(), heartbeat_at = now(), worker = :w, progress = NULL, "
                "error = NULL WHERE id = :id AND status = 'queued' AND NOT cancel_requested "
                "RETURNING id, project_id, config, attempts"
            ),
            {"id": job_id, "w": worker},
        ).one_or_none()
    return None if row is None else dict(row._mapping)


def record_snapshot(
    engine: Engine, job_id: int, attempt: int, data_hash: str, votes_version: int, device: str
) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE training_jobs SET data_hash = :h, votes_version = :v, device = :d "
                "WHERE id = :id AND attempts = :a AND status = 'running'"
            ),
            {"h": data_hash, "v": votes_version, "d": device, "id": job_id, "a": attempt},
        )


def report_progress(conn: Connection, job_id: int, attempt: int, progress: dict[str, Any]) -> bool:
    """Store progress and beat the heart; returns True when the job should stop (cancelled,
    or taken away from this attempt by the stalled-job recovery)."""
    row = conn.execute(
        text(
            "UPDATE training_jobs SET progress = CAST(:p AS jsonb), heartbeat_at = now() "
            "WHERE id = :id AND attempts = :a AND status = 'running' RETURNING cancel_requested"
        ),
        {"p": json.dumps(progress), "id": job_id, "a": attempt},
    ).one_or_none()
    conn.commit()
    return row is None or bool(row.cancel_requested)


def heartbeat(conn: Connection, job_id: int, attempt: int) -> None:
    conn.execute(
        text(
            "UPDATE training_jobs SET heartbeat_at = now() "
            "WHERE id = :id AND attempts = :a AND status = 'running'"
        ),
        {"id": job_id, "a": attempt},
    )
    conn.commit()


def finish(
    engine: Engine,
    job_id: int,
    attempt: int,
    status: str,
    *,
    metrics: dict[str, Any] | None = None,
    error: str | None = None,
    checkpoint: bytes | None = None,
    predictions: bytes | None = None,
) -> bool:
    """running -> terminal, only if this attempt still owns the job. Returns whether it did."""
    with engine.begin() as conn:
        done = conn.execute(
            text(
                "UPDATE training_jobs SET status = :s, metrics = CAST(:m AS jsonb), error = :e, "
                "finished_at = now() WHERE id = :id AND attempts = :a AND status = 'running' "
                "RETURNING id"
            ),
            {
                "s": status,
                "m": None if metrics is None else json.dumps(metrics),
                "e": error,
                "id": job_id,
                "a": attempt,
            },
        ).one_or_none()
        if done is not None and checkpoint is not None:
            conn.execute(
                text(
                    "INSERT INTO training_artifacts (job_id, checkpoint, predictions) "
                    "VALUES (:id, :c, :p)"
                ),
                {"id": job_id, "c": checkpoint, "p": predictions},
            )
        if done is not None:
            emit_job_finished(conn, job_id)  # outbound webhook, in the same transaction
    return done is not None


def recover_stalled(engine: Engine, queue: procrastinate.App, timeout_s: float) -> list[int]:
    """Jobs whose worker stopped beating for `timeout_s`: requeue once, then fail them.

    Also requeues a queued job whose queue entry was lost (its worker died after taking the
    entry but before claiming the job). Safe to run from every worker at once: rows are taken
    with SKIP LOCKED and every transition is conditional.
    """
    touched: list[int] = []
    with engine.begin() as conn:
        stalled = conn.execute(
            text(
                "SELECT id, attempts, queue_job_id FROM training_jobs WHERE status = 'running' "
                "AND heartbeat_at < now() - make_interval(secs => :t) FOR UPDATE SKIP LOCKED"
            ),
            {"t": timeout_s},
        ).all()
        for job in stalled:
            _close_queue_entry(conn, job.queue_job_id)
            if job.attempts < MAX_ATTEMPTS:
                conn.execute(
                    text(
                        "UPDATE training_jobs SET status = 'queued', progress = NULL, "
                        "heartbeat_at = NULL WHERE id = :id"
                    ),
                    {"id": job.id},
                )
                enqueue(conn, queue, job.id)
                log.warning("training job %s: worker stopped responding; retrying", job.id)
            else:
                conn.execute(
                    text(
                        "UPDATE training_jobs SET status = 'failed', finished_at = now(), "
                        "error = :e WHERE id = :id"
                    ),
                    {
                        "id": job.id,
                        "e": f"The worker running this job stopped responding (no heartbeat "
                        f"for {timeout_s:g} s) on {job.attempts} attempts; giving up.",
                    },
                )
                log.warning("training job %s: failed after %s attempts", job.id, job.attempts)
                emit_job_finished(conn, job.id)
            touched.append(job.id)
        lost = (
            conn.execute(
                text(
                    """
                SELECT t.id FROM training_jobs t
                LEFT JOIN procrastinate_jobs q ON q.id = t.queue_job_id
                LEFT JOIN procrastinate_workers w ON w.id = q.worker_id
                WHERE t.status = 'queued' AND NOT t.cancel_requested
                  AND t.created_at < now() - make_interval(secs => :t)
                  AND (q.id IS NULL OR q.status NOT IN ('todo', 'doing')
                       OR (q.status = 'doing' AND (w.id IS NULL OR
                           w.last_heartbeat < now() - make_interval(secs => :t))))
                FOR UPDATE OF t SKIP LOCKED
                """
                ),
                {"t": timeout_s},
            )
            .scalars()
            .all()
        )
        for job_id in lost:
            enqueue(conn, queue, job_id)
            touched.append(job_id)
    return touched


def _close_queue_entry(conn: Connection, queue_job_id: int | None) -> None:
    # The dead worker's queue entry would otherwise stay "doing" forever in procrastinate.
    if queue_job_id is not None:
        conn.execute(
            text(
                "UPDATE procrastinate_jobs SET status = 'failed' WHERE id = :q AND status = 'doing'"
            ),
            {"q": queue_job_id},
        )


def project_of_job(conn: Connection, job_id: int) -> str | None:
    """The name of the project training job `job_id` belongs to (None: no such job)."""
    name = conn.execute(
        text(
            "SELECT p.name FROM training_jobs j JOIN projects p ON p.id = j.project_id "
            "WHERE j.id = :id"
        ),
        {"id": job_id},
    ).scalar_one_or_none()
    return None if name is None else str(name)


def request_cancel(conn: Connection, job_id: int) -> bool:
    """A queued job is cancelled at once; a running one is flagged and stops within an epoch.
    False when the job had already ended."""
    updated = conn.execute(
        text(
            "UPDATE training_jobs SET cancel_requested = true, "
            "status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END, "
            "finished_at = CASE WHEN status = 'queued' THEN now() ELSE finished_at END "
            "WHERE id = :id AND status IN ('queued', 'running') RETURNING id"
        ),
        {"id": job_id},
    ).one_or_none()
    return updated is not None
