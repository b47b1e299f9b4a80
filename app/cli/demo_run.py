"""`softlabels demo`: a crowd labels scikit-learn's digits; five training recipes compared, then
a sweep (label methods x losses x seeds) ranks the recipes on the test split.

The crowd (documented in the README): 40 simulated annotators of mixed skill. Each image i has a
"perceived" class distribution q_i: half on its true digit, half spread over the digits whose
class-mean images are nearest to it (softmax of minus the squared distance to each class mean,
scaled by `similarity`), so visually ambiguous images draw split votes, as in CIFAR-10H.
Annotator w answers from q_i sharpened by a personal temperature T_w (experts 0.5, average 1,
sloppy 2) and, with probability spam_w, at random instead. Every image gets `votes_per_item`
votes from distinct annotators drawn at random.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.cli.api import Api, q
from app.cli.common import CliError

CLASSES = [str(d) for d in range(10)]


@dataclass(frozen=True)
class Crowd:
    n_workers: int = 40
    votes_per_item: int = 8
    similarity: float = 0.5  # scale of the distance softmax; larger = more confusable digits
    seed: int = 0


def perceived(x: np.ndarray, gold: np.ndarray, similarity: float) -> np.ndarray:
    """q_i: 0.5 on the true class + 0.5 * softmax(-similarity * ||x_i - mean_c||^2 / F)."""
    means = np.stack([x[gold == c].mean(axis=0) for c in range(10)])
    d2 = ((x[:, None, :] - means[None, :, :]) ** 2).sum(axis=2) / x.shape[1]
    z = -similarity * d2
    z -= z.max(axis=1, keepdims=True)
    near = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    return 0.5 * np.eye(10)[gold] + 0.5 * near


def simulate_votes(x: np.ndarray, gold: np.ndarray, crowd: Crowd) -> list[dict[str, Any]]:
    rng = np.random.default_rng(crowd.seed)
    q = perceived(x, gold, crowd.similarity)
    kind = rng.choice(3, size=crowd.n_workers, p=[0.25, 0.5, 0.25])  # expert, average, sloppy
    temp = np.array([0.5, 1.0, 2.0])[kind]
    spam = np.array([0.02, 0.1, 0.3])[kind]
    votes = []
    for i in range(len(gold)):
        for w in rng.choice(crowd.n_workers, size=crowd.votes_per_item, replace=False):
            if rng.random() < spam[w]:
                label = int(rng.integers(10))
            else:
                p = q[i] ** (1.0 / temp[w])
                label = int(rng.choice(10, p=p / p.sum()))
            votes.append({"item": f"digit-{i}", "worker": f"annotator-{w}", "label": label})
    return votes


RECIPES: list[tuple[str, dict[str, Any]]] = [
    ("hard-ce on majority", {"labels": {"method": "majority"}, "loss": "hard-ce"}),
    ("soft-ce on normalized", {"labels": {"method": "normalized"}}),
    ("soft-ce on softmax (T=1)", {"labels": {"method": "softmax", "temperature": 1.0}}),
    (
        "soft-ce + LWR (k=5, tau=4)",
        {"labels": {"method": "normalized"}, "lwr": {"k": 5, "tau": 4.0}},
    ),
]
STUDENT = ("distilled student (T=4, a=0.5)", {"labels": {"method": "normalized"}})


def run_demo(
    base_url: str,
    out_dir: Path,
    project: str,
    crowd: Crowd,
    headers: dict[str, str] | None = None,
    log: Any = print,
    sweep: bool = True,
) -> list[dict[str, Any]]:
    from sklearn.datasets import load_digits

    x, gold = load_digits(return_X_y=True)
    auth = (headers or {}).get("Authorization", "")
    with Api(base_url, auth.removeprefix("Bearer ") or None, timeout=120) as api:
        return _run_demo(api, x, gold, out_dir, project, crowd, log, sweep)


def _run_demo(
    api: Api,
    x: np.ndarray,
    gold: np.ndarray,
    out_dir: Path,
    project: str,
    crowd: Crowd,
    log: Any,
    sweep: bool,
) -> list[dict[str, Any]]:
    if api.exists(f"/v1/projects/{q(project)}"):
        project = f"{project}-{int(time.time())}"  # taken: make a new one
    api.post(
        "/v1/projects",
        {"name": project, "classes": CLASSES, "description": "softlabels demo: sklearn digits"},
    )
    items = [
        {"id": f"digit-{i}", "features": x[i].tolist(), "gold": int(gold[i])}
        for i in range(len(gold))
    ]
    api.upload(f"/v1/projects/{q(project)}/items", "items", items, batch_size=5_000)
    votes = simulate_votes(x, gold, crowd)
    api.upload(f"/v1/projects/{q(project)}/votes", "votes", votes, batch_size=10_000)
    log(
        f"project {project!r}: {len(items)} images, {len(votes)} votes from "
        f"{crowd.n_workers} simulated annotators"
    )

    results = []
    jobs_path = f"/v1/projects/{q(project)}/training-jobs"
    jobs = {name: api.post(jobs_path, cfg)["id"] for name, cfg in RECIPES}
    finished = {name: api.wait_job(job_id) for name, job_id in jobs.items()}
    teacher = finished["soft-ce on normalized"]
    student_cfg = {
        **STUDENT[1],
        "distill": {"teacher_job": teacher["id"], "temperature": 4.0, "alpha": 0.5},
    }
    finished[STUDENT[0]] = api.wait_job(api.post(jobs_path, student_cfg)["id"])
    for name, job in finished.items():
        if job["status"] != "succeeded":
            raise CliError(f"{name}: training job {job['id']} {job['status']}: {job['error']}")
        ev = job["metrics"]["test"]  # the test split: never used for early stopping
        results.append(
            {
                "recipe": name,
                "job": job["id"],
                **{k: ev[k] for k in ("accuracy", "nll", "ece", "kl_human", "n_eval")},
                "epochs": job["metrics"]["epochs_run"],
                "seconds": job["metrics"]["seconds"],
                "post_to_done": _seconds_between(job["created_at"], job["finished_at"]),
                "history": job["metrics"]["history"],
            }
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    figure(api, results, x, project, out_dir / "demo.png")
    if sweep:
        run_demo_sweep(api, project, out_dir, log)
    return results


SWEEP = {
    "labels": [{"method": "majority"}, {"method": "normalized"}, {"method": "dawid-skene"}],
    "losses": ["hard-ce", "soft-ce"],
    "seeds": [0, 1, 2],
    "base": {"model": {"kind": "mlp", "hidden": [64], "dropout": 0.2}, "epochs": 60},
    "metric": "accuracy",
    "split": "test",
}


def run_demo_sweep(api: Api, project: str, out_dir: Path, log: Any = print) -> None:
    """The sweep of the demo: 3 label methods x 2 losses x 3 seeds, ranked by test accuracy;
    report written to <out>/sweep.json and sweep.md (the README's table)."""
    import json

    from app.cli.sweep import markdown, run_sweep

    result = run_sweep(api.http, project, SWEEP, log=log)
    (out_dir / "sweep.json").write_text(json.dumps(result, indent=2))
    (out_dir / "sweep.md").write_text(markdown(result, ("nll", "ece", "kl_human")) + "\n")
    log(markdown(result, ("nll", "ece", "kl_human")))


def _seconds_between(start: str, end: str) -> float:
    from datetime import datetime

    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def figure(
    api: Api, results: list[dict[str, Any]], x: np.ndarray, project: str, path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from app.training.data import TEST, split_items

    ids = [f"digit-{i}" for i in range(len(x))]
    held = np.flatnonzero(split_items(ids, 0, 0.15, 0.15) == TEST)  # the jobs' default split
    gold = np.asarray([int(g) for g in load_gold(len(x))])[held]
    fig, (ax_rel, ax_curve) = plt.subplots(1, 2, figsize=(12, 5))
    bins = np.linspace(0, 1, 16)
    for r in results:
        pred_path = f"/v1/training-jobs/{int(r['job'])}/predict"
        probs = np.asarray(
            api.post(pred_path, {"items": [ids[i] for i in held]}, retry=True)["probs"]
        )
        conf, pred = probs.max(axis=1), probs.argmax(axis=1)
        which = np.clip(np.digitize(conf, bins) - 1, 0, 14)
        xs, ys = [], []
        for b in range(15):
            m = which == b
            if m.any():
                xs.append(conf[m].mean())
                ys.append((pred[m] == gold[m]).mean())
        ax_rel.plot(xs, ys, marker="o", label=r["recipe"])
        ax_curve.plot(
            [h["epoch"] for h in r["history"]],
            [h["kl_human"] for h in r["history"]],
            label=r["recipe"],
        )
    ax_rel.plot([0, 1], [0, 1], "k--", lw=1)
    ax_rel.set(title="Reliability (test split digits)", xlabel="confidence", ylabel="accuracy")
    ax_curve.set(title="KL(human || model) per epoch", xlabel="epoch", ylabel="kl_human")
    ax_rel.legend(fontsize=8)
    ax_curve.legend(fontsize=8)
    fig.suptitle(f"softlabels demo: {project}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def load_gold(n: int) -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().target[:n]
