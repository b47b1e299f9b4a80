"""The `softlabels` command. Each group of commands is a small module, registered here."""

from __future__ import annotations

import typer

from app.cli import data, demo, imports, keys, service, sweep
from app.cli.common import OneLineErrors

app = typer.Typer(
    cls=OneLineErrors, help="softlabels: crowd votes in, soft labels out.", no_args_is_help=True
)
service.register(app)
data.register(app)
demo.register(app)
app.command("sweep")(sweep.sweep)
app.add_typer(keys.app, name="keys")
app.add_typer(imports.import_app, name="import")
app.add_typer(service.db_app, name="db")


def main() -> None:
    """Entry point: every failure is one line on stderr, never a traceback (OneLineErrors)."""
    app()
