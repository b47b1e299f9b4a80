"""Time one Label Studio webhook event end to end (TestClient -> PostgreSQL), the latency added to
every annotator's save in Label Studio (which waits at most 1.0 s). Real 1.23.2 request bodies
(../shared/data/label-studio), annotation ids and items varied.

    DATABASE_URL=postgresql://... python benchmarks/connector_latency.py [n_events]
"""

from __future__ import annotations

import copy
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

from fastapi.testclient import TestClient

from app.config import Settings
from app.db.migrate import upgrade
from app.main import create_app

LS = Path(__file__).resolve().parents[2] / "shared" / "data" / "label-studio" / "webhooks"


def main() -> None:
    import os

    import psycopg

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    server = os.environ["DATABASE_URL"]
    db = f"softlabels_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    url = server.rsplit("/", 1)[0] + "/" + db
    try:
        upgrade(url)
        body = json.loads(next(LS.glob("02-*.json")).read_text())["body"]
        with TestClient(create_app(Settings(DATABASE_URL=url, auth=False))) as c:
            c.post("/v1/projects", json={"name": "bench", "classes": ["pos", "neg", "neu"]})
            c.put(
                "/v1/projects/bench/connectors/label-studio",
                json={"from_name": "sentiment", "item_field": "ref"},
            )
            times = []
            for i in range(n):
                ev = copy.deepcopy(body)
                ev["annotation"]["id"] = 1000 + i
                ev["annotation"]["completed_by"] = i % 7
                ev["task"]["data"]["ref"] = f"item-{i // 3}"
                t0 = time.perf_counter()
                r = c.post("/v1/projects/bench/connectors/label-studio/events", json=ev)
                times.append(time.perf_counter() - t0)
                assert r.status_code == 200, r.text
            # Baseline: the same vote through POST /votes.
            base = []
            for i in range(n):
                vote = {"item": f"b-{i // 3}", "worker": str(i % 7), "label": "pos"}
                t0 = time.perf_counter()
                r = c.post("/v1/projects/bench/votes", json={"votes": [vote]})
                base.append(time.perf_counter() - t0)
                assert r.status_code == 200, r.text
        for name, t in (("ANNOTATION_CREATED events", times), ("POST /votes (1 vote)", base)):
            t.sort()
            print(
                f"{n} {name}: median {statistics.median(t) * 1000:.1f} ms, "
                f"p95 {t[int(0.95 * n)] * 1000:.1f} ms, max {t[-1] * 1000:.1f} ms"
            )
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


if __name__ == "__main__":
    main()
