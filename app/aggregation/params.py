"""Parameter specs shared by every aggregation method.

Each method declares the parameters it takes; a request that names a parameter the method
does not take, or gives an out-of-range value, is rejected before any computation. This module
is pure Python (no database, no web framework) so that the CLI, the API and the training worker
validate parameters the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


class ParamError(ValueError):
    """A bad method parameter. `field` names it (as the client spelled it)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class ParamSpec:
    """One numeric parameter: its type, default, allowed range and a one-line doc."""

    name: str
    type: type[int] | type[float]
    default: int | float | None
    doc: str
    check: Callable[[float], bool] = lambda v: True
    rule: str = "any value"  # human wording of `check`, used in error messages
    flag: bool = False  # a yes/no switch stored as 0 / 1; accepts true/false/1/0

    def parse(self, raw: Any) -> int | float:
        if self.flag:
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return 1
            if text in ("0", "false", "no", "off"):
                return 0
            raise ParamError(self.name, f"must be true or false, got {raw!r}")
        if isinstance(raw, bool):
            raise ParamError(self.name, f"must be a number ({self.rule})")
        try:
            value = self.type(raw) if not isinstance(raw, str) else self.type(raw.strip())
        except (TypeError, ValueError):
            kind = "an integer" if self.type is int else "a number"
            raise ParamError(self.name, f"must be {kind} ({self.rule})") from None
        if isinstance(value, float) and value != value:  # NaN
            raise ParamError(self.name, f"must be a number ({self.rule})")
        if self.type is int and not isinstance(raw, int) and float(raw) != int(value):
            raise ParamError(self.name, f"must be an integer ({self.rule})")
        if not self.check(value):
            raise ParamError(self.name, f"must be {self.rule}, got {raw!r}")
        return value


class MethodParams(dict[str, int | float]):
    """A method's parameters after `validate_params`: every name known, every value parsed and in
    range, defaults filled. Methods take this type and never validate again; it is a plain dict
    otherwise (JSON-serializable, usable as a cache key)."""


def validate_params(
    method: str, specs: Mapping[str, ParamSpec], raw: Mapping[str, Any]
) -> MethodParams:
    """Parse `raw` against `specs`, filling defaults. Unknown names are errors."""
    unknown = sorted(set(raw) - set(specs))
    if unknown:
        allowed = ", ".join(sorted(specs)) or "no parameters"
        raise ParamError(unknown[0], f"method {method!r} does not take it (it takes {allowed})")
    out = MethodParams()
    for name, spec in specs.items():
        if name in raw and raw[name] is not None:
            out[name] = spec.parse(raw[name])
        elif spec.default is not None:
            out[name] = spec.default
    return out
