"""The trainer's CUDA path, checked against its CPU path (run by hand on a GPU machine).

Trains the same config on digits with simulated crowd labels on CPU and on CUDA and reports
both runs' metrics and seconds, that the CUDA checkpoint rebuilds on CPU and predicts like the
CUDA model, and that a CUDA run is seeded (two runs agree to float tolerance; CUDA kernels are
not bit-deterministic). Writes a markdown report to --out.

    python benchmarks/cuda_check.py --out benchmarks/results/cuda_check.md
"""

from __future__ import annotations

import argparse
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits

from app.training.config import TrainingConfig
from app.training.data import build_training_data
from app.training.trainer import load_checkpoint, predict_probs, train


def crowd_data(seed: int = 0):  # type: ignore[no-untyped-def]
    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    counts = np.zeros((len(y), 10), np.int64)
    for _ in range(8):
        lab = np.where(rng.random(len(y)) < 0.75, y, rng.integers(0, 10, len(y)))
        counts[np.arange(len(y)), lab] += 1
    ids = [f"digit-{i}" for i in range(len(y))]
    return build_training_data(ids, x, counts, y, {"method": "normalized"})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    assert torch.cuda.is_available(), "needs a CUDA device"
    data = crowd_data()
    lines = [
        "# Trainer: CUDA path against CPU",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; torch {torch.__version__}; "
        f"GPU {torch.cuda.get_device_name(0)}; Python {platform.python_version()}; "
        "command `python benchmarks/cuda_check.py --out ...`",
        "",
        "| run | device | epochs | accuracy | nll | ece | kl_human | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    runs = {}
    for name, device, extra in [
        ("mlp", "cpu", {}),
        ("mlp", "cuda", {}),
        ("mlp again", "cuda", {}),
        ("mlp + lwr", "cuda", {"lwr": {"k": 5, "tau": 4.0}}),
    ]:
        cfg = TrainingConfig(epochs=60, early_stopping=None, device=device, **extra)
        t = time.perf_counter()
        res = train(cfg, data)
        if device == "cuda":
            torch.cuda.synchronize()
        secs = time.perf_counter() - t
        ev = res.metrics["test"]
        runs[(name, device)] = res
        lines.append(
            f"| {name} | {res.metrics['device']} | {res.metrics['epochs_run']} | "
            f"{ev['accuracy']:.4f} | {ev['nll']:.4f} | {ev['ece']:.4f} | "
            f"{ev['kl_human']:.4f} | {secs:.2f} |"
        )
    gpu = runs[("mlp", "cuda")]
    again = runs[("mlp again", "cuda")]
    cpu_model, _, _ = load_checkpoint(gpu.checkpoint)
    p_cpu = predict_probs(cpu_model, data.features)
    p_gpu = predict_probs(gpu.model, data.features)
    d_ckpt = float(np.abs(p_cpu - p_gpu).max())
    d_again = abs(gpu.metrics["test"]["nll"] - again.metrics["test"]["nll"])
    d_devices = abs(
        gpu.metrics["test"]["accuracy"] - runs[("mlp", "cpu")].metrics["test"]["accuracy"]
    )
    lines += [
        "",
        f"- CUDA checkpoint rebuilt on CPU: max |p_cpu - p_cuda| over 1,797 images = {d_ckpt:.2e}",
        f"- two seeded CUDA runs: |nll difference| = {d_again:.2e}",
        f"- CPU vs CUDA accuracy difference: {d_devices:.4f}",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    assert d_ckpt < 1e-4, d_ckpt


if __name__ == "__main__":
    main()
