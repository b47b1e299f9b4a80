"""`softlabels serve | worker | migrate` and `softlabels db status | stop`."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Annotated

import typer

from app.cli.common import (
    DataDirOpt,
    console,
    database_url,
    fail,
    require_migrated,
    settings_for,
)
from app.cli.serverctl import GRACE_S, die_with_parent, exit_soon
from app.config import Settings, get_settings

db_app = typer.Typer(help="The embedded PostgreSQL in the data dir.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.command("worker")(worker_cmd)
    app.command("migrate")(migrate_cmd)


def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    data_dir: DataDirOpt = None,
    migrate: Annotated[bool, typer.Option(help="Apply migrations at start.")] = True,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers", min=1, help="API processes sharing the port (default: the CPU count)."
        ),
    ] = None,
    worker: Annotated[
        bool,
        typer.Option(help="Also run one job worker (training, refits) in its own process."),
    ] = True,
    auth: Annotated[
        bool | None,
        typer.Option(
            "--auth/--no-auth",
            help="Require API keys (default). --no-auth: local experiments, loopback only.",
        ),
    ] = None,
) -> None:
    """Run the API (on the embedded PostgreSQL unless DATABASE_URL is set).

    An embedded server this command starts is stopped when it exits (Ctrl+C)."""
    import uvicorn

    from app.auth.bootstrap import KEY_FILE, bootstrap_admin_key, refuse_open_no_auth, secret_value
    from app.db.migrate import upgrade
    from app.logging import configure_logging

    # Access control: --no-auth only on loopback; with auth on, a first admin key if none.
    auth = get_settings().auth if auth is None else auth
    try:
        refuse_open_no_auth(auth, host)
    except RuntimeError as exc:
        fail(str(exc), code=2)
    _require_free_port(host, port)
    processes = workers or os.cpu_count() or 1
    base = settings_for(data_dir, host=host, port=port, auth=auth, api_processes=processes)
    with database_url(base, create=True) as url:
        settings = base.model_copy(update={"database_url": url})
        if migrate:
            upgrade(url)
        if auth and not secret_value(settings.admin_key):
            key_file = settings.data_dir / KEY_FILE
            first = bootstrap_admin_key(url, key_file)
            if first is not None:
                console.print(
                    f"softlabels: no API key yet; made an admin key (also in {key_file}):",
                    soft_wrap=True,
                )
                print(first, file=sys.stderr)
        where = (
            "DATABASE_URL"
            if base.database_url
            else f"embedded PostgreSQL in {settings.data_dir} (stopped when this exits)"
        )
        console.print(
            f"softlabels: listening on http://{host}:{port} ({processes} API "
            f"process{'es' if processes > 1 else ''}); database: {where}",
            soft_wrap=True,
            highlight=False,
        )
        worker_proc = _spawn_worker(settings) if worker else None
        try:
            configure_logging()  # JSON lines with request ids (app/logging.py)
            if processes == 1:
                from app.main import create_app  # only here: N processes import it themselves

                uvicorn.run(
                    create_app(settings),
                    host=host,
                    port=port,
                    log_config=None,
                    access_log=False,
                    timeout_graceful_shutdown=GRACE_S,
                )
            else:
                # Each process builds its app from the environment (serverctl.app_from_env).
                os.environ.update(settings_env(settings))
                uvicorn.run(
                    "app.cli.serverctl:app_from_env",
                    factory=True,
                    workers=processes,
                    host=host,
                    port=port,
                    log_config=None,
                    access_log=False,
                    timeout_graceful_shutdown=GRACE_S,
                )
        finally:
            if worker_proc is not None:
                worker_proc.terminate()
                try:
                    worker_proc.wait(15)
                except subprocess.TimeoutExpired:
                    worker_proc.kill()
    # Everything is stopped; a thread still inside a request's fit must not keep the process.
    exit_soon(1.0)


def _require_free_port(host: str, port: int) -> None:
    """Fail in one line if the address is taken, before the database is started and migrated:
    uvicorn would report it only later, as log lines, after saying it listens."""
    import socket

    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            s.bind(addr)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc} (pick another --port)")


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes `Settings()` in another process equal `settings`."""
    return {
        "DATABASE_URL": settings.database_url or "",
        "SOFTLABELS_DATA_DIR": str(settings.data_dir),
        "SOFTLABELS_HOST": settings.host,
        "SOFTLABELS_PORT": str(settings.port),
        "SOFTLABELS_AUTH": "true" if settings.auth else "false",
        "SOFTLABELS_API_PROCESSES": str(settings.api_processes),
    }


def _spawn_worker(settings: Settings) -> subprocess.Popen[bytes]:
    # Its own process: training is CPU-bound and must not stall the API's event loop or GIL.
    env = {**os.environ, "DATABASE_URL": settings.database_url or ""}
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker"], env=env, preexec_fn=die_with_parent
    )


def worker_cmd(
    data_dir: DataDirOpt = None,
    device: Annotated[
        str,
        typer.Option(
            help="cpu: training jobs that do not ask for a GPU, and refits, webhooks and syncs. "
            'cuda: only the training jobs whose config asks for device "cuda".',
        ),
    ] = "cpu",
) -> None:
    """Take training jobs and refits from the database and run them (any number may run)."""
    from app.cli.worker import run_worker
    from app.logging import configure_logging

    if device not in ("cpu", "cuda"):
        fail(f"--device must be cpu or cuda, not {device!r}.", code=2)
    if device == "cuda":
        import torch  # the worker imports it anyway; here only to refuse a host without a GPU

        if not torch.cuda.is_available():
            fail("--device cuda: torch sees no CUDA device on this machine.")
    with database_url(settings_for(data_dir)) as url:
        # Before the worker's threads start: an unreachable or unmigrated database is one line,
        # not a logged traceback from each thread.
        require_migrated(url)
        configure_logging()  # JSON lines, like the API's
        run_worker(settings_for(data_dir, database_url=url), device)


def migrate_cmd(data_dir: DataDirOpt = None) -> None:
    """Apply all pending migrations (creating the embedded database if there is none)."""
    from app.db.migrate import upgrade

    with database_url(settings_for(data_dir), create=True) as url:
        upgrade(url)
    console.print("database is at the newest migration")


@db_app.command("status")
def db_status(data_dir: DataDirOpt = None) -> None:
    """Whether the embedded PostgreSQL in the data dir exists and runs."""
    from app.db.embedded import EmbeddedServer

    settings = settings_for(data_dir)
    if settings.database_url:
        console.print("DATABASE_URL is set: the service uses that server, not an embedded one.")
        return
    server = EmbeddedServer(settings.data_dir)
    state = "running" if server.is_running() else "stopped" if server.exists() else "not created"
    print(f"embedded PostgreSQL in {server.pgdata}: {state}")


@db_app.command("stop")
def db_stop(data_dir: DataDirOpt = None) -> None:
    """Stop the embedded PostgreSQL (e.g. one left by a `serve` that was killed)."""
    from app.db.embedded import EmbeddedServer

    server = EmbeddedServer(settings_for(data_dir).data_dir)
    print("stopped" if server.stop() else "not running")
