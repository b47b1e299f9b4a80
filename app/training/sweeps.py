"""Sweeps: a grid of training recipes, and a report that answers "what should I train on?".

A recipe is (label method with its parameters, loss). The grid is every recipe x every seed;
each cell is a normal training job. All cells share one split seed, so they are tested on the
same items and their test figures can be compared item by item.

The report (pure numpy over the jobs' metrics and stored per-item predictions):
- per recipe, the chosen metric on the chosen test split: mean and sample standard deviation
  over seeds;
- a paired bootstrap interval (Efron & Tibshirani 1993, ch. 16; paired as in Koehn 2004 for MT
  systems) of the difference to the hard-label baseline (hard-ce on majority by default): test
  items are resampled with replacement, the same resample for both recipes, the difference of
  the metric averaged over the seeds both ran, 2.5th and 97.5th percentiles of B resamples;
- the metric ranks by the project's task type unless the request names one
  (task_metrics.SWEEP_METRICS): accuracy for single-label projects, the ranked probability
  score against the human distribution for ordinal ones and the per-class binary cross-entropy
  to the human shares for multi-label ones (proper scores: see task_metrics); the hard-label
  baseline is hard-ce on majority, hard-ce on vote shares (the majority level) for ordinal
  projects and hard-bce on vote shares (each class's majority) for multi-label ones;
- the recommended recipe: the best mean test metric (ties: the baseline, the simplest), with
  the reason in words, saying whether
  the gain over the baseline is distinguishable from resampling noise. (Choosing the best of
  several recipes on the test split makes its own figure slightly optimistic; the interval is
  for the difference, and the validation split is still used for every choice inside a job.)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
from pydantic import ValidationError

from app.aggregation.params import ParamError
from app.aggregation.registry import resolve_method
from app.errors import ValidationFailed
from app.training.config import LOSSES_BY_TASK, TrainingConfig
from app.training.item_scores import Rows
from app.training.task_metrics import SWEEP_METRICS

HIGHER_IS_BETTER = {"accuracy": True, "macro_f1": True, "accuracy_majority": True}
# The metrics a sweep can rank by (the request's `metric` is checked against this Literal,
# then against the project's task type: task_metrics.SWEEP_METRICS).
Metric = Literal[
    "accuracy",
    "macro_f1",
    "nll",
    "brier",
    "ece",
    "accuracy_majority",
    "ce_human",
    "kl_human",
    "manhattan_human",
    "wasserstein_human",
    "rps_human",
    "mae_human",
    "mae",
    "anad",
    "annotator_error_rate",
    "bce_human",
    "mer",
]
METRICS: tuple[str, ...] = get_args(Metric)
SPLITS = ("auto", "test", "test_gold")
# Per task type: the label methods and losses of a sweep that names none, and its baseline.
DEFAULT_LABELS: dict[str, list[dict[str, Any]]] = {
    "single": [{"method": "majority"}, {"method": "normalized"}, {"method": "dawid-skene"}],
    "ordinal": [
        {"method": "normalized"},
        {"method": "distance-smoothed"},
        {"method": "rater-bias"},
    ],
    "multi_label": [
        {"method": "normalized"},
        {"method": "binary-relevance"},
        {"method": "tick-propensity"},
    ],
}
DEFAULT_LOSSES: dict[str, list[str]] = {t: list(losses) for t, losses in LOSSES_BY_TASK.items()}
# The hard-label baseline: the majority vote. An ordinal project has no "majority" method
# (its methods are distributions over the scale), and neither does a multi-label one: hard
# targets on vote shares are the majority (the most-voted level, ties to the lowest; each
# class ticked by more than half of the voters).
BASELINE: dict[str, dict[str, Any]] = {
    "single": {"labels": {"method": "majority"}, "loss": "hard-ce"},
    "ordinal": {"labels": {"method": "normalized"}, "loss": "hard-ce"},
    "multi_label": {"labels": {"method": "normalized"}, "loss": "hard-bce"},
}
MAX_CELLS = 200


def recipe_key(labels: Mapping[str, Any], loss: str) -> str:
    return json.dumps({"labels": dict(labels), "loss": loss}, sort_keys=True)


def recipe_name(labels: Mapping[str, Any], loss: str, task_type: str = "single") -> str:
    """e.g. "soft-ce on normalized (alpha=1.0)": parameters at their defaults are left out."""
    try:
        defaults: dict[str, Any] = resolve_method(str(labels["method"]), {}, task_type).params()
    except ParamError:
        defaults = {}
    params = ", ".join(
        f"{k}={v}" for k, v in labels.items() if k != "method" and defaults.get(k) != v
    )
    method = str(labels["method"]) + (f" ({params})" if params else "")
    return f"{loss} on {method}"


@dataclass(frozen=True)
class Cell:
    job_id: int
    labels: dict[str, Any]  # as validated (defaults filled in)
    loss: str
    seed: int
    status: str
    metrics: dict[str, Any] | None

    @property
    def key(self) -> str:
        return recipe_key(self.labels, self.loss)


def higher_is_better(metric: str) -> bool:
    return HIGHER_IS_BETTER.get(metric, False)


def choose_split(cells: Sequence[Cell], metric: str, split: str) -> str:
    """ "auto": test_gold when every succeeded cell has the metric there, else test."""
    if split != "auto":
        return split
    done = [c for c in cells if c.status == "succeeded" and c.metrics]
    if done and all(
        ((c.metrics or {}).get("test_gold") or {}).get(metric) is not None for c in done
    ):
        return "test_gold"
    return "test"


def paired_bootstrap(
    pairs: Sequence[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]],
    metric: str,
    split: str,
    n_boot: int = 1000,
    seed: int = 0,
    task_type: str = "single",
) -> dict[str, Any] | None:
    """Difference (recipe - baseline) of `metric` averaged over the seeds in `pairs` (each a pair
    of stored predictions), with a 95% percentile interval over item resamples."""
    aligned = []
    for a, b in pairs:
        if f"{split}_ids" not in a or f"{split}_ids" not in b:
            continue
        ids = np.intersect1d(a[f"{split}_ids"], b[f"{split}_ids"])
        if not len(ids):
            continue
        rows = []
        for p in (a, b):
            order = {item: i for i, item in enumerate(p[f"{split}_ids"].tolist())}
            idx = np.asarray([order[i] for i in ids.tolist()], dtype=np.int64)
            voters = p.get(f"{split}_voters")
            rows.append(
                Rows(
                    task_type,
                    p[f"{split}_probs"],
                    p[f"{split}_counts"],
                    p[f"{split}_gold"],
                    voters,
                    p.get("scale"),
                ).take(idx)
            )
        aligned.append((ids, rows))
    if not aligned:
        return None
    # The seeds share their test items (one split seed); resample over the common ones.
    common = aligned[0][0]
    for ids, _ in aligned[1:]:
        common = np.intersect1d(common, ids)
    n = len(common)
    if n == 0:
        return None
    rng = np.random.default_rng(seed)
    decomposable = len(aligned[0][1][0].per_item(metric)) > 0
    boots = rng.integers(0, n, size=(n_boot if decomposable else min(n_boot, 300), n))
    diffs = np.zeros(len(boots))
    point = 0.0
    for ids, rows in aligned:
        sel = np.searchsorted(ids, common)
        vals = []
        for job_rows in rows:
            common_rows = job_rows.take(sel)
            per = common_rows.per_item(metric)
            if len(per):
                ok = ~np.isnan(per)
                w = ok[boots].sum(axis=1)
                s = np.where(ok, per, 0.0)[boots].sum(axis=1)
                vals.append(
                    (
                        np.divide(s, w, out=np.full(len(boots), np.nan), where=w > 0),
                        float(per[ok].mean()) if ok.any() else np.nan,
                    )
                )
            else:
                vals.append(_loop_metric(metric, common_rows, boots))
        diffs += vals[0][0] - vals[1][0]
        point += vals[0][1] - vals[1][1]
    diffs /= len(aligned)
    point /= len(aligned)
    if np.isnan(diffs).all():
        return None
    lo, hi = np.nanpercentile(diffs, [2.5, 97.5])
    return {
        "mean": float(point),
        "low": float(lo),
        "high": float(hi),
        "n_items": int(n),
        "n_seeds": len(aligned),
        "n_boot": len(boots),
    }


def _loop_metric(metric: str, rows: Rows, boots: np.ndarray) -> tuple[np.ndarray, float]:
    def value(idx: np.ndarray) -> float:
        part = rows.take(idx)
        m = part.labels().metrics(part.probs, n_train=0)[metric]
        return np.nan if m is None else float(m)

    return np.asarray([value(b) for b in boots]), value(np.arange(len(rows.probs)))


def report(
    cells: Sequence[Cell],
    preds: Mapping[int, dict[str, np.ndarray]],
    *,
    metric: str,
    split: str,
    baseline: Mapping[str, Any],
    n_boot: int = 1000,
    task_type: str = "single",
) -> dict[str, Any]:
    """Ranking, baseline differences and the recommendation (see module doc)."""
    split = choose_split(cells, metric, split)
    up = higher_is_better(metric)
    base_key = recipe_key(baseline["labels"], baseline["loss"])
    recipes: dict[str, list[Cell]] = {}
    for c in cells:
        recipes.setdefault(c.key, []).append(c)
    rows: list[dict[str, Any]] = []
    for key, group in recipes.items():
        ok = [c for c in group if c.status == "succeeded" and c.metrics]
        vals = {c.seed: (c.metrics or {}).get(split, {}) or {} for c in ok}  # seed -> split metrics
        scores = {s: m.get(metric) for s, m in vals.items() if m.get(metric) is not None}
        arr = np.asarray(list(scores.values()), dtype=np.float64)
        others = {
            name: _mean([m.get(name) for m in vals.values()])
            for name in SWEEP_METRICS[task_type]
            if name != metric
        }
        rows.append(
            {
                "recipe": {"labels": group[0].labels, "loss": group[0].loss},
                "name": recipe_name(group[0].labels, group[0].loss, task_type),
                "baseline": key == base_key,
                "mean": float(arr.mean()) if len(arr) else None,
                "std": float(arr.std(ddof=1)) if len(arr) > 1 else (0.0 if len(arr) else None),
                "n_seeds": len(arr),
                "per_seed": {str(s): v for s, v in sorted(scores.items())},
                "job_ids": [c.job_id for c in group],
                "other_metrics": others,
                "_key": key,
                "_ok": ok,
            }
        )
    base_ok = {c.seed: c for c in recipes.get(base_key, []) if c.status == "succeeded"}
    for row in rows:
        pairs = [
            (preds[c.job_id], preds[base_ok[c.seed].job_id])
            for c in row["_ok"]
            if c.seed in base_ok and c.job_id in preds and base_ok[c.seed].job_id in preds
        ]
        row["vs_baseline"] = (
            None
            if row["baseline"] or not pairs
            else paired_bootstrap(pairs, metric, split, n_boot=n_boot, task_type=task_type)
        )
    ranked = sorted(
        (r for r in rows if r["mean"] is not None),
        key=lambda r: (-r["mean"] if up else r["mean"], not r["baseline"], r["name"]),
    )
    ranked += [r for r in rows if r["mean"] is None]
    for i, r in enumerate(ranked):
        r["rank"] = i + 1 if r["mean"] is not None else None
        r.pop("_key")
        r.pop("_ok")
    best = ranked[0] if ranked and ranked[0]["mean"] is not None else None
    return {
        "metric": metric,
        "split": split,
        "higher_is_better": up,
        "baseline": recipe_name(baseline["labels"], baseline["loss"], task_type),
        "ranking": ranked,
        "recommended": None if best is None else _recommend(best, metric, split, up, rows),
    }


def _mean(values: Sequence[Any]) -> float | None:
    v = [x for x in values if x is not None]
    return float(np.mean(v)) if v else None


def _recommend(
    best: dict[str, Any], metric: str, split: str, up: bool, rows: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    base = next((r for r in rows if r["baseline"]), None)
    head = (
        f"{best['name']} has the best mean {metric} on the {split} split "
        f"({best['mean']:.4f} ± {best['std']:.4f} over {best['n_seeds']} seed(s))"
    )
    if best["baseline"]:
        reason = head + "; it is the hard-label baseline: soft targets did not help here."
    elif base is None or best["vs_baseline"] is None:
        reason = head + "; no baseline figures to compare with."
    else:
        d = best["vs_baseline"]
        better = d["low"] > 0 if up else d["high"] < 0
        verdict = (
            "better than the baseline beyond resampling noise"
            if better
            else "not distinguishable from the baseline at this test size: prefer the baseline "
            "if simplicity matters"
        )
        reason = (
            f"{head}; against {base['name']} ({base['mean']:.4f}) the difference is "
            f"{d['mean']:+.4f}, 95% paired bootstrap interval [{d['low']:+.4f}, "
            f"{d['high']:+.4f}] over {d['n_items']} test items: {verdict}."
        )
    return {"recipe": best["recipe"], "name": best["name"], "reason": reason}


class GridError(ValidationFailed):
    """A bad grid entry, a 422 naming it (e.g. "labels[1].alpha", "base.lr")."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(
            f"Invalid sweep: {field}: {reason}",
            errors=[{"index": None, "field": field, "reason": reason}],
        )


FIXED = {"labels", "loss", "seed", "split_seed"}


def build_grid(
    labels: Sequence[Mapping[str, Any]],
    losses: Sequence[str],
    seeds: Sequence[int],
    base: Mapping[str, Any],
    split_seed: int,
    baseline: Mapping[str, Any],
    task_type: str = "single",
) -> tuple[list[Any], dict[str, Any]]:
    """Every (labels, loss, seed) cell as a TrainingConfig validated for a project of
    `task_type`, the baseline recipe's cells added when the grid lacks them; and the baseline
    with its defaults filled in."""
    fixed = sorted(FIXED & set(base))
    if fixed:
        raise GridError(f"base.{fixed[0]}", "set by the grid (labels, losses, seeds, split_seed)")
    if base.get("distill") is not None:
        raise GridError("base.distill", "distillation is not supported in sweeps")

    def make(lab: Mapping[str, Any], loss: str, seed: int, where: str) -> Any:
        raw = {**base, "labels": dict(lab), "loss": loss, "seed": seed, "split_seed": split_seed}
        try:
            return TrainingConfig.model_validate(raw, context={"task_type": task_type})
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = [str(x) for x in err["loc"]]
            field = f"{where}.{'.'.join(loc[1:])}" if loc and loc[0] == "labels" else None
            if loc == ["loss"]:  # the grid's losses, or the baseline's
                field = "baseline.loss" if where.startswith("baseline") else "losses"
            raise GridError(
                field.rstrip(".") if field else "base." + ".".join(loc), err["msg"]
            ) from None

    cells = [
        make(lab, loss, seed, f"labels[{i}]")
        for i, lab in enumerate(labels)
        for loss in losses
        for seed in seeds
    ]
    base_cfg = make(baseline["labels"], baseline["loss"], seeds[0], "baseline.labels")
    base_rec = {"labels": base_cfg.labels, "loss": base_cfg.loss}
    have = {recipe_key(c.labels, c.loss) for c in cells}
    if recipe_key(base_cfg.labels, base_cfg.loss) not in have:
        cells += [make(baseline["labels"], baseline["loss"], s, "baseline.labels") for s in seeds]
    if len(cells) > MAX_CELLS:
        raise GridError("labels", f"the grid has {len(cells)} cells; at most {MAX_CELLS}")
    return cells, base_rec
