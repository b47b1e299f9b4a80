"""`softlabels import-votes` and `softlabels export`: files in and out, through the same code
as the API (app/votes/ingest.py, app/labels/export.py)."""

from __future__ import annotations

import csv
import gzip
import io
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import typer
from pydantic import TypeAdapter, ValidationError
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from sqlalchemy import Engine

from app.cli.common import DataDirOpt, console, fail, migrated_engine, settings_for
from app.config import Settings

if TYPE_CHECKING:  # the aggregation package (numpy, scipy) loads only for an export
    from app.aggregation.base import Aggregator


def register(app: typer.Typer) -> None:
    app.command("import-votes")(import_votes)
    app.command()(export)


def _open_text(path: Path) -> TextIO:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open(encoding="utf-8", newline="")


def import_votes(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV or CSV.gz")],
    project: Annotated[str, typer.Option("--project", "-p", help="Project name.")],
    batch_size: Annotated[int, typer.Option(min=1, max=50_000)] = 10_000,
    data_dir: DataDirOpt = None,
) -> None:
    """Import votes from a CSV with columns item, worker, label (through the API's ingest code).

    A label is a class name or 0-based index; on a multi-label project, the set of classes
    ticked: a JSON list (["a", "b"], as the raw-vote CSV export writes it) or names joined by
    ';' (a;b), an empty cell for none; on an ordinal project, a level's name, index or value.
    Each batch is stored all or nothing; on a bad row the import stops and says which batches
    were stored, so re-running after a fix is safe (stored votes come back `unchanged`).
    """
    from app.db.session import make_sessionmaker

    with migrated_engine(settings_for(data_dir)) as engine:
        try:
            _import_votes(engine, make_sessionmaker(engine), file, project, batch_size)
        except UnicodeDecodeError as exc:
            fail(f"{file} is not UTF-8 text ({exc.reason} at byte {exc.start})", code=2)


def _import_votes(engine: Engine, factory: Any, file: Path, project: str, batch_size: int) -> None:
    from sqlalchemy import select

    from app.connectors.cells import CellError, label_cell
    from app.db.models import Project
    from app.errors import ValidationFailed
    from app.votes.ingest import committed_with_retries, ingest_votes
    from app.votes.records import VoteIn

    adapter = TypeAdapter(list[VoteIn])
    totals = {"inserted": 0, "updated": 0, "unchanged": 0}
    size = file.stat().st_size
    started = time.perf_counter()
    with factory() as session, _open_text(file) as fh:
        proj = session.scalars(select(Project).where(Project.name == project)).one_or_none()
        if proj is None:
            fail(f"no project named {project!r}", code=2)
        task_type, classes, values = proj.task_type, list(proj.classes), proj.level_values
        reader = csv.DictReader(fh)
        missing = {"item", "worker", "label"} - set(reader.fieldnames or [])
        if missing:
            fail(f"{file} lacks the column(s) {', '.join(sorted(missing))}", code=2)
        raw_file = fh.buffer if hasattr(fh, "buffer") else None
        columns = [
            TextColumn("{task.description}"),
            BarColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
        ]
        with Progress(*columns, console=console) as progress:
            task = progress.add_task(f"importing {file.name}", total=size)
            batch: list[dict[str, object]] = []
            lines: list[int] = []  # each row's first line in the file (quoted cells may span lines)

            def label(index: int, raw: str | None, bad: list[dict[str, object]]) -> object:
                if raw is None:  # a short row: the vote check reports the missing label
                    return None
                try:
                    return label_cell(raw, task_type, classes, values)
                except CellError as exc:
                    bad.append({"index": index, "field": "label", "reason": str(exc)})
                    return None

            def flush() -> None:
                nonlocal batch, lines
                bad: list[dict[str, object]] = []
                rows = [
                    {"item": r["item"], "worker": r["worker"], "label": label(n, r["label"], bad)}  # type: ignore[arg-type]  # csv cells are str
                    for n, r in enumerate(batch)
                ]
                try:
                    if bad:
                        raise ValidationFailed("bad label cells", errors=bad)
                    votes = adapter.validate_python(rows)
                    result = committed_with_retries(
                        session, lambda: ingest_votes(session, proj, votes)
                    )
                except (ValidationError, ValidationFailed) as exc:
                    _report_bad_batch(exc, lines, totals)
                    raise typer.Exit(1) from None
                for key in totals:
                    totals[key] += getattr(result, key)
                batch, lines = [], []
                pos = raw_file.tell() if raw_file is not None and not raw_file.closed else size
                progress.update(task, completed=min(pos, size))

            start = reader.line_num + 1
            for row in reader:
                batch.append(row)
                lines.append(start)
                start = reader.line_num + 1
                if len(batch) >= batch_size:
                    flush()
            if batch:
                flush()
            progress.update(task, completed=size)
    elapsed = time.perf_counter() - started
    n = sum(totals.values())
    console.print(
        f"{n} votes in {elapsed:.1f} s ({n / max(elapsed, 1e-9):,.0f}/s): "
        f"{totals['inserted']} inserted, {totals['updated']} updated, "
        f"{totals['unchanged']} unchanged"
    )


def _report_bad_batch(exc: Exception, lines: list[int], totals: dict[str, int]) -> None:
    from app.errors import ValidationFailed

    if isinstance(exc, ValidationFailed):
        problems = [(e["index"], e["field"], e["reason"]) for e in exc.errors or []]
    else:
        problems = [(e["loc"][0], ".".join(map(str, e["loc"][1:])), e["msg"]) for e in exc.errors()]  # type: ignore[attr-defined]
    for index, field, reason in problems[:20]:
        console.print(f"[red]line {lines[int(index)]}[/red] {field}: {reason}")
    if len(problems) > 20:
        console.print(f"... and {len(problems) - 20} more")
    stored = sum(totals.values())
    console.print(
        f"stopped: this batch (from line {lines[0]}) was not stored; the {stored} votes "
        "before it were. Fix the file and run again: stored votes come back unchanged."
    )


def export(
    project: Annotated[str, typer.Option("--project", "-p")],
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write.")],
    method: Annotated[str, typer.Option(help="Soft-label method.")] = "normalized",
    format: Annotated[str, typer.Option(help="jsonl, csv or parquet.")] = "jsonl",
    min_votes: Annotated[int, typer.Option(min=0)] = 1,
    param: Annotated[
        list[str] | None, typer.Option(help="Method parameter NAME=VALUE, e.g. temperature=2.")
    ] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Write every item's soft label to a file (same rows as the API's export)."""
    if format not in ("jsonl", "csv", "parquet"):
        fail("--format must be jsonl, csv or parquet", code=2)
    bad = [p for p in param or [] if "=" not in p]
    if bad:
        fail(f"--param {bad[0]!r}: write NAME=VALUE, e.g. temperature=2", code=2)
    raw = dict(p.split("=", 1) for p in (param or []))
    settings = settings_for(data_dir)
    with migrated_engine(settings) as engine:
        _export(engine, settings, project, output, format, min_votes, method, raw)


def _export(
    engine: Engine,
    settings: Settings,
    project: str,
    output: Path,
    format: str,
    min_votes: int,
    method: str,
    raw: dict[str, str],
) -> None:
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from app.aggregation.params import ParamError
    from app.aggregation.registry import resolve_method
    from app.db.models import Project
    from app.labels.export import read_chunks, serialize
    from app.labels.service import labeler, project_scale

    with Session(engine) as session:
        proj = session.scalars(select(Project).where(Project.name == project)).one_or_none()
        if proj is None:
            fail(f"no project named {project!r}", code=2)
        session.expunge(proj)
    try:
        # A method's name means the class of the project's task type.
        aggregator: Aggregator = resolve_method(method, raw, proj.task_type)
    except ParamError as exc:
        fail(f"{exc.field}: {exc.reason}", code=2)
    started = time.perf_counter()
    n_bytes = 0
    labels = labeler(
        engine, proj.id, len(proj.classes), proj.votes_version, aggregator, sync_max_votes=0
    )
    scale = project_scale(proj)
    chunks = read_chunks(
        engine, proj.id, proj.classes, labels.probs, min_votes, settings.export_chunk_rows, scale
    )
    with output.open("wb") as out:
        for part in serialize(chunks, format, proj.classes, scale is not None):  # type: ignore[arg-type]
            out.write(part)
            n_bytes += len(part)
    console.print(f"wrote {output} ({n_bytes:,} bytes) in {time.perf_counter() - started:.2f} s")
