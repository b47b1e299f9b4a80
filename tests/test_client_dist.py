"""The Python client as a distribution of its own (clients/python): it installs alone in a fresh
virtualenv, without torch or the server, works there against a live server, and a call that
needs a missing extra says which `pip install` fixes it. Also runs the client's doc examples
(docs/examples/client_*.py) against a live server."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import REPO, LiveServer, server_with_worker

ADMIN = f"sl_dist-admin-{uuid.uuid4().hex}"
CLIENT_DIR = REPO / "clients" / "python"
EXAMPLES = REPO / "docs" / "examples"
# What the client must not pull in: the server, its database and its heavy dependencies.
NOT_INSTALLED = [
    *("torch", "fastapi", "uvicorn", "app", "migrations", "sqlalchemy", "psycopg"),
    *("pandas", "pyarrow", "numpy", "datasets"),
]


def test_the_server_does_not_import_the_client() -> None:
    """The service's package never imports the client, nor ships it."""
    from setuptools import find_packages

    imports = []
    for path in sorted((REPO / "app").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imports += [(path, a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                imports.append((path, node.module))
    assert len(imports) > 100  # the scan sees the package's imports
    bad = [(p, m) for p, m in imports if m.split(".")[0] == "softlabels_client"]
    bad += [(p, m) for p, m in imports if m == "app.client" or m.startswith("app.client.")]
    assert bad == []
    packages = find_packages(str(REPO), include=["app*", "migrations*"])  # as pyproject.toml
    assert "app" in packages and not [p for p in packages if "client" in p.split(".")]


@pytest.fixture(scope="module")
def server(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("dist")
    with server_with_worker(server_url, tmp, "softlabels_dist", ADMIN) as live:
        yield live


@pytest.fixture(scope="module")
def fresh_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtualenv holding `pip install ./clients/python` (no extras) and nothing else.

    Made --without-pip and filled by this environment's pip (`pip --python`): the same install
    into the same kind of venv, without ensurepip's ~30 s of installing pip itself into it.
    """
    tmp = tmp_path_factory.mktemp("client-venv")
    venv = tmp / "venv"
    # pip builds in the source tree: build from a copy, so that no build/ of an earlier run
    # (with files since deleted) reaches the wheel, and the repository stays clean.
    source = shutil.copytree(
        CLIENT_DIR, tmp / "src", ignore=shutil.ignore_patterns("build", "*.egg-info")
    )
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    r = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    print(f"fresh venv with softlabels-client: {time.monotonic() - started:.1f} s")
    return python


def run_py(python: Path, code_or_file: str | Path, cwd: Path, **env: str) -> str:
    """Run a script with `python`, in `cwd` (not the repository: its `app` must not be found
    there by accident), with a bare environment; its stdout, after checking it succeeded."""
    args = [str(code_or_file)] if isinstance(code_or_file, Path) else ["-c", code_or_file]
    r = subprocess.run(
        [str(python), *args],
        cwd=cwd,
        env={"PATH": os.environ["PATH"], "HOME": str(cwd), **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, f"stdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-3000:]}"
    return r.stdout


@pytest.mark.slow  # a virtualenv and pip
def test_client_installs_alone_without_torch_or_the_server(
    fresh_python: Path, tmp_path: Path
) -> None:
    out = run_py(
        fresh_python,
        textwrap.dedent(
            f"""
            import importlib.util, json
            import softlabels_client
            print(json.dumps({{
                "present": [m for m in {NOT_INSTALLED!r} if importlib.util.find_spec(m)],
                "file": softlabels_client.__file__,
                "all": softlabels_client.__all__,
            }}))
            """
        ),
        tmp_path,
    )
    got = json.loads(out)
    assert got["present"] == []
    # The installed copy, not the source tree.
    assert got["file"].startswith(str(fresh_python.parent.parent)), got["file"]
    assert {"Client", "Job", "JobFailed", "SoftlabelsError", "MissingExtra"} <= set(got["all"])


SCRIPT = """
import json, os
from softlabels_client import Client, MissingExtra

project = os.environ["PROJECT"]
with Client() as c:  # SOFTLABELS_URL, SOFTLABELS_KEY
    c.create_project(project, ["cat", "dog", "bird"])
    c.add_votes(project, [("a", "w1", "cat"), ("a", "w2", "cat"), ("a", "w3", "dog"),
                          ("b", "w1", "bird")])
    records = c.soft_labels(project, as_="records")
    hints = []
    for call in (lambda: c.soft_labels(project), lambda: c.soft_labels(project, as_="arrow"),
                 lambda: c.torch_dataset(project), lambda: c.hf_dataset(project)):
        try:
            call()
        except MissingExtra as e:
            hints.append(str(e))
print(json.dumps({"records": records, "hints": hints}))
"""


@pytest.mark.slow  # a virtualenv, pip, a server and a worker
def test_client_alone_works_against_a_live_server(
    fresh_python: Path, server: LiveServer, tmp_path: Path
) -> None:
    project = f"dist-{uuid.uuid4().hex[:8]}"
    out = run_py(
        fresh_python,
        SCRIPT,
        tmp_path,
        SOFTLABELS_URL=server.url,
        SOFTLABELS_KEY=ADMIN,
        PROJECT=project,
    )
    got = json.loads(out)
    records = {r["item"]: r for r in got["records"]}
    assert set(records) == {"a", "b"}
    assert records["a"]["n_votes"] == 3 and records["b"]["n_votes"] == 1
    assert records["a"]["probs"] == pytest.approx([2 / 3, 1 / 3, 0])
    assert records["b"]["probs"] == pytest.approx([0, 0, 1])
    assert got["hints"] == [
        'pandas is needed for Client.soft_labels(as_="pandas"): '
        "pip install 'softlabels-client[pandas]'",
        'pyarrow is needed for Client.soft_labels(as_="arrow"): '
        "pip install 'softlabels-client[arrow]'",
        "torch is needed for Client.torch_dataset(): pip install 'softlabels-client[torch]'",
        "datasets is needed for Client.hf_dataset(): pip install 'softlabels-client[datasets]'",
    ]


@pytest.mark.slow  # a virtualenv, pip, a server and a worker
def test_quickstart_example_runs_in_the_bare_client(
    fresh_python: Path, server: LiveServer, tmp_path: Path
) -> None:
    """docs/examples/client_quickstart.py needs no extra, makes its own project each run, or
    uses SOFTLABELS_PROJECT."""
    env = {"SOFTLABELS_URL": server.url, "SOFTLABELS_KEY": ADMIN}
    for _ in range(2):  # a second run makes a second project, not a conflict
        out = run_py(fresh_python, EXAMPLES / "client_quickstart.py", tmp_path, **env)
        assert "refused: 422 validation_error" in out, out
    name = f"quick-{uuid.uuid4().hex[:8]}"
    out = run_py(
        fresh_python,
        EXAMPLES / "client_quickstart.py",
        tmp_path,
        **env,
        SOFTLABELS_PROJECT=name,
    )
    assert out.splitlines()[1].startswith("img-1 3 [0.667, 0.333, 0.0]"), out
    info = httpx.get(
        f"{server.url}/v1/projects/{name}", headers={"Authorization": f"Bearer {ADMIN}"}
    ).json()
    assert info["n_items"] == 3 and info["n_votes"] == 7, info


@pytest.mark.slow  # a server, a worker and a training job
@pytest.mark.parametrize("example", ["client_pandas.py", "client_torch.py", "client_hf.py"])
def test_examples_with_extras_run(server: LiveServer, tmp_path: Path, example: str) -> None:
    """The examples that need extras, in this environment (which has them all)."""
    env = {"SOFTLABELS_URL": server.url, "SOFTLABELS_KEY": ADMIN}
    out = run_py(Path(sys.executable), EXAMPLES / example, tmp_path, **env)
    assert out.strip(), out
