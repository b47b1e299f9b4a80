"""Scale-out proof: two API processes and two job workers on one PostgreSQL, under mixed load.

    .venv/bin/python benchmarks/scale_out.py [--clients 16] [--seconds 30] [--jobs 6]

What a user does when one machine is not enough: more API processes (`serve --workers 2`) and
more job workers (`softlabels worker`), all on one PostgreSQL. A fresh database is made on the
system PostgreSQL (DATABASE_URL, default postgresql://postgres@127.0.0.1:5432/postgres) and
dropped afterwards. While `--clients` threads post single votes and batches (a third of the
batches sent twice, as a client that lost the acknowledgement would) and read worker-model soft
labels (every read of a large-enough project queues a refit: SOFTLABELS_FIT_SYNC_MAX_VOTES=0),
`--jobs` training jobs are queued. Afterwards it checks:

- the stored votes equal the clients' ledger exactly (the last label acknowledged for every
  (item, worker)), and every item's counts equal a recount;
- every training job succeeded, ran once (one attempt, one `started` event);
- refits were not duplicated: no two refit jobs for one (project, method, parameters) were ever
  queued at the same time, and the fit cache holds one row per key.

Writes benchmarks/results/scale_out.md and exits non-zero if a check fails.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import psycopg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.cli.serverctl import ServerProcess  # noqa: E402
from app.db.migrate import upgrade  # noqa: E402
from tests.helpers import create_database, drop_database  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
CLASSES = ["a", "b", "c", "d"]
N_ITEMS = 400


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--jobs", type=int, default=6)
    parser.add_argument("--out", type=Path, default=RESULTS / "scale_out.md")
    args = parser.parse_args()
    server_url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    url = create_database(server_url, prefix="softlabels_scale")
    upgrade(url)
    admin = f"sl_bench-{uuid.uuid4().hex}"
    logs = Path(os.environ.get("TMPDIR", "/tmp")) / f"scale-out-{uuid.uuid4().hex[:6]}"
    env = {
        "DATABASE_URL": url,
        "SOFTLABELS_ADMIN_KEY": admin,
        "SOFTLABELS_RATE_LIMIT_PER_S": "0",
        "SOFTLABELS_FIT_SYNC_MAX_VOTES": "0",
        "SOFTLABELS_JOB_HEARTBEAT_TIMEOUT_S": "30",
        # Every job is queued at once: the per-project cap (4 by default) would refuse the rest.
        "SOFTLABELS_TRAINING_MAX_ACTIVE_PER_PROJECT": str(max(4, args.jobs)),
    }
    api = ServerProcess(["--workers", "2", "--no-worker"], env=env, log=logs / "api.log")
    workers: list[subprocess.Popen[bytes]] = []
    try:
        api.start(timeout=120)
        for i in range(2):
            out = (logs / f"worker-{i}.log").open("wb")
            workers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "app.cli", "worker"],
                    env={**os.environ, **env},
                    cwd=REPO,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
        report = run(api.url, admin, url, args)
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(30)
        api.stop()
        drop_database(server_url, url)
    args.out.write_text(report["text"])
    print(report["text"])
    return 0 if report["ok"] else 1


def run(base: str, admin: str, database_url: str, args: argparse.Namespace) -> dict:
    h = {"Authorization": f"Bearer {admin}"}
    c = httpx.Client(base_url=base, headers=h, timeout=120)
    project = "scale"
    assert c.post("/v1/projects", json={"name": project, "classes": CLASSES}).status_code == 201
    rng = random.Random(0)
    items = [
        {"id": f"i{i}", "features": [rng.gauss(0, 1) for _ in range(8)], "gold": i % 4}
        for i in range(N_ITEMS)
    ]
    assert c.post(f"/v1/projects/{project}/items", json={"items": items}).status_code == 200
    seed = [{"item": f"i{i}", "worker": "seed", "label": i % 4} for i in range(N_ITEMS)]
    assert c.post(f"/v1/projects/{project}/votes", json={"votes": seed}).status_code == 200
    ledger: dict[tuple[str, str], int] = {(v["item"], "seed"): v["label"] for v in seed}
    lock = threading.Lock()
    kinds: Counter[str] = Counter()
    errors: list[str] = []
    deadline = time.monotonic() + args.seconds

    def client(n: int) -> None:
        r = random.Random(n)
        with httpx.Client(base_url=base, headers=h, timeout=120) as cc:
            while time.monotonic() < deadline:
                roll = r.random()
                if roll < 0.1:
                    rr = cc.get(
                        f"/v1/projects/{project}/items/i{r.randrange(N_ITEMS)}/soft-label",
                        params={"method": "dawid-skene"},
                    )
                    ok = rr.status_code in (200, 503)  # 503 fit_pending until the first refit
                    kind = "read"
                else:
                    size = 1 if roll < 0.7 else r.randint(20, 200)
                    votes = [
                        {
                            "item": f"i{r.randrange(N_ITEMS)}",
                            "worker": f"c{n}-w{r.randrange(30)}",
                            "label": r.randrange(4),
                        }
                        for _ in range(size)
                    ]
                    votes = list({(v["item"], v["worker"]): v for v in votes}.values())
                    for attempt in range(2 if size > 1 and r.random() < 0.33 else 1):
                        rr = cc.post(f"/v1/projects/{project}/votes", json={"votes": votes})
                        if rr.status_code != 200:
                            break
                        if attempt == 1 and rr.json()["unchanged"] != len(votes):
                            errors.append(f"a resent batch changed votes: {rr.json()}")
                    ok = rr.status_code == 200
                    if ok:
                        with lock:
                            for v in votes:
                                ledger[(v["item"], v["worker"])] = v["label"]
                    kind = "vote" if size == 1 else "batch"
                with lock:
                    kinds[kind] += 1
                if not ok:
                    errors.append(f"{kind}: {rr.status_code} {rr.text[:200]}")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(args.clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    job_ids = []
    for j in range(args.jobs):
        cfg = {"epochs": 5, "model": {"kind": "linear"}, "seed": j}
        if j % 2:
            cfg["labels"] = {"method": "dawid-skene"}
        r = c.post(f"/v1/projects/{project}/training-jobs", json=cfg)
        assert r.status_code == 202, r.text
        job_ids.append(r.json()["id"])
        time.sleep(args.seconds / (args.jobs + 1))
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    end = time.monotonic() + 300
    statuses = {}
    while time.monotonic() < end:
        statuses = {j: c.get(f"/v1/training-jobs/{j}").json() for j in job_ids}
        if all(s["status"] in ("succeeded", "failed", "cancelled") for s in statuses.values()):
            break
        time.sleep(1)
    return check(database_url, project, ledger, statuses, kinds, errors, elapsed, args)


def check(
    database_url: str,
    project: str,
    ledger: dict[tuple[str, str], int],
    statuses: dict[int, dict],
    kinds: Counter[str],
    errors: list[str],
    elapsed: float,
    args: argparse.Namespace,
) -> dict:
    with psycopg.connect(database_url) as conn:
        stored = {
            (i, w): int(k)
            for i, w, k in conn.execute(
                "SELECT i.external_id, w.external_id, v.label FROM votes v "
                "JOIN items i ON i.id = v.item_id JOIN workers w ON w.id = v.worker_id"
            )
        }
        bad_counts = conn.execute(
            "SELECT count(*) FROM items i WHERE i.counts <> (SELECT array_agg(coalesce(c, 0)::int "
            "ORDER BY k) FROM generate_series(0, 3) k LEFT JOIN (SELECT label, count(*) AS c "
            "FROM votes WHERE item_id = i.id GROUP BY label) v ON v.label = k)"
        ).fetchone()[0]
        started = Counter(
            int(row[0])
            for row in conn.execute(
                "SELECT (j.args->>'job_id')::bigint FROM procrastinate_events e "
                "JOIN procrastinate_jobs j ON j.id = e.job_id "
                "WHERE j.task_name = 'softlabels.train' AND e.type = 'started'"
            )
        )
        attempts = dict(conn.execute("SELECT id, attempts FROM training_jobs").fetchall())
        refit_events = conn.execute(
            "SELECT j.queueing_lock, e.type::text, e.at, j.id FROM procrastinate_events e "
            "JOIN procrastinate_jobs j ON j.id = e.job_id WHERE j.task_name = 'softlabels.refit' "
            "ORDER BY e.at, e.id"
        ).fetchall()
        fits = conn.execute(
            "SELECT method, params, count(*) FROM label_fits GROUP BY 1, 2"
        ).fetchall()
    queued: Counter[str] = Counter()
    overlap = 0
    for key, kind, _, _ in refit_events:
        if kind == "deferred":
            queued[key] += 1
            overlap = max(overlap, queued[key])
        elif kind == "started":
            queued[key] -= 1
    refits_run = sum(1 for _, kind, _, _ in refit_events if kind == "started")
    missing = [k for k in ledger if k not in stored]
    wrong = [k for k in ledger if k in stored and stored[k] != ledger[k]]
    extra = [k for k in stored if k not in ledger]
    succeeded = [j for j, s in statuses.items() if s["status"] == "succeeded"]
    once = all(started[j] == 1 and attempts[j] == 1 for j in statuses)
    checks = {
        "ledger == stored votes": not (missing or wrong or extra),
        "counts == recount": bad_counts == 0,
        "no request failed": not errors,
        "every training job succeeded": len(succeeded) == len(statuses),
        "every training job ran once": once,
        "refits never queued twice for one key": overlap <= 1,
        "one cached fit per key": all(n == 1 for _, _, n in fits),
    }
    n_req = sum(kinds.values())
    lines = [
        "# Scale-out: 2 API processes + 2 job workers on one PostgreSQL",
        "",
        f"`.venv/bin/python benchmarks/scale_out.py --clients {args.clients} --seconds "
        f"{args.seconds:g} --jobs {args.jobs}` on {time.strftime('%Y-%m-%d')}, load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.",
        "",
        f"- {n_req} requests in {elapsed:.1f} s ({n_req / elapsed:.0f} req/s): "
        + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())),
        f"- ledger: {len(ledger)} (item, worker) pairs; missing {len(missing)}, wrong "
        f"{len(wrong)}, extra {len(extra)}; items whose counts differ from a recount: "
        f"{bad_counts}",
        f"- training jobs: {len(succeeded)}/{len(statuses)} succeeded; started events per job: "
        f"{sorted(started.values())}"
        + "".join(
            f"; job {j} {s['status']}: {str(s.get('error'))[:300]}"
            for j, s in statuses.items()
            if s["status"] != "succeeded"
        ),
        f"- refits run: {refits_run}; most refit jobs queued at once for one key: {overlap}; "
        f"cached fits: {[(m, p, n) for m, p, n in fits]}",
        f"- failed requests: {len(errors)}" + (f" (first: {errors[0]})" if errors else ""),
        "",
        "| check | result |",
        "|---|---|",
        *(f"| {name} | {'ok' if ok else 'FAILED'} |" for name, ok in checks.items()),
        "",
    ]
    return {"ok": all(checks.values()), "text": "\n".join(lines)}


if __name__ == "__main__":
    raise SystemExit(main())
