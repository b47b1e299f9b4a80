"""`softlabels import <format> FILE -p PROJECT`: a labeling tool's export file into votes.

Formats: label-studio (JSON or JSON_MIN export), argilla (exported records), prodigy (JSONL),
crowdkit (CSV task,worker,label), peerannot (answers.json). The parsers are app/connectors/files.py,
the same code as `POST /v1/projects/{p}/imports/{format}`; the whole file is stored all or
nothing, with source "import".
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from app.cli.common import DataDirOpt, console, fail, migrated_engine, settings_for
from app.connectors.common import OnDuplicate
from app.connectors.files import Options

import_app = typer.Typer(
    help="Import a labeling tool's export file as votes (all or nothing).", no_args_is_help=True
)

FileArg = Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="The export file.")]
ProjectOpt = Annotated[str, typer.Option("--project", "-p", help="Project name.")]
DupOpt = Annotated[
    str,
    typer.Option(
        "--on-duplicate",
        help="The same (item, worker) twice in the file: keep the last, the first, or fail.",
    ),
]


def _run(
    fmt: str, file: Path, project: str, on_duplicate: str, opts: Options, data_dir: Path | None
) -> None:
    from sqlalchemy import select

    from app.connectors.common import apply
    from app.connectors.files import parse_file
    from app.db.models import Project
    from app.db.session import make_sessionmaker
    from app.errors import ValidationFailed
    from app.votes.ingest import committed_with_retries

    if on_duplicate not in ("last", "first", "error"):
        fail("--on-duplicate must be last, first or error", code=2)
    policy: OnDuplicate = on_duplicate  # type: ignore[assignment]
    with migrated_engine(settings_for(data_dir)) as engine, make_sessionmaker(engine)() as session:
        proj = session.scalars(select(Project).where(Project.name == project)).one_or_none()
        if proj is None:
            fail(f"no project named {project!r}", code=2)
        # What a label is depends on the project (task type, classes, scale).
        parsed = parse_file(fmt, file.read_bytes(), opts.for_project(proj))
        try:
            out = committed_with_retries(
                session, lambda: apply(session, proj, "import", parsed, policy)
            )
        except ValidationFailed as exc:
            problems = exc.errors or []
            if len(problems) == 1:  # the one problem is the one line
                e = problems[0]
                fail(f"{file}: {e['field']}: {e['reason']}; nothing was stored.")
            for e in problems[:20]:
                console.print(f"  {e['field']}: {e['reason']}")
            fail(f"{file}: {exc.detail}")
    touched = out.inserted + out.updated
    print(
        f"{file.name}: {parsed.rows} rows, {out.duplicates} duplicate (item, worker) "
        f"[{policy}], {out.skipped} skipped; touched {touched} votes "
        f"(inserted {out.inserted}, updated {out.updated}), unchanged {out.unchanged}, "
        f"deleted {out.deleted}; votes_version {out.votes_version}"
    )


@import_app.command("label-studio")
def import_label_studio(
    file: FileArg,
    project: ProjectOpt,
    from_name: Annotated[str, typer.Option(help="The <Choices> control's name.")],
    item_field: Annotated[
        str | None, typer.Option(help="Task data field holding the item id (default: task id).")
    ] = None,
    content_field: Annotated[
        str | None,
        typer.Option(
            help="Task data field holding the item's text or image URL (default: `text` or "
            "`image` when present; '' for none)."
        ),
    ] = None,
    on_duplicate: DupOpt = "last",
    data_dir: DataDirOpt = None,
) -> None:
    """Label Studio JSON or JSON_MIN export (cancelled annotations are skipped)."""
    options = Options(from_name, item_field, content_field=content_field)
    _run("label-studio", file, project, on_duplicate, options, data_dir)


@import_app.command("argilla")
def import_argilla(
    file: FileArg,
    project: ProjectOpt,
    question: Annotated[str, typer.Option(help="The question's name.")],
    content_field: Annotated[
        str | None,
        typer.Option(
            help="Record field holding the item's text or image (URL or data URI) (default: "
            "`text` or `image` when present; '' for none)."
        ),
    ] = None,
    on_duplicate: DupOpt = "last",
    data_dir: DataDirOpt = None,
) -> None:
    """Argilla exported records (`responses: {question: [{value, user_id}]}`): label, multi-label
    and rating questions."""
    options = Options(question=question, content_field=content_field)
    _run("argilla", file, project, on_duplicate, options, data_dir)


@import_app.command("prodigy")
def import_prodigy(
    file: FileArg,
    project: ProjectOpt,
    id_field: Annotated[str, typer.Option(help="The item id field.")] = "_input_hash",
    on_duplicate: DupOpt = "last",
    data_dir: DataDirOpt = None,
) -> None:
    """Prodigy JSONL (`prodigy db-out`): choice (`accept`) or binary (`label`) tasks."""
    _run("prodigy", file, project, on_duplicate, Options(item_field=id_field), data_dir)


@import_app.command("crowdkit")
def import_crowdkit(
    file: FileArg, project: ProjectOpt, on_duplicate: DupOpt = "last", data_dir: DataDirOpt = None
) -> None:
    """crowd-kit CSV with columns task, worker, label."""
    _run("crowdkit", file, project, on_duplicate, Options(), data_dir)


@import_app.command("peerannot")
def import_peerannot(
    file: FileArg, project: ProjectOpt, on_duplicate: DupOpt = "last", data_dir: DataDirOpt = None
) -> None:
    """peerannot answers.json: {task: {worker: label}}."""
    _run("peerannot", file, project, on_duplicate, Options(), data_dir)
