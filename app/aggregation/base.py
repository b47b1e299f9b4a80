"""The aggregator protocol: every soft-label method is a class whose fields are its parameters.

Shaped like crowd-kit's aggregators (`crowdkit.aggregation.DawidSkene` and its siblings): an
instance is a configuration, `DawidSkene(max_iter=50, smoothing=0.1)`; `fit(...)` returns the
instance, and what it estimated is read from attributes ending in an underscore (`probas_`,
`labels_`, `skills_`, `confusions_`, `n_iter_`, ...).

Why pydantic models (not dataclasses with annotated constraints): a parameter arrives as a
query-string value or a JSON number and must be parsed, range-checked and, when bad, reported
by name; the API documents every parameter in its OpenAPI description. A pydantic field gives
the constraints, the description and the JSON schema from one declaration (`max_iter: MaxIter =
100`); app/aggregation/params.py adds the parsing and the error wording the service has always
had. Hyperparameters are frozen once validated (an instance can be shared and its `params()`
is the fit cache's key); `fit` keeps its results in private attributes, which a frozen model
allows.

Three kinds, by what a method reads:
- `CountsAggregator`: per-item vote counts; `compute(counts)` (n, K) -> (n, K), pure.
- `WorkerAggregator`: the vote list (who voted what); `fit(votes, warm)`, warm-startable, its
  result (`result_`, a `WorkerModelFit`) is what the fit cache stores (app/labels/fits.py).
- `ModelAggregator`: the votes plus a training job's out-of-sample predictions (crowdlab), which
  are loaded above aggregation (app/labels/model_loop.py).

Class-level metadata: `name` (the API name), `summary` (one line), `source` (citation) and
`task_type`, the kind of project a method is written for (a project's task type). A "single"
method has one true class per item: `probas_` rows are distributions over the K classes and
`labels_` is their argmax. The protocol assumes only (n_items, K) arrays, so other task types
fit it (app/aggregation/task_methods.py): a "multi_label" aggregator's rows are per-class
probabilities that the class applies (they need not sum to 1), an "ordinal" one's are
distributions over ordered levels. Which methods a project of each type may use is the
registry's table (single-label methods that ignore order also serve ordinal projects). Row
normalization happens in the methods, never here.

Imports point one way: method modules import this module, `params` and `votes`; `registry.py`
imports the method modules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError, ValidationInfo
from pydantic import field_validator as _field_validator

from app.aggregation.params import check_names, param_error, parse
from app.aggregation.votes import SortedVotes, VoteArrays

TaskType = Literal["single", "multi_label", "ordinal"]


class NotFitted(RuntimeError):
    """A result attribute was read before `fit`."""


class Aggregator(BaseModel):
    """A soft-label method: its parameters as validated fields, its metadata as class variables.

    `Aggregator(**raw)` parses and checks every value (strings from a query string included) and
    raises `ParamError` naming the first bad parameter, or one the method does not take; a value
    given as None takes the default.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    name: ClassVar[str]  # the API name, e.g. "dawid-skene"
    summary: ClassVar[str]  # one line, for the docs, the method list and /workers
    source: ClassVar[str]  # citation
    task_type: ClassVar[TaskType] = "single"

    def __init__(self, **raw: Any) -> None:
        given = check_names(type(self), self.name, raw)
        try:
            super().__init__(**given)
        except ValidationError as exc:
            raise param_error(type(self), exc, given) from None

    @_field_validator("*", mode="before")
    @classmethod
    def _parse(cls, raw: Any, info: ValidationInfo) -> Any:
        assert info.field_name is not None
        return parse(cls.model_fields[info.field_name], raw)

    def params(self) -> dict[str, int | float]:
        """The parameters as plain JSON values: what the API echoes, the fit cache's key and
        what a training job stores. Flags are 1 / 0 and unset optional parameters are left
        out, as before the methods were classes, so stored keys stay valid."""
        out: dict[str, int | float] = {}
        for name, value in self.model_dump().items():
            if value is not None:
                out[name] = int(value) if isinstance(value, bool) else value
        return out


def _fitted(value: Any, cls: type) -> Any:
    if value is None:
        raise NotFitted(f"{cls.__name__} is not fitted yet: call fit first")
    return value


# ----- count methods ------------------------------------------------------------------------------


def count_matrix(counts: np.ndarray) -> np.ndarray:
    """`counts` as (n, K) (a (K,) vector is one row); ValueError / TypeError if it is not
    finite, non-negative and numeric."""
    arr = np.asarray(counts)
    if arr.ndim not in (1, 2) or arr.shape[-1] == 0:
        raise ValueError(f"counts must have shape (K,) or (n, K) with K >= 1, got {arr.shape}")
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"counts must be numeric, got dtype {arr.dtype}")
    if arr.size and not (np.isfinite(arr).all() and (arr >= 0).all()):
        raise ValueError("counts must be finite and non-negative")
    return arr.reshape(-1, arr.shape[-1])


class CountsAggregator(Aggregator):
    """A method that needs only per-item vote counts: row i of `counts` is item i's vote-count
    vector over the K classes."""

    _probas: np.ndarray | None = PrivateAttr(default=None)

    def compute(self, counts: np.ndarray) -> np.ndarray:
        """(n, K) counts -> (n, K) soft labels (callers validate the counts: `count_matrix`)."""
        raise NotImplementedError

    def fit(self, counts: np.ndarray) -> Self:
        self._probas = self.compute(count_matrix(counts))
        return self

    @property
    def probas_(self) -> np.ndarray:
        return _fitted(self._probas, type(self))  # type: ignore[no-any-return]

    @property
    def labels_(self) -> np.ndarray:
        return self.probas_.argmax(axis=1)  # type: ignore[no-any-return]


# ----- worker models ------------------------------------------------------------------------------


@dataclass
class WorkerModelFit:
    """Result of one fit. See each method's docstring for what `worker_skill` means there."""

    probs: np.ndarray  # (n_items, K) float64, rows sum to 1
    worker_skill: np.ndarray  # (n_workers,)
    confusion: np.ndarray | None  # (n_workers, K, K): row = true class, column = given label
    class_prior: np.ndarray | None  # (K,)
    n_iter: int
    converged: bool
    state: dict[str, np.ndarray] = field(default_factory=dict)  # warm-start parameters
    # Problems found in the returned fit (label switching, collapse; see em.fit_warnings), for
    # the API to show. Empty for a healthy fit.
    warnings: list[str] = field(default_factory=list)


def single_class_fit(votes: VoteArrays, **state: np.ndarray) -> WorkerModelFit:
    """K = 1: every posterior is 1 and every worker is always right; nothing to estimate."""
    return WorkerModelFit(
        probs=np.ones((votes.n_items, 1)),
        worker_skill=np.ones(votes.n_workers),
        confusion=np.ones((votes.n_workers, 1, 1)),
        class_prior=np.ones(1),
        n_iter=0,
        converged=True,
        state=dict(state),
    )


def warm_array(warm: WorkerModelFit | None, key: str) -> np.ndarray | None:
    if warm is None:
        return None
    arr = warm.state.get(key)
    return None if arr is None else np.asarray(arr, dtype=np.float64)


class WorkerAggregator(Aggregator):
    """A worker-quality model: estimates how reliable every worker is from the vote list and
    weights the votes accordingly.

    Subclasses implement `_fit`. A model that can clamp gold items declares a `use_gold:
    UseGold` field (`sorted_votes` reads it); `work` estimates a fit's cost before it starts.
    """

    # One class: nothing to estimate, so `fit` answers without calling `_fit`, unless the
    # model has something to record even then (auto: its candidates' scores).
    fits_one_class: ClassVar[bool] = False

    _result: WorkerModelFit | None = PrivateAttr(default=None)

    def fit(self, votes: VoteArrays, warm: WorkerModelFit | None = None) -> Self:
        """Fit on `votes`; `warm`, a previous fit of the same method (on the same project, maybe
        with fewer items and workers), is where EM starts. Returns self."""
        if votes.n_classes == 1 and not self.fits_one_class:
            self._result = single_class_fit(votes)
        else:
            self._result = self._fit(votes, warm)
        return self

    def _fit(self, votes: VoteArrays, warm: WorkerModelFit | None) -> WorkerModelFit:
        raise NotImplementedError

    def sorted_votes(self, votes: VoteArrays) -> SortedVotes:
        """The votes indexed for the E- and M-steps, gold items clamped if `use_gold`."""
        return SortedVotes.build(votes, use_gold=bool(getattr(self, "use_gold", False)))

    @property
    def uses_gold(self) -> bool:
        """Whether the fit depends on the items' gold labels (so a gold change must refit)."""
        return bool(getattr(self, "use_gold", False))

    def work(self, n_votes: int) -> float:
        """An estimate of the fit's cost, in vote-iterations, made before it starts (the API
        fits in the request only below a budget: app/labels/fits.py). Default: one pass."""
        return float(n_votes)

    @property
    def result_(self) -> WorkerModelFit:
        """Everything the fit estimated, as the fit cache stores it."""
        return _fitted(self._result, type(self))  # type: ignore[no-any-return]

    @property
    def probas_(self) -> np.ndarray:
        """(n_items, K) posteriors: the soft labels."""
        return self.result_.probs

    @property
    def labels_(self) -> np.ndarray:
        """(n_items,) most probable class (the lowest index on ties)."""
        return self.result_.probs.argmax(axis=1)  # type: ignore[no-any-return]

    @property
    def skills_(self) -> np.ndarray:
        """(n_workers,) the model's skill estimate (its meaning: see the class docstring)."""
        return self.result_.worker_skill

    @property
    def confusions_(self) -> np.ndarray | None:
        """(n_workers, K, K) [worker, true class, given label], where the model has them."""
        return self.result_.confusion

    @property
    def class_prior_(self) -> np.ndarray | None:
        return self.result_.class_prior

    @property
    def n_iter_(self) -> int:
        return self.result_.n_iter

    @property
    def converged_(self) -> bool:
        return self.result_.converged

    @property
    def warnings_(self) -> list[str]:
        return self.result_.warnings

    @property
    def state_(self) -> dict[str, np.ndarray]:
        """The fitted parameters a warm start continues from (`fit(votes, warm=result_)`)."""
        return self.result_.state


# ----- model-in-the-loop methods ------------------------------------------------------------------


class ModelAggregator(Aggregator):
    """A method that combines the votes with a training job's out-of-sample predictions; which
    job, and loading its predictions, is done above aggregation (app/labels/model_loop.py)."""
