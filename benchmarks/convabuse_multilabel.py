"""Benchmark (by hand): training per task type through the service, hard vs soft targets, on
ConvAbuse: the abuse types and targets (multi-label) or the severity scale (ordinal).

    DATABASE_URL=postgresql://... PYTHONPATH=. .venv/bin/python benchmarks/convabuse_multilabel.py \
        [--task types|severity] [--seeds 0,1,2] [--threads 1]

-> benchmarks/results/convabuse_multilabel.md (+ .json), or convabuse_severity.md with
--task severity

Data: /work/shared/data/task-types (see its README): the 4,185 user turns of
benchmarks/convabuse_text.py, and for each of its 12,411 annotations the set of abuse types and
targets the annotator ticked among 10 (ableist ... target.system; empty when they judged the
turn not abusive: 0.26 ticks per annotation). A multi-label project (`task_type`
"multi_label"): each annotation is one vote, its set of ticks.

No gold: figures are against the crowd on the job's test split (15% of the turns, split seed
0), with h the share of a turn's annotators who ticked a class: bce_human (mean per-class
binary cross-entropy to h, the sweep's default ranking for multi-label projects), kl_human,
manhattan_human (LeWiDi 2025's), macro F1 of [p > 0.5] against each class's majority [h >
0.5] (over the classes some majority ticks or the model predicts in the split), and the
per-class Brier score against that majority.

Recipes, the same seeds and split, TF-IDF + SVD (256 dimensions) and an MLP [64] head with 10
sigmoids, through the API with one real worker process:
- hard: vote shares (`normalized`) thresholded at 0.5 (`hard-bce`): each class's majority;
- soft: vote shares with `soft-bce`;
- soft, worker model: `tick-propensity` (each annotator's tendency to tick more or fewer
  classes) with `soft-bce`.

--task severity: an ordinal project, levels 0 (not abusive) ... 4 (very strongly abusive), one
vote per rating; hard-ce on vote shares (the majority level), soft-ce, and the squared Earth
Mover's Distance (`squared-emd`, Hou, Yu & Samaras 2016) on vote shares; figures: rps_human
(the sweep's default ranking for ordinal projects), wasserstein_human (LeWiDi 2025's), the
expected level's distance to the mean rating (mae_human), KL to the ratings and agreement with
their majority level.
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

from benchmarks.convabuse_text import DATA, RESULTS, read_csv  # noqa: E402
from benchmarks.live_service import live_service, run_job  # noqa: E402

SHARES = {"method": "normalized"}
RECIPES = {
    "hard (normalized, hard-bce)": {"labels": SHARES, "loss": "hard-bce"},
    "soft (normalized, soft-bce)": {"labels": SHARES, "loss": "soft-bce"},
    "soft (tick-propensity, soft-bce)": {
        "labels": {"method": "tick-propensity"},
        "loss": "soft-bce",
    },
}
BASE = {
    "model": {"kind": "mlp", "hidden": [64], "dropout": 0.2},
    "encoder": {"name": "tfidf-svd", "dim": 256},
    "epochs": 40,
    "early_stopping": 8,
    "lr": 0.001,
    "batch_size": 64,
    "device": "cpu",
    "split_seed": 0,
}
METRICS = ("bce_human", "kl_human", "manhattan_human", "macro_f1", "brier")
SEVERITY_RECIPES = {
    "hard (normalized, hard-ce)": {"labels": SHARES, "loss": "hard-ce"},
    "soft (normalized, soft-ce)": {"labels": SHARES, "loss": "soft-ce"},
    "soft (normalized, squared-emd)": {"labels": SHARES, "loss": "squared-emd"},
}
SEVERITY_METRICS = (
    "rps_human",
    "wasserstein_human",
    "mae_human",
    "kl_human",
    "accuracy_majority",
)


def load(client: Any, project: str) -> dict[str, Any]:
    classes = json.loads((DATA / "labels.json").read_text())["convabuse_type_target"]["label_order"]
    body = {"name": project, "task_type": "multi_label", "classes": classes}
    client.post("/v1/projects", json=body).raise_for_status()
    turns = read_csv("convabuse_items.csv.gz")
    items = [{"id": f"ca-{r['item']}", "text": r["text"]} for r in turns]
    for s in range(0, len(items), 1000):
        client.post(
            f"/v1/projects/{project}/items", json={"items": items[s : s + 1000]}
        ).raise_for_status()
    rows = read_csv("convabuse_type_target_annotations.csv.gz")
    votes = [
        {
            "item": f"ca-{r['item']}",
            "worker": r["worker"],
            "label": [c for c in r["label"].split("|") if c],
        }
        for r in rows
    ]
    client.post(f"/v1/projects/{project}/votes", json={"votes": votes}).raise_for_status()
    ticks = {c: sum(c in v["label"] for v in votes) for c in classes}
    print(f"{len(items)} turns, {len(votes)} votes; ticks per class {ticks}", flush=True)
    return {"turns": len(items), "votes": len(votes), "ticks": ticks}


def load_severity(client: Any, project: str) -> dict[str, Any]:
    levels = ["0", "1", "2", "3", "4"]
    body = {"name": project, "task_type": "ordinal", "classes": levels}
    client.post("/v1/projects", json=body).raise_for_status()
    turns = read_csv("convabuse_items.csv.gz")
    items = [{"id": f"ca-{r['item']}", "text": r["text"]} for r in turns]
    for s in range(0, len(items), 1000):
        client.post(
            f"/v1/projects/{project}/items", json={"items": items[s : s + 1000]}
        ).raise_for_status()
    rows = read_csv("convabuse_severity_annotations.csv.gz")
    votes = [
        {"item": f"ca-{r['item']}", "worker": r["worker"], "label": r["label"].strip()}
        for r in rows
    ]
    client.post(f"/v1/projects/{project}/votes", json={"votes": votes}).raise_for_status()
    per_level = {lv: sum(v["label"] == lv for v in votes) for lv in levels}
    print(f"{len(items)} turns, {len(votes)} ratings; per level {per_level}", flush=True)
    return {"turns": len(items), "votes": len(votes), "ticks": per_level}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", choices=("types", "severity"), default="types")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--threads", type=int, default=1, help="the worker's torch threads")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    out: dict[str, Any] = {
        "run": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "command": "DATABASE_URL=... PYTHONPATH=. .venv/bin/python "
        f"benchmarks/convabuse_multilabel.py --task {args.task} --seeds {args.seeds} "
        f"--threads {args.threads}",
        "task": args.task,
        "machine": f"{platform.machine()}, shared 2-core CPU, {args.threads} torch thread(s)",
        "rows": [],
    }
    t0 = time.perf_counter()
    with live_service("softlabels_bench_convabuse_ml", args.threads) as client:
        project = f"convabuse-{args.task}-{uuid.uuid4().hex[:6]}"
        severity = args.task == "severity"
        out["load"] = (load_severity if severity else load)(client, project)
        metrics = SEVERITY_METRICS if severity else (*METRICS, "per_class_f1")
        for recipe, labels in (SEVERITY_RECIPES if severity else RECIPES).items():
            for seed in seeds:
                m = run_job(client, project, {**BASE, **labels, "seed": seed})["metrics"]
                row = {
                    "recipe": recipe,
                    "seed": seed,
                    "test": {k: m["test"][k] for k in metrics},
                    "splits": m["splits"],
                    "seconds": m["seconds"],
                    "epochs_run": m["epochs_run"],
                }
                print(json.dumps(row, default=str), flush=True)
                out["rows"].append(row)
    out["total_min"] = (time.perf_counter() - t0) / 60
    RESULTS.mkdir(exist_ok=True)
    name = "convabuse_severity" if args.task == "severity" else "convabuse_multilabel"
    (RESULTS / f"{name}.json").write_text(json.dumps(out, indent=1, default=str))
    write_markdown(out, name)


def write_markdown(out: dict[str, Any], name: str) -> None:
    rows = out["rows"]
    sp, ld = rows[0]["splits"], out["load"]
    seeds = ", ".join(str(s) for s in sorted({r["seed"] for r in rows}))
    ticks = ", ".join(f"{c} {n}" for c, n in ld["ticks"].items())
    severity = out.get("task") == "severity"
    metrics = SEVERITY_METRICS if severity else METRICS
    what = (
        f"ratings on the 0-4 scale (per level: {ticks}). "
        if severity
        else f"each the set of types and targets one annotator ticked (ticks per class: {ticks}). "
    )
    head = "a softmax over the 5 levels" if severity else "10 sigmoids"
    higher = "accuracy_majority" if severity else "macro F1"
    lines = [
        # No title of its own: docs/training.md includes this file under its heading.
        f"Run {out['run']}: `{out['command']}`",
        f"Machine: {out['machine']}; {out['total_min']:.1f} min in all.",
        "",
        f"{ld['turns']:,} turns (POST /items with `text`), {ld['votes']:,} votes, {what}"
        f"Split by item id (split seed 0): {sp['train']} train / {sp['validation']} validation "
        f"/ {sp['test']} test. TF-IDF + SVD (256), MLP [64] head with {head}, Adam lr 0.001, "
        "at most 40 epochs (early stopping on the validation loss, patience 8). Test split, "
        f"mean ± sd over seeds {seeds}; lower is better except {higher}.",
        "",
        "| labels | " + " | ".join(metrics) + " |",
        "|---|" + "---|" * len(metrics),
    ]
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["recipe"], []).append(r)
    for recipe, rs in groups.items():
        cells = []
        for k in metrics:
            v = np.array([r["test"][k] for r in rs], dtype=float)
            cells.append(f"{v.mean():.4f}" + (f" ± {v.std(ddof=1):.4f}" if len(v) > 1 else ""))
        lines.append(f"| {recipe} | {' | '.join(cells)} |")
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
