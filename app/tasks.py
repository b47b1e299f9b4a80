"""The procrastinate app (procrastinate demo style) and its four tasks.

- `softlabels.train` (queue `training`): run one training job (app/training/runner.py).
- `softlabels.refit` (queue `fits`): refit a worker-quality model for a large project
  (app/labels/fits.py), so API reads never wait on a long fit.
- `softlabels.webhook` (queue `webhooks`): deliver one webhook event (app/webhooks/deliver.py).
- `softlabels.connector_sync` (queue `connectors`, every minute): the periodic syncs of the
  labeling tools (app/connectors/store.py).

The API defers on the request's own connection, so the job row and its queue entry commit or
roll back together. Workers build the same app with handlers that do the work
(app/cli/worker.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import procrastinate
from procrastinate.exceptions import AlreadyEnqueued

from app.webhooks.deliver import RETRY as WEBHOOK_RETRY
from app.webhooks.deliver import WEBHOOK_QUEUE, WEBHOOK_TASK

TRAIN_TASK = "softlabels.train"
REFIT_TASK = "softlabels.refit"
SYNC_TASK = "softlabels.connector_sync"
# Training jobs that ask for a GPU (config `device: "cuda"`) wait in their own queue, taken only by
# workers started with `--device cuda`; every other job goes to `training`.
TRAINING_QUEUE, GPU_TRAINING_QUEUE = "training", "training-cuda"
QUEUES = [TRAINING_QUEUE, GPU_TRAINING_QUEUE, "fits", WEBHOOK_QUEUE, "connectors"]


def training_queue(device: str | None) -> str:
    """The queue of a job whose config asks for `device`."""
    return GPU_TRAINING_QUEUE if device == "cuda" else TRAINING_QUEUE


@dataclass(frozen=True)
class Handlers:
    train: Callable[[int], None]
    refit: Callable[[int, str, dict[str, Any]], None]
    webhook: Callable[[int], None] | None = None  # app/webhooks/deliver.py: deliver one event
    sync: Callable[[], object] | None = None  # app/connectors/store.py: periodic tool syncs


def make_queue(conninfo: str, handlers: Handlers | None = None) -> procrastinate.App:
    connector = (
        procrastinate.PsycopgConnector(conninfo=conninfo)
        if handlers is not None
        else procrastinate.SyncPsycopgConnector(conninfo=conninfo)
    )
    queue = procrastinate.App(connector=connector)

    def _handlers() -> Handlers:
        if handlers is None:  # the API's copy of the tasks is only ever deferred, never run
            raise RuntimeError("this process only defers jobs")
        return handlers

    @queue.task(name=TRAIN_TASK, queue="training")
    def train(job_id: int) -> None:
        _handlers().train(job_id)

    @queue.task(name=REFIT_TASK, queue="fits")
    def refit(project_id: int, method: str, params: dict[str, Any]) -> None:
        _handlers().refit(project_id, method, params)

    @queue.task(name=WEBHOOK_TASK, queue=WEBHOOK_QUEUE, retry=WEBHOOK_RETRY)
    def webhook(delivery_id: int) -> None:
        deliver = _handlers().webhook
        if deliver is not None:
            deliver(delivery_id)

    @queue.periodic(cron="* * * * *")
    @queue.task(name=SYNC_TASK, queue="connectors", queueing_lock=SYNC_TASK)
    def connector_sync(timestamp: int) -> None:
        sync = _handlers().sync
        if sync is not None:
            sync()

    return queue


def defer_training(
    queue: procrastinate.App, job_id: int, connection: Any, device: str | None = None
) -> int:
    """Enqueue training job `job_id` on `connection` (a psycopg connection inside the caller's
    transaction), in the queue for `device`. Returns procrastinate's job id."""
    task = queue.tasks[TRAIN_TASK].configure(connection=connection, queue=training_queue(device))
    return int(task.defer(job_id=job_id))


def defer_refit(
    queue: procrastinate.App,
    connection: Any,
    project_id: int,
    method: str,
    params: dict[str, Any],
    key: str,
) -> None:
    """Queue a refit unless one for the same (project, method, params) is already waiting."""
    task = queue.tasks[REFIT_TASK].configure(
        connection=connection, queueing_lock=f"refit:{project_id}:{key}"
    )
    with contextlib.suppress(AlreadyEnqueued):
        task.defer(project_id=project_id, method=method, params=params)
