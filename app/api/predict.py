"""[5. trained] POST /v1/training-jobs/{id}/predict: a trained model's class probabilities.

Inputs are what the job's model reads: feature vectors for a job on features; texts, or
images (uploaded bytes, or URLs the service fetches under the network policy, Label Studio
paths with the project's connector) for a job on content, through the encoder the job fitted
(restored from its checkpoint); or stored items by id, with their features or content.

torch and the encoder's library load on the first prediction of a process, not at start-up.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Depends

from app.api.access import require
from app.api.deps import ModelCacheDep, SessionDep
from app.api.schemas import PredictIn, PredictOut
from app.api.training import JobDep, checkpoint_of, job_project
from app.connectors import label_studio
from app.connectors.media import resolver_for
from app.db.models import Project
from app.errors import Conflict, ValidationFailed, plural
from app.training.encoders import EncoderUnavailableError
from app.training.errors import JobError
from app.training.media import fetch_all
from app.training.serving import Loaded, item_content, item_features
from app.training.stored_content import IMAGE, TEXT, content_kind

router = APIRouter(tags=["training"])

INPUTS = ("features", "items", "texts", "images", "image_urls")
# what each input is for: None = a job on features
KIND_OF = {"features": None, "texts": TEXT, "images": IMAGE, "image_urls": IMAGE}
SEND = {None: "features or items", TEXT: "texts or items", IMAGE: "images, image_urls or items"}
WHAT = {None: "feature vectors", TEXT: "texts", IMAGE: "images"}


def _refuse(field: str, reason: str, index: int | None = None) -> ValidationFailed:
    return ValidationFailed(
        f"Cannot predict: {field}: {reason}",
        errors=[{"index": index, "field": field, "reason": reason}],
    )


@router.post(
    "/v1/training-jobs/{job_id}/predict",
    response_model=PredictOut,
    dependencies=[Depends(require("train", job_project))],
)
def predict(body: PredictIn, job: JobDep, session: SessionDep, models: ModelCacheDep) -> PredictOut:
    """Class probabilities for exactly one of: `features` (raw vectors), `texts`, `images`
    (base64 files), `image_urls`, or `items` (stored items by id). A row is a distribution
    over the classes (levels), or for a multi-label model (`task_type` "multi_label") each
    class's probability that it applies, from its own sigmoid (a row sums to anything in
    0..K)."""
    row, project = job
    given = [f for f in INPUTS if getattr(body, f) is not None]
    if len(given) != 1:
        raise ValidationFailed(
            f"Send exactly one of {', '.join(INPUTS)}.",
            errors=[
                {
                    "index": None,
                    "field": given[1] if given else "features",
                    "reason": "exactly one input",
                }
            ],
        )
    field = given[0]
    try:
        loaded = models.get(row.id, lambda: checkpoint_of(session, row))
    except EncoderUnavailableError as exc:
        raise Conflict(f"Training job {row.id}'s encoder cannot load here: {exc}") from None
    kind = None if loaded.encoder is None else content_kind(loaded.encoder.name)
    if field != "items" and KIND_OF[field] != kind:
        raise _refuse(field, f"job {row.id} trains on {WHAT[kind]}; send {SEND[kind]}")
    if kind is None:
        rows = _feature_rows(session, project, body, loaded)
    else:
        rows = _encode(loaded, field, _content(session, project, body, field, kind))
    from app.training.trainer import predict_probs  # torch: loaded with the model above

    task_type = str(loaded.ckpt.get("task_type", "single"))
    probs = predict_probs(loaded.model, np.asarray(rows, dtype=np.float32), task_type)
    bad = [
        {"index": i, "field": field, "reason": "too large for the model (no finite output)"}
        for i in np.flatnonzero(~np.isfinite(probs).all(axis=1)).tolist()
    ]
    if bad:
        # A float32 feature far outside the training range overflows the network's logits.
        raise ValidationFailed(
            f"{plural(len(bad), 'input')} gave no finite probabilities.", errors=bad
        )
    return PredictOut(classes=project.classes, probs=probs.tolist(), task_type=task_type)


def _feature_rows(
    session: SessionDep, project: Project, body: PredictIn, loaded: Loaded
) -> list[list[float]]:
    n_features = int(loaded.ckpt["n_features"])
    if body.items is not None:
        found = item_features(session.connection(), project.id, body.items)
        errors = [
            {
                "index": i,
                "field": "items",
                "reason": "no such item" if item not in found else "the item has no feature vector",
            }
            for i, item in enumerate(body.items)
            if found.get(item) is None
        ]
        if errors:
            raise ValidationFailed(
                f"{plural(len(errors), 'item')} cannot be predicted.", errors=errors
            )
        rows: list[list[float]] = [found[i] or [] for i in body.items]  # all found (checked)
    else:
        rows = body.features or []
    bad = [
        {
            "index": i,
            "field": "features",
            "reason": f"has {len(r)} values; the model takes {n_features}",
        }
        for i, r in enumerate(rows)
        if len(r) != n_features
    ]
    if bad:
        raise ValidationFailed(
            f"{plural(len(bad), 'feature vector')} of the wrong length.", errors=bad
        )
    return rows


def _content(
    session: SessionDep, project: Project, body: PredictIn, field: str, kind: str
) -> list[Any]:
    """The texts or image bytes to encode, in input order."""
    if field == "texts":
        return list(body.texts or [])
    if field == "images":
        return list(body.images or [])
    if field == "image_urls":
        # A Label Studio path opens with the project's connector (its token: its origin only).
        urls: list[tuple[str, str | None]] = [
            (u, label_studio.SOURCE) for u in body.image_urls or []
        ]
        return _fetch(session, project, urls, field, None)
    ids = body.items or []
    found = item_content(session.connection(), project.id, ids)
    need = "text" if kind == TEXT else "image"
    errors = [
        {
            "index": i,
            "field": "items",
            "reason": "no such item" if item not in found else f"the item has no {need}",
        }
        for i, item in enumerate(ids)
        if item not in found
        or (found[item][0] is None if kind == TEXT else found[item][1:3] == (None, None))
    ]
    if errors:
        raise ValidationFailed(f"{plural(len(errors), 'item')} cannot be predicted.", errors=errors)
    if kind == TEXT:
        return [found[i][0] for i in ids]
    out: list[Any] = [found[i][1] for i in ids]
    by_url = [j for j, i in enumerate(ids) if out[j] is None]
    fetched = _fetch(
        session,
        project,
        [(found[ids[j]][2] or "", found[ids[j]][3]) for j in by_url],
        "items",
        [ids[j] for j in by_url],
    )
    for j, image in zip(by_url, fetched, strict=True):
        out[j] = image
    return out


def _fetch(
    session: SessionDep,
    project: Project,
    urls: list[tuple[str, str | None]],
    field: str,
    names: list[str] | None,
) -> list[bytes]:
    resolve = resolver_for(session.connection(), project.id)
    try:
        return fetch_all(urls, resolve, names=names)
    except JobError as exc:
        raise _refuse(field, str(exc)) from None


def _encode(loaded: Loaded, field: str, content: list[Any]) -> Any:
    try:
        return loaded.encoder.encode(content)
    except JobError as exc:  # an image Pillow cannot decode, ...
        raise _refuse(field, str(exc)) from None
