"""A vote's answer written in one text cell (a CSV's `label` column: `softlabels import-votes`,
crowd-kit CSV imports), read by the project's task type.

- multi-label: the set of classes the worker ticked, either a JSON list (`["abuse", "sexism"]`,
  names or 0-based indices: what our own raw-vote CSV export writes) or the names joined by
  `;` (`abuse;sexism`); an empty cell (or `[]`) is a vote that ticked nothing. A cell that is
  exactly one class's name is that class alone, so a class whose name holds a `;` still reads;
- ordinal: a level's name, else a 0-based level index (digits, as for single-choice cells),
  else a number equal to one level's value (the scale's `level_values`, e.g. a rating of 50 on
  0/25/50/75/100): the rating as the tool wrote it;
- single choice: a class name, else a 0-based index (unchanged).

What cannot be a label comes back as a reason (str) for the caller to report with its line;
names not among the project's classes are left for the write path, which names the row.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from app.votes.records import index_text

SET_CELL = "a JSON list of class names or indices, or names joined by ';' (empty: none apply)"


class CellError(ValueError):
    """A cell that cannot be the answer the project takes; the message says why."""


def _ref(raw: str, classes: Sequence[str]) -> str | int:
    # A class name wins; otherwise a cell of digits is a class index (classes named "1", "2"
    # are never misread as indices).
    if raw in classes:
        return raw
    index = index_text(raw)
    return raw if index is None else index


def set_cell(raw: str, classes: Sequence[str]) -> list[str | int]:
    """A multi-label cell as the list of classes ticked (see the module doc)."""
    if raw in classes:
        return [raw]
    text = raw.strip()
    if not text:
        return []
    if text.startswith("["):
        try:
            value: Any = json.loads(text)
        except ValueError as exc:
            raise CellError(f"starts with '[' but is not a JSON list: {exc}") from None
        if not isinstance(value, list) or any(
            isinstance(v, bool) or not isinstance(v, str | int) for v in value
        ):
            raise CellError("must be a JSON list of class names (strings) or indices (integers)")
        return value
    parts = [p.strip() for p in text.split(";")]
    if any(not p for p in parts):
        raise CellError(f"{raw!r} has an empty class name between ';' separators")
    return [_ref(p, classes) for p in parts]


def level_cell(raw: str, classes: Sequence[str], level_values: Sequence[float] | None) -> str | int:
    """An ordinal cell as a level name or index (see the module doc)."""
    ref = _ref(raw, classes)
    if isinstance(ref, int) and ref < len(classes):
        return ref
    if ref in classes or not level_values:
        return ref
    try:
        number = float(raw)
    except ValueError:
        return ref  # not a level: the write path says so, naming the row
    match = [i for i, v in enumerate(level_values) if math.isclose(v, number, abs_tol=1e-9)]
    if len(match) != 1:
        values = ", ".join(f"{v:g}" for v in level_values[:20])
        raise CellError(
            f"{raw!r} is not on this project's scale: neither a level name, a level index "
            f"(0..{len(classes) - 1}) nor a level value ({values})"
        )
    return match[0]


def label_cell(
    raw: str, task_type: str, classes: Sequence[str], level_values: Sequence[float] | None
) -> str | int | list[str | int]:
    """A cell read as the project's task type takes it (CellError when it cannot be)."""
    if task_type == "multi_label":
        return set_cell(raw, classes)
    if task_type == "ordinal":
        return level_cell(raw, classes, level_values)
    return _ref(raw, classes)
