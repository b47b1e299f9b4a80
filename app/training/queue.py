"""The procrastinate app: one task, `train`, on the `training` queue (procrastinate demo style).

The API defers on the request's own connection, so the job row and its queue entry commit or
roll back together. Workers build the same app with `make_queue(url, run=...)`, where `run`
does the work (app/training/runner.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import procrastinate

TASK_NAME = "softlabels.train"
QUEUE = "training"


def make_queue(conninfo: str, run: Callable[[int], None] | None = None) -> procrastinate.App:
    connector = (
        procrastinate.PsycopgConnector(conninfo=conninfo)
        if run is not None
        else procrastinate.SyncPsycopgConnector(conninfo=conninfo)
    )
    queue = procrastinate.App(connector=connector)

    @queue.task(name=TASK_NAME, queue=QUEUE)
    def train(job_id: int) -> None:
        if run is None:  # the API's copy of the task is only ever deferred, never run
            raise RuntimeError("this process only defers training jobs")
        run(job_id)

    return queue


def defer_training(queue: procrastinate.App, job_id: int, connection: Any) -> int:
    """Enqueue job `job_id` on `connection` (a psycopg connection inside the caller's
    transaction). Returns procrastinate's job id."""
    task = queue.tasks[TASK_NAME]
    return int(task.configure(connection=connection).defer(job_id=job_id))
