"""Every soft-label method by name, in one explicit table: count methods (per-item counts
suffice), then worker models (they need who voted what), then model-in-the-loop methods (votes
plus a trained model's out-of-sample predictions), in the order declared here (the order of the
OpenAPI description, the dashboard and error messages). One lookup, `resolve_method`, so the API,
exports, CLI and training accept exactly the same names and parameters.

Imports point one way: this module imports the method modules, which import `base`, `em`,
`params` and `votes` (and `select`, auto, imports the worker models it chooses among).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.aggregation.base import Aggregator, WorkerAggregator
from app.aggregation.crowdlab import MODEL_METHODS
from app.aggregation.dawid_skene import DawidSkene
from app.aggregation.dawid_skene_clustered import DawidSkeneClustered
from app.aggregation.glad import Glad
from app.aggregation.mace import Mace
from app.aggregation.methods import COUNT_METHODS
from app.aggregation.one_coin import OneCoin
from app.aggregation.params import ParamError
from app.aggregation.select import Auto
from app.aggregation.wawa import Wawa

WORKER_METHODS: dict[str, type[WorkerAggregator]] = {
    m.name: m
    for m in (
        DawidSkene,
        DawidSkeneClustered,
        OneCoin,
        Glad,
        Mace,
        Wawa,
        # Chooses among the ones above (select.CANDIDATES); a worker model itself: it needs the
        # votes and its fit is cached like theirs.
        Auto,
    )
}

METHODS: dict[str, type[Aggregator]] = {**COUNT_METHODS, **WORKER_METHODS, **MODEL_METHODS}
METHOD_NAMES: list[str] = list(METHODS)
# Every parameter name some method takes: the query parameters the soft-label routes accept
# (app/api/method_query.py), each then checked against the chosen method.
PARAM_NAMES: frozenset[str] = frozenset(name for m in METHODS.values() for name in m.model_fields)


def get_method(method: str) -> type[Aggregator]:
    """The class of the method called `method` (ParamError on field "method" if there is none)."""
    cls = METHODS.get(method)
    if cls is None:
        raise ParamError("method", f"unknown method {method!r}; known: {', '.join(METHOD_NAMES)}")
    return cls


def resolve_method(method: str, raw_params: Mapping[str, Any]) -> Aggregator:
    """The method configured from raw values (query strings, JSON numbers): every value parsed
    and range-checked, defaults filled. ParamError names the first bad or unknown parameter."""
    return get_method(method)(**raw_params)
