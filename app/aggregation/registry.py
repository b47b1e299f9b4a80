"""Every soft-label method by name: count methods (per-item counts suffice) and worker-model
methods (they need who voted what). One resolver, so the API, exports, CLI and training
accept exactly the same names and parameters."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.aggregation.crowdlab import MODEL_METHODS, ModelMethod  # issue 12: crowdlab
from app.aggregation.methods import COUNT_METHODS, CountsMethod
from app.aggregation.params import ParamError, validate_params
from app.aggregation.worker_models import WORKER_METHODS, WorkerMethod

# issue 12 (model in the loop): ModelMethod / MODEL_METHODS (crowdlab) are added here; they are
# served by app/labeling.py and app/training/snapshot.py through app/model_loop.py.
Method = CountsMethod | WorkerMethod | ModelMethod
METHOD_NAMES: list[str] = [*COUNT_METHODS, *WORKER_METHODS, *MODEL_METHODS]


def resolve_method(method: str, raw_params: Mapping[str, Any]) -> tuple[Method, dict[str, Any]]:
    spec: Method | None = (
        COUNT_METHODS.get(method) or WORKER_METHODS.get(method) or MODEL_METHODS.get(method)
    )
    if spec is None:
        raise ParamError("method", f"unknown method {method!r}; known: {', '.join(METHOD_NAMES)}")
    return spec, validate_params(method, spec.params, raw_params)


def needs_votes(spec: Method) -> bool:
    return isinstance(spec, WorkerMethod)
