"""Accuracy table: every worker model on the simulator's crowd shapes and the visible real sets,
next to majority vote and crowd-kit 1.4.2's same method (default parameters for both).

    .venv/bin/python benchmarks/robust_crowds.py   # -> benchmarks/results/robust_crowds.md
                                                   #    and robust_crowds.json (every number)

Crowds: app/aggregation/simulate.py (two seeds per shape), shared/data/truth-inference
(d_sentiment, s4_Dog_data, d_jn-product) and shared/data/music-genre.

`auto`'s rank agreement: on each crowd, its held-out scores (one per candidate) are compared
with the candidates' accuracy on truth: Spearman's rho and Kendall's tau-b between the two
orderings, whether the pick is the most accurate method, how many points it loses to the most
accurate one, and whether held-out likelihood could tell the pick from the others at all
(app/aggregation/select.py: within 2 paired standard errors = cannot tell).

crowd-kit runs in .venv-crowdkit (CROWDKIT_PYTHON) through
tests/crowdkit_reference.py, all jobs in one subprocess; without it the column is left empty.
Takes a few minutes (crowd-kit's GLAD and MACE dominate).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.aggregation.base import WorkerAggregator  # noqa: E402
from app.aggregation.registry import resolve_method  # noqa: E402
from app.aggregation.select import describe  # noqa: E402
from app.aggregation.simulate import SHAPES, majority_accuracy, simulate  # noqa: E402
from app.aggregation.votes import VoteArrays  # noqa: E402

RAW = REPO / "benchmarks" / "results" / "robust_crowds.json"
MUSIC = REPO.parent / "shared" / "data" / "music-genre"
REAL_SETS = ("d_sentiment", "s4_Dog_data", "d_jn-product")

RESULTS = REPO / "benchmarks" / "results" / "robust_crowds.md"
CROWDKIT_PYTHON = Path(
    os.environ.get("CROWDKIT_PYTHON", REPO / ".venv-crowdkit" / "bin" / "python")
)
TRUTH_DATA = REPO.parent / "shared" / "data" / "truth-inference"
CROWDKIT = {
    "dawid-skene": "DawidSkene",
    "dawid-skene-clustered": None,
    "one-coin": "OneCoinDawidSkene",
    "glad": "GLAD",
    "mace": "MACE",
    "wawa": "Wawa",
}
SEEDS = (0, 1)


def real_set(name: str) -> tuple[VoteArrays, np.ndarray] | None:
    folder = TRUTH_DATA / name
    if not (folder / "answers.csv").exists():
        return None
    rows = np.loadtxt(folder / "answers.csv", dtype=str, delimiter=",", skiprows=1)
    truth_rows = np.loadtxt(folder / "truth.csv", dtype=str, delimiter=",", skiprows=1)
    items, item = np.unique(rows[:, 0], return_inverse=True)
    _, worker = np.unique(rows[:, 1], return_inverse=True)
    classes = sorted(set(rows[:, 2]) | set(truth_rows[:, 1]), key=int)
    code = {c: i for i, c in enumerate(classes)}
    label = np.array([code[c] for c in rows[:, 2]])
    truth = np.full(items.size, -1)
    pos = {it: i for i, it in enumerate(items)}
    for it, lab in truth_rows:
        if it in pos:
            truth[pos[it]] = code[lab]
    votes = VoteArrays(item, worker, label, items.size, int(worker.max()) + 1, len(classes))
    return votes, truth


def music_genre() -> tuple[VoteArrays, np.ndarray] | None:
    """The 700 voted songs of shared/data/music-genre (10 genres) with their GTZAN genre."""
    if not (MUSIC / "votes.csv").exists():
        return None
    v = np.loadtxt(MUSIC / "votes.csv", delimiter=",", skiprows=1, dtype=np.int64)
    gold = np.loadtxt(MUSIC / "items.csv", delimiter=",", skiprows=1, usecols=(0, 1), dtype=int)
    n_items = int(v[:, 0].max()) + 1
    truth = np.full(n_items, -1)
    voted = gold[:, 0] < n_items
    truth[gold[voted, 0]] = gold[voted, 1]
    n_classes = int(max(v[:, 2].max(), gold[:, 1].max())) + 1
    return VoteArrays(v[:, 0], v[:, 1], v[:, 2], n_items, int(v[:, 1].max()) + 1, n_classes), truth


def rank_agreement(scores: list[float], accs: list[float]) -> tuple[float, float]:
    """Spearman's rho and Kendall's tau-b between held-out scores and accuracies (ties share
    ranks); NaN when either side is constant."""
    from scipy import stats

    x, y = np.asarray(scores), np.asarray(accs)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, math.nan
    return float(stats.spearmanr(x, y).statistic), float(stats.kendalltau(x, y).statistic)


def acc_on_truth(probs: np.ndarray, truth: np.ndarray, votes: VoteArrays) -> float:
    known = truth >= 0
    voted = np.bincount(votes.item, minlength=votes.n_items) > 0
    sel = known & voted
    return float((probs.argmax(axis=1) == truth)[sel].mean())


def mv_on_truth(votes: VoteArrays, truth: np.ndarray) -> float:
    known = truth >= 0
    keep = known[votes.item]
    sub = VoteArrays(
        votes.item[keep],
        votes.worker[keep],
        votes.label[keep],
        votes.n_items,
        votes.n_workers,
        votes.n_classes,
    )
    t = np.where(known, truth, 0)
    counts = np.bincount(sub.item, minlength=votes.n_items)
    return majority_accuracy(sub, t) if (counts[known] > 0).all() else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--crowdkit-dir",
        type=Path,
        help="keep crowd-kit's outputs here and reuse those already there (same crowds, same "
        "file names), so an interrupted run resumes",
    )
    ap.add_argument(
        "--crowdkit-timeout",
        type=float,
        default=1200.0,
        help="stop crowd-kit after this many seconds; crowds it did not reach show '-'",
    )
    ap.add_argument("--no-crowdkit", action="store_true", help="ours only")
    args = ap.parse_args()
    crowds: dict[str, tuple[VoteArrays, np.ndarray]] = {}
    for shape in SHAPES:
        for seed in SEEDS:
            crowds[f"{shape} (seed {seed})"] = simulate(shape, seed)
    for name in REAL_SETS:
        loaded = real_set(name)
        if loaded is not None:
            crowds[name] = loaded
    music = music_genre()
    if music is not None:
        crowds["music-genre"] = music
    ours: dict[tuple[str, str], tuple[float, float, bool]] = {}
    chosen: dict[str, str] = {}
    auto_info: dict[str, dict[str, object]] = {}
    for cname, (votes, truth) in crowds.items():
        for method in [*CROWDKIT, "auto"]:
            aggregator = resolve_method(method, {})
            assert isinstance(aggregator, WorkerAggregator)
            start = time.perf_counter()
            f = aggregator.fit(votes).result_
            seconds = time.perf_counter() - start
            ours[cname, method] = (acc_on_truth(f.probs, truth, votes), seconds, bool(f.warnings))
            if method == "auto":
                info = describe(f)
                chosen[cname] = str(info["chosen"]) if info else "?"
                if info:
                    auto_info[cname] = info
        print(cname, {m: round(ours[cname, m][0], 3) for m in [*CROWDKIT, "auto"]}, flush=True)

    ck: dict[tuple[str, str], float] = {}
    if CROWDKIT_PYTHON.exists() and not args.no_crowdkit:
        with tempfile.TemporaryDirectory() as tmpdir:
            tmp = args.crowdkit_dir or Path(tmpdir)
            tmp.mkdir(parents=True, exist_ok=True)
            jobs = []
            for j, (cname, (votes, _)) in enumerate(crowds.items()):
                path = tmp / f"c{j}.npz"
                np.savez(
                    path,
                    item=votes.item,
                    worker=votes.worker,
                    label=votes.label,
                    n_items=votes.n_items,
                    n_classes=votes.n_classes,
                )
                for method, cls in CROWDKIT.items():
                    if cls is not None:
                        out = str(tmp / f"c{j}-{method}.npy")
                        # MACE: crowd-kit reuses one random_state for all its restarts, so 1
                        # restart gives its default output (tests/test_worker_models.py).
                        kwargs = {"n_restarts": 1} if cls == "MACE" else {}
                        jobs.append(
                            {
                                "method": cls,
                                "votes": str(path),
                                "out": out,
                                "kwargs": kwargs,
                                "crowd": cname,
                                "ours": method,
                            }
                        )
            # Cheapest methods first, over every crowd, so a timeout leaves the costly ones out.
            cost = ["Wawa", "DawidSkene", "MACE", "OneCoinDawidSkene", "GLAD"]
            todo = [job for job in jobs if not Path(job["out"]).exists()]
            todo.sort(key=lambda job: cost.index(job["method"]))
            (tmp / "jobs.json").write_text(json.dumps(todo))
            try:
                subprocess.run(
                    [
                        str(CROWDKIT_PYTHON),
                        str(REPO / "tests" / "crowdkit_reference.py"),
                        str(tmp / "jobs.json"),
                    ],
                    check=True,
                    timeout=args.crowdkit_timeout,
                )
            except subprocess.TimeoutExpired:
                print(f"crowd-kit stopped after {args.crowdkit_timeout:.0f} s", flush=True)
            for job in jobs:
                if not Path(job["out"] + ".json").exists():
                    continue
                votes, truth = crowds[job["crowd"]]
                probs = np.nan_to_num(np.load(job["out"]), nan=0.0)
                ck[job["crowd"], job["ours"]] = acc_on_truth(probs, truth, votes)

    lines = [
        "# Worker models on hard crowd shapes and the visible real sets",
        "",
        f"Generated by `benchmarks/robust_crowds.py` on {time.strftime('%Y-%m-%d %H:%M')} "
        "(default parameters for both libraries; accuracy = argmax vs truth on items with "
        "truth; majority vote with random tie-breaks, in expectation). Crowd shapes: "
        "app/aggregation/simulate.py. `!`: the fit came with a warning (em.py: collapse, "
        "label switching, or EM stopped at its last healthy iterate). crowd-kit has no "
        "clustered Dawid-Skene; `-` in its column also marks runs it did not reach within "
        f"--crowdkit-timeout ({args.crowdkit_timeout:.0f} s; cheapest methods run first).",
        "",
        "| crowd | majority vote | method | ours | crowd-kit | ours s |",
        "|---|---|---|---|---|---|",
    ]
    for cname, (votes, truth) in crowds.items():
        mv = mv_on_truth(votes, truth)
        for method in [*CROWDKIT, "auto"]:
            acc, seconds, warned = ours[cname, method]
            theirs = ck.get((cname, method))
            label = f"auto (chose {chosen[cname]})" if method == "auto" else method
            lines.append(
                f"| {cname} | {mv:.3f} | {label} | {acc:.3f}{'!' if warned else ''} | "
                f"{'-' if theirs is None else f'{theirs:.3f}'} | {seconds:.2f} |"
            )
    lines.append("")
    for shape in SHAPES.values():
        lines.append(f"- `{shape.name}`: {shape.note}")
    lines += [
        "",
        "## `auto`: does held-out likelihood rank the methods as accuracy does?",
        "",
        "Per crowd, over the 6 candidates: Spearman's rho and Kendall's tau-b between auto's "
        "held-out scores (mean log-probability of held-out votes) and accuracy on truth; the "
        "pick and the most accurate method; `loss` = points of accuracy the pick gives up; "
        "`tells` = whether held-out likelihood separates the pick from every other candidate "
        "by more than 2 paired standard errors (if not, the response says so and lists the "
        "indistinguishable ones).",
        "",
        "| crowd | rho | tau | auto's pick (acc) | most accurate (acc) | loss | tells | "
        "indistinguishable from the pick |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rank_rows = []
    methods = list(CROWDKIT)
    for cname in crowds:
        info = auto_info.get(cname)
        if info is None:
            continue
        cands = {str(c["method"]): c for c in info["candidates"]}  # type: ignore[attr-defined]
        names = [m for m in methods if cands[m]["score"] is not None]
        scores = [float(cands[m]["score"]) for m in names]
        accs = [ours[cname, m][0] for m in names]
        rho, tau = rank_agreement(scores, accs)
        best = names[int(np.argmax(accs))]
        pick = str(info["chosen"])
        loss = max(accs) - ours[cname, pick][0]
        tied = [str(m) for m in info["indistinguishable"]]  # type: ignore[attr-defined]
        rank_rows.append(
            {
                "crowd": cname,
                "rho": rho,
                "tau": tau,
                "pick": pick,
                "best": best,
                "loss": loss,
                "decided": bool(info["decided"]),
                "indistinguishable": tied,
                "best_in_tie": best == pick or best in tied,
                "scores": dict(zip(names, scores, strict=True)),
                "accuracy": dict(zip(names, accs, strict=True)),
            }
        )
        lines.append(
            f"| {cname} | {rho:.2f} | {tau:.2f} | {pick} ({ours[cname, pick][0]:.3f}) "
            f"| {best} ({max(accs):.3f}) | {100 * loss:.1f} | "
            f"{'yes' if info['decided'] else 'no'} | {', '.join(tied) or '-'} |"
        )
    if rank_rows:
        rhos = [r["rho"] for r in rank_rows if not math.isnan(float(r["rho"]))]  # type: ignore[arg-type]
        taus = [r["tau"] for r in rank_rows if not math.isnan(float(r["tau"]))]  # type: ignore[arg-type]
        hits = sum(r["pick"] == r["best"] for r in rank_rows)
        within = sum(float(r["loss"]) <= 0.01 for r in rank_rows)  # type: ignore[arg-type]
        undecided = [r for r in rank_rows if not r["decided"]]
        covered = sum(bool(r["best_in_tie"]) for r in undecided)
        lines += [
            "",
            f"Over {len(rank_rows)} crowds: mean rho {np.mean(rhos):.2f}, mean tau "
            f"{np.mean(taus):.2f}; the pick is the most accurate method on {hits}, within 1 "
            f"point of it on {within}; held-out likelihood could not tell the pick from another "
            f"candidate on {len(undecided)}, and on {covered} of those the most accurate method "
            "is the pick or among the indistinguishable ones.",
        ]
    RESULTS.write_text("\n".join(lines) + "\n")
    RAW.write_text(
        json.dumps(
            {
                "generated": time.strftime("%Y-%m-%d %H:%M"),
                "command": "benchmarks/robust_crowds.py " + " ".join(sys.argv[1:]),
                "accuracy": {f"{c} | {m}": v[0] for (c, m), v in ours.items()},
                "crowdkit": {f"{c} | {m}": v for (c, m), v in ck.items()},
                "majority": {c: mv_on_truth(v, t) for c, (v, t) in crowds.items()},
                "auto": rank_rows,
            },
            indent=1,
        )
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
