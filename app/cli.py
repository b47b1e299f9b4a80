"""The `softlabels` command: serve, worker, migrate, import-votes, export."""

from __future__ import annotations

import csv
import gzip
import io
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer
from pydantic import TypeAdapter, ValidationError
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from app.auth import (
    KEY_FILE,
    bootstrap_admin_key,
    read_key_file,
    refuse_open_no_auth,
    secret_value,
)
from app.cli_import import import_app
from app.config import Settings, get_settings
from app.database import with_database

app = typer.Typer(help="softlabels: crowd votes in, soft labels out.", no_args_is_help=True)
console = Console(stderr=True)

DataDirOpt = Annotated[
    Path | None,
    typer.Option(help="Embedded PostgreSQL data dir (used when DATABASE_URL is unset)."),
]


def _settings(data_dir: Path | None = None, **overrides: object) -> Settings:
    settings = get_settings()
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    return settings.model_copy(update=overrides) if overrides else settings


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    data_dir: DataDirOpt = None,
    migrate: Annotated[bool, typer.Option(help="Apply migrations at start.")] = True,
    worker: Annotated[
        bool, typer.Option(help="Also run one training worker in its own process.")
    ] = True,
    auth: Annotated[
        bool | None,
        typer.Option(
            "--auth/--no-auth",
            help="Require API keys (default). --no-auth: local experiments, loopback only.",
        ),
    ] = None,
) -> None:
    """Run the API (on the embedded PostgreSQL unless DATABASE_URL is set)."""
    import uvicorn

    from app.db.migrate import upgrade
    from app.logging import configure_logging
    from app.main import create_app

    # Access control: --no-auth only on loopback; with auth on, a first admin key if none.
    auth = get_settings().auth if auth is None else auth
    try:
        refuse_open_no_auth(auth, host)
    except RuntimeError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    settings = with_database(_settings(data_dir, host=host, port=port, auth=auth))
    if migrate:
        upgrade(settings.database_url or "")
    if auth and not secret_value(settings.admin_key):
        key_file = settings.data_dir / KEY_FILE
        first = bootstrap_admin_key(settings.database_url or "", key_file)
        if first is not None:
            console.print(
                f"softlabels: no API key yet; made an admin key (also in {key_file}):",
                soft_wrap=True,
            )
            console.print(first, highlight=False, soft_wrap=True)
    external = get_settings().database_url
    where = "DATABASE_URL" if external else f"embedded PostgreSQL in {settings.data_dir}"
    console.print(f"softlabels: database = {where}; listening on http://{host}:{port}")
    worker_proc = _spawn_worker(settings) if worker else None
    try:
        configure_logging()  # JSON lines with request ids (app/logging.py)
        uvicorn.run(create_app(settings), host=host, port=port, log_config=None, access_log=False)
    finally:
        if worker_proc is not None:
            worker_proc.terminate()
            try:
                worker_proc.wait(15)
            except subprocess.TimeoutExpired:
                worker_proc.kill()


def _spawn_worker(settings: Settings) -> subprocess.Popen[bytes]:
    # Its own process: training is CPU-bound and must not stall the API's event loop or GIL.
    env = {**os.environ, "DATABASE_URL": settings.database_url or ""}
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker"], env=env, preexec_fn=_die_with_parent
    )


def _die_with_parent() -> None:
    # If `serve` itself is killed (SIGKILL skips its cleanup), the worker must not live on as an
    # orphan; its job is then requeued by the next worker's stalled-job sweep.
    if sys.platform == "linux":
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@app.command("worker")
def worker_cmd(data_dir: DataDirOpt = None) -> None:
    """Take training jobs from the database and run them (any number may run at once)."""
    from app.worker import run_worker

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("procrastinate").setLevel(logging.WARNING)
    run_worker(with_database(_settings(data_dir)))


@app.command("migrate")
def migrate_cmd(data_dir: DataDirOpt = None) -> None:
    """Apply all pending migrations."""
    from app.db.migrate import upgrade

    settings = with_database(_settings(data_dir))
    upgrade(settings.database_url or "")
    console.print("database is at the newest migration")


def _open_text(path: Path) -> TextIO:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open(encoding="utf-8", newline="")


@app.command("import-votes")
def import_votes(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV or CSV.gz")],
    project: Annotated[str, typer.Option("--project", "-p", help="Project name.")],
    batch_size: Annotated[int, typer.Option(min=1, max=50_000)] = 10_000,
    data_dir: DataDirOpt = None,
) -> None:
    """Import votes from a CSV with columns item, worker, label (through the API's ingest code).

    Each batch is stored all or nothing; on a bad row the import stops and says which batches
    were stored, so re-running after a fix is safe (stored votes come back `unchanged`).
    """
    from sqlalchemy import select

    from app.api.schemas import VoteIn
    from app.db.models import Project
    from app.db.session import make_engine, make_sessionmaker
    from app.errors import ValidationFailed
    from app.ingest import committed_with_retries, ingest_votes

    settings = with_database(_settings(data_dir))
    engine = make_engine(settings.database_url or "", pool_size=1)
    factory = make_sessionmaker(engine)
    adapter = TypeAdapter(list[VoteIn])
    totals = {"inserted": 0, "updated": 0, "unchanged": 0}
    size = file.stat().st_size
    started = time.perf_counter()
    with factory() as session, _open_text(file) as fh:
        proj = session.scalars(select(Project).where(Project.name == project)).one_or_none()
        if proj is None:
            console.print(f"[red]no project named {project!r}[/red]")
            raise typer.Exit(2)
        names = set(proj.classes)
        reader = csv.DictReader(fh)
        missing = {"item", "worker", "label"} - set(reader.fieldnames or [])
        if missing:
            console.print(f"[red]{file} lacks column(s) {sorted(missing)}[/red]")
            raise typer.Exit(2)
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

            def flush() -> None:
                nonlocal batch, lines
                rows = [
                    {"item": r["item"], "worker": r["worker"], "label": _label(r["label"], names)}
                    for r in batch
                ]
                try:
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
    engine.dispose()


def _label(raw: str | None, names: set[str]) -> str | int | None:
    # A CSV cell is text. A class name wins; otherwise a cell of digits is a class index, as in
    # the API's integer labels (so classes named "1", "2" are never misread as indices).
    if raw is None or raw in names or not raw.isdigit():
        return raw
    return int(raw)


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


@app.command()
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
    from sqlalchemy import select

    from app.aggregation.params import ParamError
    from app.aggregation.registry import resolve_method
    from app.db.models import Project
    from app.db.session import make_engine
    from app.export import read_chunks, serialize
    from app.labeling import labeler

    if format not in ("jsonl", "csv", "parquet"):
        console.print("[red]--format must be jsonl, csv or parquet[/red]")
        raise typer.Exit(2)
    raw = dict(p.split("=", 1) for p in (param or []) if "=" in p)
    try:
        spec, params = resolve_method(method, raw)
    except ParamError as exc:
        console.print(f"[red]{exc.field}: {exc.reason}[/red]")
        raise typer.Exit(2) from None
    settings = with_database(_settings(data_dir))
    engine = make_engine(settings.database_url or "", pool_size=1)
    with engine.connect() as conn:
        proj = conn.execute(
            select(Project.id, Project.classes, Project.votes_version).where(
                Project.name == project
            )
        ).one_or_none()
    if proj is None:
        console.print(f"[red]no project named {project!r}[/red]")
        raise typer.Exit(2)
    started = time.perf_counter()
    n_bytes = 0
    labels = labeler(
        engine, proj.id, len(proj.classes), proj.votes_version, spec, params, sync_max_votes=0
    )
    chunks = read_chunks(
        engine, proj.id, proj.classes, labels.probs, min_votes, settings.export_chunk_rows
    )
    with output.open("wb") as out:
        for part in serialize(chunks, format, proj.classes):  # type: ignore[arg-type]
            out.write(part)
            n_bytes += len(part)
    console.print(f"wrote {output} ({n_bytes:,} bytes) in {time.perf_counter() - started:.2f} s")
    engine.dispose()


@app.command()
def demo(
    url: Annotated[
        str | None, typer.Option(help="A running service; default: start one (embedded DB).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Where to write demo.png.")] = Path("demo-out"),
    project: Annotated[str, typer.Option(help="Project name to create.")] = "digits-demo",
    data_dir: DataDirOpt = None,
    key: Annotated[
        str | None,
        typer.Option(
            envvar="SOFTLABELS_KEY",
            help="API key to send; default SOFTLABELS_ADMIN_KEY, else <data-dir>/admin.key.",
        ),
    ] = None,
) -> None:
    """Simulate a crowd labelling scikit-learn's digits, train five recipes, compare them."""
    import socket

    import httpx
    from rich.table import Table

    from app.demo import Crowd, run_demo

    server = None
    if url is None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        args = [sys.executable, "-m", "app.cli", "serve", "--port", str(port)]
        if data_dir is not None:
            args += ["--data-dir", str(data_dir)]
        log_path = out / "server.log"
        out.mkdir(parents=True, exist_ok=True)
        server = subprocess.Popen(args, stdout=log_path.open("wb"), stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        console.print(f"started a service at {url} (log: {log_path})")
        for _ in range(240):
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None:
                console.print(f"[red]the service exited; see {log_path}[/red]")
                raise typer.Exit(1)
            time.sleep(0.5)
    try:
        key = key or cli_key(_settings(data_dir))  # read after the server made it, if it did
        if key is None:
            console.print("[yellow]no API key: set SOFTLABELS_KEY or SOFTLABELS_ADMIN_KEY[/yellow]")
        headers = {"Authorization": f"Bearer {key}"} if key else None
        results = run_demo(url, out, project, Crowd(), headers=headers, log=console.print)
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
    table = Table(title="softlabels demo: held-out digits (20%), same MLP, same seed")
    for col in ("recipe", "accuracy", "nll", "ece", "kl_human", "epochs", "train s", "POST→done s"):
        table.add_column(col, justify="left" if col == "recipe" else "right")
    for r in results:
        table.add_row(
            r["recipe"],
            f"{r['accuracy']:.4f}",
            f"{r['nll']:.4f}",
            f"{r['ece']:.4f}",
            f"{r['kl_human']:.4f}",
            str(r["epochs"]),
            f"{r['seconds']:.1f}",
            f"{r['post_to_done']:.1f}",
        )
    Console(width=max(Console().width, 120)).print(table)
    console.print(f"figure: {out / 'demo.png'}")


# --- access control: the key for CLI commands that talk HTTP, and `softlabels keys` -----------


def cli_key(settings: Settings) -> str | None:
    """The key a CLI command sends: SOFTLABELS_ADMIN_KEY, else the one `serve` wrote."""
    return secret_value(settings.admin_key) or read_key_file(settings.data_dir / KEY_FILE)


keys_app = typer.Typer(
    help="API keys, made and revoked straight on the database (no API needed).",
    no_args_is_help=True,
)
app.add_typer(keys_app, name="keys")


@contextmanager
def _key_session(data_dir: Path | None) -> Iterator[Any]:
    """A session on the database `serve` would use (a sqlalchemy Session)."""
    from sqlalchemy.exc import ProgrammingError
    from sqlalchemy.orm import Session

    from app.db.session import make_engine

    engine = make_engine(with_database(_settings(data_dir)).database_url or "", pool_size=1)
    try:
        with Session(engine, expire_on_commit=False) as session:
            yield session
    except ProgrammingError as exc:
        console.print(f"[red]{type(exc.orig).__name__}: run `softlabels migrate` first?[/red]")
        raise typer.Exit(1) from None
    finally:
        engine.dispose()


@keys_app.command("create")
def keys_create(
    label: Annotated[str, typer.Option(help="What the key is for.")],
    scope: Annotated[
        list[str], typer.Option("--scope", "-s", help="admin, annotate, read or train; repeat.")
    ],
    project: Annotated[
        list[str] | None,
        typer.Option("--project", "-p", help="A project the key covers (repeat), or '*' for all."),
    ] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Make a key. Its secret goes to stdout, once: it is stored only as a hash."""
    from app.api.keys import KeyCreate
    from app.auth import create_key

    projects: list[str] | str = project or (["*"] if "admin" in scope else [])
    if "*" in projects:
        projects = "*"
    try:
        spec = KeyCreate.model_validate({"label": label, "scopes": scope, "projects": projects})
    except ValidationError as exc:
        for err in exc.errors():
            console.print(f"[red]{'.'.join(map(str, err['loc'])) or 'key'}: {err['msg']}[/red]")
        raise typer.Exit(2) from None
    with _key_session(data_dir) as session:
        chosen = None if spec.projects == "*" else list(spec.projects)
        row, secret = create_key(session, spec.label, spec.scopes, chosen)
        session.commit()
    console.print(
        f"key {row.id} ({row.label}): scopes {','.join(row.scopes)}; projects "
        f"{'*' if row.projects is None else ','.join(row.projects)}. Shown once: store it now."
    )
    print(secret)


@keys_app.command("list")
def keys_list(data_dir: DataDirOpt = None) -> None:
    """Active keys, by id and label (never the secret: only its hash is stored)."""
    from rich.table import Table

    from app.auth import active_keys

    with _key_session(data_dir) as session:
        rows = active_keys(session)
    table = Table("id", "label", "scopes", "projects", "created")
    for r in rows:
        projects = "*" if r.projects is None else ",".join(r.projects)
        table.add_row(str(r.id), r.label, ",".join(r.scopes), projects, f"{r.created_at:%F %T}")
    Console(width=max(Console().width, 120)).print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[int, typer.Argument(min=1)], data_dir: DataDirOpt = None) -> None:
    """Revoke a key. A running server stops accepting it within its key cache TTL (1 s)."""
    from app.auth import revoke_key

    with _key_session(data_dir) as session:
        done = revoke_key(session, key_id)
        session.commit()
    if not done:
        console.print(f"[red]no active key {key_id}[/red]")
        raise typer.Exit(1)
    console.print(f"key {key_id} revoked")


app.add_typer(import_app, name="import")  # app/cli_import.py: tool export files


if __name__ == "__main__":
    app()
