"""`softlabels import-votes` and `softlabels export`, run as the command a user would type."""

from __future__ import annotations

import csv
import gzip
import io
import os
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from tests.helpers import assert_counts_match_votes, free_port, stored_votes

CLASSES = ["cat", "dog", "bird"]  # the `project` fixture's classes


@dataclass
class CliRun:
    returncode: int
    stdout: str
    stderr: str


def cli(database_url: str, *args: str) -> CliRun:
    """`softlabels *args` on `database_url`, in this process through typer's CliRunner and the
    same root command as the entry point (so it runs in the quick lane; one test below runs the
    entry point as a process). Settings are cached per process: cleared around the call."""
    from typer.testing import CliRunner

    from app.cli.commands import app
    from app.config import get_settings

    get_settings.cache_clear()
    try:
        env = {"DATABASE_URL": database_url, "COLUMNS": "200"}
        r = CliRunner().invoke(app, list(args), env=env, prog_name="softlabels")
    finally:
        get_settings.cache_clear()
    return CliRun(r.exit_code, r.stdout, r.stderr)


def write_votes(path: Path, rows: list[tuple[str, str, str]], header=("item", "worker", "label")):
    buf = io.StringIO(newline="")
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    data = buf.getvalue().encode()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def summary(stderr: str) -> tuple[int, int, int]:
    m = re.search(r"(\d+) inserted, (\d+) updated, (\d+) unchanged", stderr)
    assert m, stderr
    return int(m[1]), int(m[2]), int(m[3])


def expected_state(rows: list[tuple[str, str, str]]) -> set[tuple[str, str, int]]:
    return {(i, w, CLASSES.index(k) if k in CLASSES else int(k)) for i, w, k in rows}


# Labels by name and by 0-based index; item ids that need CSV quoting.
ROWS = [
    (item, f"w{j}", [CLASSES[(n + j) % 3], str((n + j) % 3)][j % 2])
    for n, item in enumerate(
        ["a", "b,comma", 'q"uote', "multi\nline", "ünï😀", " sp ", "=1+1", *map(str, range(30))]
    )
    for j in range(n % 4 + 1)
]


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
def test_import_votes_stores_exactly_and_is_idempotent(
    database_url: str, project: str, tmp_path: Path, suffix: str
) -> None:
    path = tmp_path / f"votes{suffix}"
    write_votes(path, ROWS)
    args = ("import-votes", str(path), "--project", project, "--batch-size", "16")
    r = cli(database_url, *args)
    assert r.returncode == 0, r.stderr
    assert summary(r.stderr) == (len(ROWS), 0, 0)
    assert f"{len(ROWS)} votes in" in r.stderr
    assert stored_votes(database_url, project) == expected_state(ROWS)
    assert_counts_match_votes(database_url, project)

    again = cli(database_url, *args)  # re-running changes nothing
    assert again.returncode == 0, again.stderr
    assert summary(again.stderr) == (0, 0, len(ROWS))
    assert stored_votes(database_url, project) == expected_state(ROWS)

    # A corrected file: changed labels are updated, the rest unchanged.
    fixed = [(i, w, "bird" if n % 5 == 0 else k) for n, (i, w, k) in enumerate(ROWS)]
    changed = sum(
        1
        for old, new in zip(ROWS, fixed, strict=True)
        if expected_state([old]) != expected_state([new])
    )
    write_votes(path, fixed)
    r = cli(database_url, *args)
    assert r.returncode == 0, r.stderr
    assert summary(r.stderr) == (0, changed, len(ROWS) - changed) and changed > 0
    assert stored_votes(database_url, project) == expected_state(fixed)
    assert_counts_match_votes(database_url, project)


def test_class_name_made_of_digits_wins_over_index(
    client: TestClient, database_url: str, tmp_path: Path
) -> None:
    name = f"digits-{uuid.uuid4().hex[:8]}"
    r = client.post("/v1/projects", json={"name": name, "classes": ["x", "2", "y"]})
    assert r.status_code == 201
    path = tmp_path / "votes.csv"
    write_votes(path, [("a", "w1", "2"), ("a", "w2", "0"), ("a", "w3", "y")])
    r = cli(database_url, "import-votes", str(path), "--project", name)
    assert r.returncode == 0, r.stderr
    # "2" is the class named "2" (index 1), not index 2; "0" is index 0.
    assert stored_votes(database_url, name) == {("a", "w1", 1), ("a", "w2", 0), ("a", "w3", 2)}


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (("i6", "w", "zebra"), "unknown class"),
        (("", "w", "cat"), "item"),
        (("i5", "w", "dog"), "duplicate"),
    ],
)
def test_bad_row_reports_its_line_and_stores_nothing_of_its_batch(
    database_url: str, project: str, tmp_path: Path, bad: tuple[str, str, str], reason: str
) -> None:
    rows = [(f"i{n}", "w", CLASSES[n % 3]) for n in range(10)]
    rows[6] = bad  # line 8 of the file (line 1 is the header); batches are rows 0-3, 4-7, 8-9
    path = tmp_path / "votes.csv"
    write_votes(path, rows)
    r = cli(database_url, "import-votes", str(path), "--project", project, "--batch-size", "4")
    assert r.returncode == 1, r.stderr
    assert re.search(r"line 8\b", r.stderr), r.stderr
    assert reason in r.stderr, r.stderr
    assert "from line 6" in r.stderr and "the 4 votes before it were" in r.stderr, r.stderr
    # The first batch is stored, nothing of the bad row's batch, nothing after it.
    assert stored_votes(database_url, project) == expected_state(rows[:4])
    assert_counts_match_votes(database_url, project)

    rows[6] = ("i6", "w", "cat")  # fixed: the re-run stores the rest, the first batch unchanged
    write_votes(path, rows)
    r = cli(database_url, "import-votes", str(path), "--project", project, "--batch-size", "4")
    assert r.returncode == 0, r.stderr
    assert summary(r.stderr) == (6, 0, 4)
    assert stored_votes(database_url, project) == expected_state(rows)


def test_import_refuses_unknown_project_and_missing_columns(
    database_url: str, project: str, tmp_path: Path
) -> None:
    path = tmp_path / "votes.csv"
    write_votes(path, [("a", "w", "cat")])
    r = cli(database_url, "import-votes", str(path), "--project", "no-such-project")
    assert r.returncode == 2 and "no-such-project" in r.stderr, r.stderr
    write_votes(path, [("a", "w", "cat")], header=("item", "annotator", "label"))
    r = cli(database_url, "import-votes", str(path), "--project", project)
    assert r.returncode == 2 and "worker" in r.stderr, r.stderr
    assert stored_votes(database_url, project) == set()


EXPORT_CASES = [
    ({"method": "normalized"}, ["--method", "normalized"]),
    (
        {"method": "softmax", "temperature": 0.5, "min_votes": 2},
        ["--method", "softmax", "--param", "temperature=0.5", "--min-votes", "2"],
    ),
]


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_export_equals_api_export(
    client: TestClient, database_url: str, project: str, tmp_path: Path, fmt: str
) -> None:
    votes = [{"item": i, "worker": w, "label": int(k) if k.isdigit() else k} for i, w, k in ROWS]
    assert client.post(f"/v1/projects/{project}/votes", json={"votes": votes}).status_code == 200
    items = [{"id": "a", "gold": "dog"}, {"id": "never-voted", "gold": 0}]
    assert client.post(f"/v1/projects/{project}/items", json={"items": items}).status_code == 200
    for query, flags in EXPORT_CASES:
        api = client.get(f"/v1/projects/{project}/soft-labels", params={**query, "format": fmt})
        assert api.status_code == 200, api.text
        out = tmp_path / f"export-{query['method']}.{fmt}"
        r = cli(
            database_url, "export", "--project", project, "--format", fmt, "-o", str(out), *flags
        )
        assert r.returncode == 0, r.stderr
        if fmt == "parquet":
            got, want = pq.read_table(out), pq.read_table(io.BytesIO(api.content))
            assert got.num_rows == want.num_rows > 0
            assert got.equals(want), (got.to_pylist()[:3], want.to_pylist()[:3])
        else:
            assert out.read_bytes() == api.content and len(api.content) > 100


def test_export_refuses_bad_method_or_param(database_url: str, project: str, tmp_path: Path):
    out = tmp_path / "x.jsonl"
    for flags, word in [
        (["--method", "mean"], "method"),
        (["--method", "majority", "--param", "alpha=1"], "alpha"),  # does not apply
    ]:
        r = cli(database_url, "export", "--project", project, "-o", str(out), *flags)
        assert r.returncode == 2 and word in r.stderr, (flags, r.stderr)
    r = cli(database_url, "export", "--project", "no-such-project", "-o", str(out))
    assert r.returncode == 2 and "no-such-project" in r.stderr


# --- every failure is one line ---------------------------------------------------------------
# In-process through typer's CliRunner (the same root command, OneLineErrors, as the
# `softlabels` entry point), so these run in the quick lane.


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch):
    """Set environment variables for an in-process command: settings are cached per process."""
    from app.config import get_settings

    def set_env(**values: str | None) -> None:
        for name, value in values.items():
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        get_settings.cache_clear()

    yield set_env
    get_settings.cache_clear()  # monkeypatch restores the variables after this


def run_in_process(*args: str):
    from typer.testing import CliRunner

    from app.cli.commands import app

    return CliRunner().invoke(app, list(args), env={"COLUMNS": "80"}, prog_name="softlabels")


def one_line(result) -> str:
    """The failure's only stderr line; no traceback, nothing swallowed."""
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("softlabels: ") and "Traceback" not in result.output, result.output
    return lines[0]


def test_sweep_and_demo_without_a_server_fail_in_one_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    for args in (
        ["sweep", "--project", "p", "--url", url, "--key", "k"],
        ["demo", "--url", url, "--key", "k", "--out", str(tmp_path)],
    ):
        r = run_in_process(*args)
        assert r.exit_code == 1, (args, r.output)
        line = one_line(r)
        assert f"cannot connect to {url}" in line and "softlabels serve" in line, line


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["sweep"], ["--project", "softlabels sweep --help"]),
        (["sweep", "-p", "x", "--base", "{nope"], ["--base", "not JSON"]),
        (["sweep", "-p", "x", "--seeds", "0,one"], ["--seeds", "integers"]),
        (["import-votes", "/no/such/votes.csv", "-p", "x"], ["/no/such/votes.csv", "not exist"]),
        (["import", "crowdkit", "/no/such/answers.csv", "-p", "x"], ["/no/such/answers.csv"]),
        (["export", "-p", "x", "-o", "x.jsonl", "--format", "xml"], ["--format"]),
        (["no-such-command"], ["no-such-command"]),
    ],
)
def test_bad_arguments_fail_in_one_line(args: list[str], words: list[str]) -> None:
    r = run_in_process(*args)
    assert r.exit_code == 2, r.output
    line = one_line(r)
    assert all(w in line for w in words), line


def test_missing_database_fails_in_one_line(env, server_url: str, tmp_path: Path) -> None:
    from sqlalchemy.engine import make_url

    env(DATABASE_URL=None)  # the embedded server, in a data dir that holds none
    r = run_in_process("keys", "list", "--data-dir", str(tmp_path / "none"))
    assert r.exit_code == 1 and "no database in" in one_line(r), r.output
    absent = make_url(server_url).set(database=f"absent_{uuid.uuid4().hex[:8]}")
    env(DATABASE_URL=absent.render_as_string(hide_password=False))
    r = run_in_process("keys", "list")
    assert r.exit_code == 1, r.output
    line = one_line(r)
    assert "database" in line and absent.database in line, line


def test_unwritable_output_fails_in_one_line(
    env, database_url: str, project: str, tmp_path: Path
) -> None:
    env(DATABASE_URL=database_url)
    out = tmp_path / "no-such-dir" / "x.jsonl"
    r = run_in_process("export", "-p", project, "-o", str(out))
    assert r.exit_code == 1, r.output
    assert one_line(r) == f"softlabels: No such file or directory: {out}"


@pytest.mark.slow  # starts a server process
def test_an_error_answer_is_one_line_with_its_code(live_server) -> None:
    r = run_in_process("sweep", "--project", "no-such-project", "--url", live_server.url)
    assert r.exit_code == 1, r.output
    line = one_line(r)
    assert "POST /v1/projects/no-such-project/training-sweeps: 404 not_found:" in line, line
    assert "no-such-project" in line.split("not_found:")[1], line


@pytest.mark.slow  # spawns the command itself, as a user types it
def test_the_entry_point_prints_one_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    r = subprocess.run(
        [str(Path(sys.executable).parent / "softlabels"), "sweep", "-p", "p", "--url", url],
        env={**os.environ, "SOFTLABELS_KEY": "k", "COLUMNS": "80"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1 and r.stdout == "", r
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("softlabels: cannot connect"), r.stderr


def test_a_service_that_does_not_answer_is_one_line() -> None:
    import socket

    import httpx

    from app.cli.common import error_line

    with socket.socket() as s:  # listens (the kernel accepts) but never answers
        s.bind(("127.0.0.1", 0))
        s.listen()
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        with pytest.raises(httpx.ReadTimeout) as e:
            httpx.get(f"{url}/v1/projects", timeout=0.3)
    assert error_line(e.value) == (f"no answer from {url} in time (ReadTimeout)", 1)


def test_serve_on_a_taken_port_is_one_line() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        # Refused before any database is touched: --no-migrate and no worker, but none is reached.
        r = run_in_process("serve", "--port", str(port), "--no-worker", "--no-migrate")
    assert r.exit_code == 1, r.output
    assert one_line(r).startswith(f"softlabels: cannot listen on 127.0.0.1:{port}: "), r.output


def test_worker_on_an_unmigrated_database_is_one_line(env, server_url: str) -> None:
    from tests.helpers import create_database, drop_database

    url = create_database(server_url, prefix="softlabels_bare")
    try:
        env(DATABASE_URL=url)
        r = run_in_process("worker")
    finally:
        drop_database(server_url, url)
    assert r.exit_code == 1, r.output
    assert "not migrated" in one_line(r) and "softlabels migrate" in r.stderr, r.output


def test_a_gpu_worker_on_a_machine_without_one_is_one_line(database_url: str) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device: the refusal cannot be seen here")
    r = cli(database_url, "worker", "--device", "cuda")
    assert r.returncode == 1
    assert (
        r.stderr.strip() == "softlabels: --device cuda: torch sees no CUDA device on this machine."
    )
    r = cli(database_url, "worker", "--device", "tpu")
    assert r.returncode == 2 and "cpu or cuda" in r.stderr


def test_a_bad_import_file_is_one_line(
    env, database_url: str, project: str, tmp_path: Path
) -> None:
    env(DATABASE_URL=database_url)
    bad = tmp_path / "export.json"
    bad.write_text("not json")
    r = run_in_process("import", "label-studio", str(bad), "-p", project, "--from-name", "c")
    assert r.exit_code == 1, r.output
    line = one_line(r)
    assert line.startswith(f"softlabels: {bad}: $: not valid JSON") and "nothing was stored" in line
    binary = tmp_path / "votes.csv"
    binary.write_bytes(b"item,worker,label\n\xb0\xff,w,cat\n")
    r = run_in_process("import-votes", str(binary), "-p", project)
    assert r.exit_code == 2, r.output
    assert one_line(r) == f"softlabels: {binary} is not UTF-8 text (invalid start byte at byte 18)"
    assert stored_votes(database_url, project) == set()


@pytest.mark.slow  # a server with a worker, and six training jobs
def test_sweep_runs_and_prints_its_report(server_url: str, tmp_path: Path) -> None:
    import httpx

    from tests.helpers import server_with_worker

    key = f"sl_cli-admin-{uuid.uuid4().hex}"
    with server_with_worker(server_url, tmp_path, "softlabels_clisweep", key) as live:
        api = httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {key}"})
        name = f"sweep-{uuid.uuid4().hex[:8]}"
        r = api.post("/v1/projects", json={"name": name, "classes": CLASSES, "n_features": 2})
        assert r.status_code == 201, r.text
        centres = [(0, 0), (4, 0), (0, 4)]
        items = [
            {"id": f"i{i}", "features": [centres[i % 3][0] + i % 5 / 5, centres[i % 3][1]],
             "gold": i % 3}
            for i in range(60)
        ]  # fmt: skip
        assert api.post(f"/v1/projects/{name}/items", json={"items": items}).status_code == 200
        votes = [
            {"item": f"i{i}", "worker": f"w{w}", "label": i % 3} for i in range(60) for w in (1, 2)
        ]
        assert api.post(f"/v1/projects/{name}/votes", json={"votes": votes}).status_code == 200
        r = run_in_process(
            "sweep", "--project", name, "--url", live.url, "--key", key,
            "--method", "normalized", "--method", "majority", "--loss", "soft-ce",
            "--seeds", "0,1", "--base", '{"epochs": 2}',
        )  # fmt: skip
    assert r.exit_code == 0, r.output
    # The two recipes asked for and the hard-label baseline the sweep adds, two seeds each.
    assert "6 training jobs queued" in r.output and '"succeeded": 6' in r.output, r.output
    assert "hard-ce on majority" in r.output and "recommended:" in r.output, r.output
