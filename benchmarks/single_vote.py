"""Single-vote throughput: softlabels against a same-run ceiling, both driven by wrk.

    .venv/bin/python benchmarks/single_vote.py [--seconds 20] [--warmup 3] [--connections 32]
        [--processes 1 2] [--projects 1 100] [--out benchmarks/results/single_vote.md]

Two servers, each run with the same number of processes (uvicorn, uvloop + httptools) on one
fresh database on the system PostgreSQL (DATABASE_URL, default
postgresql://postgres@127.0.0.1:5432/postgres; dropped afterwards):

- the ceiling: bare FastAPI + a psycopg AsyncConnectionPool (autocommit, the same size as
  softlabels' write pool) + one `INSERT ... ON CONFLICT (item, worker) DO UPDATE` per request
  into a table with the same unique key as `votes`; no auth; the same body model shape;
- softlabels: `softlabels serve --no-worker --workers N`, auth on (an annotate key made through
  the API with the admin key), the per-key rate limit off (SOFTLABELS_RATE_LIMIT_PER_S=0).

Both get the same load: `wrk -t2 -c32 -d20s --latency` with a Lua script that POSTs one vote
per request, `{"votes": [{"item", "worker", "label"}]}`, random item (1..10^6) and worker
(1..10^4) ids seeded per wrk thread, so nearly every vote is an insert, spread over 1 or 100
projects; a short warm-up run first (not counted). req/s, p50 and p99 come from wrk's output;
the ratio softlabels / ceiling is per row. The machine is shared: /proc/loadavg is recorded
before each run.

The ceiling app is `ceiling_app` in this file (uvicorn factory; CEILING_DATABASE_URL).
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CLASSES = ["cat", "dog", "bird", "fish", "frog"]
CEILING_TABLE = """
CREATE TABLE IF NOT EXISTS ceiling_votes (
    project text NOT NULL,
    item text NOT NULL,
    worker text NOT NULL,
    label smallint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (item, worker)
)
"""
CEILING_UPSERT = (
    "INSERT INTO ceiling_votes (project, item, worker, label) VALUES (%s, %s, %s, %s) "
    "ON CONFLICT (item, worker) DO UPDATE SET label = EXCLUDED.label, updated_at = now()"
)


# --- the ceiling app ---------------------------------------------------------------------------


class Vote(BaseModel):
    item: str
    worker: str
    label: str | int


class Batch(BaseModel):
    votes: list[Vote]


def ceiling_app():  # type: ignore[no-untyped-def]
    """Bare FastAPI + psycopg pool + one upsert per request (uvicorn factory)."""
    from fastapi import FastAPI
    from psycopg_pool import AsyncConnectionPool

    pool = AsyncConnectionPool(
        os.environ["CEILING_DATABASE_URL"],
        min_size=1,
        max_size=int(os.environ.get("CEILING_POOL_SIZE", "10")),
        kwargs={"autocommit": True},
        open=False,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        await pool.open()
        yield
        await pool.close()

    app = FastAPI(lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/projects/{project}/votes")
    async def votes(project: str, body: Batch) -> dict[str, int]:
        v = body.votes[0]
        label = v.label if isinstance(v.label, int) else CLASSES.index(v.label)
        async with pool.connection() as conn:
            await conn.execute(CEILING_UPSERT, (project, v.item, v.worker, label))
        return {"inserted": 1}

    return app


# --- the load ----------------------------------------------------------------------------------

LUA = r"""
local counter = 0
local threads = {}
function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
  table.insert(threads, thread)
end
function init(args)
  math.randomseed(tid * 7919 + os.time())
  n_projects = tonumber(args[1])
  key = args[2]
  classes = {"cat", "dog", "bird", "fish", "frog"}
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  if key ~= "-" then wrk.headers["Authorization"] = "Bearer " .. key end
end
function request()
  local p = math.random(0, n_projects - 1)
  local body = string.format(
    '{"votes":[{"item":"i%d-%d","worker":"w%d","label":"%s"}]}',
    tid, math.random(1, 1000000), math.random(1, 10000), classes[math.random(1, 5)])
  return wrk.format(nil, string.format("/v1/projects/p%03d/votes", p), nil, body)
end
"""


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non2xx: int
    errors: str
    load: str
    api_cpu_ms: float = float("nan")  # CPU per request: the server's processes
    pg_cpu_ms: float = float("nan")  # CPU per request: the PostgreSQL backends serving it


def _ms(value: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", value)
    assert m, value
    return float(m[1]) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m[2]]


def run_wrk(url: str, seconds: int, connections: int, n_projects: int, key: str) -> Result:
    load = Path("/proc/loadavg").read_text().split()[:3]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(LUA)
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s"]
    cmd += ["-s", f.name, url, "--", str(n_projects), key]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    os.unlink(f.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out)[1])  # type: ignore[index]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out)[1])  # type: ignore[index]
    n = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errs = re.search(r"Socket errors: (.*)", out)
    return Result(
        rps, p50, p99, n, int(bad[1]) if bad else 0, errs[1] if errs else "", " ".join(load)
    )


def _ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime + stime


def _tree(root: int) -> list[int]:
    """`root` and every descendant process (uvicorn's workers are spawned children)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += parents.get(pid, [])
    return out


def measured_run(
    url: str, args: argparse.Namespace, n_projects: int, key: str, server_pid: int, db: str
) -> Result:
    """A warm-up, then the measured wrk run, with the CPU time (not wall time, so less
    sensitive to the other jobs on a shared machine) the server and its PostgreSQL backends
    spent per request."""
    import psycopg

    run_wrk(url, args.warmup, args.connections, n_projects, key)
    with psycopg.connect(db, autocommit=True) as conn:
        backends = [
            int(r[0])
            for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()"
            )
        ]
    api = _tree(server_pid)
    api0, pg0 = sum(map(_ticks, api)), sum(map(_ticks, backends))
    r = run_wrk(url, args.seconds, args.connections, n_projects, key)
    hz = os.sysconf("SC_CLK_TCK")
    r.api_cpu_ms = (sum(map(_ticks, api)) - api0) / hz * 1000 / max(r.requests, 1)
    r.pg_cpu_ms = (sum(map(_ticks, backends)) - pg0) / hz * 1000 / max(r.requests, 1)
    return r


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("ceiling server exited")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("ceiling not healthy")


def main() -> None:
    import psycopg

    from app.cli.serverctl import ServerProcess, free_port
    from app.db.migrate import upgrade
    from tests.helpers import create_database, drop_database

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--projects", type=int, nargs="+", default=[1, 100])
    ap.add_argument("--servers", nargs="+", default=["ceiling", "softlabels"])
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/single_vote.md")
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    args.uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()

    server_url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    db = create_database(server_url, "softlabels_single_vote")
    logdir = Path(tempfile.mkdtemp(prefix="single-vote-"))
    rows: list[tuple[int, int, str, Result]] = []
    try:
        upgrade(db)
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute(CEILING_TABLE)
        admin_key = "sl_" + secrets.token_urlsafe(32)
        env = {
            "DATABASE_URL": db,
            "SOFTLABELS_ADMIN_KEY": admin_key,
            "SOFTLABELS_RATE_LIMIT_PER_S": "0",
            "SOFTLABELS_DATA_DIR": str(logdir / "data"),
        }
        key = ""
        for n in args.processes:
            # Both servers up at once, runs interleaved per row: the machine's noise hits both.
            port = free_port()
            cmd = [sys.executable, "-m", "uvicorn", "single_vote:ceiling_app", "--factory"]
            cmd += ["--app-dir", str(REPO / "benchmarks"), "--port", str(port)]
            cmd += ["--workers", str(n), "--loop", "uvloop", "--http", "httptools"]
            cmd += ["--no-access-log", "--log-level", "warning"]
            ceiling = subprocess.Popen(
                cmd,
                env={**os.environ, "CEILING_DATABASE_URL": db},
                stdout=(logdir / f"ceiling-{n}.log").open("ab"),
                stderr=subprocess.STDOUT,
            )
            srv = ServerProcess(
                ["--no-worker", "--workers", str(n)], env=env, log=logdir / f"softlabels-{n}.log"
            )
            try:
                wait_healthy(f"http://127.0.0.1:{port}", ceiling)
                srv.start()
                if not key:
                    key = make_projects(srv.url, admin_key, max(args.projects))
                urls = {"ceiling": (f"http://127.0.0.1:{port}", "-"), "softlabels": (srv.url, key)}
                for n_projects in args.projects:
                    for server in args.servers:
                        url, k = urls[server]
                        pid = ceiling.pid if server == "ceiling" else srv.pid
                        r = measured_run(url, args, n_projects, k, pid, db)
                        rows.append((n, n_projects, server, r))
                        print(n, n_projects, server, r, flush=True)
            finally:
                srv.stop()
                ceiling.terminate()
                ceiling.wait(20)
        with psycopg.connect(db) as conn:
            stored = conn.execute("SELECT count(*) FROM votes").fetchone()
            ceiling_stored = conn.execute("SELECT count(*) FROM ceiling_votes").fetchone()
        print(f"stored: softlabels {stored}, ceiling {ceiling_stored}")
        write_report(args, rows)
    finally:
        drop_database(server_url, db)


def make_projects(url: str, admin_key: str, n: int) -> str:
    import httpx

    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin_key}"}) as c:
        for p in range(n):
            c.post(
                "/v1/projects", json={"name": f"p{p:03d}", "classes": CLASSES}
            ).raise_for_status()
        body = {"label": "single-vote bench", "scopes": ["annotate"], "projects": "*"}
        r = c.post("/v1/keys", json=body)
        r.raise_for_status()
        return str(r.json()["key"])


def write_report(args: argparse.Namespace, rows: list[tuple[int, int, str, Result]]) -> None:
    from benchmarks.load import machine

    by = {(n, p, s): r for n, p, s, r in rows}
    lines = [
        "| processes | projects | server | req/s | p50 ms | p99 ms | requests | non-2xx "
        "| CPU ms/req: server | CPU ms/req: PG backends "
        "| load avg (1/5/15) | softlabels/ceiling req/s | p99 ratio |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for n, p, s, r in rows:
        ratio = p99r = ""
        c = by.get((n, p, "ceiling"))
        if s == "softlabels" and c is not None:
            ratio = f"{r.rps / c.rps:.0%}"
            p99r = f"{r.p99_ms / c.p99_ms:.2f}x"
        lines.append(
            f"| {n} | {p} | {s} | {r.rps:.0f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.requests} "
            f"| {r.non2xx} | {r.api_cpu_ms:.2f} | {r.pg_cpu_ms:.2f} | {r.load} | {ratio} | {p99r} |"
        )
    cmd = "benchmarks/single_vote.py " + " ".join(sys.argv[1:])
    section = (
        f"\n## Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} {args.note}\n\n"
        f"`{cmd}`; wrk -t2 -c{args.connections} -d{args.seconds}s --latency (warm-up "
        f"{args.warmup} s); {machine()}; `uptime` at start: "
        f"{args.uptime}\n\n" + "\n".join(lines) + "\n"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not args.out.exists():
        args.out.write_text(
            "# Single-vote POST: softlabels against a same-run ceiling\n\n"
            "See the docstring of benchmarks/single_vote.py for what each server is.\n"
        )
    with args.out.open("a") as f:
        f.write(section)
    print(section)


if __name__ == "__main__":
    main()
