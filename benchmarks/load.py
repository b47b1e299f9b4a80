"""Load benchmark: 32 concurrent clients for 60 s against a live `softlabels serve --no-worker`.

    .venv/bin/python benchmarks/load.py [--clients 32] [--seconds 60] [--server-url URL]

A fresh database is made on the system PostgreSQL (DATABASE_URL, default
postgresql://postgres@127.0.0.1:5432/postgres) and dropped afterwards. Auth is on: every client
has its own annotate+read key (the per-key rate limit is turned off, to measure the service, not
the limiter). Each client, in a loop, picks one of:

- a single vote;
- a batch of 20-500 votes, then (one time in three) the very same batch again, as a client that
  lost the acknowledgement would: the retry must come back all `unchanged`;
- a soft-label read of one item; an export of the whole project (jsonl).

Each client writes only its own workers (any item), so "the last label acknowledged" for each
(item, worker) is well defined; a write that fails is retried until acknowledged. Afterwards the
votes stored must equal that ledger exactly, and every item's maintained counts a recount.
Results (req/s, p50/p99 per kind) go to benchmarks/results/load.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import secrets
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
CLASSES = ["cat", "dog", "bird", "fish", "frog"]
N_ITEMS = 3000
WORKERS_PER_CLIENT = 40

Pair = tuple[str, str]


# --- shared with crash.py ----------------------------------------------------------------------


def fresh_database(server_url: str, prefix: str) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_database(server_url: str, url: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """`softlabels serve --no-worker` in a subprocess, auth on, with a known admin key."""

    database_url: str
    log: Path
    port: int = field(default_factory=free_port)
    admin_key: str = field(default_factory=lambda: "sl_" + secrets.token_urlsafe(32))
    env_extra: dict[str, str] = field(default_factory=dict)
    args_extra: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key}"}

    def start(self, timeout: float = 90) -> None:
        env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "SOFTLABELS_ADMIN_KEY": self.admin_key,
            "SOFTLABELS_DATA_DIR": str(self.log.parent / "data"),
            "PYTHONUNBUFFERED": "1",
            **self.env_extra,
        }
        cmd = [sys.executable, "-m", "app.cli", "serve", "--no-worker", "--port", str(self.port)]
        cmd += self.args_extra
        self.proc = subprocess.Popen(
            cmd, env=env, cwd=REPO, stdout=self.log.open("ab"), stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited; see {self.log}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server not healthy after {timeout} s; see {self.log}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


def setup_project(server: Server, n_keys: int) -> tuple[str, list[str]]:
    """A project, and `n_keys` annotate+read keys on it (made through the API)."""
    project = f"bench-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=server.url, headers=server.admin, timeout=30) as c:
        c.post("/v1/projects", json={"name": project, "classes": CLASSES}).raise_for_status()
        keys = []
        for n in range(n_keys):
            body = {
                "label": f"bench client {n}",
                "scopes": ["annotate", "read"],
                "projects": [project],
            }
            r = c.post("/v1/keys", json=body)
            r.raise_for_status()
            keys.append(r.json()["key"])
    return project, keys


def stored_votes(database_url: str, project: str) -> dict[Pair, int]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT i.external_id, w.external_id, v.label FROM votes v "
            "JOIN items i ON i.id = v.item_id JOIN workers w ON w.id = v.worker_id "
            "JOIN projects p ON p.id = v.project_id WHERE p.name = %s",
            (project,),
        ).fetchall()
    return {(i, w): k for i, w, k in rows}


def counts_mismatches(database_url: str, project: str) -> int:
    """Items whose maintained counts differ from a recount of the vote table."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            """
            SELECT count(*) FROM items i JOIN projects p ON p.id = i.project_id
            WHERE p.name = %s
              AND (i.n_votes <> (SELECT count(*) FROM votes v WHERE v.item_id = i.id)
               OR i.counts <> (SELECT array_agg((SELECT count(*)::int FROM votes v
                                                 WHERE v.item_id = i.id AND v.label = k) ORDER BY k)
                               FROM generate_series(0, cardinality(p.classes) - 1) k))
            """,
            (project,),
        ).fetchone()
    return int(row[0]) if row else -1


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}"


# --- the load --------------------------------------------------------------------------------


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    retries: int = 0
    retry_unchanged_ok: int = 0
    retry_unchanged_bad: int = 0


class LoadClient:
    def __init__(self, n: int, key: str, url: str, project: str, stats: Stats, seed: int) -> None:
        self.n, self.project, self.stats = n, project, stats
        self.rng = random.Random(seed)
        self.http = httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60
        )
        self.ledger: dict[Pair, int] = {}

    def vote(self) -> dict[str, object]:
        item = f"item-{self.rng.randrange(N_ITEMS)}"
        worker = f"c{self.n}-w{self.rng.randrange(WORKERS_PER_CLIENT)}"
        return {"item": item, "worker": worker, "label": self.rng.randrange(len(CLASSES))}

    async def timed(self, kind: str, method: str, path: str, **kw: object) -> httpx.Response | None:
        started = time.perf_counter()
        try:
            r = await self.http.request(method, path, **kw)  # type: ignore[arg-type]
            if kind == "export":
                await r.aread()
        except httpx.HTTPError:
            self.stats.errors[kind] += 1
            return None
        self.stats.latencies[kind].append(time.perf_counter() - started)
        if r.status_code >= 400 and not (kind == "soft-label" and r.status_code == 404):
            self.stats.errors[kind] += 1
        return r

    async def write(self, kind: str, votes: list[dict[str, object]]) -> dict[str, int]:
        """Send until acknowledged (a failed try is retried as is), then record in the ledger."""
        while True:
            r = await self.timed(
                kind, "POST", f"/v1/projects/{self.project}/votes", json={"votes": votes}
            )
            if r is not None and r.status_code == 200:
                for v in votes:
                    self.ledger[(str(v["item"]), str(v["worker"]))] = int(v["label"])  # type: ignore[call-overload]
                return r.json()  # type: ignore[no-any-return]
            self.stats.retries += 1
            await asyncio.sleep(0.05)

    async def run(self, until: float) -> None:
        while time.monotonic() < until:
            roll = self.rng.random()
            if roll < 0.45:
                await self.write("single vote", [self.vote()])
            elif roll < 0.70:
                batch = {}
                for _ in range(self.rng.randrange(20, 501)):
                    v = self.vote()
                    batch[(v["item"], v["worker"])] = v  # one vote per pair in a batch
                votes = list(batch.values())
                await self.write("batch", votes)
                if self.rng.random() < 1 / 3:
                    again = await self.write("batch retry", votes)
                    ok = again["unchanged"] == len(votes)
                    self.stats.retry_unchanged_ok += ok
                    self.stats.retry_unchanged_bad += not ok
            elif roll < 0.95:
                item = f"item-{self.rng.randrange(N_ITEMS)}"
                await self.timed(
                    "soft-label", "GET", f"/v1/projects/{self.project}/items/{item}/soft-label"
                )
            else:
                await self.timed(
                    "export", "GET", f"/v1/projects/{self.project}/soft-labels?format=jsonl"
                )
        await self.http.aclose()


async def drive(
    url: str, project: str, keys: list[str], seconds: float
) -> tuple[Stats, dict, float]:
    stats = Stats()
    clients = [LoadClient(n, k, url, project, stats, seed=n) for n, k in enumerate(keys)]
    started = time.monotonic()
    await asyncio.gather(*(c.run(started + seconds) for c in clients))
    elapsed = time.monotonic() - started
    ledger: dict[Pair, int] = {}
    for c in clients:
        ledger.update(c.ledger)  # disjoint: each client has its own workers
    return stats, ledger, elapsed


def report(
    stats: Stats,
    ledger: dict,
    stored: dict,
    bad_counts: int,
    elapsed: float,
    args: argparse.Namespace,
) -> str:
    total = sum(len(v) for v in stats.latencies.values())
    lines = [
        "# Load benchmark (benchmarks/load.py)",
        "",
        f"- {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; machine: {machine()}",
        f"- {args.clients} concurrent clients (asyncio, one process) for {elapsed:.1f} s on "
        "loopback against `softlabels serve --no-worker` (API processes: the `--workers` "
        "default, the CPU count), system "
        "PostgreSQL, fresh database; "
        + (
            "auth OFF (--no-auth, for comparison)."
            if args.no_auth
            else "auth on (one key per client, rate limit off)."
        ),
        "- Mix per client: 45% single vote, 25% batch of 20-500 votes (one in three sent twice), "
        "25% soft-label read, 5% jsonl export of the whole project.",
        "",
        "| kind | requests | errors | req/s | p50 ms | p99 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for kind in ("single vote", "batch", "batch retry", "soft-label", "export"):
        lat = stats.latencies.get(kind, [])
        lines.append(
            f"| {kind} | {len(lat)} | {stats.errors.get(kind, 0)} | {len(lat) / elapsed:.1f} | "
            f"{percentile(lat, 0.5) * 1000:.1f} | {percentile(lat, 0.99) * 1000:.1f} |"
        )
    lines.append(
        f"| **all** | {total} | {sum(stats.errors.values())} | {total / elapsed:.1f} | | |"
    )
    missing = [p for p in ledger if p not in stored]
    wrong = [p for p in ledger if p in stored and stored[p] != ledger[p]]
    extra = [p for p in stored if p not in ledger]
    verdict = (
        "PASS"
        if not (missing or wrong or extra or bad_counts or stats.retry_unchanged_bad)
        else "FAIL"
    )
    lines += [
        "",
        f"## Integrity: {verdict}",
        "",
        f"- (item, worker) pairs acknowledged (client ledger, last label acked): {len(ledger)}",
        f"- votes stored: {len(stored)}; missing {len(missing)}, wrong label {len(wrong)}, "
        f"never acknowledged {len(extra)}",
        f"- items whose maintained counts differ from a recount: {bad_counts}",
        f"- resent batches answered all `unchanged`: {stats.retry_unchanged_ok}, otherwise: "
        f"{stats.retry_unchanged_bad}; writes retried after an error: {stats.retries}",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument(
        "--postgres",
        default=os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="A maintenance database URL on the server to make the fresh database on.",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "load.md")
    parser.add_argument("--no-auth", action="store_true", help="Serve --no-auth (to compare).")
    args = parser.parse_args()

    import tempfile

    work = Path(tempfile.mkdtemp(prefix="softlabels-load-"))
    url = fresh_database(args.postgres, "softlabels_load")
    server = Server(
        url,
        work / "server.log",
        env_extra={"SOFTLABELS_RATE_LIMIT_PER_S": "0"},
        args_extra=["--no-auth"] if args.no_auth else [],
    )
    try:
        server.start()
        project, keys = setup_project(server, args.clients)
        stats, ledger, elapsed = asyncio.run(drive(server.url, project, keys, args.seconds))
        stored = stored_votes(url, project)
        text = report(stats, ledger, stored, counts_mismatches(url, project), elapsed, args)
    finally:
        server.stop()
        drop_database(args.postgres, url)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
