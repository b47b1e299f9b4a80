"""CSV writers whose cells are safe to open in a spreadsheet (OWASP, "CSV Injection").

A cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return is read as a formula by
Excel, LibreOffice and Google Sheets; item and worker ids come from annotators and tools, so an
id like `=HYPERLINK(...)` must not run. Such a cell is prefixed with a single quote, which the
spreadsheet shows as text. `defusedcsv` applies the rule (and also to `|` and `%`, escaping
`|`); it leaves tab- and CR-led cells alone (defusedcsv 3.0.0), which are prefixed here.
Numbers (counts, probabilities written as numbers) are never touched. JSONL and Parquet are
data formats, not spreadsheets: they carry ids unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TextIO

from defusedcsv import csv as defused

_LEADING = ("\t", "\r")


def _cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_LEADING):
        return "'" + value
    return value


class SafeWriter:
    def __init__(self, out: TextIO) -> None:
        # CRLF (RFC 4180): the writer quotes a field only for the characters of its line
        # terminator, so with "\n" a lone "\r" in an id went out unquoted and split the row.
        self._writer = defused.writer(out, lineterminator="\r\n")

    def writerow(self, row: Iterable[Any]) -> None:
        self._writer.writerow([_cell(v) for v in row])

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)


def writer(out: TextIO) -> SafeWriter:
    return SafeWriter(out)
