"""What every command shares: the console, the --data-dir option, settings, the database
(embedded or DATABASE_URL) opened for one command, and one-line errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from sqlalchemy import Engine

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
    from sqlalchemy.exc import OperationalError

    from app.db.migrate import is_current
    from app.db.session import make_engine

    with database_url(settings) as url:
        engine = make_engine(url, pool_size=pool_size)
        try:
            try:
                current = is_current(engine, url)
            except OperationalError as exc:
                fail(f"cannot reach the database: {str(exc.orig).strip().splitlines()[0]}")
            if not current:
                fail("the database is not migrated to this version: run `softlabels migrate`.")
            yield engine
        finally:
            engine.dispose()


def cli_key(settings: Settings) -> str | None:
    """The key a CLI command sends over HTTP: SOFTLABELS_ADMIN_KEY, else the admin.key that
    `serve` wrote in the data dir."""
    from app.auth.bootstrap import KEY_FILE, read_key_file, secret_value

    return secret_value(settings.admin_key) or read_key_file(settings.data_dir / KEY_FILE)
