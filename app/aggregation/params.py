"""Method parameters: the field types aggregator classes declare them with, how a raw value (a
query-string value, a JSON number, a CLI `NAME=VALUE`) becomes a field's value, and how a bad one
is reported.

A parameter is a pydantic field of its method's class (app/aggregation/base.py): a type (int,
float, a yes/no flag, or an optional int), constraints (`ge`, `gt`, `le`, `lt`), a default and a
description. Types that several methods share are declared here once (`MaxIter`, `Tol`, ...).

Raw values are parsed here rather than by pydantic's lax mode, so that what was accepted before
the methods became classes still is and nothing else is: "7" and 7.0 are the integer 7 but 7.5,
"7.0" and true are not; a float is finite (every float parameter's range is finite, and "nan"
must not slip through a comparison); a flag is true/false/yes/no/on/off/1/0 in any case.

A bad parameter is a `ParamError` naming it, with a reason that states the allowed values, worded
from the field's constraints (`rule_of`), e.g. "must be an integer in [0, 1000], got '-1'".

Pure Python (no database, no web framework) so that the CLI, the API and the training worker
validate parameters the same way.
"""

from __future__ import annotations

import math
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Union, get_args, get_origin

import annotated_types as at
from pydantic import BaseModel, Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError


class ParamError(ValueError):
    """A bad method parameter. `field` names it (as the client spelled it)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class Rule:
    """The wording of a field's allowed values in error messages, where the one derived from its
    constraints would read worse (`rule_of`). Pydantic ignores this marker."""

    text: str


# ----- parameter types shared by several methods --------------------------------------------------

MaxIter = Annotated[
    int,
    # Bounded so that one request cannot ask for hours of work; defaults are 50-100.
    Field(
        ge=0,
        le=1000,
        description="maximum number of EM iterations (one E-step and one M-step each); 0 returns "
        "the initialization's posteriors",
    ),
]

Tol = Annotated[
    float,
    Field(
        ge=0,
        description="stop when the per-vote change of the objective (log marginal likelihood, "
        "plus the log prior where the method has one) between two E-steps is below tol; 0 runs "
        "all max_iter iterations",
    ),
]

NStarts = Annotated[
    int,
    Field(
        ge=1,
        le=2,
        description="EM starting points: 1 = vote fractions (crowd-kit's start), 2 = also "
        "majority vote; the run with the best objective among those without warnings is kept",
    ),
]

UseGold = Annotated[
    bool,
    Field(
        description="true: items with a gold label have their posteriors clamped to it during "
        "EM, which anchors the worker estimates"
    ),
]

Seed = Annotated[
    int,
    Field(ge=0, lt=2**32, description="seed of the random initialization"),
    Rule("an integer in [0, 2**32)"),
]

NonNegative = Annotated[float, Field(ge=0)]  # finite, as every float parameter
Positive = Annotated[float, Field(gt=0)]


# ----- reading a field's declaration --------------------------------------------------------------


def kind_of(field: FieldInfo) -> type[int] | type[float] | type[bool]:
    """int, float or bool (a flag): the type a raw value is parsed to (`int | None` is int)."""
    annotation = field.annotation
    if get_origin(annotation) in (Union, types.UnionType):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    if annotation is bool:
        return bool
    if annotation is int:
        return int
    if annotation is float:
        return float
    raise TypeError(f"a method parameter must be int, float or bool, not {annotation!r}")


def bounds(field: FieldInfo) -> tuple[Any, bool, Any, bool]:
    """(lower, lower is exclusive, upper, upper is exclusive) from the field's constraints; a
    missing bound is None."""
    lo: Any = None
    hi: Any = None
    lo_open = hi_open = False
    for m in field.metadata:
        if isinstance(m, at.Ge):
            lo, lo_open = m.ge, False
        elif isinstance(m, at.Gt):
            lo, lo_open = m.gt, True
        elif isinstance(m, at.Le):
            hi, hi_open = m.le, False
        elif isinstance(m, at.Lt):
            hi, hi_open = m.lt, True
    return lo, lo_open, hi, hi_open


def number(v: float) -> str:
    """A bound as people write it: 0, 100, -20, 0.5, 1e6."""
    if isinstance(v, int) or (v == int(v) and abs(v) < 1e6):
        return str(int(v))
    return f"{v:g}".replace("e+0", "e").replace("e+", "e").replace("e-0", "e-")


def rule_of(field: FieldInfo) -> str:
    """The field's allowed values in words, e.g. "an integer in [0, 1000]", "1 or 2",
    "a finite number >= 0", "a number in (0, 1)", "true or false"."""
    for m in field.metadata:
        if isinstance(m, Rule):
            return m.text
    kind = kind_of(field)
    if kind is bool:
        return "true or false"
    lo, lo_open, hi, hi_open = bounds(field)
    if lo is not None and hi is not None:
        if kind is int and not (lo_open or hi_open) and hi == lo + 1:
            return f"{number(lo)} or {number(hi)}"
        noun = "an integer" if kind is int else "a number"
        left, right = "(" if lo_open else "[", ")" if hi_open else "]"
        return f"{noun} in {left}{number(lo)}, {number(hi)}{right}"
    noun = "an integer" if kind is int else "a finite number"
    if lo is not None:
        return f"{noun} {'>' if lo_open else '>='} {number(lo)}"
    if hi is not None:
        return f"{noun} {'<' if hi_open else '<='} {number(hi)}"
    return noun


# ----- parsing ------------------------------------------------------------------------------------

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _bad(reason: str) -> PydanticCustomError:
    # The reason goes in as context: a template would read braces in the raw value as fields.
    return PydanticCustomError("method_param", "{reason}", {"reason": reason})


def parse(field: FieldInfo, raw: Any) -> Any:
    """`raw` as the field's type (see the module doc); raises a pydantic error whose message is
    the whole reason. Range checks are left to the field's constraints."""
    if raw is None:  # only a default gets here: given None means "the default" (check_names)
        return raw
    kind = kind_of(field)
    if kind is bool:
        text = str(raw).strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise _bad(f"must be true or false, got {raw!r}")
    rule = rule_of(field)
    if isinstance(raw, bool):
        raise _bad(f"must be a number ({rule})")
    try:
        value = kind(raw.strip()) if isinstance(raw, str) else kind(raw)
        if kind is int and not isinstance(raw, int) and float(raw) != value:
            raise ValueError("not a whole number")
    except (TypeError, ValueError, OverflowError):
        raise _bad(f"must be {'an integer' if kind is int else 'a number'} ({rule})") from None
    if isinstance(value, float) and value != value:  # NaN
        raise _bad(f"must be a number ({rule})")
    if isinstance(value, float) and not math.isfinite(value):
        raise _bad(f"must be {rule}, got {raw!r}")
    return value


def check_names(model: type[BaseModel], method: str, raw: Mapping[str, Any]) -> dict[str, Any]:
    """`raw` without the parameters given as None (they take their defaults); ParamError for a
    name the method does not take (the first, alphabetically)."""
    fields = model.model_fields
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        allowed = ", ".join(sorted(fields)) or "no parameters"
        raise ParamError(unknown[0], f"method {method!r} does not take it (it takes {allowed})")
    return {name: value for name, value in raw.items() if value is not None}


def param_error(model: type[BaseModel], exc: ValidationError, raw: Mapping[str, Any]) -> ParamError:
    """The first of pydantic's errors (fields are validated in declaration order) as a
    ParamError: a parse error keeps its reason; a failed constraint states the range."""
    err = exc.errors()[0]
    name = str(err["loc"][0]) if err["loc"] else "method"
    if err["type"] == "method_param":
        return ParamError(name, str(err["ctx"]["reason"]))
    field = model.model_fields.get(name)
    if field is None:  # not a field: nothing of ours failed, say what pydantic says
        return ParamError(name, err["msg"])
    return ParamError(name, f"must be {rule_of(field)}, got {raw.get(name)!r}")
