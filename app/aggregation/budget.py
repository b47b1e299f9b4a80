"""A wall-clock budget for a fit, checked once per EM iteration.

The API fits small projects inside the request; a request with parameters that make a fit run
for minutes must not hold its process that long. `time_budget(s)` sets a deadline for the fits
run inside it (in this thread); `check()` raises FitOverBudget past it. Pure Python: the caller
decides what to do (the API hands the fit to the worker, which runs it without a deadline).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_deadline: ContextVar[float | None] = ContextVar("fit_deadline", default=None)


class FitOverBudget(Exception):
    """The fit ran past the time budget it was given."""


@contextmanager
def time_budget(seconds: float) -> Iterator[None]:
    token = _deadline.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


def check() -> None:
    deadline = _deadline.get()
    if deadline is not None and time.monotonic() > deadline:
        raise FitOverBudget
