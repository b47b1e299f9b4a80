"""Benchmark: worker-quality-aware aggregation, ours (numpy) vs crowd-kit 1.4.2.

Run by hand (takes tens of minutes; crowd-kit dominates):

    .venv/bin/python benchmarks/worker_models.py          # -> benchmarks/results/worker_models.md
    .venv/bin/python benchmarks/worker_models.py --quick  # the 511k project only, ours only
    .venv/bin/python benchmarks/worker_models.py --methods dawid-skene --repeat 5 \\
        --no-real-data --out benchmarks/results/worker_models_ds.md  # one method, medians

Two simulated projects:
- "cifar10h": shaped like CIFAR-10H (Peterson et al. 2019): 10,000 items, 2,500 workers,
  10 classes, 511,000 votes (51-52 per item, ~204 per worker);
- "10M": 200,000 items x 50 votes = 10,000,000 votes, 5,000 workers, 10 classes.

Workers of mixed skill with systematic confusions, hard items and 25% spammers (see
`simulate`); skewed class prior. Data are simulated in a subprocess and each fit runs in a fresh
subprocess that reports wall and CPU seconds of the fit alone (data already loaded) and the peak
RSS of the process (resource.getrusage ru_maxrss), before and after the fit; `--repeat N` runs
each fit N times (a fresh process each) and reports the medians (on a shared machine one wall
time can be several times another). crowd-kit runs in
.venv-crowdkit (requirements-crowdkit.txt) through tests/crowdkit_reference.py; a crowd-kit run
still running after --crowdkit-limit seconds (default 600) is killed and reported as such; on
the 10M project a crowd-kit method whose 511k time, scaled by the vote ratio, exceeds the limit
is not run and the estimate is reported instead. Default parameters for both libraries.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "worker_models.md"
CROWDKIT_PYTHON = Path(
    os.environ.get("CROWDKIT_PYTHON", REPO / ".venv-crowdkit" / "bin" / "python")
)
REFERENCE = REPO / "tests" / "crowdkit_reference.py"
TRUTH_DATA = REPO.parent / "shared" / "data" / "truth-inference"

# crowd-kit 1.4.2 with default parameters: (accuracy, seconds) from
# shared/data/truth-inference/README.md
CROWDKIT_README = {
    "d_sentiment": {
        "wawa": (0.951, 0.06),
        "dawid-skene": (0.960, 0.16),
        "one-coin": (0.949, 0.21),
        "glad": (0.948, 10.06),
        "mace": (0.950, 8.09),
    },
    "s4_Dog_data": {
        "wawa": (0.829, 0.03),
        "dawid-skene": (0.843, 0.26),
        "one-coin": (0.830, 0.93),
        "glad": (0.834, 7.15),
        "mace": (0.830, 8.31),
    },
    # A loaded machine: times indicative. crowd-kit's MACE figure owes to its strategy scramble
    # (tests/test_worker_models.py, test_crowdkit_mace_product_figure_is_its_scramble).
    "d_jn-product": {
        "wawa": (0.897, 0.14),
        "dawid-skene": (0.940, 7.3),
        "one-coin": (0.908, 2.9),
        "glad": (0.928, 164.7),
        "mace": (0.929, 31.6),
    },
}

METHODS: dict[str, str | None] = {  # ours -> crowd-kit class
    "dawid-skene": "DawidSkene",
    "one-coin": "OneCoinDawidSkene",
    "glad": "GLAD",
    "mace": "MACE",
    "wawa": "Wawa",
    "dawid-skene-clustered": None,  # crowd-kit has none
}


@dataclass(frozen=True)
class Project:
    name: str
    n_items: int
    n_workers: int
    n_classes: int
    votes_per_item: float  # mean; counts are floor / ceil of it


PROJECTS = {
    "cifar10h": Project("cifar10h", 10_000, 2_500, 10, 51.1),
    "10M": Project("10M", 200_000, 5_000, 10, 50.0),
}


def simulate(
    p: Project,
    seed: int = 0,
    good_acc: tuple[float, float] = (0.5, 0.9),
    partner_share: tuple[float, float] = (0.3, 0.6),
    hard_share: float = 0.2,
    hard_factor: float = 0.7,
) -> dict[str, np.ndarray]:
    """Votes with distinct workers per item, vectorized (no per-item Python loop).

    Made hard enough that aggregation matters at ~50 votes per item (majority vote ~0.96): good
    workers (60%) have accuracy 0.5-0.9, mediocre ones (15%) 0.12-0.25; each class has a
    confusable partner class that gets 30-60% of a worker's errors (cat/dog); 20% of items are
    hard (accuracy x 0.7 on them); 15% of workers are uniform spammers and 10% always give one
    label.
    """
    rng = np.random.default_rng(seed)
    k = p.n_classes
    truth = rng.choice(k, size=p.n_items, p=rng.dirichlet(np.full(k, 5.0)))
    partner = rng.permutation(k)
    partner = np.where(partner == np.arange(k), (partner + 1) % k, partner)
    kind = rng.choice(4, size=p.n_workers, p=[0.60, 0.15, 0.15, 0.10])
    acc = np.where(
        kind == 0, rng.uniform(*good_acc, p.n_workers), rng.uniform(0.12, 0.25, p.n_workers)
    )
    eye = np.eye(k)
    to_partner = eye[partner]  # (true class, label)
    off = rng.dirichlet(np.ones(k), size=(p.n_workers, k)) * (1 - eye)
    off /= off.sum(axis=2, keepdims=True)
    share = rng.uniform(*partner_share, size=(p.n_workers, 1, 1))  # of the errors, to the partner
    errors = share * to_partner + (1 - share) * off
    hard = rng.random(p.n_items) < hard_share

    base = int(p.votes_per_item)
    extra = round((p.votes_per_item - base) * p.n_items)
    counts = np.full(p.n_items, base)
    counts[rng.choice(p.n_items, extra, replace=False)] += 1
    item = np.repeat(np.arange(p.n_items), counts)
    # Item i's workers are start_i + j * step_i (mod W) for j < count_i: distinct because
    # step_i is coprime with W and count_i <= W.
    steps = np.array([s for s in range(1, p.n_workers) if math.gcd(s, p.n_workers) == 1])
    start = rng.integers(p.n_workers, size=p.n_items)
    step = rng.choice(steps, size=p.n_items)
    j = np.arange(item.size) - np.repeat(np.cumsum(counts) - counts, counts)
    worker = (start[item] + j * step[item]) % p.n_workers
    label = np.empty(item.size, dtype=np.int64)
    const = rng.integers(k, size=p.n_workers)
    chunk = 1_000_000
    for s in range(0, item.size, chunk):
        it, w = item[s : s + chunk], worker[s : s + chunk]
        t = truth[it]
        a = acc[w] * np.where(hard[it], hard_factor, 1.0)
        rows = a[:, None] * eye[t] + (1 - a)[:, None] * errors[w, t]
        rows[kind[w] == 2] = 1.0 / k
        rows[kind[w] == 3] = eye[const[w[kind[w] == 3]]]
        u = rng.random(it.size)
        label[s : s + chunk] = np.minimum((u[:, None] > np.cumsum(rows, axis=1)).sum(axis=1), k - 1)
    return {
        "item": item,
        "worker": worker,
        "label": label,
        "truth": truth,
        "n_items": np.int64(p.n_items),
        "n_workers": np.int64(p.n_workers),
        "n_classes": np.int64(k),
    }


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# ----- child processes ------------------------------------------------------------------------


def child_ours(data_path: str, method: str, out_path: str) -> None:
    sys.path.insert(0, str(REPO))
    from app.aggregation.base import WorkerAggregator
    from app.aggregation.registry import resolve_method
    from app.aggregation.votes import VoteArrays

    with np.load(data_path) as z:
        d = {k: z[k] for k in z.files}
    votes = VoteArrays(
        d["item"],
        d["worker"],
        d["label"],
        int(d["n_items"]),
        int(d["n_workers"]),
        int(d["n_classes"]),
    )
    m = resolve_method(method, {})
    assert isinstance(m, WorkerAggregator)
    rss_before = max_rss_mb()
    start, cpu_start = time.perf_counter(), time.process_time()
    fit = m.fit(votes).result_
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    acc = float((fit.probs.argmax(1) == d["truth"]).mean())
    Path(out_path).write_text(
        json.dumps(
            {
                "seconds": seconds,
                "cpu_seconds": cpu_seconds,
                "rss_before_mb": rss_before,
                "max_rss_mb": max_rss_mb(),
                "accuracy": acc,
                "n_iter": fit.n_iter,
                "converged": fit.converged,
            }
        )
    )


def child_simulate(pname: str, data_path: str, votes_path: str) -> None:
    p = PROJECTS[pname]
    data = simulate(p)
    np.savez(data_path, **data)  # type: ignore[arg-type]
    np.savez(
        votes_path,
        item=data["item"],
        worker=data["worker"],
        label=data["label"],
        n_items=data["n_items"],
        n_classes=data["n_classes"],
    )
    mv = np.bincount(
        data["item"] * p.n_classes + data["label"], minlength=p.n_items * p.n_classes
    ).reshape(p.n_items, -1)
    info = {
        "n_votes": int(data["item"].size),
        "mv_acc": float((mv.argmax(1) == data["truth"]).mean()),
    }
    print(json.dumps(info))


# ----- parent ---------------------------------------------------------------------------------


def run_ours(data_path: Path, method: str, tmp: Path, repeat: int = 1) -> dict[str, Any]:
    out = tmp / f"ours-{method}.json"
    runs = []
    for _ in range(repeat):
        subprocess.run(
            [sys.executable, __file__, "--child", str(data_path), method, str(out)], check=True
        )
        runs.append(dict(json.loads(out.read_text())))
    return median_run(runs)


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One fit's figures; with several runs (each in a fresh process), the run of median wall
    seconds, with the medians of wall and CPU seconds and every run's seconds."""
    if len(runs) == 1:
        return runs[0]
    res = dict(sorted(runs, key=lambda r: float(r["seconds"]))[len(runs) // 2])
    res["seconds"] = float(np.median([r["seconds"] for r in runs]))
    if all("cpu_seconds" in r for r in runs):
        res["cpu_seconds"] = float(np.median([r["cpu_seconds"] for r in runs]))
    res["runs_seconds"] = [round(float(r["seconds"]), 4) for r in runs]
    return res


def run_crowdkit(
    truth: np.ndarray, votes_path: Path, cls: str, tmp: Path, limit: float, repeat: int = 1
) -> dict[str, Any]:
    """crowd-kit with default parameters, killed after `limit` seconds.

    MACE runs one restart and reports 10x its time: crowd-kit passes the same random_state to
    each of its 10 default restarts, so they are identical (tests/test_worker_models.py asserts
    it) and one restart gives the default's exact output. A killed iterative run is followed by
    a 1-iteration probe, to report the cost of one EM iteration.
    """
    kwargs: dict[str, Any] = {"n_restarts": 1} if cls == "MACE" else {}
    runs = [_crowdkit_job(votes_path, cls, kwargs, tmp / f"ck-{cls}", limit)]
    while len(runs) < repeat and not runs[-1].get("timeout"):
        runs.append(_crowdkit_job(votes_path, cls, kwargs, tmp / f"ck-{cls}", limit))
    res = runs[-1] if runs[-1].get("timeout") else median_run(runs)
    if res.get("timeout"):
        out: dict[str, Any] = {
            "skipped": f"killed after {limit:.0f} s",
            "seconds_lower_bound": limit,
        }
        if cls in ("DawidSkene", "OneCoinDawidSkene", "GLAD"):
            probe = _crowdkit_job(votes_path, cls, {"n_iter": 1}, tmp / f"ck-probe-{cls}", limit)
            if not probe.get("timeout"):
                out["probe_seconds"] = probe["seconds"]
        return out
    if cls == "MACE":
        res["seconds"] *= 10
        if "cpu_seconds" in res:
            res["cpu_seconds"] *= 10
        res["note"] = "1 of its 10 identical restarts timed, x10"
    probs = np.load(str(tmp / f"ck-{cls}.npy"))
    voted = ~np.isnan(probs).any(axis=1)
    res["accuracy"] = float((np.where(voted, probs.argmax(1), -1) == truth).mean())
    return res


def _crowdkit_job(
    votes_path: Path, cls: str, kwargs: dict[str, Any], out: Path, timeout: float
) -> dict[str, Any]:
    jobs = out.with_suffix(".jobs.json")
    jobs.write_text(
        json.dumps(
            [{"votes": str(votes_path), "method": cls, "kwargs": kwargs, "out": str(out) + ".npy"}]
        )
    )
    try:
        subprocess.run(
            [str(CROWDKIT_PYTHON), str(REFERENCE), str(jobs)], check=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"timeout": True}
    return dict(json.loads(Path(str(out) + ".npy.json").read_text()))


def fmt_s(x: float | None) -> str:
    if x is None:
        return "-"
    if x < 0.01:
        return f"{x:.4f}"
    return f"{x:.3f}" if x < 1 else f"{x:.2f}" if x < 10 else f"{x:.0f}" if x >= 100 else f"{x:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="511k project, ours only")
    ap.add_argument("--no-crowdkit", action="store_true")
    ap.add_argument("--projects", nargs="*", default=list(PROJECTS))
    ap.add_argument("--methods", nargs="*", default=list(METHODS))
    ap.add_argument("--crowdkit-limit", type=float, default=600.0)
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="fits per method and library, each in a fresh process (median reported)",
    )
    ap.add_argument("--no-real-data", action="store_true", help="skip the truth-inference section")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--save-raw", type=Path, help="also save the raw measurements as JSON")
    ap.add_argument(
        "--render", type=Path, help="only rewrite --out from a --save-raw JSON of an earlier run"
    )
    args = ap.parse_args()
    if args.render:
        raw = json.loads(args.render.read_text())
        write_results(args.out, raw)
        return
    projects = ["cifar10h"] if args.quick else args.projects
    use_ck = not (args.quick or args.no_crowdkit) and CROWDKIT_PYTHON.exists()

    load_start = os.getloadavg()
    rows: list[tuple[str, int, float, str, dict[str, Any], dict[str, Any]]] = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for pname in projects:
            # Simulated in a subprocess: Linux carries a parent's peak RSS into the children it
            # forks, so the parent stays small for the children's ru_maxrss to mean something.
            data_path, votes_path = tmp / f"{pname}.npz", tmp / f"{pname}-votes.npz"
            cmd = [sys.executable, __file__, "--simulate", pname, str(data_path), str(votes_path)]
            info = json.loads(subprocess.run(cmd, check=True, capture_output=True).stdout)
            n_votes, mv_acc = int(info["n_votes"]), float(info["mv_acc"])
            with np.load(data_path) as z:
                truth = z["truth"]
            print(f"{pname}: {n_votes:,} votes, majority-vote accuracy {mv_acc:.4f}", flush=True)
            for method in args.methods:
                ours = run_ours(data_path, method, tmp, args.repeat)
                print(f"  ours {method}: {ours}", flush=True)
                ck: dict[str, Any] = {"skipped": "crowd-kit venv not used"}
                estimate = _scaled_estimate(rows, method, n_votes)
                if use_ck and estimate is not None and estimate[0] > args.crowdkit_limit:
                    bound = ">" if estimate[1] else "~"
                    ck = {
                        "skipped": f"not run: {bound}{estimate[0]:.0f} s estimated (its time on "
                        "the 511k project x the vote ratio)"
                    }
                elif METHODS[method] is None:
                    ck = {"skipped": "crowd-kit has no such method"}
                elif use_ck:
                    ck_name = METHODS[method]
                    assert ck_name is not None
                    ck = run_crowdkit(
                        truth, votes_path, ck_name, tmp, args.crowdkit_limit, args.repeat
                    )
                print(f"  crowd-kit {METHODS[method]}: {ck}", flush=True)
                rows.append((pname, n_votes, mv_acc, method, ours, ck))
    raw = {
        "generated": time.strftime("%Y-%m-%d %H:%M"),
        "load_start": load_start[0],
        "load_end": os.getloadavg()[0],
        "repeat": args.repeat,
        "real_data": not args.no_real_data,
        "rows": rows,
    }
    if args.save_raw:
        args.save_raw.write_text(json.dumps(raw, indent=1))
    write_results(args.out, raw)


def _scaled_estimate(
    rows: list[tuple[str, int, float, str, dict[str, Any], dict[str, Any]]],
    method: str,
    n_votes: int,
) -> tuple[float, bool] | None:
    """crowd-kit's seconds on an earlier, smaller project scaled linearly to n_votes, and
    whether that is only a lower bound (the smaller run was killed)."""
    for _, n, _, m, _, ck in rows:
        if m != method or n >= n_votes:
            continue
        if "seconds" in ck:
            return float(ck["seconds"]) * n_votes / n, False
        if "seconds_lower_bound" in ck:
            return float(ck["seconds_lower_bound"]) * n_votes / n, True
    return None


def real_data_lines() -> list[str]:
    """Ours on the truth-inference sets (median of 3 in-process fits) vs crowd-kit's README
    figures (same machine kind, median of 3)."""
    sys.path.insert(0, str(REPO))
    from app.aggregation.base import WorkerAggregator
    from app.aggregation.registry import resolve_method
    from app.aggregation.votes import VoteArrays

    lines = [
        "## Real data: truth-inference sets (Zheng et al., PVLDB 2017)",
        "",
        "Ours: median of 3 fits in one process, default parameters. crowd-kit: the figures in "
        "shared/data/truth-inference/README.md (default parameters, median of 3).",
        "",
        "| data set | votes | method | ours acc | crowd-kit acc | ours s | crowd-kit s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, reference in CROWDKIT_README.items():
        folder = TRUTH_DATA / name
        if not (folder / "answers.csv").exists():
            lines.append(f"| {name} | data not found | | | | | |")
            continue
        rows = np.loadtxt(folder / "answers.csv", dtype=str, delimiter=",", skiprows=1)
        truth_rows = np.loadtxt(folder / "truth.csv", dtype=str, delimiter=",", skiprows=1)
        items, item = np.unique(rows[:, 0], return_inverse=True)
        _, worker = np.unique(rows[:, 1], return_inverse=True)
        classes = sorted(set(rows[:, 2]) | set(truth_rows[:, 1]), key=int)
        code = {c: i for i, c in enumerate(classes)}
        votes = VoteArrays(
            item,
            worker,
            np.array([code[c] for c in rows[:, 2]]),
            items.size,
            int(worker.max()) + 1,
            len(classes),
        )
        pos = {it: i for i, it in enumerate(items)}
        known = np.array([pos[it] for it, _ in truth_rows if it in pos])
        truth = np.array([code[lab] for it, lab in truth_rows if it in pos])
        for method, (ck_acc, ck_s) in reference.items():
            m = resolve_method(method, {})
            assert isinstance(m, WorkerAggregator)
            times = []
            for _ in range(3):
                start = time.perf_counter()
                fit = m.fit(votes).result_
                times.append(time.perf_counter() - start)
            acc = float((fit.probs[known].argmax(1) == truth).mean())
            lines.append(
                f"| {name} | {votes.n_votes:,} | {method} | {acc:.3f} | {ck_acc:.3f} "
                f"| {fmt_s(float(np.median(times)))} | {fmt_s(ck_s)} |"
            )
    return lines


def fmt_cpu(res: dict[str, Any]) -> str:
    """Wall seconds, with CPU seconds in parentheses where measured."""
    cpu = res.get("cpu_seconds")
    return fmt_s(res["seconds"]) + ("" if cpu is None else f" ({fmt_s(cpu)})")


def speed_up(ck: dict[str, Any], ours: dict[str, Any]) -> str:
    """crowd-kit seconds / ours, wall (CPU where both were measured)."""
    out = f"{ck['seconds'] / ours['seconds']:.0f}x"
    if "cpu_seconds" in ck and "cpu_seconds" in ours:
        out += f" ({ck['cpu_seconds'] / ours['cpu_seconds']:.0f}x)"
    return out


def write_results(path: Path, raw: dict[str, Any]) -> None:
    rows = raw["rows"]
    repeat = int(raw.get("repeat", 1))
    each = (
        "each number is one run"
        if repeat == 1
        else f"each time is the median of {repeat} fits, each in a fresh process"
    )
    lines = [
        "# Worker-quality-aware aggregation: ours vs crowd-kit 1.4.2",
        "",
        f"Generated by `benchmarks/worker_models.py` on {raw['generated']}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, numpy {np.__version__}; "
        f"load average {raw['load_start']:.1f} at start, {raw['load_end']:.1f} at end (other jobs "
        f"shared the machine, so absolute times are noisy; {each}).",
        "",
        "Default parameters for both libraries. Seconds: the fit alone, data already in memory; "
        "wall seconds, with the CPU seconds of the process (user + system) in parentheses where "
        "measured, and the speed-up by each. Peak RSS: whole process (ru_maxrss), with the part "
        "before the fit (Python, numpy, the loaded votes) in parentheses. Accuracy: argmax vs "
        "the simulated truth.",
        "",
        "| project | votes | method | ours s | ours peak RSS MB | ours acc | ours iters "
        "| crowd-kit s | crowd-kit peak RSS MB | crowd-kit acc | speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for pname, n_votes, _, method, ours, ck in rows:
        if "seconds_lower_bound" in ck:
            bound = ck["seconds_lower_bound"]
            probe = ck.get("probe_seconds")
            probe_note = f"; its 1st iteration alone took {fmt_s(probe)} s" if probe else ""
            ck_cells = (
                f"> {bound:.0f} (killed{probe_note}) | - | - | > {bound / ours['seconds']:.0f}x"
            )
        elif "skipped" in ck:
            ck_cells = f"{ck['skipped']} | - | - | -"
        else:
            note = f" ({ck['note']})" if "note" in ck else ""
            rss = f"{ck['max_rss_mb']:.0f} ({ck['rss_before_mb']:.0f})"
            ck_cells = f"{fmt_cpu(ck)}{note} | {rss} | {ck['accuracy']:.4f} | {speed_up(ck, ours)}"
        lines.append(
            f"| {pname} | {n_votes:,} | {method} | {fmt_cpu(ours)} "
            f"| {ours['max_rss_mb']:.0f} ({ours['rss_before_mb']:.0f}) | {ours['accuracy']:.4f} "
            f"| {ours['n_iter']}{'' if ours['converged'] else ' (max)'} | {ck_cells} |"
        )
    accs = sorted({(p, n, a) for p, n, a, *_ in rows})
    lines += ["", "Majority vote accuracy: " + ", ".join(f"{p} {a:.4f}" for p, _, a in accs), ""]
    if raw.get("real_data", True):
        lines += [*real_data_lines(), ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child_ours(*sys.argv[2:5])
    elif len(sys.argv) > 1 and sys.argv[1] == "--simulate":
        child_simulate(*sys.argv[2:5])
    else:
        main()
