"""`softlabels sweep`: post a training sweep to a running service, wait, print its report.

Registered in app/cli/__init__.py. The HTTP helpers (`run_sweep`, `report_table`) are shared
with the demo
(app/cli/demo_run.py) and the music-genre benchmark. An error answer raises ServiceError
(app/cli/api.py), one line with the service's error code and detail.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import httpx
import typer

from app.cli.api import DEFAULT_URL, check, q
from app.cli.common import fail


def run_sweep(
    client: httpx.Client,
    project: str,
    body: dict[str, Any],
    *,
    timeout: float = 3600,
    log: Any = print,
) -> dict[str, Any]:
    """POST the sweep, poll until every cell has ended, return the final sweep object."""
    path = f"/v1/projects/{q(project)}/training-sweeps"
    sweep = check(client.post(path, json=body)).json()
    log(f"sweep {sweep['id']}: {len(sweep['cells'])} training jobs queued")
    deadline = time.monotonic() + timeout
    last = None
    while sweep["status"] != "done":
        if time.monotonic() > deadline:
            raise TimeoutError(f"sweep {sweep['id']} did not finish in {timeout} s")
        time.sleep(1.0)
        sweep = check(client.get(f"{path}/{sweep['id']}")).json()
        if sweep["jobs"] != last:
            last = sweep["jobs"]
            log(f"  jobs: {json.dumps(last, sort_keys=True)}")
    return sweep


def report_rows(sweep: dict[str, Any], extra: tuple[str, ...] = ("nll", "ece")) -> list[list[str]]:
    """Rows (rank, recipe, metric mean ± sd, vs baseline [interval], extra metric means)."""
    rep = sweep["report"]

    def f(v: Any) -> str:
        return "-" if v is None else f"{v:.4f}"

    rows = []
    for r in rep["ranking"]:
        d = r.get("vs_baseline")
        diff = (
            "baseline"
            if r["baseline"]
            else ("-" if d is None else f"{d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]")
        )
        rows.append(
            [
                str(r["rank"] or "-"),
                r["name"],
                f"{f(r['mean'])} ± {f(r['std'])}",
                diff,
                *[f(r["other_metrics"].get(m)) for m in extra],
                str(r["n_seeds"]),
            ]
        )
    return rows


def extra_columns(rep: dict[str, Any]) -> tuple[str, ...]:
    """nll and ece where the recipes have them (single-label, ordinal); else the first two
    other metrics of the project's task type."""
    others = list(rep["ranking"][0]["other_metrics"]) if rep["ranking"] else []
    return ("nll", "ece") if "nll" in others else tuple(others[:2])


def markdown(sweep: dict[str, Any], extra: tuple[str, ...] = ("nll", "ece")) -> str:
    rep = sweep["report"]
    head = ["rank", "recipe", f"{rep['metric']} (mean ± sd)", "vs baseline [95% CI]", *extra]
    lines = [
        "| " + " | ".join([*head, "seeds"]) + " |",
        "|" + "---|" * (len(head) + 1),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in report_rows(sweep, extra)]
    rec = rep["recommended"]
    lines += ["", f"Split: `{rep['split']}`. Recommended: **{rec['name']}**. {rec['reason']}"]
    return "\n".join(lines)


def sweep(
    project: Annotated[str, typer.Option("--project", "-p", help="Project name.")],
    url: Annotated[
        str, typer.Option(envvar="SOFTLABELS_URL", help="The service (or env SOFTLABELS_URL).")
    ] = DEFAULT_URL,
    method: Annotated[
        list[str] | None,
        typer.Option(
            help='Label method, repeatable; JSON for parameters: \'{"method": "normalized", '
            "\"alpha\": 1}'. Default: the project's task type's (majority, normalized, "
            "dawid-skene for single-label projects; docs/training.md)."
        ),
    ] = None,
    loss: Annotated[
        list[str] | None,
        typer.Option(
            help="hard-ce, soft-ce (single, ordinal), squared-emd (ordinal), hard-bce, soft-bce "
            "(multi-label); repeatable. Default: every loss of the project's task type."
        ),
    ] = None,
    seeds: Annotated[str, typer.Option(help="Comma-separated model seeds.")] = "0,1,2",
    base: Annotated[
        str, typer.Option(help="Other training fields as JSON, e.g. '{\"epochs\": 50}'.")
    ] = "{}",
    metric: Annotated[
        str | None,
        typer.Option(
            help="Ranking metric. Default: accuracy (single), rps_human (ordinal), bce_human "
            "(multi-label)."
        ),
    ] = None,
    split: Annotated[str, typer.Option(help="auto, test or test_gold.")] = "auto",
    key: Annotated[
        str | None, typer.Option(envvar="SOFTLABELS_KEY", help="API key to send.")
    ] = None,
) -> None:
    """Run a training sweep (label methods x losses x seeds) and print its report."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=140)
    labels = [
        _json(m, "--method") if m.strip().startswith("{") else {"method": m} for m in method or []
    ]
    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        fail(f"--seeds {seeds!r}: write comma-separated integers, e.g. 0,1,2", code=2)
    # What is left out is the project's task type's default, chosen by the service.
    given = {"labels": labels or None, "losses": loss or None, "metric": metric}
    body = {
        **{k: v for k, v in given.items() if v is not None},
        "seeds": seed_list,
        "base": _json(base, "--base"),
        "split": split,
    }
    if key is None:
        from app.cli.common import cli_key, settings_for

        key = cli_key(settings_for())
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with httpx.Client(base_url=url, timeout=120, headers=headers) as client:
        result = run_sweep(client, project, body, log=console.print)
    rep = result["report"]
    table = Table(title=f"sweep {result['id']}: {rep['metric']} on the {rep['split']} split")
    extra = extra_columns(rep)
    for col in ("rank", "recipe", "mean ± sd", "vs baseline [95% CI]", *extra, "seeds"):
        table.add_column(col)
    for row in report_rows(result, extra):
        table.add_row(*row)
    console.print(table)
    if rep["recommended"]:
        console.print(f"[bold]recommended:[/bold] {rep['recommended']['name']}")
        console.print(rep["recommended"]["reason"])


def _json(text: str, option: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"{option} {text!r} is not JSON: {exc.msg} (column {exc.colno})", code=2)
