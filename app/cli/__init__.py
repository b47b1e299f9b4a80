"""The `softlabels` command. Each group of commands is a small module, registered here."""

from __future__ import annotations

import sys

import typer

from app.cli import data, demo, imports, keys, service, sweep
from app.cli.common import CliError, console

app = typer.Typer(help="softlabels: crowd votes in, soft labels out.", no_args_is_help=True)
service.register(app)
data.register(app)
demo.register(app)
app.command("sweep")(sweep.sweep)
app.add_typer(keys.app, name="keys")
app.add_typer(imports.import_app, name="import")
app.add_typer(service.db_app, name="db")


def main() -> None:
    """Entry point: every expected failure is one line on stderr, never a traceback."""
    from sqlalchemy.exc import OperationalError

    try:
        app()  # standalone: typer prints usage errors and handles typer.Exit itself
    except CliError as exc:
        console.print(f"[red]softlabels: {exc.message}[/red]", highlight=False, soft_wrap=True)
        sys.exit(exc.code)
    except OperationalError as exc:
        first = str(exc.orig or exc).strip().splitlines()[0]
        console.print(f"[red]softlabels: database error: {first}[/red]", soft_wrap=True)
        sys.exit(1)
