"""The Label Studio sync at scale against a REAL Label Studio (issue 17).

    # Label Studio 1.23.2 in its own venv, started as in benchmarks/results/label_studio_e2e.md:
    LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true SSRF_PROTECTION_ENABLED=false \\
      /work/ls-venv/bin/label-studio start --data-dir /tmp/ls_scale/data --port 8191 \\
      --username admin@example.com --password ... --user-token $LS_TOKEN --no-browser \\
      --enable-legacy-api-token
    LS_URL=http://127.0.0.1:8191 LS_TOKEN=... \\
      .venv/bin/python benchmarks/ls_real_scale.py --tasks 5000 [20000 50000]

For each size: a new Label Studio project (one <Choices> control, pos/neg/neu), N tasks
imported with 3 annotations each by 3 different Label Studio users (the import's
`completed_by`, which Label Studio honours for members of the organization: checked on the
export), then a softlabels project with a Label Studio connector (url, ls_project, legacy
token) on a fresh database of the system PostgreSQL, the app in this process (the code
`softlabels serve` runs), synced through `POST .../connectors/label-studio/sync`:

1. the first sync;
2. a re-sync right after, nothing changed;
3. a re-sync later (`--later-s` after step 2 ended: autovacuum's chance to analyze);
4. a re-sync after 1% of the annotations were deleted and another 1% relabelled in Label
   Studio (DELETE / PATCH /api/annotations/{id}/).

Before each sync, Label Studio's own export is timed separately (GET
/api/projects/{id}/export?exportType=JSON: time to its first byte and to its last), and each
sync is split into its phases (the export fetch inside the sync, parsing, the database work)
by timing the connector's own functions in this process. After each sync every stored vote
is compared with that export: the same (item, worker, label) set, nothing more or less.

Rows accumulate in benchmarks/results/ls_real_scale.json (one per size and run); the table in
benchmarks/results/ls_real_scale.md is written from all of them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CLASSES = ["pos", "neg", "neu"]
CONFIG = (
    '<View><Text name="text" value="$text"/><Choices name="sentiment" toName="text" '
    'choice="single"><Choice value="pos"/><Choice value="neg"/><Choice value="neu"/>'
    "</Choices></View>"
)
ANNOTATORS = ["ann1@example.com", "ann2@example.com", "ann3@example.com"]
RESULTS = REPO / "benchmarks" / "results"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


class LS:
    """The few Label Studio API calls the benchmark makes, with the legacy token."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.http = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Token {token}"}, timeout=3600
        )

    def call(self, method: str, path: str, **kw: Any) -> Any:
        r = self.http.request(method, path, **kw)
        if r.status_code >= 300:
            raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:500]}")
        return r.json() if r.content else None

    def version(self) -> str:
        v = self.call("GET", "/api/version")
        return str(v.get("release") or v.get("label-studio-os-package", {}).get("version"))

    def users(self) -> dict[str, int]:
        """The annotators' user ids, creating the missing ones in the admin's organization."""
        have = {u["email"]: u["id"] for u in self.call("GET", "/api/users/")}
        for email in ANNOTATORS:
            if email not in have:
                u = self.call(
                    "POST",
                    "/api/users/",
                    json={"email": email, "username": email, "first_name": email[:4]},
                )
                have[email] = u["id"]
        return {e: have[e] for e in ANNOTATORS}

    def export(self, project: int) -> tuple[float, float, int, list[dict[str, Any]]]:
        """(seconds to the first byte, seconds in all, bytes, the parsed export)."""
        t0 = time.perf_counter()
        first = None
        parts = []
        with self.http.stream("GET", f"/api/projects/{project}/export?exportType=JSON") as r:
            if r.status_code != 200:
                raise RuntimeError(f"export: {r.status_code}")
            for chunk in r.iter_bytes():
                if first is None:
                    first = time.perf_counter() - t0
                parts.append(chunk)
        total = time.perf_counter() - t0
        body = b"".join(parts)
        return first or total, total, len(body), json.loads(body)


def truth(export: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """(item, worker, label) of every annotation in Label Studio's export."""
    out = set()
    for task in export:
        for a in task["annotations"]:
            if a.get("was_cancelled"):
                continue
            by = a["completed_by"]
            by = by["id"] if isinstance(by, dict) else by
            choice = a["result"][0]["value"]["choices"][0]
            out.add((task["data"]["ref"], str(by), choice))
    return out


def stored(db: str, project: str) -> set[tuple[str, str, str]]:
    import psycopg

    with psycopg.connect(db) as conn:
        rows = conn.execute(
            "SELECT i.external_id, w.external_id, (p.classes)[v.label + 1] FROM votes v "
            "JOIN items i ON i.id = v.item_id JOIN workers w ON w.id = v.worker_id "
            "JOIN projects p ON p.id = v.project_id WHERE p.name = %s",
            (project,),
        ).fetchall()
    return {(str(a), str(b), str(c)) for a, b, c in rows}


def votes_stats(db: str) -> dict[str, Any]:
    import psycopg

    with psycopg.connect(db) as conn:
        row = conn.execute(
            "SELECT last_analyze, last_autoanalyze, n_live_tup FROM pg_stat_user_tables "
            "WHERE relname = 'votes'"
        ).fetchone()
    assert row is not None
    return {
        "last_analyze": row[0].isoformat() if row[0] else None,
        "last_autoanalyze": row[1].isoformat() if row[1] else None,
        "n_live_tup": row[2],
    }


class Phases:
    """Times the connector's own functions inside a sync (this process runs the app)."""

    def __init__(self) -> None:
        from app import outbound
        from app.connectors import label_studio, store

        self.t: dict[str, float] = {}
        self.export: Any = None  # the export the last sync fetched, parsed
        self.reply_bytes = 0  # and its size
        request = outbound.request

        def counted(*a: Any, **kw: Any) -> Any:
            reply = request(*a, **kw)
            self.reply_bytes = len(reply.body)
            return reply

        outbound.request = counted
        fetch = label_studio.fetch_export

        def kept(*a: Any, **kw: Any) -> Any:
            self.export = fetch(*a, **kw)
            return self.export

        def timed(name: str, fn: Any) -> Any:
            def wrapper(*a: Any, **kw: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return fn(*a, **kw)
                finally:
                    self.t[name] = self.t.get(name, 0.0) + time.perf_counter() - t0

            return wrapper

        label_studio.fetch_export = timed("fetch", kept)
        label_studio.parse_export = timed("parse", label_studio.parse_export)
        store.apply = timed("db", store.apply)  # type: ignore[attr-defined]

    def take(self) -> dict[str, float]:
        out, self.t = self.t, {}
        return out


def tasks_for(n: int, offset: int, users: list[int], rng: random.Random) -> list[dict[str, Any]]:
    out = []
    for t in range(offset, offset + n):
        anns = [
            {
                "completed_by": u,
                "result": [
                    {
                        "from_name": "sentiment",
                        "to_name": "text",
                        "type": "choices",
                        "value": {"choices": [rng.choice(CLASSES)]},
                    }
                ],
            }
            for u in users
        ]
        out.append({"data": {"text": f"review number {t}", "ref": f"t{t}"}, "annotations": anns})
    return out


def run_size(
    n: int, args: argparse.Namespace, ls: LS, users: list[int], client: Any, db: str, ph: Phases
) -> dict[str, Any]:
    rng = random.Random(n)
    row: dict[str, Any] = {"tasks": n, "annotations": n * len(users), "load_start": load()}
    title = f"scale-{n}-{uuid.uuid4().hex[:6]}"
    lsp = ls.call("POST", "/api/projects", json={"title": title, "label_config": CONFIG})["id"]
    t0 = time.perf_counter()
    for off in range(0, n, args.chunk):
        ls.call(
            "POST",
            f"/api/projects/{lsp}/import",
            json=tasks_for(min(args.chunk, n - off), off, users, rng),
        )
        print(
            f"  imported {min(off + args.chunk, n):,}/{n:,} ({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    row["import_s"] = time.perf_counter() - t0
    row["ls_project"] = lsp

    project = f"ls-real-{n}-{uuid.uuid4().hex[:6]}"
    r = client.post("/v1/projects", json={"name": project, "classes": CLASSES})
    assert r.status_code == 201, r.text
    cfg = {
        "from_name": "sentiment",
        "item_field": "ref",
        "url": ls.url,
        "ls_project": lsp,
        "token": args.ls_token,
    }
    r = client.put(f"/v1/projects/{project}/connectors/label-studio", json=cfg)
    assert r.status_code == 200, r.text

    def step(name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        if args.separate_export:
            ttfb, total, size, data = ls.export(lsp)
        t0 = time.perf_counter()
        resp = client.post(f"/v1/projects/{project}/connectors/label-studio/sync")
        took = time.perf_counter() - t0
        phases = ph.take()
        if not args.separate_export:  # Label Studio's export as the sync fetched it
            ttfb = total = float("nan")
            data = ph.export if resp.status_code == 200 else ls.export(lsp)[3]
            size = ph.reply_bytes
        want = truth(data)
        got = stored(db, project) if resp.status_code == 200 else set()
        body = resp.json()
        res = {
            "step": name,
            "ls_export_first_byte_s": ttfb,
            "ls_export_s": total,
            "export_bytes": size,
            "ls_annotations": len(want),
            "status": resp.status_code,
            "sync_s": took,
            "phases": phases,
            "result": {
                k: body.get(k)
                for k in (
                    "annotations",
                    "inserted",
                    "updated",
                    "unchanged",
                    "deleted",
                    "skipped",
                    "rejected",
                    "detail",
                )
            },
            "stored": len(got),
            "missing": len(want - got),
            "extra": len(got - want),
            "equal": got == want,
            "load": load(),
            "votes_table": votes_stats(db),
        }
        print(f"  {name}: {json.dumps(res)}", flush=True)
        return res, data

    steps = []
    row["steps"] = steps
    first, data = step("first sync")
    steps.append(first)
    users_seen = {str(a["completed_by"]) for t in data for a in t["annotations"]}
    row["completed_by_honoured"] = users_seen == {str(u) for u in users}
    row["users_seen"] = sorted(users_seen)
    if first["status"] != 200:
        return row
    if "again" in args.steps:
        again, _ = step("re-sync right after")
        steps.append(again)
    if "later" in args.steps:
        time.sleep(args.later_s)
        later, data = step(f"re-sync {args.later_s:.0f} s later")
        steps.append(later)
    if "changed" not in args.steps:
        return row

    anns = [
        (a["id"], a["result"][0]["value"]["choices"][0]) for t in data for a in t["annotations"]
    ]
    k = max(1, len(anns) // 100)
    picked = rng.sample(anns, 2 * k)
    relabel, delete = picked[:k], picked[k:]

    def patch(a: tuple[int, str]) -> None:
        new = rng.choice([c for c in CLASSES if c != a[1]])
        result = [
            {
                "from_name": "sentiment",
                "to_name": "text",
                "type": "choices",
                "value": {"choices": [new]},
            }
        ]
        ls.call("PATCH", f"/api/annotations/{a[0]}/", json={"result": result})

    def remove(a: tuple[int, str]) -> None:
        ls.call("DELETE", f"/api/annotations/{a[0]}/")

    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.threads) as pool:
        list(pool.map(patch, relabel))
        list(pool.map(remove, delete))
    row["changes"] = {"relabelled": k, "deleted": k, "seconds": time.perf_counter() - t0}
    changed, _ = step("re-sync after 1% deleted + 1% relabelled")
    steps.append(changed)
    return row


def alone(s: dict[str, Any]) -> str:
    if s["ls_export_s"] != s["ls_export_s"]:  # NaN: --no-separate-export
        return "not timed alone"
    return f"{s['ls_export_first_byte_s']:.1f} / {s['ls_export_s']:.1f}"


def changes(r: dict[str, Any]) -> str:
    c = r.get("changes")
    if not c:
        return " No changes made in Label Studio (not run at this size)."
    return (
        f" 1% changes in Label Studio: {c['relabelled']:,} PATCHes and {c['deleted']:,}"
        f" DELETEs in {c['seconds']:.0f} s."
    )


def render(rows: list[dict[str, Any]]) -> str:
    lines = [
        "Written by `benchmarks/ls_real_scale.py` from `benchmarks/results/ls_real_scale.json`"
        " (one run per size; every figure below is from that file). Label Studio 1.23.2 in its"
        " own venv (community edition, SQLite, `label-studio start`), softlabels in the"
        " benchmark's process on a fresh database of the system PostgreSQL, all on one shared"
        " 2-core machine (load averages are the 1/5/15-minute ones when each sync ended).",
        "",
        "Each sync is preceded by Label Studio's own export, timed alone (first byte / last"
        " byte), except in runs with `--no-separate-export`. *fetch* is the export's fetch"
        " inside the sync (Label Studio building it again,"
        " plus the transfer and json parsing), *parse* reading it as votes, *db* the database"
        " work (reconcile, upsert, analyze), all timed inside the sync; *ours*: parse + db as a"
        " share of the same sync's time; *equal*: every stored vote is Label Studio's (item,"
        " worker, label) and nothing else.",
        "",
    ]
    for r in rows:
        lines += [
            f"**{r['tasks']:,} tasks, {r['annotations']:,} annotations** ({r['date']}):"
            f" `{r['command']}`; softlabels {r['commit']}, Label Studio {r['ls_version']},"
            f" PostgreSQL {r['pg_version']}, Python {r['python']}.",
            "",
            f"Import: {r['import_s']:.0f} s ({r['tasks'] / r['import_s']:.0f} tasks/s, chunks"
            f" of {r['chunk']:,}); `completed_by` honoured on import:"
            f" {'yes' if r['completed_by_honoured'] else 'NO'} (users {', '.join(r['users_seen'])}"
            f" in the export).{changes(r)}"
            f" Load average at the start {r['load_start']}, at the end {r['load_end']}.",
            "",
            "| step | LS export alone: first byte / all (s) | export MB | sync status | sync (s)"
            " | of which fetch / parse / db (s) | ours | inserted | updated | unchanged | deleted"
            " | stored = LS | load |",
            "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---|---|",
        ]
        for s in r["steps"]:
            p = s["phases"]
            res = s["result"]
            eq = (
                f"yes ({s['stored']:,})"
                if s["equal"]
                else f"NO: {s['missing']:,} missing, {s['extra']:,} extra"
            )
            lines.append(
                f"| {s['step']} | {alone(s)}"
                f" | {s['export_bytes'] / 1e6:.1f} | {s['status']} | {s['sync_s']:.1f}"
                f" | {p.get('fetch', 0):.1f} / {p.get('parse', 0):.1f} / {p.get('db', 0):.1f}"
                f" | {(p.get('parse', 0) + p.get('db', 0)) / s['sync_s']:.0%}"
                f" | {res.get('inserted') or 0:,} | {res.get('updated') or 0:,}"
                f" | {res.get('unchanged') or 0:,} | {res.get('deleted') or 0:,} | {eq}"
                f" | {s['load']} |"
            )
            if s["status"] != 200:
                lines.append(f"| | | | | | {str(res.get('detail'))[:200]} | | | | | | | |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    import psycopg
    from fastapi.testclient import TestClient

    from app.config import Settings
    from app.db.migrate import upgrade
    from app.main import create_app

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, nargs="+", default=[5000])
    ap.add_argument("--chunk", type=int, default=1000, help="tasks per import request")
    ap.add_argument("--later-s", type=float, default=60.0)
    ap.add_argument("--threads", type=int, default=2, help="concurrent PATCH/DELETE requests")
    ap.add_argument("--ls-url", default=os.environ.get("LS_URL", "http://127.0.0.1:8191"))
    ap.add_argument("--ls-token", default=os.environ.get("LS_TOKEN", ""))
    ap.add_argument(
        "--steps",
        default="first,again,later,changed",
        help="which syncs after the first (again, later, changed): fewer at the largest sizes",
    )
    ap.add_argument(
        "--no-separate-export",
        dest="separate_export",
        action="store_false",
        help="skip timing Label Studio's export alone before each sync (it takes minutes at "
        "50,000 tasks): the votes are then checked against the export the sync fetched",
    )
    ap.add_argument("--render-only", action="store_true", help="rewrite the .md from the .json")
    args = ap.parse_args()
    store_json = RESULTS / "ls_real_scale.json"
    rows: list[dict[str, Any]] = json.loads(store_json.read_text()) if store_json.exists() else []
    if args.render_only:
        (RESULTS / "ls_real_scale.md").write_text(render(rows))
        return
    ls = LS(args.ls_url, args.ls_token)
    users = list(ls.users().values())
    server = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    with psycopg.connect(server) as conn:
        pg = str(conn.execute("SHOW server_version").fetchone()[0]).split()[0]  # type: ignore[index]
    ph = Phases()
    for n in args.tasks:
        name = f"softlabels_lsreal_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        db = server.rsplit("/", 1)[0] + f"/{name}"
        try:
            upgrade(db)
            settings = Settings(DATABASE_URL=db, auth=False, allowed_networks="127.0.0.0/8")
            with TestClient(create_app(settings)) as client:
                print(f"{n:,} tasks (load {load()})", flush=True)
                row = run_size(n, args, ls, users, client, db, ph)
                row["load_end"] = load()
        finally:
            with psycopg.connect(server, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        row.update(
            date=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            command=f"benchmarks/ls_real_scale.py --tasks {n} --chunk {args.chunk} "
            f"--later-s {args.later_s:.0f} --threads {args.threads}"
            + ("" if args.steps == "first,again,later,changed" else f" --steps {args.steps}")
            + ("" if args.separate_export else " --no-separate-export"),
            commit=commit,
            ls_version=ls.version(),
            pg_version=pg,
            python=platform.python_version(),
            chunk=args.chunk,
        )
        rows.append(row)
        store_json.write_text(json.dumps(rows, indent=1) + "\n")
        (RESULTS / "ls_real_scale.md").write_text(render(rows))
    print(render(rows))


if __name__ == "__main__":
    main()
