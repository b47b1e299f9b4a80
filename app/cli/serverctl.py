"""Start `softlabels serve` in a subprocess and wait until it answers /healthz; stop it.

One helper for everything that needs a live server: `softlabels demo`, the tests and the
benchmarks.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from app.config import get_settings
from app.logging import configure_logging

if TYPE_CHECKING:
    from fastapi import FastAPI

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def die_with_parent() -> None:
    """Have the kernel kill this process when its parent dies. If `serve` is killed (SIGKILL
    skips its cleanup), its job worker and its API processes (`--workers N`) must not live on
    as orphans holding the port and database connections; a job that was running is requeued by
    the next worker's stalled-job sweep. SIGKILL, not SIGTERM: a process in the middle of a fit
    finished it first (uvicorn waits for requests in flight), and orphans were found burning CPU
    minutes after their `serve` was gone; with the parent gone there is nothing to shut down
    gracefully for."""
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


# Seconds `serve` gives requests in flight once told to stop; then they are cancelled, and a
# process still held by a thread (a fit runs in one) exits anyway.
GRACE_S = 10


def exit_soon(seconds: float = GRACE_S) -> None:
    """End this process in `seconds` unless it has ended by then: at interpreter exit Python
    waits for every non-daemon thread, and a thread-pool thread running a fit cannot be
    cancelled."""
    import threading

    timer = threading.Timer(seconds, os._exit, (0,))
    timer.daemon = True
    timer.start()


def app_from_env() -> FastAPI:
    """The app of one of `softlabels serve --workers N`'s processes (uvicorn's factory):
    settings from the environment that `serve` set, logs as JSON lines."""
    from app.main import create_app  # here, not at the top: `serve`'s parent never needs it

    die_with_parent()
    configure_logging()
    return create_app(get_settings(), after_shutdown=exit_soon)


class ServerProcess:
    """`softlabels serve --port <free port> *args` with its output in `log`."""

    def __init__(
        self,
        args: Sequence[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        log: Path,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args, self.log = list(args), log
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90) -> ServerProcess:
        cmd = [sys.executable, "-m", "app.cli", "serve", "--port", str(self.port), *self.args]
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                cmd, env=self.env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT
            )
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server not healthy after {timeout} s: {self.log_tail()}")

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return "(no log)"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM (serve then stops its workers and any embedded server it started)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
