"""Benchmark (by hand): which training target wins, on a real crowd and on the demo crowd.

    DATABASE_URL=postgresql://... .venv/bin/python benchmarks/music_genre.py [--only music|demo]

-> benchmarks/results/music_genre.md (+ .json), summarised in the README, "Sweeps".

1. Music genre (/work/shared/data/music-genre, see its README; Rodrigues, Pereira & Ribeiro,
   Pattern Recognition Letters 2013): 700 songs with 2,945 AMT votes (1-7 per song, 44 workers)
   and 300 songs with gold and no votes, 124 Marsyas features. A sweep over label methods
   (majority, normalized, dawid-skene, glad, mace, crowdlab) x losses (hard-ce, soft-ce) x 3
   seeds, a linear model (multinomial logistic regression: the dataset's README puts a
   gold-trained one at 0.68-0.76 on the 300), the voted songs split 80/20 train/validation
   (validation: early stopping only), figures on the 300 gold-only songs (split test_gold).
   crowdlab uses the K-fold out-of-sample predictions of one job (oos_folds 5, normalized).
2. The demo crowd (app/cli/demo_run.py: 1,797 digits, 8 simulated votes each): the demo's
   sweep, ranked
   on the test split (15% of the voted digits, gold from scikit-learn).

Everything goes through the API (an in-process app on a fresh database) and one real
`softlabels worker` process with one torch thread (the machine has 2 shared cores).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DATA = REPO.parent / "shared" / "data" / "music-genre"
RESULTS = REPO / "benchmarks" / "results"
LINEAR = {
    "model": {"kind": "linear"},
    "epochs": 300,
    "lr": 0.01,
    "weight_decay": 1e-3,
    "batch_size": 64,
    "early_stopping": 30,
    "validation_fraction": 0.2,
    "test_fraction": 0.0,
    "device": "cpu",
}
MUSIC_METHODS = ["majority", "normalized", "dawid-skene", "glad", "mace"]
EXTRA = ("nll", "ece", "brier", "macro_f1")


def load_music(client: Any, project: str) -> None:
    with (DATA / "classes.csv").open() as f:
        classes = [r["name"] for r in csv.DictReader(f)]
    client.post(
        "/v1/projects",
        json={"name": project, "classes": classes, "description": "music genre (AMT)"},
    ).raise_for_status()
    items = []
    with (DATA / "items.csv").open() as f:
        for r in csv.DictReader(f):
            feats = [float(r[f"f{i}"]) for i in range(124)]
            items.append({"id": f"song-{r['item']}", "features": feats, "gold": int(r["gold"])})
    for i in range(0, len(items), 500):
        client.post(
            f"/v1/projects/{project}/items", json={"items": items[i : i + 500]}
        ).raise_for_status()
    with (DATA / "votes.csv").open() as f:
        votes = [
            {"item": f"song-{r['item']}", "worker": f"amt-{r['worker']}", "label": int(r["label"])}
            for r in csv.DictReader(f)
        ]
    client.post(f"/v1/projects/{project}/votes", json={"votes": votes}).raise_for_status()
    print(f"{project}: {len(items)} songs, {len(votes)} votes", flush=True)


def wait_job(client: Any, job_id: int, timeout: float = 1800) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/training-jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.5)
    raise TimeoutError(job_id)


def music(client: Any, seeds: list[int]) -> dict[str, Any]:
    from app.cli.sweep import markdown, run_sweep

    project = f"music-{uuid.uuid4().hex[:6]}"
    load_music(client, project)
    t0 = time.perf_counter()
    oos_cfg = {**LINEAR, "labels": {"method": "normalized"}, "oos_folds": 5}
    r = client.post(f"/v1/projects/{project}/training-jobs", json=oos_cfg)
    r.raise_for_status()
    oos = wait_job(client, r.json()["id"])
    assert oos["status"] == "succeeded", oos
    print(f"out-of-sample job {oos['id']}: {time.perf_counter() - t0:.0f} s", flush=True)
    suspect = client.get(f"/v1/projects/{project}/items/suspect", params={"limit": 50}).json()
    gold = {}
    with (DATA / "items.csv").open() as f:
        gold = {f"song-{r['item']}": int(r["gold"]) for r in csv.DictReader(f)}
    with (DATA / "classes.csv").open() as f:
        names = [r["name"] for r in csv.DictReader(f)]
    wrong_majority = [s for s in suspect["items"] if names[gold[s["item"]]] != s["majority"]]
    crowd = client.get(
        f"/v1/projects/{project}/soft-labels", params={"method": "crowdlab", "job": oos["id"]}
    ).text.splitlines()
    agg_acc = {}
    for method in [*MUSIC_METHODS, "crowdlab"]:
        params = {"method": method} | ({"job": oos["id"]} if method == "crowdlab" else {})
        rows = [
            json.loads(x)
            for x in client.get(f"/v1/projects/{project}/soft-labels", params=params).text.split(
                "\n"
            )
            if x
        ]
        agg_acc[method] = float(
            np.mean([names.index(r["gold"]) == int(np.argmax(r["probs"])) for r in rows])
        )
    print(f"label accuracy on the 700 voted songs: {agg_acc}", flush=True)
    body = {
        "labels": [{"method": m} for m in MUSIC_METHODS]
        + [{"method": "crowdlab", "job": oos["id"]}],
        "losses": ["hard-ce", "soft-ce"],
        "seeds": seeds,
        "split_seed": 0,
        "base": LINEAR,
        "metric": "accuracy",
        "split": "test_gold",
        "n_boot": 2000,
    }
    t0 = time.perf_counter()
    sweep = run_sweep(client, project, body)
    seconds = time.perf_counter() - t0
    print(markdown(sweep, EXTRA), flush=True)
    return {
        "project": project,
        "sweep": sweep,
        "seconds": seconds,
        "oos_job": oos["id"],
        "label_accuracy_700": agg_acc,
        "suspect_precision_at_50_wrong_majority": len(wrong_majority)
        / max(len(suspect["items"]), 1),
        "crowdlab_rows": len(crowd),
    }


def demo_crowd(client: Any) -> dict[str, Any]:
    from sklearn.datasets import load_digits

    from app.cli.demo_run import SWEEP, Crowd, simulate_votes
    from app.cli.sweep import markdown, run_sweep

    x, gold = load_digits(return_X_y=True)
    project = f"digits-{uuid.uuid4().hex[:6]}"
    client.post(
        "/v1/projects", json={"name": project, "classes": [str(d) for d in range(10)]}
    ).raise_for_status()
    items = [
        {"id": f"digit-{i}", "features": x[i].tolist(), "gold": int(gold[i])}
        for i in range(len(gold))
    ]
    client.post(f"/v1/projects/{project}/items", json={"items": items}).raise_for_status()
    votes = simulate_votes(x, gold, Crowd())
    client.post(f"/v1/projects/{project}/votes", json={"votes": votes}).raise_for_status()
    t0 = time.perf_counter()
    sweep = run_sweep(client, project, SWEEP)
    seconds = time.perf_counter() - t0
    print(markdown(sweep, (*EXTRA, "kl_human")), flush=True)
    return {"project": project, "sweep": sweep, "seconds": seconds, "config": SWEEP}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=["music", "demo"])
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    from fastapi.testclient import TestClient

    from app.config import Settings
    from app.db.migrate import upgrade
    from app.main import create_app
    from tests.helpers import create_database, drop_database

    server = os.environ["DATABASE_URL"]
    url = create_database(server, prefix="softlabels_bench_music")
    upgrade(url)
    env = {**os.environ, "DATABASE_URL": url, "SOFTLABELS_TORCH_THREADS": "1"}
    log = Path(tempfile.mkdtemp()) / "worker.log"
    worker = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker"],
        env=env,
        cwd=REPO,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    from datetime import UTC, datetime

    out: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)",
        "run": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "command": "PYTHONPATH=. .venv/bin/python benchmarks/music_genre.py "
        + " ".join(sys.argv[1:]),
    }
    try:
        settings = Settings(DATABASE_URL=url, data_dir=log.parent, auth=False)
        with TestClient(create_app(settings)) as client:
            if args.only in (None, "music"):
                out["music"] = music(client, [int(s) for s in args.seeds.split(",")])
            if args.only in (None, "demo"):
                out["demo"] = demo_crowd(client)
    finally:
        worker.terminate()
        worker.wait(30)
        drop_database(server, url)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "music_genre.json"
    if args.only is not None and path.exists():  # one part re-run: keep the other's results
        out = json.loads(path.read_text()) | out
    path.write_text(json.dumps(out, indent=1, default=str))
    write_markdown(out, RESULTS / "music_genre.md")


def write_markdown(out: dict[str, Any], path: Path) -> None:
    from app.cli.sweep import markdown

    # No title of its own: docs/training.md includes this file under its heading.
    lines = [f"Machine: {out['machine']}; one worker, one torch thread."]
    if "run" in out:
        lines.append(f"Run {out['run']}: `{out['command'].strip()}` (DATABASE_URL set).")
    if "music" in out:
        m = out["music"]
        lines += [
            "",
            "##### Music genre (700 songs with AMT votes; figures on the 300 gold-only songs)",
            "",
            f"Linear model; {len(m['sweep']['cells'])} jobs in {m['seconds']:.0f} s. "
            f"crowdlab uses job {m['oos_job']}'s 5-fold out-of-sample predictions.",
            "",
            markdown(m["sweep"], EXTRA),
            "",
            "Label accuracy of each method against gold on the 700 voted songs: "
            + ", ".join(f"{k} {v:.3f}" for k, v in m["label_accuracy_700"].items())
            + ".",
            "",
            "/items/suspect (top 50 by out-of-sample disagreement): "
            f"{m['suspect_precision_at_50_wrong_majority']:.2f} of them have a wrong majority "
            "vote.",
        ]
    if "demo" in out:
        d = out["demo"]
        lines += [
            "",
            "##### Demo crowd (1,797 digits, 8 simulated votes each; figures on the test split)",
            "",
            f"MLP [64]; {len(d['sweep']['cells'])} jobs in {d['seconds']:.0f} s.",
            "",
            markdown(d["sweep"], (*EXTRA, "kl_human")),
        ]
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
