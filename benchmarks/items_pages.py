"""Time GET /items pages on a project of N items (default 100k), written straight into the
items table (the endpoint reads only that table). Run by hand:

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \
        python benchmarks/items_pages.py [n_items]
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import psycopg
from fastapi.testclient import TestClient

from app.config import Settings
from app.db.migrate import upgrade
from app.main import create_app
from tests.helpers import create_database, drop_database


def main(n: int) -> None:
    server = os.environ["DATABASE_URL"]
    url = create_database(server, prefix="softlabels_bench_items")
    try:
        upgrade(url)
        app = create_app(Settings(DATABASE_URL=url, auth=False))
        with TestClient(app) as c:
            c.post("/v1/projects", json={"name": "big", "classes": [f"c{k}" for k in range(10)]})
            with psycopg.connect(url) as conn:
                pid = conn.execute("SELECT id FROM projects WHERE name = 'big'").fetchone()[0]
                conn.execute(
                    """
                    INSERT INTO items (project_id, external_id, counts, n_votes, gold)
                    SELECT %s, 'item-' || g, c, (SELECT sum(x) FROM unnest(c) x),
                           CASE WHEN g %% 10 = 0 THEN g %% 10 END
                    FROM (SELECT g, ARRAY(SELECT (random() * 3)::int + g * 0
                                          FROM generate_series(1, 10)) AS c
                          FROM generate_series(1, %s) g) s
                    """,
                    (pid, n),
                )
                conn.execute("ANALYZE items")
            for sort in ["item", "votes", "entropy", "margin", "gold_disagreement"]:
                times, cursor = [], None
                for _ in range(20):
                    q = {"sort": sort, "order": "desc", "limit": 50}
                    if cursor:
                        q["cursor"] = cursor
                    t = time.perf_counter()
                    r = c.get("/v1/projects/big/items", params=q)
                    times.append(time.perf_counter() - t)
                    assert r.status_code == 200, r.text
                    cursor = r.json()["next_cursor"]
                t = time.perf_counter()
                r = c.get("/v1/projects/big/items", params={"sort": sort, "offset": n - 50})
                deep = time.perf_counter() - t
                print(
                    f"{sort:18s} first page {times[0] * 1000:7.1f} ms, next 19 pages median "
                    f"{statistics.median(times[1:]) * 1000:6.1f} ms, offset {n - 50}: "
                    f"{deep * 1000:7.1f} ms"
                )
            t = time.perf_counter()
            c.get("/v1/projects/big/items/item-777")
            print(f"one item: {(time.perf_counter() - t) * 1000:.1f} ms")
    finally:
        drop_database(server, url)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
