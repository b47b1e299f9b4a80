"""Benchmark (by hand): the small CNN on CIFAR-10H's images through the service, hard labels vs
the human distribution.

    DATABASE_URL=postgresql://... PYTHONPATH=. .venv/bin/python benchmarks/cifar10h_images.py \
        [--epochs 10] [--seeds 0,1] [--threads 1] [--n 9500]

-> benchmarks/results/cifar10h_images.md (+ .json)

J. Peterson, R. Battleday, T. Griffiths, O. Russakovsky, "Human uncertainty makes classification
more robust", ICCV 2019: training on CIFAR-10H's per-image human label distributions instead of
one-hot labels generalizes better and fits the human distribution better. They fine-tuned
CIFAR-10-trained networks on the 10,000 CIFAR-10H images with 10-fold cross-validation; here a
small CNN is trained from scratch on those images alone (no CIFAR-10 training set), for a few
epochs on a shared 2-core CPU, so its accuracy is far below theirs: the comparison is between
the two targets, same everything else. The run is kept short for this shared 2-core machine:
10 epochs and two seeds, about half an hour in all at one torch thread; `--epochs` and
`--seeds` make it longer.

Everything goes through the service, as a user's would: a project with the CIFAR-10 class
names; the images uploaded as PNG files (POST /items with `image`, base64); the crowd's votes
(POST /votes: counts.npy has no worker ids, so each image's j-th vote is worker `w<j>`); then
one training job per recipe and seed, taken by a real `softlabels worker` (one torch thread),
which reads the images from PostgreSQL, encodes and trains. Recipes (the same seeds and the
same 70/15/15 split by item id, split seed 0; encoder small-cnn 32x32, widths 32-64-128,
random crop and flip, the default MLP head, Adam):
- hard: labels "majority" (argmax of the counts, ties to the lowest class), loss hard-ce;
- soft: labels "normalized" (counts / total = CIFAR-10H's published probs), loss soft-ce.
Figures on the job's test split (held-out images, nothing selected on them): accuracy, NLL
and ECE against the CIFAR-10 labels, KL(human || model) against the counts; the model kept is
the epoch's with the lowest validation loss. Then each model predicts, through POST /predict
with the image files, on images it never saw in any form: rows 9,500-9,999 (JPEG copies of
the last 500 CIFAR-10 test images, see the data README), scored the same way.

Time per epoch: between consecutive epochs' progress reports of the job (one training epoch
and its validation pass); encoding: the job's metrics.encoder (PNG decoding of every image).
"""

from __future__ import annotations

import argparse
import base64
import io
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

from benchmarks.live_service import live_service, run_job  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "cifar10h"
RESULTS = REPO / "benchmarks" / "results"
RECIPES = {
    "hard (majority, hard-ce)": {"labels": {"method": "majority"}, "loss": "hard-ce"},
    "soft (CIFAR-10H distribution, soft-ce)": {
        "labels": {"method": "normalized"},
        "loss": "soft-ce",
    },
}
BASE = {
    "encoder": {"name": "small-cnn", "size": 32, "widths": [32, 64, 128], "augment": True},
    "lr": 0.003,
    "weight_decay": 5e-4,
    "batch_size": 128,
    "device": "cpu",
    "split_seed": 0,
}
METRICS = ("accuracy", "nll", "ece", "kl_human")
EXACT = 9500  # rows 0..9499 hold the exact pixels; 9500..9999 are JPEG copies


def png(a: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def load(client: Any, project: str, x: np.ndarray, counts: np.ndarray, gold: np.ndarray) -> dict:
    classes = (DATA / "classes.txt").read_text().split()
    client.post("/v1/projects", json={"name": project, "classes": classes}).raise_for_status()
    t0 = time.perf_counter()
    for s in range(0, len(x), 500):
        items = [
            {"id": f"cifar10h-{i}", "image": png(x[i]), "gold": int(gold[i])}
            for i in range(s, min(s + 500, len(x)))
        ]
        client.post(f"/v1/projects/{project}/items", json={"items": items}).raise_for_status()
    t1 = time.perf_counter()
    votes = [
        {"item": f"cifar10h-{i}", "worker": f"w{j}", "label": int(c)}
        for i in range(len(x))
        for j, c in enumerate(np.repeat(np.arange(counts.shape[1]), counts[i]))
    ]
    for s in range(0, len(votes), 25_000):
        client.post(
            f"/v1/projects/{project}/votes", json={"votes": votes[s : s + 25_000]}
        ).raise_for_status()
    t2 = time.perf_counter()
    print(f"{len(x)} images in {t1 - t0:.0f} s, {len(votes)} votes in {t2 - t1:.0f} s", flush=True)
    return {"images": len(x), "votes": len(votes), "upload_s": t1 - t0, "votes_s": t2 - t1}


def predict_unseen(client: Any, job_id: int, x: np.ndarray, counts: np.ndarray, gold: np.ndarray):
    """The job's model on images it never saw, through POST /predict: the same figures."""
    from app.training.metrics import compute_metrics

    probs = []
    for s in range(0, len(x), 250):
        r = client.post(
            f"/v1/training-jobs/{job_id}/predict",
            json={"images": [png(a) for a in x[s : s + 250]]},
        )
        r.raise_for_status()
        probs += r.json()["probs"]
    m = compute_metrics(np.asarray(probs), counts, gold, n_train=0)
    return {k: m[k] for k in METRICS}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", default="0,1", help="comma-separated, e.g. 0,1,2")
    parser.add_argument("--threads", type=int, default=1, help="the worker's torch threads")
    parser.add_argument("--n", type=int, default=EXACT, help="images 0..n-1 (at most 9500)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    n = min(args.n, EXACT)
    x_all = np.load(DATA / "images.npz")["x"]
    counts_all = np.load(DATA / "counts.npy")
    gold_all = np.load(DATA / "cifar10_test_labels.npy")
    x, counts, gold = x_all[:n], counts_all[:n], gold_all[:n]
    unseen = slice(EXACT, len(x_all))

    out: dict[str, Any] = {
        "run": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "command": "DATABASE_URL=... PYTHONPATH=. .venv/bin/python benchmarks/cifar10h_images.py "
        f"--epochs {args.epochs} --seeds {args.seeds} --threads {args.threads} --n {n}",
        "machine": f"{platform.machine()}, shared 2-core CPU, {args.threads} torch thread(s)",
        "rows": {},
    }
    t0 = time.perf_counter()
    with live_service("softlabels_bench_cifar", args.threads) as client:
        project = f"cifar10h-{uuid.uuid4().hex[:6]}"
        out["load"] = load(client, project, x, counts, gold)
        for name, recipe in RECIPES.items():
            for seed in seeds:
                stamps: dict[int, float] = {}

                def seen(progress: dict[str, Any], at: float, stamps: dict = stamps) -> None:
                    if "epoch" in progress:
                        stamps.setdefault(int(progress["epoch"]), at)

                cfg = {**BASE, **recipe, "epochs": args.epochs, "seed": seed}
                job = run_job(client, project, cfg, on_progress=seen)
                m = job["metrics"]
                ticks = [stamps[e] for e in sorted(stamps)]
                row = {
                    "job": job["id"],
                    "seed": seed,
                    "test": {k: m["test"][k] for k in METRICS},
                    "unseen": predict_unseen(
                        client, job["id"], x_all[unseen], counts_all[unseen], gold_all[unseen]
                    ),
                    "epoch_s": float(np.mean(np.diff(ticks))) if len(ticks) > 1 else None,
                    "encoder": m["encoder"],
                    "splits": m["splits"],
                    "best_epoch": m["best_epoch"],
                    "seconds": m["seconds"],
                }
                print(name, json.dumps(row, default=str), flush=True)
                out["rows"].setdefault(name, []).append(row)
    out["total_min"] = (time.perf_counter() - t0) / 60
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cifar10h_images.json").write_text(json.dumps(out, indent=1, default=str))
    write_markdown(out, args.epochs)


def write_markdown(out: dict[str, Any], epochs: int) -> None:
    def cell(rows: list[dict], get: Any) -> str:
        v = np.array([get(r) for r in rows], dtype=float)
        return f"{v.mean():.4f}" + (f" ± {v.std(ddof=1):.4f}" if len(v) > 1 else "")

    first = next(iter(out["rows"].values()))[0]
    sp, enc = first["splits"], first["encoder"]
    ld = out["load"]
    lines = [
        # No title of its own: docs/training.md includes this file under its heading.
        f"Run {out['run']}: `{out['command']}`",
        f"Machine: {out['machine']}; {out['total_min']:.1f} min in all.",
        "",
        f"{ld['images']} images uploaded as PNG files in {ld['upload_s']:.0f} s, "
        f"{ld['votes']:,} votes in {ld['votes_s']:.0f} s (POST /items, POST /votes); each job "
        f"read and decoded them in the worker ({enc['computed']} images, "
        f"{enc['encode_items_per_second']} images/s decoding). Split by item id (split seed 0): "
        f"{sp['train']} train / {sp['validation']} validation / {sp['test']} test. small-cnn "
        f"(32x32, widths 32-64-128, crop + flip) + MLP [256] head, Adam lr 0.003, weight decay "
        f"5e-4, batch 128, **{epochs} epochs only** (a short CPU run: far from converged, and far "
        "below Peterson et al.'s fine-tuned networks). Mean ± sd over seeds when more than one.",
        "",
        "| recipe | split | accuracy | nll | ece | kl_human | s / epoch |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, rows in out["rows"].items():
        for split, label in (("test", "test (held-out)"), ("unseen", "500 unseen (JPEG)")):
            metrics = " | ".join(cell(rows, lambda r, k=k, s=split: r[s][k]) for k in METRICS)
            per_epoch = cell(rows, lambda r: r["epoch_s"]) if split == "test" else ""
            lines.append(f"| {name} | {label} | {metrics} | {per_epoch} |")
    lines += [
        "",
        "accuracy, nll, ece (15 bins): against the CIFAR-10 labels; kl_human: KL(human || "
        "model) against the CIFAR-10H counts (Peterson et al.'s measure). test: the job's test "
        "split (images uploaded and voted, never trained on or selected on); 500 unseen: rows "
        "9,500-9,999, JPEG copies never uploaded, predicted through POST /predict with their "
        "files. s / epoch: one training epoch and its validation pass, between the job's "
        "progress reports.",
    ]
    (RESULTS / "cifar10h_images.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
