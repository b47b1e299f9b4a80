"""[4. exported] Stream every item's soft label as JSONL, CSV or Parquet.

Rows are streamed from PostgreSQL (COPY) and parsed by pyarrow in blocks; each block is
aggregated with numpy and serialized before the next is read, so memory stays flat however
large the project grows.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import orjson
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Engine

from app.aggregation.ordinal import ordinal_summary
from app.labels import csv_safe

Format = Literal["jsonl", "csv", "parquet"]
MEDIA_TYPES: dict[str, str] = {
    "jsonl": "application/x-ndjson",
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
}


# An ordinal project's per-item summaries of its distribution, in the scale's values.
SUMMARIES = ("mean", "median", "spread")


@dataclass(frozen=True)
class Chunk:
    items: list[str]
    n_votes: np.ndarray  # (n,) int64
    # (n, K) float64: distributions, or a multi-label project's per-class probabilities
    probs: np.ndarray
    gold: list[str | None]
    # ordinal projects: mean, median, spread (n,) each; empty otherwise
    summaries: dict[str, np.ndarray] = field(default_factory=dict)


def summarize(probs: np.ndarray, level_values: np.ndarray | None) -> dict[str, np.ndarray]:
    """An ordinal project's mean, median and spread per row (none without `level_values`)."""
    if level_values is None:
        return {}
    return dict(zip(SUMMARIES, ordinal_summary(probs, level_values), strict=True))


def read_chunks(
    engine: Engine,
    project_id: int,
    classes: list[str],
    probs: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
    min_votes: int,
    chunk_rows: int,
    level_values: np.ndarray | None = None,
) -> Iterator[Chunk]:
    """`probs(item db ids, counts, n_votes)` gives each chunk's rows (see
    app/labels/service.py); `level_values` (an ordinal project's) adds the summaries.

    A server-side cursor in binary format: psycopg parses each row (the counts array included)
    in C, which measured faster than the SQLAlchemy row path and than COPY (whose rows come
    back one Python call each); one transaction, so every chunk sees the same votes.
    """
    class_names = np.asarray(classes, dtype=object)
    NO_GOLD = np.asarray(None, dtype=object)
    raw = engine.raw_connection()
    conn: psycopg.Connection = raw.driver_connection  # type: ignore[assignment]
    try:
        with conn.transaction(), conn.cursor(name="export", binary=True) as cur:
            cur.itersize = chunk_rows
            cur.execute(
                "SELECT id, external_id, n_votes, coalesce(gold, -1), counts FROM items "
                "WHERE project_id = %s AND n_votes >= %s ORDER BY id",
                (project_id, min_votes),
            )
            while rows := cur.fetchmany(chunk_rows):
                ids, ext, n_votes, gold, counts = zip(*rows, strict=True)
                gold_idx = np.asarray(gold, dtype=np.int64)
                n = np.asarray(n_votes, dtype=np.int64)
                p = probs(np.asarray(ids, dtype=np.int64), np.asarray(counts, np.int64), n)
                yield Chunk(
                    items=list(ext),
                    n_votes=n,
                    probs=p,
                    gold=np.where(gold_idx >= 0, class_names[gold_idx], NO_GOLD).tolist(),
                    summaries=summarize(p, level_values),
                )
    finally:
        raw.close()


def class_columns(classes: list[str]) -> list[str]:
    # A fixed prefix keeps every header cell a plain identifier-like string whatever the class
    # name (no leading '=' for spreadsheets, no clash with item/n_votes/gold).
    return [f"p_{c}" for c in classes]


_LINE_BREAKS = [
    ("\u2028".encode(), b"\\u2028"),
    ("\u2029".encode(), b"\\u2029"),
    ("\u0085".encode(), b"\\u0085"),
]


def one_line_each(blob: bytes) -> bytes:
    """U+2028/U+2029/U+0085 are valid raw in JSON but split lines for readers that use
    str.splitlines(); escape them so one JSONL row is always one line."""
    for raw, escaped in _LINE_BREAKS:
        if raw in blob:
            blob = blob.replace(raw, escaped)
    return blob


def _summary_rows(ch: Chunk) -> list[dict[str, float]]:
    if not ch.summaries:
        return [{}] * len(ch.items)
    columns = {name: ch.summaries[name].tolist() for name in SUMMARIES}
    return [{name: columns[name][i] for name in SUMMARIES} for i in range(len(ch.items))]


def jsonl(chunks: Iterator[Chunk]) -> Iterator[bytes]:
    dumps = orjson.dumps  # ~5x json.dumps; the same numbers (shortest round-trip floats)
    for ch in chunks:
        lines = []
        for item, n, probs, gold, summary in zip(
            ch.items,
            ch.n_votes.tolist(),
            ch.probs.tolist(),
            ch.gold,
            _summary_rows(ch),
            strict=True,
        ):
            # An item with no votes has no distribution (the methods return uniform for it
            # only to avoid NaN): null, as the single-item endpoint says. Reached with
            # min_votes=0.
            row: dict[str, object] = {"item": item, "n_votes": n, "probs": probs if n else None}
            for name, value in summary.items():
                row[name] = value if n else None
            if gold is not None:
                row["gold"] = gold
            lines.append(dumps(row))
        if lines:
            yield one_line_each(b"\n".join(lines) + b"\n")


def csv_rows(chunks: Iterator[Chunk], classes: list[str], ordinal: bool = False) -> Iterator[bytes]:
    buf = io.StringIO()
    writer = csv_safe.writer(buf)  # CRLF, and no cell a spreadsheet would run as a formula
    extra = list(SUMMARIES) if ordinal else []
    writer.writerow(["item", "n_votes", "gold", *class_columns(classes), *extra])
    # an item with no votes: empty cells, as null in JSONL
    no_probs = [""] * (len(classes) + len(extra))
    for ch in chunks:
        for item, n, gold, probs, summary in zip(
            ch.items,
            ch.n_votes.tolist(),
            ch.gold,
            ch.probs.tolist(),
            _summary_rows(ch),
            strict=True,
        ):
            cells = map(repr, [*probs, *summary.values()]) if n else no_probs
            writer.writerow([item, n, "" if gold is None else gold, *cells])
        yield buf.getvalue().encode()
        buf.seek(0)
        buf.truncate()
    if buf.tell():
        yield buf.getvalue().encode()


class _Drain(io.RawIOBase):
    """A write-only file that hands its bytes to the response as they are produced."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.pos = 0

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        self.parts.append(bytes(b))
        self.pos += len(b)
        return len(b)

    def tell(self) -> int:
        return self.pos

    def take(self) -> bytes:
        out, self.parts = b"".join(self.parts), []
        return out


def parquet_schema(classes: list[str], ordinal: bool = False) -> pa.Schema:
    return pa.schema(
        [("item", pa.string()), ("n_votes", pa.int32()), ("gold", pa.string())]
        + [(name, pa.float64()) for name in class_columns(classes)]
        + [(name, pa.float64()) for name in (SUMMARIES if ordinal else ())]
    )


def parquet(chunks: Iterator[Chunk], classes: list[str], ordinal: bool = False) -> Iterator[bytes]:
    schema = parquet_schema(classes, ordinal)
    sink = _Drain()
    with pq.ParquetWriter(sink, schema, compression="zstd") as writer:
        for ch in chunks:
            no_votes = ch.n_votes == 0  # these items get null probabilities, as in JSONL
            columns = [
                pa.array(ch.items, pa.string()),
                pa.array(ch.n_votes, pa.int32()),
                pa.array(ch.gold, pa.string()),
                *(pa.array(ch.probs[:, j], mask=no_votes) for j in range(ch.probs.shape[1])),
                *(pa.array(ch.summaries[name], mask=no_votes) for name in SUMMARIES if ordinal),
            ]
            writer.write_table(pa.Table.from_arrays(columns, schema=schema))
            yield sink.take()
    yield sink.take()


def serialize(
    chunks: Iterator[Chunk], fmt: Format, classes: list[str], ordinal: bool = False
) -> Iterator[bytes]:
    """`ordinal`: the rows carry an ordinal project's mean, median and spread (CSV and Parquet
    columns after the classes'; JSONL keys)."""
    if fmt == "jsonl":
        return jsonl(chunks)
    if fmt == "csv":
        return csv_rows(chunks, classes, ordinal)
    return parquet(chunks, classes, ordinal)


def filename(project: str, method: str, fmt: Format) -> str:
    return f"{project}-soft-labels-{method}.{fmt}"
