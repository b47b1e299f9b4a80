"""Benchmark (by hand): a training sweep on CIFAR-10H's images through the service, and its
winner on images no choice was made on.

    DATABASE_URL=postgresql://... PYTHONPATH=. .venv/bin/python benchmarks/cifar10h_sweep.py \
        [--epochs 10] [--seeds 0] [--threads 1]

-> benchmarks/results/cifar10h_sweep.md (+ .json)

The companion of cifar10h_images.py (same images, votes, split, encoder and training settings:
see its docstring and Peterson et al., ICCV 2019), with the one thing a user would do next: POST
/training-sweeps with several label methods, let the sweep rank the recipes on the job's test
split and recommend one, then check the winner where nothing was chosen: the 500 images rows
9,500-9,999 (JPEG copies never uploaded), through POST /predict with their files. The
comparison that is fair to the winner is on those 500 only: on the test split the sweep chose it.

Grid: labels majority (one-hot: the hard-label baseline, soft-ce on a one-hot target being
hard-ce), normalized (CIFAR-10H's published distribution), dawid-skene and mace (worker
models' posteriors), loss soft-ce, ranked by test accuracy (the sweep's default metric).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.cifar10h_images import (  # noqa: E402
    BASE,
    DATA,
    EXACT,
    METRICS,
    RESULTS,
    load,
    predict_unseen,
)
from benchmarks.live_service import live_service  # noqa: E402

LABELS = [
    {"method": "majority"},
    {"method": "normalized"},
    {"method": "dawid-skene"},
    {"method": "mace"},
]


def run_sweep(client: Any, project: str, body: dict[str, Any], timeout: float = 14400) -> dict:
    r = client.post(f"/v1/projects/{project}/training-sweeps", json=body)
    r.raise_for_status()
    sweep_id = r.json()["id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sweep = client.get(f"/v1/projects/{project}/training-sweeps/{sweep_id}").json()
        if sweep["status"] == "done":
            return dict(sweep)
        time.sleep(2)
    raise TimeoutError(sweep_id)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", default="0", help="comma-separated model seeds")
    parser.add_argument("--threads", type=int, default=1, help="the worker's torch threads")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    x_all = np.load(DATA / "images.npz")["x"]
    counts_all = np.load(DATA / "counts.npy")
    gold_all = np.load(DATA / "cifar10_test_labels.npy")
    unseen = slice(EXACT, len(x_all))
    out: dict[str, Any] = {
        "run": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "command": "DATABASE_URL=... PYTHONPATH=. .venv/bin/python benchmarks/cifar10h_sweep.py "
        f"--epochs {args.epochs} --seeds {args.seeds} --threads {args.threads}",
        "machine": f"{platform.machine()}, shared 2-core CPU, {args.threads} torch thread(s)",
    }
    t0 = time.perf_counter()
    with live_service("softlabels_bench_cifar_sweep", args.threads) as client:
        project = f"cifar10h-{uuid.uuid4().hex[:6]}"
        out["load"] = load(client, project, x_all[:EXACT], counts_all[:EXACT], gold_all[:EXACT])
        body = {
            "labels": LABELS,
            "losses": ["soft-ce"],
            "seeds": seeds,
            "split_seed": BASE["split_seed"],
            "base": {k: v for k, v in BASE.items() if k != "split_seed"} | {"epochs": args.epochs},
            "metric": "accuracy",
            "split": "test",
            "baseline": {"labels": {"method": "majority"}, "loss": "soft-ce"},
        }
        sweep = run_sweep(client, project, body)
        report = sweep["report"]
        rows = []
        for r in report["ranking"]:
            unseen_scores = [
                predict_unseen(client, j, x_all[unseen], counts_all[unseen], gold_all[unseen])
                for j in r["job_ids"]
            ]
            test = {k: r["other_metrics"].get(k) for k in METRICS}
            test[report["metric"]] = r["mean"]
            rows.append(
                {
                    "rank": r["rank"],
                    "name": r["name"],
                    "baseline": r["baseline"],
                    "test": test,
                    "unseen": {k: float(np.mean([u[k] for u in unseen_scores])) for k in METRICS},
                    "vs_baseline": r["vs_baseline"],
                    "job_ids": r["job_ids"],
                }
            )
            print(json.dumps(rows[-1], default=str), flush=True)
        out["rows"] = rows
        out["recommended"] = report["recommended"]
        out["split"] = report["split"]
    out["total_min"] = (time.perf_counter() - t0) / 60
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cifar10h_sweep.json").write_text(json.dumps(out, indent=1, default=str))
    write_markdown(out, args.epochs)


def write_markdown(out: dict[str, Any], epochs: int) -> None:
    def f(v: Any) -> str:
        return "-" if v is None else f"{v:.4f}"

    rec = out["recommended"] or {}
    lines = [
        # No title of its own: docs/training.md includes this file under its heading.
        f"Run {out['run']}: `{out['command']}`",
        f"Machine: {out['machine']}; {out['total_min']:.1f} min in all. Settings as in the table "
        f"above, **{epochs} epochs**; the sweep ranks on the `{out['split']}` split by accuracy.",
        "",
        "| rank | recipe | test accuracy (ranked on) | test kl_human | 500 unseen accuracy "
        "| unseen nll | unseen kl_human |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in out["rows"]:
        name = r["name"] + (" (baseline)" if r["baseline"] else "")
        lines.append(
            f"| {r['rank']} | {name} | {f(r['test']['accuracy'])} | {f(r['test']['kl_human'])} "
            f"| {f(r['unseen']['accuracy'])} | {f(r['unseen']['nll'])} "
            f"| {f(r['unseen']['kl_human'])} |"
        )
    lines += [
        "",
        f"The sweep's recommendation: {rec.get('reason', rec)}",
        "",
        "500 unseen: rows 9,500-9,999, JPEG copies never uploaded, never used to rank; the "
        "winner's figures there are the ones that are not chosen on.",
    ]
    (RESULTS / "cifar10h_sweep.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
