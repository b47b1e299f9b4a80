"""Stream a project's raw votes (item, worker, label, created_at, updated_at, source) as JSONL,
CSV or Parquet: the long format crowd-kit (`task, worker, label`) and pandas read directly.

Read with a server-side cursor in chunks, in one REPEATABLE READ snapshot, so memory stays flat
and the export is one consistent state. Excluded workers' votes are left out unless asked for,
as every method leaves them out.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Engine, text

from app.export import _LINE_BREAKS, Format, _Drain

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

_QUERY = """
SELECT i.external_id, w.external_id, (p.classes)[v.label + 1], v.created_at, v.updated_at,
       v.source
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
            yield [tuple(r) for r in rows]
        conn.rollback()


def _jsonl(chunks: Iterator[list[tuple]]) -> Iterator[bytes]:  # type: ignore[type-arg]
    for rows in chunks:
        lines = [
            json.dumps(
                {
                    "item": r[0],
                    "worker": r[1],
                    "label": r[2],
                    "created_at": r[3].isoformat(),
                    "updated_at": r[4].isoformat(),
                    "source": r[5],
                },
                ensure_ascii=False,
            ).translate(_LINE_BREAKS)
            for r in rows
        ]
        if lines:
            yield ("\n".join(lines) + "\n").encode()


def _csv(chunks: Iterator[list[tuple]]) -> Iterator[bytes]:  # type: ignore[type-arg]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")  # RFC 4180, as app/export.py
    writer.writerow(COLUMNS)
    for rows in chunks:
        writer.writerows(
            (r[0], r[1], r[2], r[3].isoformat(), r[4].isoformat(), r[5]) for r in rows
        )
        yield buf.getvalue().encode()
        buf.seek(0)
        buf.truncate()
    if buf.tell():
        yield buf.getvalue().encode()


def _parquet(chunks: Iterator[list[tuple]]) -> Iterator[bytes]:  # type: ignore[type-arg]
    sink = _Drain()
    with pq.ParquetWriter(sink, SCHEMA, compression="zstd") as writer:
        for rows in chunks:
            cols: list[Any] = [[r[j] for r in rows] for j in range(len(COLUMNS))]
            table = pa.Table.from_arrays(
                [pa.array(c, f.type) for c, f in zip(cols, SCHEMA, strict=True)],
                schema=SCHEMA,
            )
            writer.write_table(table)
            yield sink.take()
    yield sink.take()


def serialize_votes(chunks: Iterator[list[tuple]], fmt: Format) -> Iterator[bytes]:  # type: ignore[type-arg]
    if fmt == "jsonl":
        return _jsonl(chunks)
    if fmt == "csv":
        return _csv(chunks)
    return _parquet(chunks)
