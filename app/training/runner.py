"""[5. trained] Run one training job: claim it, freeze its data, train, store the result.

Called by the queue's `train` task in a worker process. Progress, heartbeats and the cancel
check share one UPDATE per epoch; a background thread keeps beating during long epochs so a
slow epoch is not mistaken for a dead worker.

A job whose encoder reads content (texts, images) freezes that content with its votes, and
its encoder turns it into the model's inputs first (app/training/content_job.py); from there
it is a features job. The fitted encoder goes into the checkpoint, for predictions.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from pydantic import ValidationError
from sqlalchemy import Engine, text

from app.labels import predictions
from app.labels.model_loop import crowdlab_targets
from app.training import jobs
from app.training.config import TrainingConfig
from app.training.content import checkpoint_entry
from app.training.content_job import Encoded, encode_snapshot
from app.training.data import TrainingData
from app.training.embedding_cache import Stopped
from app.training.errors import JobError
from app.training.media import Resolver, direct
from app.training.oos import oos_predictions
from app.training.snapshot import freeze, project_shape
from app.training.stored_content import content_kind
from app.training.trainer import load_checkpoint, predict_probs, resolve_device, train

log = logging.getLogger(__name__)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Heartbeat(threading.Thread):
    def __init__(self, engine: Engine, job_id: int, attempt: int, every_s: float) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{job_id}")
        self.engine, self.job_id, self.attempt, self.every_s = engine, job_id, attempt, every_s
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.every_s):
            try:
                with self.engine.connect() as conn:
                    jobs.heartbeat(conn, self.job_id, self.attempt)
            except Exception:  # a missed beat is harmless; the next one may get through
                log.warning("heartbeat for job %s failed", self.job_id, exc_info=True)


def load_teacher(engine: Engine, teacher_job: int) -> Any:
    with engine.connect() as conn:
        blob = conn.execute(
            text("SELECT checkpoint FROM training_artifacts WHERE job_id = :j"), {"j": teacher_job}
        ).scalar_one_or_none()
    if blob is None:
        raise JobError(f"teacher job {teacher_job} has no stored model")
    model, _, _ = load_checkpoint(bytes(blob))
    return model


def run_training_job(
    engine: Engine,
    job_id: int,
    heartbeat_timeout_s: float,
    max_s: float | None = None,
    media: Callable[[int], Resolver] | None = None,
) -> None:
    """`max_s`: wall time after which the job stops at the end of an epoch, as if cancelled
    (the admin's SOFTLABELS_TRAINING_MAX_S). `media(project id)`: how that project's image
    URLs are fetched (a connector's credentials: app/connectors/media.py); else http(s) URLs
    only, without credentials."""
    claimed = jobs.claim(engine, job_id, worker_name())
    if claimed is None:
        log.info("training job %s is not queued any more; nothing to do", job_id)
        return
    attempt = claimed["attempts"]
    beat = Heartbeat(engine, job_id, attempt, every_s=max(heartbeat_timeout_s / 4, 0.2))
    beat.start()
    started = time.perf_counter()
    try:
        project_id = claimed["project_id"]
        # The label method's name means a class per task type (the API resolved it so).
        task_type = project_shape(engine, project_id).task_type
        try:
            cfg = TrainingConfig.model_validate(claimed["config"], context={"task_type": task_type})
        except ValidationError as exc:  # stored by hand, or before the API checked the type
            raise JobError(
                f"the job's config does not fit this {task_type} project: {exc}"
            ) from None
        kind = content_kind(cfg.encoder.name)
        if kind is not None and cfg.distill is not None:  # the API refuses these too
            raise JobError("distillation needs a teacher on the same inputs: features jobs only")
        snap = freeze(engine, project_id, cfg.labels, model_targets=crowdlab_targets, content=kind)
        device = resolve_device(cfg.device)
        jobs.record_snapshot(
            engine, job_id, attempt, snap.data_hash, snap.votes_version, str(device)
        )
        teacher = load_teacher(engine, cfg.distill.teacher_job) if cfg.distill else None
        with engine.connect() as conn:
            stop = False

            def report(progress: dict[str, Any]) -> bool:
                nonlocal stop
                stop = jobs.report_progress(conn, job_id, attempt, progress) or stop
                if max_s is not None and time.perf_counter() - started > max_s:
                    log.warning("training job %s ran past %s s; stopping it", job_id, max_s)
                    stop = True
                return stop

            def on_epoch(row: dict[str, Any]) -> None:
                report({k: row[k] for k in ("epoch", "epochs", "train_loss")})

            encoded: Encoded | None = None
            data = snap.data
            if kind is not None:
                resolve = media(project_id) if media is not None else direct
                encoded = encode_snapshot(
                    engine, cfg, project_id, snap, resolve=resolve, report=report
                )
                data = encoded.data
            result = train(
                cfg,
                data,
                teacher=teacher,
                on_epoch=on_epoch,
                should_stop=lambda: stop,
                checkpoint_extra=None if encoded is None else checkpoint_entry(encoded.encoder),
            )
            preds = dict(result.predictions)
            if cfg.oos_folds and not result.cancelled:
                oos = oos_predictions(
                    cfg, data, cfg.oos_folds, teacher=teacher, should_stop=lambda: stop
                )
                if oos is None:
                    result.cancelled = True
                else:
                    preds |= oos | _unlabeled(result.model, data, preds)
        if encoded is not None:
            result.metrics["encoder"] = encoded.metrics
        metrics = {
            **result.metrics,
            # Same labels everywhere: what the job trained on, checkable against an export.
            "targets": {
                **cfg.labels,
                "votes_version": snap.votes_version,
                "n_items": len(snap.data.item_ids),
                "hash": snap.targets_hash,
            },
            "seconds": round(time.perf_counter() - started, 3),
        }
        if result.cancelled:
            jobs.finish(engine, job_id, attempt, "cancelled", metrics=metrics)
        else:
            jobs.finish(
                engine,
                job_id,
                attempt,
                "succeeded",
                metrics=metrics,
                checkpoint=result.checkpoint,
                predictions=predictions.pack(preds),
            )
        log.info(
            "training job %s: %s in %.1f s",
            job_id,
            "cancelled" if result.cancelled else "succeeded",
            metrics["seconds"],
        )
    except Stopped:  # cancelled (or out of time) before training began
        jobs.finish(engine, job_id, attempt, "cancelled")
        log.info("training job %s: cancelled while encoding its content", job_id)
    except JobError as exc:
        jobs.finish(engine, job_id, attempt, "failed", error=_sentence(str(exc)))
    except Exception as exc:
        log.exception("training job %s crashed", job_id)
        jobs.finish(
            engine,
            job_id,
            attempt,
            "failed",
            error=_sentence(f"Internal error ({type(exc).__name__}): {exc}"),
        )
    finally:
        beat.stopped.set()


def _unlabeled(model: Any, data: TrainingData, preds: dict[str, Any]) -> dict[str, Any]:
    """Scores of the items with no votes (the model never saw them: out-of-sample as well)."""
    if "unlabeled_probs" in preds or not len(data.extra_ids):
        return {}
    out = {
        "unlabeled_ids": np.asarray(data.extra_ids, dtype=str),
        "unlabeled_probs": predict_probs(model, data.extra_features, data.task_type),
    }
    if data.extra_db_ids is not None:
        out["unlabeled_db_ids"] = data.extra_db_ids
    return out


def _sentence(message: str) -> str:
    message = message.strip() or "Unknown error"
    message = message[0].upper() + message[1:]
    return message if message.endswith((".", "!", "?")) else message + "."
