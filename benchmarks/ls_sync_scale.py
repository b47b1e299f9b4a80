"""The Label Studio sync at scale, against an instant export: our own share of the work.

    .venv/bin/python benchmarks/ls_sync_scale.py [--tasks 5000 20000] [--annotations 3]

A fresh database on the system PostgreSQL (DATABASE_URL), the app in this process (the same
code `softlabels serve` runs), and a stand-in for Label Studio's API that serves a generated
JSON export of N tasks with 3 annotations each at once (a real Label Studio spends 11-86 s
building it first; that part is its own). For each size: the first sync, a re-sync right after
(nothing changed: the case that took over 240 s before the sync was made plan-independent),
a re-sync after 1% of the annotations were deleted and 1% changed label, and, for scale, what
reading the export alone costs (fetch + parse). Writes benchmarks/results/ls_sync_scale.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CLASSES = ["pos", "neg", "neu"]


def export(n_tasks: int, per_task: int, rng: random.Random) -> list[dict[str, Any]]:
    ann_id = 0
    tasks = []
    for t in range(n_tasks):
        anns = []
        for w in range(per_task):
            ann_id += 1
            anns.append(
                {
                    "id": ann_id,
                    "completed_by": (t + w) % 50 + 1,
                    "was_cancelled": False,
                    "result": [
                        {
                            "from_name": "sentiment",
                            "to_name": "text",
                            "type": "choices",
                            "value": {"choices": [rng.choice(CLASSES)]},
                        }
                    ],
                }
            )
        tasks.append(
            {"id": t + 1, "data": {"text": f"text {t}", "ref": f"t{t}"}, "annotations": anns}
        )
    return tasks


class FakeLabelStudio:
    def __init__(self) -> None:
        self.body = b"[]"
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(fake.body)))
                self.end_headers()
                self.wfile.write(fake.body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def main() -> None:
    import psycopg
    from fastapi.testclient import TestClient

    from app.config import Settings
    from app.connectors import label_studio
    from app.db.migrate import upgrade
    from app.main import create_app
    from app.outbound import Policy, parse_networks

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, nargs="+", default=[5000, 20000])
    ap.add_argument("--annotations", type=int, default=3)
    args = ap.parse_args()
    server = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"softlabels_lssync_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    db = server.rsplit("/", 1)[0] + f"/{name}"
    os.environ["SOFTLABELS_ALLOWED_NETWORKS"] = "127.0.0.0/8"
    rows = []
    try:
        upgrade(db)
        fake = FakeLabelStudio()
        settings = Settings(DATABASE_URL=db, auth=False, allowed_networks="127.0.0.0/8")
        policy = Policy(allowed=parse_networks("127.0.0.0/8"))
        with TestClient(create_app(settings)) as client:
            for n in args.tasks:
                rng = random.Random(n)
                data = export(n, args.annotations, rng)
                fake.body = json.dumps(data).encode()
                project = f"ls-{n}"
                client.post("/v1/projects", json={"name": project, "classes": CLASSES})
                cfg = {
                    "from_name": "sentiment",
                    "item_field": "ref",
                    "url": fake.url,
                    "ls_project": 1,
                    "token": "legacy-token",
                }
                client.put(f"/v1/projects/{project}/connectors/label-studio", json=cfg)

                def sync(project: str = project) -> tuple[float, dict[str, Any]]:
                    t0 = time.perf_counter()
                    r = client.post(f"/v1/projects/{project}/connectors/label-studio/sync")
                    assert r.status_code == 200, r.text
                    return time.perf_counter() - t0, r.json()

                t0 = time.perf_counter()
                got = label_studio.fetch_export(fake.url, 1, "legacy-token", policy)
                label_studio.parse_export(
                    got, label_studio.Mapping("sentiment", "ref"), lenient=True
                )
                read_s = time.perf_counter() - t0
                first, r1 = sync()
                again, r2 = sync()
                tasks = data
                k = max(1, n * args.annotations // 100)
                flat = [
                    (ti, ai) for ti, t in enumerate(tasks) for ai in range(len(t["annotations"]))
                ]
                picked = rng.sample(flat, 2 * k)
                for ti, ai in picked[:k]:  # 1% change label
                    tasks[ti]["annotations"][ai]["result"][0]["value"]["choices"] = ["neu"]
                for ti, ai in sorted(picked[k:], reverse=True):  # 1% deleted
                    del tasks[ti]["annotations"][ai]
                fake.body = json.dumps(tasks).encode()
                changed, r3 = sync()
                rows.append(
                    (
                        n,
                        n * args.annotations,
                        read_s,
                        first,
                        r1["inserted"],
                        again,
                        r2["unchanged"],
                        changed,
                        r3["updated"],
                        r3["deleted"],
                    )
                )
                print(rows[-1], flush=True)
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Label Studio sync at scale (instant export)",
        "",
        f"{now}; `.venv/bin/python benchmarks/ls_sync_scale.py --tasks "
        f"{' '.join(map(str, args.tasks))}`; system PostgreSQL, shared 2-core machine, one run.",
        "",
        "| tasks | annotations | read export (s) | first sync (s) | inserted | re-sync, nothing "
        "changed (s) | unchanged | re-sync after 1% deleted + 1% relabelled (s) | updated | "
        "deleted |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r[0]:,} | {r[1]:,} | {r[2]:.2f} | {r[3]:.2f} | {r[4]:,} | {r[5]:.2f} | "
            f"{r[6]:,} | {r[7]:.2f} | {r[8]:,} | {r[9]:,} |"
        )
    out = REPO / "benchmarks" / "results" / "ls_sync_scale.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
