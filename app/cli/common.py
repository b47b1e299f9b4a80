"""What every command shares: the console, the --data-dir option, settings, the database
(embedded or DATABASE_URL) opened for one command, and one-line errors (`OneLineErrors`)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from sqlalchemy import Engine
from typer.core import TyperGroup

from app.config import Settings, get_settings

console = Console(stderr=True)

DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        help="Data dir of the embedded PostgreSQL (used when DATABASE_URL is unset); "
        "default: the per-user data dir that `softlabels serve` uses.",
    ),
]


class CliError(Exception):
    """Printed as one red line (no traceback); the command exits with `code`."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message, self.code = message, code


def fail(message: str, code: int = 1) -> NoReturn:
    raise CliError(message, code)


def say_error(message: str) -> None:
    """One red line on stderr: newlines folded, never wrapped, never read as rich markup."""
    line = " ".join(message.split())
    console.print(f"softlabels: {line}", style="red", markup=False, highlight=False, soft_wrap=True)


def error_line(exc: BaseException) -> tuple[str, int]:
    """The one line, and the exit code, for a failure of a command."""
    import httpx
    from sqlalchemy.exc import OperationalError

    from app.errors import AppError

    if isinstance(exc, CliError):
        return exc.message, exc.code
    if isinstance(exc, AppError):  # the service's own errors, raised by the code a command runs
        return f"{exc.code}: {exc.detail}", 1
    if isinstance(exc, httpx.HTTPError):
        try:
            url = exc.request.url
            where = f"{url.scheme}://{url.netloc.decode()}"
        except RuntimeError:  # an error raised without its request
            where = "the service"
        if isinstance(exc, httpx.ConnectError):
            return (
                f"cannot connect to {where}: {exc or 'connection failed'} (is the service "
                "running? `softlabels serve` starts one; --url names another)",
                1,
            )
        if isinstance(exc, httpx.TimeoutException):
            return f"no answer from {where} in time ({type(exc).__name__})", 1
        return f"talking to {where}: {type(exc).__name__}: {exc}", 1
    if isinstance(exc, OperationalError):
        first = (str(exc.orig or exc).strip().splitlines() or [""])[0]
        return f"database error: {first}", 1
    if isinstance(exc, OSError):
        if exc.strerror and exc.filename is not None:
            return f"{exc.strerror}: {exc.filename}", 1
        return f"{type(exc).__name__}: {exc}", 1
    return (
        f"{type(exc).__name__}: {exc} (a bug? SOFTLABELS_DEBUG=1 shows the traceback)",
        1,
    )


class OneLineErrors(TyperGroup):
    """The root command: every failure is one line on stderr and a non-zero exit, never a
    traceback -- usage errors, CliError, HTTP errors (connection refused included), database
    and file errors alike. In one place, so a new command gets it without a try/except.

    It wraps `main`, which both the `softlabels` entry point and typer's CliRunner call.
    SOFTLABELS_DEBUG=1 lets an exception through, with its traceback.
    """

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(
                args, prog_name, complete_var, standalone_mode, windows_expand_args, **extra
            )
        try:
            # Not standalone: exceptions come here instead of typer's rich error boxes; a
            # typer.Exit (and --help, Ctrl+C) comes back as its exit code.
            rv = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        except typer.Abort:
            say_error("aborted")
            sys.exit(1)
        except Exception as exc:
            if _is_click_error(exc):
                _click_error(exc)
            if _debug():
                raise
            message, code = error_line(exc)
            say_error(message)
            sys.exit(code)
        sys.exit(rv if isinstance(rv, int) else 0)


def _is_click_error(exc: Exception) -> bool:
    # Click's ClickException family (usage errors, bad parameters), duck-typed: typer vendors
    # its own copy of click in recent versions and uses click itself in older ones.
    return hasattr(exc, "format_message") and isinstance(getattr(exc, "exit_code", None), int)


def _click_error(exc: Any) -> NoReturn:
    if type(exc).__name__ == "NoArgsIsHelpError":  # `softlabels keys`: the help, as before
        if exc.format_message().strip():  # with rich, typer has printed it already
            exc.show()
        sys.exit(exc.exit_code)
    ctx = getattr(exc, "ctx", None)
    hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    say_error(f"{exc.format_message()}{hint}")
    sys.exit(exc.exit_code)


def _debug() -> bool:
    return os.environ.get("SOFTLABELS_DEBUG", "") not in ("", "0")


def settings_for(data_dir: Path | None = None, **overrides: object) -> Settings:
    settings = get_settings()
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    return settings.model_copy(update=overrides) if overrides else settings


@contextmanager
def database_url(settings: Settings, *, create: bool = False) -> Iterator[str]:
    """The URL of the database the service uses, for the length of one command.

    DATABASE_URL when set. Otherwise the embedded server in the data dir: reused if it runs
    (e.g. under `softlabels serve`), else started for this command and stopped after it, so a
    CLI call never leaves a stray server behind. With create=False a data dir that holds no
    cluster is an error (a typo in --data-dir must not silently make an empty database).
    """
    if settings.database_url:
        yield settings.database_url
        return
    from app.db.embedded import EmbeddedServer

    server = EmbeddedServer(settings.data_dir)
    if not create and not server.exists():
        fail(
            f"no database in {settings.data_dir}: start the service once (`softlabels serve`), "
            "pass the --data-dir it uses, or set DATABASE_URL."
        )
    with server.running() as url:
        yield url


@contextmanager
def migrated_engine(settings: Settings, pool_size: int = 1) -> Iterator[Engine]:
    """An engine on the service's database, which must exist and be fully migrated."""
    from app.db.session import make_engine

    with database_url(settings) as url:
        engine = make_engine(url, pool_size=pool_size)
        try:
            _require_current(engine, url)
            yield engine
        finally:
            engine.dispose()


def require_migrated(url: str) -> None:
    """Fail in one line unless the database at `url` is reachable and fully migrated."""
    from app.db.session import make_engine

    engine = make_engine(url, pool_size=1)
    try:
        _require_current(engine, url)
    finally:
        engine.dispose()


def _require_current(engine: Engine, url: str) -> None:
    from sqlalchemy.exc import OperationalError

    from app.db.migrate import is_current

    try:
        current = is_current(engine, url)
    except OperationalError as exc:
        fail(f"cannot reach the database: {str(exc.orig).strip().splitlines()[0]}")
    if not current:
        fail("the database is not migrated to this version: run `softlabels migrate`.")


def cli_key(settings: Settings) -> str | None:
    """The key a CLI command sends over HTTP: SOFTLABELS_ADMIN_KEY, else the admin.key that
    `serve` wrote in the data dir."""
    from app.auth.bootstrap import KEY_FILE, read_key_file, secret_value

    return secret_value(settings.admin_key) or read_key_file(settings.data_dir / KEY_FILE)
