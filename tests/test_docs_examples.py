"""The shell examples of the README and the getting-started, connectors, methods and training
pages, run as pasted against a live `softlabels serve` (auth on, the admin key it writes at its
first start, a HOME of its own).

Every ```bash block of those pages runs, in page order, in one bash with `set -euo pipefail`,
except a block right after a `<!-- not run: <reason> -->` line (starting the service, commands
for Label Studio's side). `--8<-- "path"` lines are replaced by the file, as the docs site does;
the service's URL `http://127.0.0.1:8000` by the live server's."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.helpers import REPO, LiveServer, migrated_database

DOCS = REPO / "docs"
RUN_PAGES = ["../README.md", "getting-started.md", "connectors.md", "methods.md", "training.md"]
FENCE = re.compile(r"^```(\w*)\s*$")
SNIPPET = re.compile(r'^\s*--8<-- "([^"]+)"\s*$')


def shell_blocks(page: Path) -> list[str]:
    """The page's runnable ```bash blocks, snippets expanded."""
    blocks: list[str] = []
    lines = page.read_text().splitlines()
    i, skip_next = 0, False
    while i < len(lines):
        line = lines[i]
        if line.strip().startswith("<!-- not run:"):
            skip_next = True
        m = FENCE.match(line.strip())
        if m and m.group(1):
            lang, body = m.group(1), []
            i += 1
            while not lines[i].strip().startswith("```"):
                body.append(lines[i])
                i += 1
            if lang == "bash" and not skip_next:
                blocks.append("\n".join(expand(b) for b in dedent_block(body)))
            # Only shell blocks run; any other code on these pages must say why it does not.
            runs_or_says_why = lang in ("bash", "text", "json") or skip_next
            assert runs_or_says_why, f"{page}: a {lang} block that runs nowhere"
            skip_next = False
        i += 1
    return blocks


def dedent_block(body: list[str]) -> list[str]:
    indent = min((len(b) - len(b.lstrip()) for b in body if b.strip()), default=0)
    return [b[indent:] for b in body]


def expand(line: str) -> str:
    m = SNIPPET.match(line)
    return (REPO / m.group(1)).read_text().rstrip("\n") if m else line


def test_pages_have_runnable_examples() -> None:
    for page in RUN_PAGES:
        blocks = shell_blocks(DOCS / page)
        assert blocks, page
        assert not any("--8<--" in b for b in blocks)


@pytest.mark.slow
def test_docs_examples_run_as_pasted(server_url: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    with migrated_database(server_url, prefix="softlabels_docs") as url:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("SOFTLABELS_") and key not in ("XDG_DATA_HOME", "VIRTUAL_ENV")
        }
        env |= {"HOME": str(home), "DATABASE_URL": url}
        server = LiveServer(env, [], tmp_path / "server.log", auth=True)
        server.start()
        try:
            for page in RUN_PAGES:
                script = "\n\n".join(shell_blocks(DOCS / page))
                script = script.replace("http://127.0.0.1:8000", server.url)
                # A folder of its own (files the examples write land there) that has the
                # clone's .venv, as the repository the pages are read in does.
                work = tmp_path / Path(page).stem
                work.mkdir()
                (work / ".venv").symlink_to(REPO / ".venv")
                run = subprocess.run(
                    ["bash", "-c", f"set -euo pipefail\n{script}"],
                    cwd=work,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=240,
                )
                assert run.returncode == 0, (
                    f"{page}: exit {run.returncode}\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
                )
        finally:
            server.stop()
