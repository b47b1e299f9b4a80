"""Vote ingest, export and single-vote latency of the HTTP API, against a raw COPY.

Run by hand (not a test). On the PostgreSQL server at --database-url (default: $DATABASE_URL,
else the local one) it creates a fresh database, migrates it, starts the API as a real server
(`softlabels serve --no-worker`, uvicorn, in a subprocess) and measures:

(a) all 511,000 CIFAR-10H votes (made from shared/data/cifar10h/counts.npy, worker j casting
    an image's j-th vote) POSTed in batches of 10k and 50k by 1 and 4 concurrent httpx clients,
    each into a fresh project, next to a raw binary COPY of the same 511k rows into the same
    `votes` table (a fresh project whose items and workers are created first). COPY runs
    before and after the API runs; the ratio is API votes/s over the faster COPY. Request
    bodies are encoded before the clock starts (the server's work is what is measured). Each
    run's project is deleted and the tables vacuumed afterwards, so every run starts from the
    same table size. Goal: API >= 40% of COPY.
(b) a full export of the 10,000 items in each format (median of --export-repeats downloads,
    default 5), from the project of the last COPY run (its counts rebuilt). Goal (issue 9):
    JSONL in at most 0.1 s.
(c) single-vote POSTs from 32 concurrent clients (asyncio + httpx) for ~20 s: req/s, p50, p99.
(d) where the time of one 50k-vote batch goes, measured in-process on the same database: JSON
    parsing + pydantic validation, Python work, each SQL statement, and the foreign-key
    triggers inside the vote upsert (EXPLAIN ANALYZE).

Writes benchmarks/results/ingest.md (or --out) and prints it.

    .venv/bin/python benchmarks/ingest.py
    .venv/bin/python benchmarks/ingest.py --database-url postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import queue
import random
import shlex
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import psycopg
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parents[1]
CIFAR10H = REPO.parent / "shared" / "data" / "cifar10h"
DEFAULT_OUT = Path(__file__).parent / "results" / "ingest.md"
GOAL_RATIO = 0.40


# --- data -------------------------------------------------------------------------------------


class Votes:
    """The 511,000 CIFAR-10H votes as aligned arrays: item index, worker index, label."""

    def __init__(self, data_dir: Path) -> None:
        counts = np.load(data_dir / "counts.npy")
        self.classes = (data_dir / "classes.txt").read_text().split()
        n_items, k = counts.shape
        per_item = counts.sum(axis=1)
        self.item = np.repeat(np.arange(n_items), per_item)
        self.label = np.repeat(np.tile(np.arange(k), n_items), counts.ravel())
        starts = np.repeat(np.cumsum(per_item) - per_item, per_item)
        self.worker = np.arange(len(self.item)) - starts  # j-th vote of its image
        self.item_ids = [f"test-{i:05d}" for i in range(n_items)]
        self.worker_ids = [f"w{j}" for j in range(int(self.worker.max()) + 1)]
        self.counts = counts

    def __len__(self) -> int:
        return len(self.item)

    def bodies(self, batch: int) -> list[bytes]:
        items, workers = self.item_ids, self.worker_ids
        out = []
        for start in range(0, len(self), batch):
            sl = slice(start, start + batch)
            votes = [
                {"item": items[i], "worker": workers[w], "label": int(k)}
                for i, w, k in zip(
                    self.item[sl].tolist(),
                    self.worker[sl].tolist(),
                    self.label[sl].tolist(),
                    strict=True,
                )
            ]
            out.append(json.dumps({"votes": votes}).encode())
        return out


# --- database and server ----------------------------------------------------------------------


def with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def api_server(database_url: str, log: Path) -> Iterator[tuple[str, int]]:
    port = free_port()
    # No API keys (loopback only) and no per-key rate limit: the server's throughput is measured.
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "PYTHONUNBUFFERED": "1",
        "SOFTLABELS_RATE_LIMIT_PER_S": "0",
    }
    cmd = [sys.executable, "-m", "app.cli", "serve", "--no-worker", "--no-auth"]
    cmd += ["--port", str(port)]
    with log.open("ab") as fh:
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not become healthy")
            time.sleep(0.2)
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def proc_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) a local process has used, from /proc; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(pids: list[int]) -> list[int]:
    """Every process below these (the API processes `serve` starts), from /proc."""
    found: list[int] = []
    todo = list(pids)
    while todo:
        pid = todo.pop()
        for children in Path(f"/proc/{pid}/task").glob("*/children"):
            try:
                kids = [int(x) for x in children.read_text().split()]
            except OSError:
                continue
            found += kids
            todo += kids
    return found


class CpuMeter:
    """CPU seconds used during a run by some local processes and by this database's client
    backends (sampled every 0.1 s, so a backend that exits mid-run loses < 0.1 s).

    Wall time on a shared machine moves with whatever else runs; CPU time much less, so the
    report gives both. PostgreSQL must run on this machine for the backends to be counted.
    """

    def __init__(self, db: str, pids: list[int]) -> None:
        self.db, self.fixed = db, pids
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self._stop = threading.Event()

    def _sample(self, conn: psycopg.Connection, initial: bool = False) -> None:
        backends = [
            pid
            for (pid,) in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
            )
        ]
        for pid in [*self.fixed, *descendants(self.fixed), *backends]:
            cpu = proc_cpu(pid)
            if cpu is None:
                continue
            # A backend first seen mid-run started during it: count it from zero.
            self.first.setdefault(pid, cpu if initial or pid not in backends else 0.0)
            self.last[pid] = cpu

    def __enter__(self) -> CpuMeter:
        self.conn = psycopg.connect(self.db, autocommit=True)
        self._sample(self.conn, initial=True)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        with psycopg.connect(self.db, autocommit=True) as conn:
            while not self._stop.wait(0.1):
                self._sample(conn)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.thread.join()
        self._sample(self.conn)
        self.conn.close()

    @property
    def seconds(self) -> float:
        return sum(self.last[pid] - self.first[pid] for pid in self.last)


def create_project(url: str, classes: list[str]) -> str:
    name = f"bench-{uuid.uuid4().hex[:10]}"
    r = httpx.post(f"{url}/v1/projects", json={"name": name, "classes": classes}, timeout=30)
    r.raise_for_status()
    return name


def project_id(db: str, name: str) -> int:
    with psycopg.connect(db) as conn:
        return int(conn.execute("SELECT id FROM projects WHERE name = %s", (name,)).fetchone()[0])


def drop_project(db: str, name: str) -> None:
    """Delete a run's project (votes, items, workers cascade) and vacuum, so the next run
    starts from the same table and index sizes."""
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("DELETE FROM projects WHERE name = %s", (name,))
        conn.execute("VACUUM (ANALYZE) votes, items, workers, projects")


def stored_count(db: str, pid: int) -> int:
    with psycopg.connect(db) as conn:
        return int(
            conn.execute("SELECT count(*) FROM votes WHERE project_id = %s", (pid,)).fetchone()[0]
        )


def counts_match(db: str, pid: int, expected: np.ndarray) -> bool:
    with psycopg.connect(db) as conn:
        rows = conn.execute(
            "SELECT external_id, counts FROM items WHERE project_id = %s", (pid,)
        ).fetchall()
    got = {e: c for e, c in rows}
    return len(got) == len(expected) and all(
        got[f"test-{i:05d}"] == row for i, row in enumerate(expected.tolist())
    )


# --- (a) ingest -------------------------------------------------------------------------------


def api_ingest(url: str, project: str, bodies: list[bytes], clients: int) -> float:
    """POST every body (clients threads, each its own connection). Returns wall seconds."""
    work: queue.Queue[bytes] = queue.Queue()
    for body in bodies:
        work.put(body)
    errors: list[str] = []

    def client() -> None:
        with httpx.Client(timeout=600) as http:
            while True:
                try:
                    body = work.get_nowait()
                except queue.Empty:
                    return
                r = http.post(
                    f"{url}/v1/projects/{project}/votes",
                    content=body,
                    headers={"content-type": "application/json"},
                )
                if r.status_code != 200:
                    errors.append(f"{r.status_code} {r.text[:300]}")

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests, first: {errors[0]}")
    return elapsed


# PostgreSQL's binary COPY stream: header, then per row a field count and (length, big-endian
# value) per field, then a -1 trailer. Built with numpy in one go, so the client costs ~nothing.
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
COPY_ROW = np.dtype(
    [
        ("n", ">i2"),
        ("l_item", ">i4"),
        ("item", ">i8"),
        ("l_worker", ">i4"),
        ("worker", ">i8"),
        ("l_project", ">i4"),
        ("project", ">i8"),
        ("l_label", ">i4"),
        ("label", ">i2"),
    ]
)


def copy_binary(
    item_ids: np.ndarray, worker_ids: np.ndarray, project: int, labels: np.ndarray
) -> bytes:
    rows = np.empty(len(item_ids), dtype=COPY_ROW)
    rows["n"] = 4
    rows["l_item"] = rows["l_worker"] = rows["l_project"] = 8
    rows["l_label"] = 2
    rows["item"], rows["worker"], rows["project"], rows["label"] = (
        item_ids,
        worker_ids,
        project,
        labels,
    )
    return COPY_HEADER + rows.tobytes() + (-1).to_bytes(2, "big", signed=True)


def copy_ingest(db: str, votes: Votes) -> tuple[float, float, float, str]:
    """Raw binary COPY of the same rows into `votes`, for a project whose items and workers
    exist. Returns (COPY wall seconds incl. commit, CPU seconds of this client and its
    backend, seconds to then rebuild items.counts, project)."""
    name = f"copy-{uuid.uuid4().hex[:10]}"
    with psycopg.connect(db) as conn:
        pid = conn.execute(
            "INSERT INTO projects (name, classes) VALUES (%s, %s) RETURNING id",
            (name, votes.classes),
        ).fetchone()[0]
        item_pk = dict(
            conn.execute(
                "INSERT INTO items (project_id, external_id, counts) "
                "SELECT %s, x, array_fill(0, ARRAY[%s]) FROM unnest(%s::text[]) AS x "
                "RETURNING external_id, id",
                (pid, len(votes.classes), votes.item_ids),
            ).fetchall()
        )
        worker_pk = dict(
            conn.execute(
                "INSERT INTO workers (project_id, external_id) "
                "SELECT %s, x FROM unnest(%s::text[]) AS x RETURNING external_id, id",
                (pid, votes.worker_ids),
            ).fetchall()
        )
        conn.commit()
        item_ids = np.array([item_pk[e] for e in votes.item_ids], dtype=np.int64)[votes.item]
        worker_ids = np.array([worker_pk[e] for e in votes.worker_ids], dtype=np.int64)[
            votes.worker
        ]

        backend = conn.info.backend_pid
        cpu0 = time.process_time(), proc_cpu(backend) or 0.0
        started = time.perf_counter()
        data = copy_binary(item_ids, worker_ids, pid, votes.label)
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY votes (item_id, worker_id, project_id, label) FROM STDIN WITH (FORMAT BINARY)"
            ) as copy,
        ):
            for start in range(0, len(data), 1 << 20):
                copy.write(data[start : start + (1 << 20)])
        conn.commit()
        copy_s = time.perf_counter() - started
        copy_cpu = time.process_time() - cpu0[0] + (proc_cpu(backend) or 0.0) - cpu0[1]

        # What the API also does: keep items.counts and n_votes. Not part of the COPY figure.
        started = time.perf_counter()
        conn.execute(
            """
            UPDATE items i SET counts = c.counts, n_votes = c.n
            FROM (SELECT item_id, array_agg(n ORDER BY k) AS counts, sum(n)::int AS n
                  FROM (SELECT i2.id AS item_id, k, count(v.label)::int AS n
                        FROM items i2 CROSS JOIN generate_series(0, %s - 1) k
                        LEFT JOIN votes v ON v.item_id = i2.id AND v.label = k
                        WHERE i2.project_id = %s GROUP BY i2.id, k) t
                  GROUP BY item_id) c
            WHERE i.id = c.item_id
            """,
            (len(votes.classes), pid),
        )
        conn.commit()
        counts_s = time.perf_counter() - started
    assert stored_count(db, pid) == len(votes)
    assert counts_match(db, pid, votes.counts)
    return copy_s, copy_cpu, counts_s, name


# --- (b) export -------------------------------------------------------------------------------


def time_export(url: str, project: str, fmt: str, repeats: int = 3) -> tuple[float, int]:
    times, size = [], 0
    with httpx.Client(timeout=300) as http:
        for _ in range(repeats):
            started = time.perf_counter()
            size = 0
            with http.stream(
                "GET", f"{url}/v1/projects/{project}/soft-labels", params={"format": fmt}
            ) as r:
                r.raise_for_status()
                for part in r.iter_bytes():
                    size += len(part)
            times.append(time.perf_counter() - started)
    return statistics.median(times), size


# --- (c) single votes -------------------------------------------------------------------------


async def single_votes(
    url: str, project: str, item_ids: list[str], clients: int, seconds: float
) -> tuple[int, float, list[float]]:
    latencies: list[float] = []
    failures = 0
    stop_at = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(n: int, http: httpx.AsyncClient) -> None:
        nonlocal failures
        rng = random.Random(n)
        k = 0
        while time.perf_counter() < stop_at:
            vote = {"item": rng.choice(item_ids), "worker": f"live-{n}-{k}", "label": k % 10}
            k += 1
            t0 = time.perf_counter()
            try:
                r = await http.post(f"/v1/projects/{project}/votes", json={"votes": [vote]})
            except httpx.HTTPError:
                failures += 1
                continue
            latencies.append(time.perf_counter() - t0)
            failures += r.status_code != 200

    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(n, http) for n in range(clients)))
        elapsed = time.perf_counter() - started
    return failures, elapsed, latencies


# --- (d) where the time goes ------------------------------------------------------------------


def profile_batch(db: str, votes: Votes, batch: int) -> list[tuple[str, float]]:
    """One batch through the API's own code path, in-process, each step timed."""
    from sqlalchemy import event, select

    import app.votes.ingest as ingest
    from app.api.schemas import VoteBatch
    from app.db import functions
    from app.db.models import Project
    from app.db.session import make_engine, make_sessionmaker

    body = votes.bodies(batch)[1]  # the second batch: items not yet created, like most
    steps: list[tuple[str, float]] = []
    t0 = time.perf_counter()
    parsed = VoteBatch.model_validate_json(body)
    steps.append(
        (
            "JSON parse + pydantic validation (VoteBatch.model_validate_json)",
            time.perf_counter() - t0,
        )
    )
    t0 = time.perf_counter()
    json.loads(body)
    steps.append(("  of which: json.loads alone", time.perf_counter() - t0))

    engine = make_engine(db, pool_size=1)
    sql: list[tuple[str, float]] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn, cursor, statement, params, context, many):  # type: ignore[no-untyped-def]
        context._bench_t0 = time.perf_counter()

    @event.listens_for(engine, "after_cursor_execute")
    def _after(conn, cursor, statement, params, context, many):  # type: ignore[no-untyped-def]
        sql.append((" ".join(statement.split())[:60], time.perf_counter() - context._bench_t0))

    factory = make_sessionmaker(engine)
    name = f"prof-{uuid.uuid4().hex[:8]}"
    with factory() as session:
        session.add(Project(name=name, classes=votes.classes))
        session.commit()
        project = session.scalars(select(Project).where(Project.name == name)).one()
        sql.clear()
        t0 = time.perf_counter()
        ingest.ingest_votes(session, project, parsed.votes)
        total = time.perf_counter() - t0
        t0 = time.perf_counter()
        session.commit()
        commit = time.perf_counter() - t0
    in_sql = sum(s for _, s in sql)
    steps.append(("ingest_votes total", total))
    steps.append(
        ("  Python work (validation against classes, factorize, array building)", total - in_sql)
    )
    for statement, seconds in sql:
        steps.append((f"  SQL: {statement}", seconds))
    steps.append(("commit", commit))

    # The call again on a fresh project, with auto_explain reporting (as notices) each statement
    # inside the ingest function that takes over 1 ms and the foreign-key trigger times.
    with psycopg.connect(db, autocommit=True) as conn:
        pid = conn.execute(
            "INSERT INTO projects (name, classes) VALUES (%s, %s) RETURNING id",
            (name + "x", votes.classes),
        ).fetchone()[0]
        notices: list[str] = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        conn.execute("LOAD 'auto_explain'")
        for setting in (
            "auto_explain.log_min_duration = 1",
            "auto_explain.log_nested_statements = on",
            "auto_explain.log_analyze = on",
            "auto_explain.log_triggers = on",
            "auto_explain.log_level = notice",
            "client_min_messages = notice",
        ):
            conn.execute(f"SET {setting}")
        batch = ingest.prepare_votes(votes.classes, parsed.votes)
        functions.ingest_votes(
            conn,
            project_id=pid,
            classes=votes.classes,
            items=batch.items,
            workers=batch.workers,
            labels=batch.labels,
        )
    for note in notices:
        ms = float(note.split("duration: ")[1].split(" ms")[0])
        query = note.split("Query Text:")[1].strip().splitlines()[0].strip()
        steps.append((f"  auto_explain: {' '.join(query.split())[:60]}", ms / 1000))
        for line in note.splitlines():
            if line.strip().startswith("Trigger for"):
                trig = line.strip()
                ms = float(trig.split("time=")[1].split()[0])
                steps.append((f"    {trig.split(':')[0]}", ms / 1000))
    engine.dispose()
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("DELETE FROM projects WHERE name LIKE %s", (name + "%",))
    return steps


# --- report -----------------------------------------------------------------------------------


def machine(db: str) -> list[str]:
    with psycopg.connect(db) as conn:
        version = conn.execute("SELECT version()").fetchone()[0]
        settings = dict(
            conn.execute(
                "SELECT name, setting || coalesce(unit, '') FROM pg_settings WHERE name IN "
                "('shared_buffers', 'synchronous_commit', 'fsync', 'work_mem', 'max_wal_size')"
            ).fetchall()
        )
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return [
        f"- Date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Machine: {os.cpu_count()} CPUs (nproc), {cpu}, {platform.platform()}, "
        f"Python {platform.python_version()}",
        f"- PostgreSQL: {version}",
        f"- PostgreSQL settings: {', '.join(f'{k}={v}' for k, v in sorted(settings.items()))}",
        "- Client, API server (`softlabels serve --no-worker --no-auth`: one API process per CPU) "
        "and PostgreSQL share the machine.",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="a maintenance database on the server to use; a fresh database is created there",
    )
    parser.add_argument("--batches", default="10000,50000")
    parser.add_argument("--clients", default="1,4")
    parser.add_argument("--single-clients", type=int, default=32)
    parser.add_argument("--single-seconds", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--keep-database", action="store_true")
    parser.add_argument("--export-repeats", type=int, default=5)
    args = parser.parse_args()
    if not (CIFAR10H / "counts.npy").exists():
        sys.exit(f"CIFAR-10H data not found in {CIFAR10H}")

    from app.db.migrate import upgrade

    votes = Votes(CIFAR10H)
    batches = [int(b) for b in args.batches.split(",")]
    client_counts = [int(c) for c in args.clients.split(",")]
    bodies = {b: votes.bodies(b) for b in batches}

    db_name = f"softlabels_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db_name}"')
    db = with_database(args.database_url, db_name)
    loads = [os.getloadavg()]
    lines: list[str] = []
    try:
        upgrade(db)
        log = Path(f"/tmp/{db_name}-server.log")
        pairs: list[tuple[str, float, float, float, float]] = []  # label, copy s/cpu, api s/cpu
        counts_rebuild: list[float] = []
        with api_server(db, log) as (url, server_pid):
            for batch in batches:
                for clients in client_counts:
                    # COPY right before each API run: the pair sees the same machine load.
                    copy_s, copy_cpu, counts_s, name = copy_ingest(db, votes)
                    counts_rebuild.append(counts_s)
                    drop_project(db, name)
                    project = create_project(url, votes.classes)
                    with CpuMeter(db, [server_pid]) as meter:
                        seconds = api_ingest(url, project, bodies[batch], clients)
                    pid = project_id(db, project)
                    assert stored_count(db, pid) == len(votes)
                    assert counts_match(db, pid, votes.counts)
                    drop_project(db, project)
                    label = f"batches of {batch:,}, {clients} client{'s' * (clients > 1)}"
                    pairs.append((label, copy_s, copy_cpu, seconds, meter.seconds))
                    print(
                        f"{label}: API {len(votes) / seconds:,.0f} votes/s, "
                        f"COPY {len(votes) / copy_s:,.0f} votes/s",
                        flush=True,
                    )

            # Loaded by COPY, its counts rebuilt: the project for the export and single votes.
            *_, keep = copy_ingest(db, votes)
            exports = {
                fmt: time_export(url, keep, fmt, args.export_repeats)
                for fmt in ("jsonl", "csv", "parquet")
            }
            cpu0 = proc_cpu(server_pid) or 0.0
            failures, elapsed, lat = asyncio.run(
                single_votes(url, keep, votes.item_ids, args.single_clients, args.single_seconds)
            )
            single_cpu = (proc_cpu(server_pid) or 0.0) - cpu0
        steps = profile_batch(db, votes, 50_000)
        loads.append(os.getloadavg())

        n = len(votes)
        cmd = " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])
        lines += ["# Vote ingest, export and single-vote latency", "", f"Command: `{cmd}`", ""]
        lines += machine(db)
        lines.append(
            "- Load average (1/5/15 min) at start: {:.2f} {:.2f} {:.2f}; at end: {:.2f} {:.2f} "
            "{:.2f}.".format(*loads[0], *loads[1])
        )
        lines += [
            "",
            "## (a) 511,000 CIFAR-10H votes: HTTP API vs raw binary COPY",
            "",
            "Each API run is paired with a raw binary COPY of the same 511k rows run just before "
            "it (same server, same table sizes). Wall ratio = API votes/s / COPY votes/s of the "
            f"pair (goal >= {GOAL_RATIO:.0%}). CPU = CPU seconds of the API server process and "
            "its PostgreSQL backends (API), or of the COPY client process and its backend "
            "(COPY); the CPU ratio is COPY CPU / API CPU, the share of the work that is the "
            "bare insert. Every API run ends with items.counts equal to counts.npy (checked).",
            "",
            "| API run | API s | API votes/s | COPY s | COPY votes/s | wall ratio | "
            "API CPU s | COPY CPU s | CPU ratio |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for label, copy_s, copy_cpu, api_s, api_cpu in pairs:
            lines.append(
                f"| {label} | {api_s:.2f} | {n / api_s:,.0f} | {copy_s:.2f} | "
                f"{n / copy_s:,.0f} | {copy_s / api_s:.0%} | {api_cpu:.1f} | {copy_cpu:.1f} | "
                f"{copy_cpu / api_cpu:.0%} |"
            )
        lines += [
            "",
            "COPY leaves `items.counts` untouched; rebuilding them afterwards with one UPDATE "
            f"took {', '.join(f'{c:.2f}' for c in counts_rebuild)} s (not in the COPY figures; "
            "the API maintains them in the same transaction as the votes).",
            "",
        ]
        lines += [
            f"## (b) Export of all 10,000 items (median of {args.export_repeats} full downloads)",
            "",
            "| format | seconds | items/s | bytes |",
            "|---|---:|---:|---:|",
        ]
        for fmt, (seconds, size) in exports.items():
            lines.append(f"| {fmt} | {seconds:.3f} | {10_000 / seconds:,.0f} | {size:,} |")
        lat_ms = sorted(x * 1000 for x in lat)
        lines += [
            "",
            f"## (c) Single-vote POSTs, {args.single_clients} concurrent clients "
            f"(asyncio + httpx, one process), {elapsed:.1f} s, one project",
            "",
            "| requests | failed | req/s | p50 ms | p99 ms | max ms | server CPU ms/req |",
            "|---:|---:|---:|---:|---:|---:|---:|",
            f"| {len(lat):,} | {failures} | {len(lat) / elapsed:,.0f} | "
            f"{np.percentile(lat_ms, 50):.1f} | {np.percentile(lat_ms, 99):.1f} | "
            f"{lat_ms[-1]:.1f} | {single_cpu / max(len(lat), 1) * 1000:.1f} |",
            "",
        ]
        lines += [
            "## (d) Where one 50,000-vote batch's time goes (in-process, same database)",
            "",
            "| step | seconds |",
            "|---|---:|",
        ]
        lines += [f"| {step} | {seconds:.3f} |" for step, seconds in steps]
        lines.append("")
    finally:
        if not args.keep_database:
            with psycopg.connect(args.database_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
    text = "\n".join(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
