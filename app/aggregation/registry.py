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

from app.aggregation.base import Aggregator, TaskType, WorkerAggregator
from app.aggregation.crowdlab import MODEL_METHODS
from app.aggregation.dawid_skene import DawidSkene
from app.aggregation.dawid_skene_clustered import DawidSkeneClustered
from app.aggregation.glad import Glad
from app.aggregation.mace import Mace
from app.aggregation.methods import COUNT_METHODS, Normalized, Softmax
from app.aggregation.one_coin import OneCoin
from app.aggregation.params import ParamError
from app.aggregation.select import Auto
from app.aggregation.select_tasks import MultiLabelAuto, OrdinalAuto
from app.aggregation.task_methods import (
    DistanceSmoothed,
    RaterBias,
    TickBinaryRelevance,
    TickNormalized,
    TickPropensity,
    TickSoftmax,
)
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

# The single-label methods (a single-label project's; the default table).
METHODS: dict[str, type[Aggregator]] = {**COUNT_METHODS, **WORKER_METHODS, **MODEL_METHODS}
METHOD_NAMES: list[str] = list(METHODS)


def _table(*methods: type[Aggregator]) -> dict[str, type[Aggregator]]:
    return {m.name: m for m in methods}


# Per task type, the methods a project of that type may use, by name. A name can mean a
# different class per type ("normalized" of ticks is not "normalized" of votes). Ordinal
# projects also take the single-label methods that apply unchanged to level indices: vote
# proportions, softmax and Dawid-Skene (which ignores the order: a full confusion per worker).
# `auto` of each type chooses among the type's other methods (app/aggregation/select_tasks.py).
METHODS_BY_TASK: dict[TaskType, dict[str, type[Aggregator]]] = {
    "single": METHODS,
    "multi_label": _table(
        TickNormalized, TickSoftmax, TickBinaryRelevance, TickPropensity, MultiLabelAuto
    ),
    "ordinal": _table(Normalized, Softmax, DistanceSmoothed, DawidSkene, RaterBias, OrdinalAuto),
}
# Every parameter name some method of some type takes: the query parameters the soft-label
# routes accept (app/api/method_query.py), each then checked against the chosen method.
ALL_METHODS: list[type[Aggregator]] = list(
    {m: None for table in METHODS_BY_TASK.values() for m in table.values()}
)
PARAM_NAMES: frozenset[str] = frozenset(name for m in ALL_METHODS for name in m.model_fields)


def get_method(method: str, task_type: TaskType | str = "single") -> type[Aggregator]:
    """The class of the method called `method` for a project of `task_type` (ParamError on
    field "method" if there is none: unknown, or not one for this task type, with the list of
    those that are)."""
    table = METHODS_BY_TASK[task_type]  # type: ignore[index]  # a project's, checked on write
    cls = table.get(method)
    if cls is None:
        known = ", ".join(table)
        if any(method in t for t in METHODS_BY_TASK.values()):
            raise ParamError(
                "method",
                f"{method!r} does not apply to a {task_type} project; the methods that do: {known}",
            )
        raise ParamError("method", f"unknown method {method!r}; known: {known}")
    return cls


def resolve_method(
    method: str, raw_params: Mapping[str, Any], task_type: TaskType | str = "single"
) -> Aggregator:
    """The method configured from raw values (query strings, JSON numbers): every value parsed
    and range-checked, defaults filled. ParamError names the first bad or unknown parameter."""
    return get_method(method, task_type)(**raw_params)
