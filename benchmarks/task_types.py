"""Multi-label and ordinal soft labels, and each annotator's view, scored as LeWiDi 2025 does.

    .venv/bin/python benchmarks/task_types.py   # -> benchmarks/results/task_types.md (+ .json)

Crowds: the shared task-types sets (ConvAbuse severity 0-4 and type/target multi-label, LeWiDi
2025 Paraphrase -5..5; shared/data/task-types) and two simulated crowds with known truth
(tests/task_type_crowds.py: biased raters who use part of the scale, over- and under-tickers,
sparse workers). Real sets missing: their rows are left out, and the file says so.

Held-out votes: on every item with >= 3 votes one vote is drawn and hidden; every method is
fitted on the rest (`hold_out_one`) and scored on the hidden votes, over 5 draws (seeds 0-4;
mean, and the spread across draws in the JSON). Scores (app/aggregation/scores.py):
- soft: the LeWiDi soft score of the item's soft label against the hidden vote (ordinal:
  Wasserstein distance to the one-hot vote, i.e. the expected |level - vote|, in levels;
  multi-label: MAMD, the mean over classes of the Manhattan distance between (1 - p, p) and the
  hidden vote's (1 - t, t));
- annotator's view: the hidden worker's predicted answer, scored by the normalized absolute
  distance |pred - vote| / (K - 1) of its median (ANAD) and the error rate of its mode (ER)
  for ordinal crowds, by the multi-label error rate (MER) of its per-class ticks (p > 0.5);
- simulated crowds only: the same soft score against the latent truth, fitted on all votes.
Lower is better everywhere. The baselines `item-distribution` and `majority` predict the
item's own vote shares / its majority for every worker.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.aggregation import multilabel as ml  # noqa: E402
from app.aggregation import ordinal as od  # noqa: E402
from app.aggregation import perspectivist as pv  # noqa: E402
from app.aggregation import scores  # noqa: E402
from tests.task_type_crowds import (  # noqa: E402
    Crowd,
    dawid_skene_levels,
    load_real,
    real_path,
    simulate_multilabel,
    simulate_ordinal,
)

RESULTS = REPO / "benchmarks" / "results" / "task_types.md"
SEEDS = range(5)

# name -> (soft labels (n_items, K), predicted answer distribution for (item, worker) pairs)
OrdinalFit = Callable[[Crowd], tuple[np.ndarray, Callable[[np.ndarray, np.ndarray], np.ndarray]]]


def _counts_fit(model: Any) -> OrdinalFit:
    def fit(c: Crowd) -> tuple[np.ndarray, Any]:
        m = model.fit(c.item, c.worker, c.level, c.n_items, c.n_workers, c.n_levels, c.values)
        return m.probas_, m.predict_answers

    return fit


def _majority(c: Crowd) -> tuple[np.ndarray, Any]:
    assert c.level is not None
    counts = od.level_counts(c.item, c.level, c.n_items, c.n_levels)
    return pv.item_majority(counts, np.arange(c.n_items)), lambda i, w: pv.item_majority(counts, i)


def _dawid_skene(c: Crowd) -> tuple[np.ndarray, Any]:
    post, confusion = dawid_skene_levels(c)
    return post, lambda i, w: pv.answer_distribution(post, confusion, i, w)


ORDINAL: dict[str, OrdinalFit] = {
    "item-distribution (= normalized)": _counts_fit(od.OrdinalNormalized()),
    "majority": _majority,
    "softmax (T=1)": _counts_fit(od.OrdinalSoftmax()),
    "distance-smoothed (h=1)": _counts_fit(od.OrdinalSmoothed()),
    "dawid-skene (levels, unordered)": _dawid_skene,
    "rater-bias (moments)": _counts_fit(od.RaterModel(worker_fit="moments")),
    "rater-bias (likelihood)": _counts_fit(od.RaterModel()),
}


def _ml_fit(model: Any) -> Callable[[Crowd], tuple[np.ndarray, Any]]:
    def fit(c: Crowd) -> tuple[np.ndarray, Any]:
        m = model.fit(c.item, c.worker, c.ticks, c.n_items, c.n_workers)
        return m.probas_, m.predict_ticks

    return fit


def _ml_majority(c: Crowd) -> tuple[np.ndarray, Any]:
    tc, nv = ml.tick_counts(c.item, c.ticks, c.n_items)
    soft = pv.item_tick_majority(tc, nv, np.arange(c.n_items))
    return soft, lambda i, w: pv.item_tick_majority(tc, nv, i)


MULTI_LABEL: dict[str, Callable[[Crowd], tuple[np.ndarray, Any]]] = {
    "item-distribution (= normalized)": _ml_fit(ml.MultiLabelNormalized()),
    "majority": _ml_majority,
    "softmax (T=1)": _ml_fit(ml.MultiLabelSoftmax()),
    "binary-relevance (DS)": _ml_fit(ml.BinaryRelevance()),
    "tick-propensity": _ml_fit(ml.TickPropensity()),
}


def held_out_scores(crowd: Crowd, fit: Callable[[Crowd], Any], seed: int) -> dict[str, float]:
    held, keep = pv.hold_out_one(crowd.item, crowd.n_items, seed=seed)
    rest = crowd.subset(keep)
    start = time.perf_counter()
    soft, predict = fit(rest)
    seconds = time.perf_counter() - start
    item, worker = crowd.item[held], crowd.worker[held]
    pred = predict(item, worker)
    if crowd.level is not None:
        vote = crowd.level[held]
        k = crowd.n_levels
        onehot = np.eye(k)[vote]
        return {
            "soft_wasserstein": float(scores.wasserstein_distance(soft[item], onehot).mean()),
            "anad": scores.normalized_absolute_distance(scores.median_index(pred), vote, k),
            "er": scores.error_rate(pred.argmax(axis=1), vote),
            "seconds": seconds,
        }
    assert crowd.ticks is not None
    ticks = crowd.ticks[held]
    return {
        "soft_mamd": float(scores.multilabel_manhattan_distance(soft[item], ticks).mean()),
        "mer": scores.multilabel_error_rate(pred > 0.5, ticks),
        "seconds": seconds,
    }


def truth_scores(crowd: Crowd, fit: Callable[[Crowd], Any], truth: np.ndarray) -> dict[str, float]:
    """Soft score and accuracy (argmax level; per-class p > 0.5) against the latent truth."""
    soft, _ = fit(crowd)
    if crowd.level is not None:
        onehot = np.eye(crowd.n_levels)[truth]
        return {
            "truth": float(scores.wasserstein_distance(soft, onehot).mean()),
            "truth_acc": float((soft.argmax(axis=1) == truth).mean()),
        }
    return {
        "truth": float(scores.multilabel_manhattan_distance(soft, truth).mean()),
        "truth_acc": float(((soft > 0.5) == truth).mean()),
    }


def run_crowd(
    crowd: Crowd, methods: dict[str, Callable[[Crowd], Any]], truth: np.ndarray | None
) -> list[dict[str, Any]]:
    rows = []
    for name, fit in methods.items():
        runs = [held_out_scores(crowd, fit, seed) for seed in SEEDS]
        row: dict[str, Any] = {"crowd": crowd.name, "method": name}
        for key in runs[0]:
            vals = np.array([r[key] for r in runs])
            row[key], row[key + "_sd"] = float(vals.mean()), float(vals.std(ddof=1))
        if truth is not None:
            row.update(truth_scores(crowd, fit, truth))
        rows.append(row)
        print(row, flush=True)
    return rows


def describe(crowd: Crowd) -> str:
    per_item = crowd.item.size / max(np.unique(crowd.item).size, 1)
    return (
        f"{crowd.name}: {crowd.n_items} items, {crowd.n_workers} workers, {crowd.item.size} votes "
        f"({per_item:.2f} per item)"
    )


def main() -> None:
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for name in ("convabuse_severity", "paraphrase", "convabuse_type_target"):
        if not real_path(name).exists():
            notes.append(f"{name}: skipped, {real_path(name)} missing")
            continue
        crowd = load_real(name)
        notes.append(describe(crowd))
        rows += run_crowd(crowd, MULTI_LABEL if crowd.ticks is not None else ORDINAL, None)
    sim_o = simulate_ordinal(0)
    notes.append(describe(sim_o.crowd) + " (seed 0, 7 levels)")
    rows += run_crowd(sim_o.crowd, ORDINAL, sim_o.truth)
    sim_m = simulate_multilabel(0)
    notes.append(describe(sim_m.crowd) + " (seed 0, 8 classes)")
    rows += run_crowd(sim_m.crowd, MULTI_LABEL, sim_m.truth)
    write(rows, notes)


def _f(row: dict[str, Any], key: str) -> str:
    return f"{row[key]:.4f}" if key in row else "-"


def write(rows: list[dict[str, Any]], notes: list[str]) -> None:
    now = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    lines = [
        "# Multi-label and ordinal soft labels, and each annotator's view (LeWiDi 2025 scores)",
        "",
        f"Generated by `.venv/bin/python benchmarks/task_types.py` on {now} "
        f"({platform.machine()}, {platform.python_version()}, shared 2-core machine: seconds "
        "are indicative). Method definitions: the module docstrings of app/aggregation/"
        "multilabel.py, ordinal.py and perspectivist.py; default hyperparameters.",
        "",
        "Protocol: on every item with >= 3 votes one vote is hidden; methods are fitted on the "
        "rest and scored on the hidden votes; mean over 5 random draws (seeds 0-4; standard "
        "deviations across draws in task_types.json). Lower is better in every column.",
        "",
        "- soft W1: Wasserstein distance (levels) between the item's soft label and the hidden "
        "vote; soft MAMD: LeWiDi's multi-label Manhattan distance, mean over classes of "
        "|(1-p, p) - (1-t, t)|_1 = 2|p - t|;",
        "- ANAD: normalized absolute distance |median of the predicted answer - hidden vote| / "
        "(K - 1) (LeWiDi's notebook divides by K instead: multiply by (K - 1) / K); ER: error "
        "rate of the predicted answer's mode; MER: LeWiDi's multi-label error rate, per-class "
        "ticks predicted where P(tick) > 0.5;",
        "- truth: soft W1 / MAMD against the latent truth, and accuracy (argmax level; per class "
        "p > 0.5), on the simulated crowds, fitted on all votes.",
        "",
        "Reading notes: the soft scores against one hidden vote reward concentrated labels (a "
        "one-hot target), which is why majority beats the vote shares there; they are LeWiDi's "
        "metrics but not proper scoring rules. The rater model's soft label is its posterior "
        "over the latent true level, which with the likelihood M-step can sit a fraction of a "
        "level off the answers' scale (ConvAbuse: most answers at 0); its annotator's view "
        "(the answer distribution through each worker's bias and spread) does not have that "
        "problem. Dawid-Skene on levels is the single-label `dawid-skene` (default parameters) "
        "on level indices.",
        "",
        "Crowds:",
        "",
        *[f"- {n}" for n in notes],
        "",
        "## Ordinal",
        "",
        "| crowd | method | soft W1 | ANAD | ER | truth W1 | truth acc | fit s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "anad" in r:
            lines.append(
                f"| {r['crowd']} | {r['method']} | {_f(r, 'soft_wasserstein')} | {_f(r, 'anad')} "
                f"| {_f(r, 'er')} | {_f(r, 'truth')} | {_f(r, 'truth_acc')} | {r['seconds']:.3f} |"
            )
    lines += [
        "",
        "## Multi-label",
        "",
        "| crowd | method | soft MAMD | MER | truth MAMD | truth acc | fit s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "mer" in r:
            lines.append(
                f"| {r['crowd']} | {r['method']} | {_f(r, 'soft_mamd')} | {_f(r, 'mer')} "
                f"| {_f(r, 'truth')} | {_f(r, 'truth_acc')} | {r['seconds']:.3f} |"
            )
    RESULTS.write_text("\n".join(lines) + "\n")
    RESULTS.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
