"""`softlabels keys create | list | revoke`, straight on the database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from sqlalchemy.orm import Session

from app.cli.common import DataDirOpt, console, fail, migrated_engine, settings_for

app = typer.Typer(
    help="API keys, made and revoked straight on the database (no API needed).",
    no_args_is_help=True,
)


@contextmanager
def _key_session(data_dir: Path | None) -> Iterator[Session]:
    """A session on the database `serve` would use."""
    with (
        migrated_engine(settings_for(data_dir)) as engine,
        Session(engine, expire_on_commit=False) as session,
    ):
        yield session


@app.command("create")
def keys_create(
    label: Annotated[str, typer.Option(help="What the key is for.")],
    scope: Annotated[
        list[str], typer.Option("--scope", "-s", help="admin, annotate, read or train; repeat.")
    ],
    project: Annotated[
        list[str] | None,
        typer.Option("--project", "-p", help="A project the key covers (repeat), or '*' for all."),
    ] = None,
    rate_limit: Annotated[
        float | None,
        typer.Option(help="This key's requests per second (default: the server's)."),
    ] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Make a key. Its secret goes to stdout, once: it is stored only as a hash."""
    from app.auth.keys import create_key
    from app.auth.spec import KeyCreate

    projects: list[str] | str = project or (["*"] if "admin" in scope else [])
    if "*" in projects:
        projects = "*"
    try:
        spec = KeyCreate.model_validate(
            {
                "label": label,
                "scopes": scope,
                "projects": projects,
                "rate_limit_per_s": rate_limit,
            }
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        fail(f"{'.'.join(map(str, err['loc'])) or 'key'}: {err['msg']}", code=2)
    with _key_session(data_dir) as session:
        chosen = None if spec.projects == "*" else list(spec.projects)
        row, secret = create_key(session, spec.label, spec.scopes, chosen, spec.rate_limit_per_s)
        session.commit()
    console.print(
        f"key {row.id} ({row.label}): scopes {','.join(row.scopes)}; projects "
        f"{'*' if row.projects is None else ','.join(row.projects)}. Shown once: store it now."
    )
    print(secret)


@app.command("list")
def keys_list(data_dir: DataDirOpt = None) -> None:
    """Active keys, by id and label (never the secret: only its hash is stored)."""
    from rich.table import Table

    from app.auth.keys import active_keys

    with _key_session(data_dir) as session:
        rows = active_keys(session)
    table = Table("id", "label", "scopes", "projects", "created")
    for r in rows:
        projects = "*" if r.projects is None else ",".join(r.projects)
        table.add_row(str(r.id), r.label, ",".join(r.scopes), projects, f"{r.created_at:%F %T}")
    Console(width=max(Console().width, 120)).print(table)


@app.command("revoke")
def keys_revoke(key_id: Annotated[int, typer.Argument(min=1)], data_dir: DataDirOpt = None) -> None:
    """Revoke a key. A running server stops accepting it within its key cache TTL (1 s)."""
    from app.auth.keys import revoke_key

    with _key_session(data_dir) as session:
        done = revoke_key(session, key_id)
        session.commit()
    if not done:
        fail(f"no active key {key_id}")
    console.print(f"key {key_id} revoked")
