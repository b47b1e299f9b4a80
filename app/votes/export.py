"""Stream a project's raw votes (item, worker, label, created_at, updated_at, source) as JSONL,
CSV or Parquet: the long format pandas reads directly; or in a tool's own input format:
`crowdkit` (CSV `task,worker,label`, crowd-kit's `fit(df)` input) and `peerannot`
(`answers.json`, `{task: {worker: class index}}`).

A multi-label vote's label is the list of the classes ticked: a JSON list in JSONL and in the CSV
cell, a list column in Parquet; crowd-kit's and peerannot's formats have no multi-label form.

Read with a server-side cursor in chunks, in one REPEATABLE READ snapshot, so memory stays flat
and the export is one consistent state. Excluded workers' votes are left out unless asked for,
as every method leaves them out.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any, Literal

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Engine, text

from app.labels import csv_safe
from app.labels.export import _Drain, one_line_each

VoteFormat = Literal["jsonl", "csv", "parquet", "crowdkit", "peerannot"]
VOTE_MEDIA_TYPES = {
    "jsonl": "application/x-ndjson",
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
    "crowdkit": "text/csv; charset=utf-8",
    "peerannot": "application/json",
}
EXTENSIONS = {"crowdkit": "csv", "peerannot": "json"}

COLUMNS = ["item", "worker", "label", "created_at", "updated_at", "source"]
SCHEMA = pa.schema(
    [
        ("item", pa.string()),
        ("worker", pa.string()),
        ("label", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("updated_at", pa.timestamp("us", tz="UTC")),
        ("source", pa.string()),
    ]
)

MULTI_LABEL_SCHEMA = SCHEMA.set(2, pa.field("label", pa.list_(pa.string())))
# Formats a multi-label project's votes have.
MULTI_LABEL_FORMATS = ("jsonl", "csv", "parquet")

_QUERY = """
SELECT i.external_id, w.external_id, (p.classes)[v.label + 1], v.created_at, v.updated_at,
       v.source,
       CASE WHEN v.ticks IS NOT NULL THEN ARRAY(SELECT (p.classes)[t + 1] FROM unnest(v.ticks) t)
       END
FROM votes v JOIN items i ON i.id = v.item_id JOIN workers w ON w.id = v.worker_id
JOIN projects p ON p.id = v.project_id
WHERE v.project_id = :p {skip}
ORDER BY v.item_id, v.worker_id
"""


def read_vote_chunks(
    engine: Engine, project_id: int, chunk_rows: int, include_excluded: bool = False
) -> Iterator[list[tuple]]:  # type: ignore[type-arg]
    query = text(_QUERY.format(skip="" if include_excluded else "AND NOT w.excluded"))
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
        result = conn.execution_options(stream_results=True, yield_per=chunk_rows).execute(
            query, {"p": project_id}
        )
        for rows in result.partitions():
            # A multi-label vote's label: the names of the classes ticked.
            yield [(*r[:2], r[2] if r[6] is None else r[6], *r[3:6]) for r in rows]
        conn.rollback()


def _jsonl(chunks: Iterator[list[tuple]]) -> Iterator[bytes]:  # type: ignore[type-arg]
    for rows in chunks:
        lines = [
            orjson.dumps(
                {
                    "item": r[0],
                    "worker": r[1],
                    "label": r[2],
                    "created_at": r[3].isoformat(),
                    "updated_at": r[4].isoformat(),
                    "source": r[5],
                }
            )
            for r in rows
        ]
        if lines:
            yield one_line_each(b"\n".join(lines) + b"\n")


def _cell(label: str | list[str]) -> str:
    return label if isinstance(label, str) else json.dumps(label, ensure_ascii=False)


def _csv(chunks: Iterator[list[tuple]]) -> Iterator[bytes]:  # type: ignore[type-arg]
    buf = io.StringIO()
    writer = csv_safe.writer(buf)  # CRLF, and no cell a spreadsheet would run as a formula
    writer.writerow(COLUMNS)
    for rows in chunks:
        writer.writerows(
            (r[0], r[1], _cell(r[2]), r[3].isoformat(), r[4].isoformat(), r[5]) for r in rows
        )
        yield buf.getvalue().encode()
        buf.seek(0)
        buf.truncate()
    if buf.tell():
        yield buf.getvalue().encode()


def _parquet(chunks: Iterator[list[tuple]], multi_label: bool) -> Iterator[bytes]:  # type: ignore[type-arg]
    schema = MULTI_LABEL_SCHEMA if multi_label else SCHEMA
    sink = _Drain()
    with pq.ParquetWriter(sink, schema, compression="zstd") as writer:
        for rows in chunks:
            cols: list[Any] = [[r[j] for r in rows] for j in range(len(COLUMNS))]
            table = pa.Table.from_arrays(
                [pa.array(c, f.type) for c, f in zip(cols, schema, strict=True)],
                schema=schema,
            )
            writer.write_table(table)
            yield sink.take()
    yield sink.take()


def _crowdkit(chunks: Iterator[list[tuple]]) -> Iterator[bytes]:  # type: ignore[type-arg]
    buf = io.StringIO()
    writer = csv_safe.writer(buf)
    writer.writerow(["task", "worker", "label"])
    for rows in chunks:
        writer.writerows((r[0], r[1], r[2]) for r in rows)
        yield buf.getvalue().encode()
        buf.seek(0)
        buf.truncate()


def _peerannot(chunks: Iterator[list[tuple]], classes: list[str]) -> Iterator[bytes]:  # type: ignore[type-arg]
    """Rows come in item order, so each task's answers are contiguous: streamed as they come."""
    index = {c: i for i, c in enumerate(classes)}
    yield b"{"
    current: str | None = None
    first_task = True
    for rows in chunks:
        parts: list[str] = []
        for r in rows:
            if r[0] != current:
                if current is not None:
                    parts.append("}")
                parts.append(("" if first_task else ",") + json.dumps(r[0]) + ":{")
                first_task, current, sep = False, r[0], ""
            else:
                sep = ","
            parts.append(f"{sep}{json.dumps(r[1])}:{index[r[2]]}")
        if parts:
            yield "".join(parts).encode()
    yield b"}}" if current is not None else b"}"


def serialize_votes(
    chunks: Iterator[list[tuple]],  # type: ignore[type-arg]
    fmt: VoteFormat,
    classes: list[str],
    multi_label: bool = False,
) -> Iterator[bytes]:
    """`multi_label`: labels are lists (`fmt` one of MULTI_LABEL_FORMATS, checked by the
    caller)."""
    if fmt == "jsonl":
        return _jsonl(chunks)
    if fmt == "csv":
        return _csv(chunks)
    if fmt == "crowdkit":
        return _crowdkit(chunks)
    if fmt == "peerannot":
        return _peerannot(chunks, classes)
    return _parquet(chunks, multi_label)
