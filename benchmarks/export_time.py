"""Time the 10,000-item export alone (issue 9's goal: JSONL in at most 0.1 s, median of 5).

    .venv/bin/python benchmarks/export_time.py [--repeats 5]

Section (b) of benchmarks/ingest.py without the rest: a fresh database on the system
PostgreSQL (DATABASE_URL), the 511k CIFAR-10H votes loaded by a raw COPY (their counts rebuilt,
as ingest.py does), `softlabels serve --no-worker --no-auth`, then each format downloaded
`--repeats` times; prints the median seconds and the bytes. The database is dropped afterwards.
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def main() -> None:
    import ingest  # benchmarks/ingest.py
    import psycopg

    from app.db.migrate import upgrade

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    server = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"softlabels_export_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    db = ingest.with_database(server, name)
    try:
        upgrade(db)
        votes = ingest.Votes(ingest.CIFAR10H)
        *_, project = ingest.copy_ingest(db, votes)
        with ingest.api_server(db, Path(f"/tmp/{name}-server.log")) as (url, _pid):
            for fmt in ("jsonl", "csv", "parquet"):
                seconds, size = ingest.time_export(url, project, fmt, args.repeats)
                print(f"{fmt}: median of {args.repeats}: {seconds:.3f} s, {size:,} bytes")
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
