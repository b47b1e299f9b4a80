"""`softlabels demo`: a simulated crowd, five training recipes, one table and one figure."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from app.cli.common import DataDirOpt, cli_key, console, fail, settings_for


def register(app: typer.Typer) -> None:
    app.command()(demo)


def demo(
    url: Annotated[
        str | None,
        typer.Option(
            envvar="SOFTLABELS_URL",
            help="A running service (or env SOFTLABELS_URL); default: start one (embedded DB).",
        ),
    ] = None,
    out: Annotated[
        Path, typer.Option(help="Where to write demo.md (the tables), demo.png and sweep.*.")
    ] = Path("demo-out"),
    project: Annotated[str, typer.Option(help="Project name to create.")] = "digits-demo",
    data_dir: DataDirOpt = None,
    key: Annotated[
        str | None,
        typer.Option(
            envvar="SOFTLABELS_KEY",
            help="API key to send (or env SOFTLABELS_KEY); default SOFTLABELS_ADMIN_KEY, "
            "else the admin.key that `serve` wrote in --data-dir.",
        ),
    ] = None,
) -> None:
    """Simulate a crowd labelling scikit-learn's digits, train five recipes, compare them."""
    from rich.table import Table

    from app.cli.demo_run import Crowd, run_demo
    from app.cli.serverctl import ServerProcess

    server = None
    if url is None:
        args = [] if data_dir is None else ["--data-dir", str(data_dir)]
        server = ServerProcess(args, log=out / "server.log")
        try:
            server.start(timeout=120)
        except RuntimeError:
            fail(f"the service did not start; see {server.log}")
        url = server.url
        console.print(f"started a service at {url} (log: {server.log})")
    try:
        key = key or cli_key(settings_for(data_dir))  # read after the server made it, if it did
        if key is None:
            fail(
                "no API key: pass --key, set SOFTLABELS_ADMIN_KEY, or give the --data-dir of the "
                "server (its admin.key is read from there)",
                code=2,
            )
        headers = {"Authorization": f"Bearer {key}"}
        results = run_demo(url, out, project, Crowd(), headers=headers, log=console.print)
    finally:
        if server is not None:
            server.stop(30)
    n_test = results[0]["n_eval"] if results else 0
    title = f"softlabels demo: the test split ({n_test} held-out digits), same MLP, same seed"
    table = Table(title=title)
    for col in COLUMNS:
        table.add_column(col, justify="left" if col == "recipe" else "right")
    for r in results:
        table.add_row(*row(r))
    Console(width=max(Console().width, 120)).print(table)
    write_report(out, title, results)
    console.print(f"tables: {out / 'demo.md'}; figure: {out / 'demo.png'}")


COLUMNS = ("recipe", "accuracy", "nll", "ece", "kl_human", "epochs", "train s", "POST→done s")


def row(r: dict) -> list[str]:
    return [
        r["recipe"],
        *(f"{r[k]:.4f}" for k in ("accuracy", "nll", "ece", "kl_human")),
        str(r["epochs"]),
        f"{r['seconds']:.1f}",
        f"{r['post_to_done']:.1f}",
    ]


def write_report(out: Path, title: str, results: list[dict]) -> None:
    """demo.md: the run's date, command and machine, the recipes' table and the sweep's, so the
    figures quoted in the docs are this file's."""
    import os
    import platform
    import shlex
    import sys
    from datetime import UTC, datetime

    sweep = out / "sweep.md"
    # No title of its own: the docs include this file under their heading for the demo.
    lines = [
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: `softlabels {shlex.join(sys.argv[1:])}` "
        f"({platform.machine()}, {os.cpu_count()} CPUs; CPU training, one worker).",
        "",
        f"#### {title.removeprefix('softlabels demo: ')}",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
        *("| " + " | ".join(row(r)) + " |" for r in results),
        "",
    ]
    if sweep.exists():
        lines += ["#### The sweep: 3 label methods x 2 losses x 3 seeds", "", sweep.read_text()]
    (out / "demo.md").write_text("\n".join(lines))
