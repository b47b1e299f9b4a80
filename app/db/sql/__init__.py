"""The schema's SQL functions as they are now: one file per function, `<function name>.sql`.

A function is changed by editing its file (reviewed as a diff) and adding a migration that
applies this directory (`apply`, as migration 0010 does), whose `SQL_DIGEST` is `digest()` of
the files it was written for and whose downgrade restores the previous text of what it changed.
tests/test_sql_functions.py checks that a database migrated from scratch has exactly these
functions, and that the newest migration applying them was written for their current text: an
edit without a migration would never reach a database already migrated.

`{VERSION_SLOTS}` in a file stands for VERSION_SLOTS, filled in when the file is read.
"""

from __future__ import annotations

import hashlib
import re
from importlib import resources

from sqlalchemy import Connection

# The striped votes-version counter's slot count (softlabels_bump_votes_version): a writer adds
# 1 to one slot picked at random, so concurrent writers rarely wait on each other's row lock.
VERSION_SLOTS = 64

_VALUES = {"VERSION_SLOTS": VERSION_SLOTS}
_PLACEHOLDER = re.compile(r"\{([A-Z][A-Z0-9_]*)\}")
_LEADING_COMMENTS = re.compile(r"\A(?:[ \t]*(?:--[^\n]*)?\n)*")


def _fill(name: str, text: str) -> str:
    def value(m: re.Match[str]) -> str:
        if m.group(1) not in _VALUES:
            raise ValueError(f"app/db/sql/{name}.sql: unknown placeholder {m.group(0)}")
        return str(_VALUES[m.group(1)])

    return _PLACEHOLDER.sub(value, text)


def definitions() -> dict[str, str]:
    """Each function's name and its CREATE statement, placeholders filled in, in name order."""
    files = sorted(
        (f for f in resources.files(__name__).iterdir() if f.name.endswith(".sql")),
        key=lambda f: f.name,
    )
    return {
        (name := f.name.removesuffix(".sql")): _fill(name, f.read_text(encoding="utf-8"))
        for f in files
    }


def digest() -> str:
    """A hash of every function's statement as `apply` runs it, from CREATE on: the comment
    lines above it are documentation the database does not keep, and change nothing there."""
    h = hashlib.sha256()
    for name, statement in definitions().items():
        h.update(f"{name}\0{_LEADING_COMMENTS.sub('', statement)}\0".encode())
    return h.hexdigest()


def apply(connection: Connection) -> None:
    """Create every function from its file, in the connection's transaction, in name order (a
    LANGUAGE sql body is checked when created: softlabels_ingest_votes_batch needs
    softlabels_ingest_votes to exist).

    Each is dropped first (by name: one function per name): CREATE OR REPLACE cannot rename an
    argument or change the return type, and a migration from scratch runs an older migration's
    `apply` on today's files. PL/pgSQL and plain LANGUAGE sql bodies record no dependencies, so
    nothing in the catalog depends on these functions; a drop that something did depend on would
    fail, not cascade.
    """
    # The driver's own connection, without parameters: '%' in the SQL (RAISE) stays literal.
    raw = connection.connection.driver_connection
    assert raw is not None
    for name, statement in definitions().items():
        raw.execute(f"DROP FUNCTION IF EXISTS {name}")
        raw.execute(statement)
