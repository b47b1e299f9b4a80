"""Benchmark (by hand): the small CNN on CIFAR-10H's images, hard labels vs the human distribution.

    PYTHONPATH=. .venv/bin/python benchmarks/cifar10h_images.py [--epochs 10] [--seeds 0]
        [--threads 1] [--n 9500]

-> benchmarks/results/cifar10h_images.md

J. Peterson, R. Battleday, T. Griffiths, O. Russakovsky, "Human uncertainty makes classification
more robust", ICCV 2019: training on CIFAR-10H's per-image human label distributions instead of
one-hot labels generalizes better and fits the human distribution better. They fine-tuned
CIFAR-10-trained networks on the 10,000 CIFAR-10H images with 10-fold cross-validation; here a
small CNN is trained from scratch on those images alone (no CIFAR-10 training set), for a few
epochs on a shared 2-core CPU, so its accuracy is far below theirs: the comparison is between
the two targets, same everything else.

Both recipes go through `app.training.content.train_on_content` (the entry point the worker
will call; no API, no database): encoder small-cnn (32x32, widths 32-64-128, random crop and
flip), the default MLP head, Adam, the same seeds and the same 70/15/15 split by item id.
- hard: labels "majority" (argmax of the counts, ties to the lowest class), loss hard-ce;
- soft: labels "normalized" (counts / total = CIFAR-10H's published probs), loss soft-ce.
Figures on the test split (nothing selected on it): accuracy, NLL and ECE against the CIFAR-10
labels, KL(human || model) against the counts. As in every job, the model kept is the epoch's
with the lowest validation loss (each recipe's own loss; the trainer's early stopping, patience
20, never stops runs this short).

Images: `/work/shared/data/cifar10h/images.npz` rows 0..n-1 (default 9,500: the rows that hold
the exact pixels; rows 9,500-9,999 are JPEG copies, see its README).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

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
}
METRICS = ("accuracy", "nll", "ece", "kl_human", "accuracy_majority")


def run(cfg_raw: dict[str, Any], ids: list[str], x: np.ndarray, counts: Any, gold: Any) -> dict:
    from app.training.config import TrainingConfig
    from app.training.content import train_on_content

    stamps: list[float] = []
    start = time.perf_counter()
    res = train_on_content(
        TrainingConfig.model_validate(cfg_raw),
        ids,
        x,
        counts,
        gold,
        on_epoch=lambda row: stamps.append(time.perf_counter()),
    )
    # between consecutive epochs' ends: the one-off setup (encoding, split) is not counted
    epoch_s = np.diff(stamps) if len(stamps) > 1 else np.array([stamps[0] - start])
    hist = res.metrics["history"]
    print(
        f"  seed {cfg_raw['seed']}: test acc {res.metrics['test']['accuracy']:.4f}, "
        f"{np.mean(epoch_s):.1f} s/epoch, val acc by epoch "
        f"{[round(h['accuracy'], 3) for h in hist]}",
        flush=True,
    )
    return {
        **{k: res.metrics["test"][k] for k in METRICS},
        "epoch_s": float(np.mean(epoch_s)),
        "splits": res.metrics["splits"],
        "encode": res.metrics["encoder"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", default="0", help="comma-separated, e.g. 0,1,2")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--n", type=int, default=9500, help="images 0..n-1")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    x = np.load(DATA / "images.npz")["x"][: args.n]
    counts = np.load(DATA / "counts.npy")[: args.n]
    gold = np.load(DATA / "cifar10_test_labels.npy")[: args.n]
    ids = [f"cifar10h-{i}" for i in range(args.n)]

    rows: dict[str, list[dict[str, Any]]] = {}
    t0 = time.perf_counter()
    for name, recipe in RECIPES.items():
        print(name, flush=True)
        for seed in seeds:
            cfg = {**BASE, **recipe, "epochs": args.epochs, "seed": seed, "split_seed": 0}
            rows.setdefault(name, []).append(run(cfg, ids, x, counts, gold))
    total = time.perf_counter() - t0

    def cell(name: str, key: str) -> str:
        v = np.array([r[key] for r in rows[name]], dtype=float)
        return f"{v.mean():.4f}" + (f" ± {v.std(ddof=1):.4f}" if len(v) > 1 else "")

    first = next(iter(rows.values()))[0]
    sp = first["splits"]
    lines = [
        "# CIFAR-10H images: small CNN from scratch, hard vs soft labels",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: `PYTHONPATH=. .venv/bin/python "
        f"benchmarks/cifar10h_images.py --epochs {args.epochs} --seeds {args.seeds} "
        f"--threads {args.threads} --n {args.n}`",
        f"Machine: {platform.machine()}, {torch.get_num_threads()} torch thread(s) on a shared "
        f"2-core CPU, torch {torch.__version__}; {total / 60:.1f} min in all.",
        "",
        f"Images 0-{args.n - 1} of CIFAR-10H (exact pixels), split by item id (split seed 0): "
        f"{sp['train']} train / {sp['validation']} validation / {sp['test']} test. "
        f"small-cnn (32x32, widths 32-64-128, crop + flip) + MLP [256] head, Adam lr 0.003, "
        f"weight decay 5e-4, batch 128, **{args.epochs} epochs only** (a short CPU run: far "
        f"from converged, and far below Peterson et al.'s fine-tuned networks); seeds "
        f"{args.seeds}. Test split; mean ± sd over seeds when more than one.",
        "",
        "| recipe | accuracy | nll | ece | kl_human | s / epoch |",
        "|---|---|---|---|---|---|",
    ]
    for name in rows:
        lines.append(
            f"| {name} | {cell(name, 'accuracy')} | {cell(name, 'nll')} | {cell(name, 'ece')} "
            f"| {cell(name, 'kl_human')} | {cell(name, 'epoch_s')} |"
        )
    lines += [
        "",
        "accuracy, nll, ece (15 bins): against the CIFAR-10 labels; kl_human: KL(human || "
        "model) against the CIFAR-10H counts (Peterson et al.'s measure). s / epoch: one "
        "training epoch plus the validation pass. The model reported is the epoch's with the "
        "lowest validation loss (each recipe's own loss), as in every training job.",
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cifar10h_images.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
