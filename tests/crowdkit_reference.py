"""Run crowd-kit 1.4.2 on vote arrays and save its posteriors: the reference for our methods.

Runs inside the separate crowd-kit virtualenv (see requirements-crowdkit.txt), never imported by
the app or the test process, so it depends only on numpy, pandas and crowd-kit:

    .venv-crowdkit/bin/python tests/crowdkit_reference.py JOBS.json

JOBS.json is a list of jobs {"votes": "x.npz", "method": "DawidSkene", "kwargs": {...},
"out": "y.npy"}; x.npz holds int arrays item, worker, label and scalars n_items, n_classes.
Each job writes its (n_items, n_classes) posteriors to `out` (NaN rows for items without votes,
0 for classes crowd-kit never saw) and {"seconds", "cpu_seconds", "n_iter", "rss_before_mb",
"max_rss_mb"} to `out` + ".json" (wall and CPU seconds of the fit; peak RSS is per process: run
one job per process to measure a job's peak).
The DataFrame rows keep the array order, so callers control crowd-kit's first-appearance order.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from typing import Any

import numpy as np
import pandas as pd
from crowdkit import aggregation

METHODS = ("DawidSkene", "OneCoinDawidSkene", "GLAD", "MACE", "Wawa", "MajorityVote")


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_job(job: dict[str, Any]) -> None:
    if job["method"] not in METHODS:
        raise SystemExit(f"unknown method {job['method']!r}")
    with np.load(job["votes"]) as z:
        item, worker, label = z["item"], z["worker"], z["label"]
        n_items, n_classes = int(z["n_items"]), int(z["n_classes"])
    df = pd.DataFrame({"task": item, "worker": worker, "label": label})
    kwargs = dict(job.get("kwargs", {}))  # Python's json round-trips -Infinity (tol = -inf)
    model = getattr(aggregation, job["method"])(**kwargs)
    rss_before = _max_rss_mb()
    start, cpu_start = time.perf_counter(), time.process_time()
    probas = model.fit_predict_proba(df)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    probas = probas.reindex(index=range(n_items), columns=range(n_classes))
    out = probas.to_numpy(dtype=np.float64)
    voted = np.zeros(n_items, dtype=bool)
    voted[item] = True
    unseen = np.setdiff1d(np.arange(n_classes), label)
    out[np.ix_(voted, unseen)] = 0.0  # classes no one gave: crowd-kit has no column for them
    np.save(job["out"], out)
    history = getattr(model, "loss_history_", None)
    meta = {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,  # user + system CPU of the process during the fit
        "n_iter": None if history is None else len(history),
        "rss_before_mb": rss_before,  # peak RSS of this process so far (Linux: ru_maxrss KiB)
        "max_rss_mb": _max_rss_mb(),
    }
    with open(job["out"] + ".json", "w") as f:
        json.dump(meta, f)


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit(__doc__)
    with open(argv[1]) as f:
        jobs = json.load(f)
    for job in jobs:
        run_job(job)


if __name__ == "__main__":
    main(sys.argv)
