"""The first admin key, the key file, and the rule that auth may be off only on loopback."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.orm import Session

from app.auth.keys import count_active_keys, create_key
from app.db.session import make_engine

KEY_FILE = "admin.key"


def write_key_file(path: Path, key: str) -> None:
    """Write `key` to `path`, readable by its owner only (0600), never world-readable on the way."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing file keeps its mode on O_CREAT: set it
        os.write(fd, (key + "\n").encode())
    finally:
        os.close(fd)


def read_key_file(path: Path) -> str | None:
    try:
        key = path.read_text().strip()
    except OSError:
        return None
    return key or None


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def refuse_open_no_auth(auth: bool, host: str) -> None:
    """Auth off is for local experiments: refuse it on any address other machines can reach."""
    if not auth and not is_loopback(host):
        raise RuntimeError(
            f"--no-auth is refused on {host!r}: without keys the API is open to anyone who can "
            "reach it. Bind to 127.0.0.1 (or ::1), or keep auth on."
        )


def bootstrap_admin_key(database_url: str, key_file: Path) -> str | None:
    """At `serve` time: with no active key in the database, make an admin key, write it to
    `key_file` (0600) and return it (to be printed once). Otherwise None.

    An advisory lock makes two servers starting at once agree on a single first key. The file is
    written before the commit: if the commit fails, the next start overwrites a useless file; the
    other order could store a key nobody ever sees.
    """
    engine = make_engine(database_url, pool_size=1)
    try:
        with Session(engine) as session:
            session.execute(text("SELECT pg_advisory_xact_lock(hashtext('softlabels_first_key'))"))
            if count_active_keys(session):
                return None
            _, secret = create_key(session, "admin (made at first start)", ["admin"], None)
            write_key_file(key_file, secret)
            session.commit()
            return secret
    finally:
        engine.dispose()


def secret_value(value: SecretStr | str | None) -> str | None:
    """A SecretStr's value (Settings.model_copy(update=...) may have left a plain str)."""
    if isinstance(value, SecretStr):
        return value.get_secret_value() or None
    return value or None
