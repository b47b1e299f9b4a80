"""Interference: single votes alone, and while bulk imports run, in the same run; bulk against
COPY.

    .venv/bin/python benchmarks/interference.py [--seconds 20] [--connections 16]
        [--bulk-clients 4] [--bulk-votes 5000] [--processes 1] [--server-env KEY=VALUE ...]
        [--note TEXT] [--out benchmarks/results/interference.md]

One `softlabels serve --no-worker --workers N` (auth on, an annotate key, the per-key rate limit
off) on a fresh database on the system PostgreSQL (DATABASE_URL, default
postgresql://postgres@127.0.0.1:5432/postgres; dropped afterwards), one project. Phases, back to
back:

1. alone: wrk (-t2, --connections, --seconds) POSTs single votes, as benchmarks/single_vote.py
   does (random item of 10^6 and worker of 10^4: nearly all inserts);
2. bulk alone: `--bulk-clients` threads POST `--bulk-votes`-vote batches without pause (each
   batch new items and workers: an import), for --seconds / 2;
3. both: the same bulk clients, and wrk as in 1 while they run;
4. COPY: the votes of `--copy-batches` bulk batches as one raw binary COPY into `votes` (their
   items and workers made first, as benchmarks/ingest.py does), the best of two.

Reported: single-vote req/s, p50, p99 alone and under bulk (goals: p99 under bulk <= 2x alone,
and < 250 ms); bulk votes/s alone and under single votes, and their batch p50/p99, against
COPY's votes/s (goal: bulk >= 40% of COPY). The machine may be shared: the load average is
recorded before each phase; the ratios, measured within one run, are the figures to read.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import psycopg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from single_vote import CLASSES, Result, make_projects, run_wrk  # noqa: E402

PROJECT = "p000"  # the name single_vote's wrk script uses for its first project


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def bulk_body(tag: str, client: int, batch: int, n: int) -> bytes:
    """`n` new votes: n / 5 new items, 5 new workers each (a run's batches never repeat)."""
    rows = [
        f'{{"item":"{tag}{client}-{batch}-{k // 5}","worker":"{tag}w{client}-{batch}-{k % 5}",'
        f'"label":{k % len(CLASSES)}}}'
        for k in range(n)
    ]
    return ('{"votes":[' + ",".join(rows) + "]}").encode()


@dataclass
class Bulk:
    """Bulk clients posting without pause until stopped; what they got acknowledged."""

    url: str
    key: str
    clients: int
    votes_per_batch: int
    tag: str
    stop: threading.Event = field(default_factory=threading.Event)
    latencies: list[float] = field(default_factory=list)
    acked: int = 0
    errors: list[str] = field(default_factory=list)
    started: float = 0.0
    last_ack: float = 0.0
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Bulk:
        self.started = time.perf_counter()
        for c in range(self.clients):
            th = threading.Thread(target=self._client, args=(c,), daemon=True)
            th.start()
            self._threads.append(th)
        return self

    def _client(self, c: int) -> None:
        headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=300) as http:
            batch = 0
            body = bulk_body(self.tag, c, 0, self.votes_per_batch)
            while not self.stop.is_set():
                t0 = time.perf_counter()
                r = http.post(f"/v1/projects/{PROJECT}/votes", content=body)
                t1 = time.perf_counter()
                if r.status_code != 200:
                    self.errors.append(f"{r.status_code} {r.text[:200]}")
                else:
                    self.latencies.append(t1 - t0)
                    self.acked += self.votes_per_batch
                    self.last_ack = t1
                batch += 1
                body = bulk_body(self.tag, c, batch, self.votes_per_batch)

    def finish(self) -> None:
        self.stop.set()
        for th in self._threads:
            th.join(600)

    @property
    def votes_per_s(self) -> float:
        return self.acked / max(self.last_ack - self.started, 1e-9)

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        return float(np.percentile(self.latencies, q) * 1000)


def copy_votes_per_s(db: str, n_votes: int) -> float:
    """Raw binary COPY of `n_votes` new votes (items and workers made first), votes/s."""
    from ingest import copy_binary

    n_items = n_votes // 5
    with psycopg.connect(db) as conn:
        pid = conn.execute(
            "INSERT INTO projects (name, classes) VALUES (%s, %s) RETURNING id",
            (f"copy-{uuid.uuid4().hex[:10]}", CLASSES),
        ).fetchone()[0]  # type: ignore[index]
        items = conn.execute(
            "INSERT INTO items (project_id, external_id, counts) SELECT %s, 'c' || g, "
            "array_fill(0, ARRAY[%s]) FROM generate_series(1, %s) g RETURNING id",
            (pid, len(CLASSES), n_items),
        ).fetchall()
        workers = conn.execute(
            "INSERT INTO workers (project_id, external_id) SELECT %s, 'cw' || g "
            "FROM generate_series(1, 5) g RETURNING id",
            (pid,),
        ).fetchall()
        conn.commit()
        item_ids = np.repeat(np.array([r[0] for r in items], dtype=np.int64), 5)
        worker_ids = np.tile(np.array([r[0] for r in workers], dtype=np.int64), n_items)
        labels = (np.arange(len(item_ids)) % len(CLASSES)).astype(np.int16)
        started = time.perf_counter()
        data = copy_binary(item_ids, worker_ids, pid, labels)
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY votes (item_id, worker_id, project_id, label) FROM STDIN WITH (FORMAT BINARY)"
            ) as copy,
        ):
            for start in range(0, len(data), 1 << 20):
                copy.write(data[start : start + (1 << 20)])
        conn.commit()
        return len(item_ids) / (time.perf_counter() - started)


def main() -> None:
    from app.cli.serverctl import ServerProcess
    from app.db.migrate import upgrade
    from tests.helpers import create_database, drop_database

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--bulk-clients", type=int, default=4)
    ap.add_argument("--bulk-votes", type=int, default=5000)
    ap.add_argument("--copy-batches", type=int, default=20)
    ap.add_argument("--processes", type=int, default=1)
    ap.add_argument("--server-env", nargs="*", default=[], help="KEY=VALUE settings for serve")
    ap.add_argument("--note", default="")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/interference.md")
    args = ap.parse_args()
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()

    server_url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    db = create_database(server_url, "softlabels_interference")
    logdir = Path(tempfile.mkdtemp(prefix="interference-"))
    admin_key = "sl_" + secrets.token_urlsafe(32)
    env = {
        "DATABASE_URL": db,
        "SOFTLABELS_ADMIN_KEY": admin_key,
        "SOFTLABELS_RATE_LIMIT_PER_S": "0",
        "SOFTLABELS_DATA_DIR": str(logdir / "data"),
        **dict(kv.split("=", 1) for kv in args.server_env),
    }
    srv = ServerProcess(
        ["--no-worker", "--workers", str(args.processes)], env=env, log=logdir / "server.log"
    )
    loads: dict[str, str] = {}
    try:
        upgrade(db)
        srv.start()
        key = make_projects(srv.url, admin_key, 1)
        run_wrk(srv.url, 3, args.connections, 1, key)  # warm-up, not counted

        loads["alone"] = loadavg()
        alone = run_wrk(srv.url, args.seconds, args.connections, 1, key)
        print("alone", alone, flush=True)

        loads["bulk alone"] = loadavg()
        solo_bulk = Bulk(srv.url, key, args.bulk_clients, args.bulk_votes, "s").start()
        time.sleep(args.seconds / 2)
        solo_bulk.finish()
        print("bulk alone", solo_bulk.votes_per_s, solo_bulk.errors[:2], flush=True)

        loads["under bulk"] = loadavg()
        bulk = Bulk(srv.url, key, args.bulk_clients, args.bulk_votes, "m").start()
        time.sleep(1.0)  # the bulk clients are under way before the clock starts
        under = run_wrk(srv.url, args.seconds, args.connections, 1, key)
        bulk.finish()
        print("under bulk", under, bulk.votes_per_s, bulk.errors[:2], flush=True)

        loads["COPY"] = loadavg()
        copy = max(copy_votes_per_s(db, args.copy_batches * args.bulk_votes) for _ in range(2))
        print("COPY", copy, flush=True)
        metrics = httpx.get(
            f"{srv.url}/v1/metrics", headers={"Authorization": f"Bearer {admin_key}"}
        ).text
    finally:
        srv.stop()
        drop_database(server_url, db)
    write_report(args, uptime, loads, alone, under, solo_bulk, bulk, copy, metrics)


def write_report(
    args: argparse.Namespace,
    uptime: str,
    loads: dict[str, str],
    alone: Result,
    under: Result,
    solo_bulk: Bulk,
    bulk: Bulk,
    copy: float,
    metrics: str,
) -> None:
    from load import machine

    p99_ratio = under.p99_ms / alone.p99_ms
    ratio = bulk.votes_per_s / copy
    ok = "met" if p99_ratio <= 2 and under.p99_ms < 250 else "not met"
    bulk_ok = "met" if ratio >= 0.40 else "not met"
    errors = len(solo_bulk.errors) + len(bulk.errors)
    lines = [
        "| phase | single req/s | p50 ms | p99 ms | non-2xx | bulk votes/s | bulk batch p50 ms "
        "| p99 ms | batches | load avg before |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        f"| single votes alone | {alone.rps:.0f} | {alone.p50_ms:.1f} | {alone.p99_ms:.1f} "
        f"| {alone.non2xx} | | | | | {loads['alone']} |",
        f"| bulk alone | | | | | {solo_bulk.votes_per_s:,.0f} | {solo_bulk.pct(50):.0f} "
        f"| {solo_bulk.pct(99):.0f} | {len(solo_bulk.latencies)} | {loads['bulk alone']} |",
        f"| single votes under bulk | {under.rps:.0f} | {under.p50_ms:.1f} | {under.p99_ms:.1f} "
        f"| {under.non2xx} | {bulk.votes_per_s:,.0f} | {bulk.pct(50):.0f} | {bulk.pct(99):.0f} "
        f"| {len(bulk.latencies)} | {loads['under bulk']} |",
        f"| raw binary COPY ({args.copy_batches * args.bulk_votes:,} votes, best of 2) | | | | "
        f"| {copy:,.0f} | | | | {loads['COPY']} |",
    ]
    group = {
        line.split("{")[0]: line.rsplit(" ", 1)[1]
        for line in metrics.splitlines()
        if line.startswith("softlabels_")
    }
    statements = float(group.get("softlabels_group_commit_statements_total", "nan"))
    requests = float(group.get("softlabels_group_commit_requests_total", "nan"))
    cmd = "benchmarks/interference.py " + " ".join(sys.argv[1:])
    section = (
        f"\n## Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} {args.note}\n\n"
        f"`{cmd}`; wrk -t2 -c{args.connections} -d{args.seconds}s; {args.bulk_clients} bulk "
        f"clients x {args.bulk_votes:,}-vote batches; {args.processes} API process(es); "
        f"{machine()}; `uptime` at start: {uptime}\n\n"
        + "\n".join(lines)
        + f"\n\nSingle-vote p99 under bulk / alone: **{p99_ratio:.2f}x** (goal <= 2x and "
        f"< 250 ms: {ok}). Bulk under single votes / COPY: **{ratio:.0%}** (goal >= 40%: "
        f"{bulk_ok}); bulk alone / COPY: {solo_bulk.votes_per_s / copy:.0%}. Bulk errors: "
        f"{errors}. Group commit: {requests:.0f} requests in {statements:.0f} statements "
        f"({requests / max(statements, 1):.1f} per statement), largest group "
        f"{group.get('softlabels_group_commit_largest_group', '?')}.\n"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not args.out.exists():
        args.out.write_text(
            "# Interference: single votes while bulk imports run\n\n"
            "See the docstring of benchmarks/interference.py for the phases.\n"
        )
    with args.out.open("a") as f:
        f.write(section)
    print(section)


if __name__ == "__main__":
    main()
