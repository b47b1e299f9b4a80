"""Training throughput of `app.training.trainer.train` against a bare torch loop.

Both run the same model (build_model, default MLP), the same optimizer (Adam), the same
shuffles and the same soft-ce loss on the same in-memory tensors, for the same number of
epochs. The bare loop is only the inner loop (forward, loss, backward, step). train() is timed
as a whole call: eval split hashing, moving data to the device, evaluation and metrics after
every epoch, the history, and serializing the checkpoint all count as its overhead. Samples/s =
training items x epochs / seconds. Goal: train() within 15% of the bare loop.

Scenarios: "digits" (scikit-learn's 1,797 digits, batch 64) and "digits-x32" (the digits
tiled 32 times with small Gaussian noise, 57,504 rows, batch 512: a size where a GPU is busy).
Runs alternate (bare, train, bare, train, ...) after one warm-up each; samples/s are from the
median wall time; the overhead is the ratio of median wall times and, on CPU, also of median
process CPU times (steadier when other work shares the machine: with one torch thread, CPU
time counts only this process's work).

    python benchmarks/train_throughput.py --device cpu --threads 1
    python benchmarks/train_throughput.py --device cuda --out benchmarks/results/cuda.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from app.training.config import TrainingConfig
from app.training.data import TRAIN, TrainingData, build_training_data, split_items
from app.training.models import build_model, standardizer
from app.training.trainer import resolve_device, train

DEFAULT_OUT = Path(__file__).parent / "results" / "train_throughput.md"


@dataclass(frozen=True)
class Scenario:
    name: str
    tile: int  # copies of the digits
    batch_size: int
    epochs: int


SCENARIOS = {
    "digits": Scenario("digits", tile=1, batch_size=64, epochs=30),
    "digits-x32": Scenario("digits-x32", tile=32, batch_size=512, epochs=20),
}


def make_data(tile: int, seed: int = 0) -> TrainingData:
    """Digits with simulated votes (5 per item, 70% right), tiled `tile` times with noise."""
    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    x = np.concatenate([x] + [x + rng.normal(0, 0.5, x.shape) for _ in range(tile - 1)])
    y = np.tile(y, tile)
    counts = np.zeros((len(y), 10), np.int64)
    for _ in range(5):
        votes = np.where(rng.random(len(y)) < 0.7, y, rng.integers(0, 10, len(y)))
        counts[np.arange(len(y)), votes] += 1
    ids = [f"item-{i}" for i in range(len(y))]
    return build_training_data(ids, x, counts, y, {"method": "normalized"})


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Timing:
    wall: float  # seconds, perf_counter
    cpu: float  # process CPU seconds (all threads): robust to other load on a shared machine


class _Clock:
    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __enter__(self) -> _Clock:
        sync(self.device)
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        sync(self.device)
        self.timing = Timing(time.perf_counter() - self._wall, time.process_time() - self._cpu)


def bare_loop(cfg: TrainingConfig, data: TrainingData, device: torch.device) -> tuple[Timing, int]:
    """The hand-written baseline on the same training split; returns (its loop's time, n_train)."""
    tr = split_items(data.item_ids, cfg.effective_split_seed, *cfg.fractions) == TRAIN
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, data.n_features, data.n_classes)
    standardizer(model).fit(data.features[tr])
    model.to(device)
    x = torch.from_numpy(data.features[tr]).to(device)
    y = torch.from_numpy(data.targets[tr].astype(np.float32)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    n = len(x)
    model.train()
    with _Clock(device) as clock:
        for _ in range(cfg.epochs):
            for idx in torch.randperm(n, generator=gen).to(device).split(cfg.batch_size):
                loss = F.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    return clock.timing, n


def train_call(cfg: TrainingConfig, data: TrainingData, device: torch.device) -> tuple[Timing, int]:
    """The whole train() call: setup, per-epoch evaluation, checkpoint included."""
    with _Clock(device) as clock:
        result = train(cfg, data)
    return clock.timing, result.metrics["test"]["n_train"]


def run_scenario(sc: Scenario, device_name: str, repeats: int) -> dict[str, Any]:
    data = make_data(sc.tile)
    cfg = TrainingConfig(
        device=device_name, epochs=sc.epochs, batch_size=sc.batch_size, early_stopping=None
    )
    device = resolve_device(cfg.device)
    bare_loop(cfg, data, device)  # warm-ups: allocator, kernels, lazy CUDA init
    train_call(cfg, data, device)
    bare: list[Timing] = []
    trained: list[Timing] = []
    for _ in range(repeats):
        t, n = bare_loop(cfg, data, device)
        bare.append(t)
        t, n_train = train_call(cfg, data, device)
        trained.append(t)
    assert n == n_train

    def med(ts: list[Timing], field: str) -> float:
        return statistics.median(getattr(t, field) for t in ts)

    samples = n * sc.epochs
    return {
        "scenario": sc.name,
        "device": str(device),
        "n_train": n,
        "batch": sc.batch_size,
        "epochs": sc.epochs,
        "bare_sps": samples / med(bare, "wall"),
        "train_sps": samples / med(trained, "wall"),
        "overhead_wall": med(trained, "wall") / med(bare, "wall") - 1.0,
        "overhead_cpu": med(trained, "cpu") / med(bare, "cpu") - 1.0,
        "bare": bare,
        "train": trained,
    }


def device_label(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs"


def report(rows: list[dict], args: argparse.Namespace, load: tuple[float, float]) -> str:
    lines = [
        "# Training throughput: `train()` vs a bare torch loop",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; torch {torch.__version__}; "
        f"numpy {np.__version__}; Python {platform.python_version()}",
        f"- device: {rows[0]['device']} ({device_label(str(rows[0]['device']))}); "
        f"torch threads: {torch.get_num_threads()}",
        f"- model: default MLP (64-256-10, dropout 0.2), Adam, soft-ce; {args.repeats} "
        "alternating repeats after a warm-up, medians",
        f"- 1-min load average before / after: {load[0]:.2f} / {load[1]:.2f}",
        f"- command: `python benchmarks/train_throughput.py {' '.join(args.argv)}`",
        "",
        "| scenario | n_train | batch | epochs | bare loop (samples/s) | train() (samples/s) "
        "| overhead (wall) | overhead (CPU time) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cpu = f"{100 * r['overhead_cpu']:+.1f}%" if r["device"] == "cpu" else "n/a"
        lines.append(
            f"| {r['scenario']} | {r['n_train']:,} | {r['batch']} | {r['epochs']} "
            f"| {r['bare_sps']:,.0f} | {r['train_sps']:,.0f} | {100 * r['overhead_wall']:+.1f}% "
            f"| {cpu} |"
        )
    lines += [
        "",
        "train() is timed as a whole call, so its one-off setup counts as overhead: hashing the",
        "eval split (about 3 us per item), fitting the input standardization, and serializing",
        "the checkpoint; and so does evaluating the held-out split (20% of items, eval mode,",
        "plus the metrics) after every epoch. The bare loop is only the epochs' inner loop.",
        "",
        "Per-run seconds, wall (CPU):",
        "",
    ]
    for r in rows:
        for name in ("bare", "train"):
            runs = ", ".join(f"{t.wall:.3f} ({t.cpu:.3f})" for t in r[name])
            lines.append(f"- {r['scenario']}, {name}: {runs}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    parser.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="all")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    args.argv = argv if argv is not None else sys.argv[1:]
    if args.threads:
        torch.set_num_threads(args.threads)
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    load_before = os.getloadavg()[0]
    rows = [run_scenario(SCENARIOS[name], args.device, args.repeats) for name in names]
    text = report(rows, args, (load_before, os.getloadavg()[0]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
