"""`softlabels worker`: takes training jobs and model refits from PostgreSQL (procrastinate).

Any number of workers may share one database; each job runs once. Each worker also sweeps for
jobs whose worker died (no heartbeat) and requeues or fails them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from typing import Any

import procrastinate

from app.config import Settings
from app.connectors.media import resolvers
from app.connectors.store import sync_due
from app.db.session import libpq_url, make_engine
from app.labels.fits import refit_now
from app.tasks import GPU_TRAINING_QUEUE, QUEUES, TRAINING_QUEUE, Handlers, make_queue
from app.training.jobs import recover_stalled
from app.training.runner import run_training_job, worker_name
from app.webhooks.deliver import deliver

log = logging.getLogger(__name__)

# Training jobs run for minutes to hours; deliveries, refits and syncs take seconds. Each side
# has its own procrastinate worker (its own concurrency), so background work never waits
# behind a training job.
# A GPU worker (`--device cuda`) takes only the jobs that asked for a GPU, and no background
# work: a team adds a GPU host by starting one more worker against the same PostgreSQL.
BACKGROUND_QUEUES = [q for q in QUEUES if q not in (TRAINING_QUEUE, GPU_TRAINING_QUEUE)]


async def _run_queues(
    queue: procrastinate.App, settings: Settings, timeout: float, device: str
) -> None:
    common: dict[str, Any] = {
        "wait": True,
        "fetch_job_polling_interval": 1.0,
        # procrastinate's own worker heartbeat must stay fresher than our timeout, or the
        # sweep would take a live worker's queue entry for a lost one.
        "update_heartbeat_interval": max(timeout / 4, 0.5),
        "stalled_worker_timeout": max(timeout, 2.0),
        # Two workers share this loop: one signal handler stops both (below).
        "install_signal_handlers": False,
    }
    runs = [
        queue.run_worker_async(
            queues=[GPU_TRAINING_QUEUE if device == "cuda" else TRAINING_QUEUE],
            concurrency=settings.training_concurrency,
            name=worker_name(),
            **common,
        )
    ]
    if device != "cuda":
        runs.append(
            queue.run_worker_async(
                queues=BACKGROUND_QUEUES,
                concurrency=settings.background_concurrency,
                name=f"{worker_name()}:background",
                **common,
            )
        )
    async with queue.open_async():
        both = asyncio.gather(*runs)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, both.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await both


def run_worker(settings: Settings, device: str = "cpu") -> None:
    """Run jobs until stopped: CPU training jobs and the background work, or with
    `device="cuda"` only the training jobs that asked for a GPU."""
    url = settings.database_url or ""
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    engine = make_engine(url, pool_size=3)
    timeout = settings.job_heartbeat_timeout_s
    handlers = Handlers(
        # Image URLs are fetched with the credentials of the connector that stored them.
        train=lambda job_id: run_training_job(
            engine, job_id, timeout, settings.training_max_s, media=resolvers(engine)
        ),
        refit=lambda project_id, method, params: refit_now(engine, project_id, method, params),
        webhook=lambda delivery_id: deliver(engine, delivery_id),
        sync=lambda: sync_due(engine),
    )
    queue = make_queue(libpq_url(url), handlers)
    deferrer = make_queue(libpq_url(url))  # sync connector: the sweeper defers on its own conn
    stop = threading.Event()

    def sweep() -> None:
        while True:
            try:
                recovered = recover_stalled(engine, deferrer, timeout)
                if recovered:
                    log.warning("requeued or failed stalled training jobs %s", recovered)
            except Exception:
                log.warning("stalled-job sweep failed", exc_info=True)
            if stop.wait(max(timeout / 3, 0.5)):
                return

    sweeper = threading.Thread(target=sweep, daemon=True, name="stalled-job-sweeper")
    sweeper.start()
    log.info("worker %s: waiting for jobs", worker_name())
    try:
        asyncio.run(_run_queues(queue, settings, timeout, device))
    finally:
        stop.set()
        engine.dispose()
