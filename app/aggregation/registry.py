"""Every soft-label method by name, in one explicit table: count methods (per-item counts
suffice), then worker-model methods (they need who voted what), then model-in-the-loop methods
(votes plus a trained model's out-of-sample predictions), in the order declared here (the
order of the OpenAPI description and of error messages). One lookup, `resolve_method`, so the
API, exports, CLI and training accept exactly the same names, and validate parameters once.

Imports point one way: this module imports the method modules, which import only `base`,
`em` and `params`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.aggregation import dawid_skene, dawid_skene_clustered, glad, mace, one_coin, select, wawa
from app.aggregation.base import CountsMethod, WorkerMethod
from app.aggregation.crowdlab import MODEL_METHODS, ModelMethod
from app.aggregation.methods import COUNT_METHODS
from app.aggregation.params import MethodParams, ParamError, validate_params

# ModelMethod (crowdlab): votes combined with a training job's out-of-sample predictions; served
# by app/labels/service.py and app/training/snapshot.py through app/labels/model_loop.py.
Method = CountsMethod | WorkerMethod | ModelMethod

WORKER_METHODS: dict[str, WorkerMethod] = {
    m.name: m
    for m in (
        dawid_skene.METHOD,
        dawid_skene_clustered.METHOD,
        one_coin.METHOD,
        glad.METHOD,
        mace.METHOD,
        wawa.METHOD,
    )
}

# `auto` chooses among the methods above; it is a worker method itself (it needs the votes and
# its fit is cached like theirs).
WORKER_METHODS[select.NAME] = select.make_auto(list(WORKER_METHODS.values()))

METHODS: dict[str, Method] = {**COUNT_METHODS, **WORKER_METHODS, **MODEL_METHODS}
METHOD_NAMES: list[str] = list(METHODS)
# Every parameter name any method takes: the query names a soft-label route accepts.
PARAM_NAMES: frozenset[str] = frozenset(name for m in METHODS.values() for name in m.params)


def get_method(method: str) -> Method:
    """The method called `method` (ParamError on field "method" if there is none)."""
    spec = METHODS.get(method)
    if spec is None:
        raise ParamError("method", f"unknown method {method!r}; known: {', '.join(METHOD_NAMES)}")
    return spec


def resolve_method(method: str, raw_params: Mapping[str, Any]) -> tuple[Method, MethodParams]:
    """The method and its parameters, parsed and range-checked with defaults filled."""
    spec = get_method(method)
    return spec, validate_params(method, spec.params, raw_params)


def needs_votes(spec: Method) -> bool:
    return isinstance(spec, WorkerMethod)
