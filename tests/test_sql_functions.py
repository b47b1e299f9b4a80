"""app/db/sql holds the SQL functions' current text, and the migrations deliver exactly that: a
database migrated from scratch has these functions and no others of ours, the newest migration
that applies the files was written for their current text (so a database migrated before has
them too), its downgrade restores what was there, and the slot count has one source."""

from __future__ import annotations

import difflib
import re
import tomllib
from importlib import resources

import psycopg
from alembic import command
from alembic.script import ScriptDirectory

from app.db import sql
from app.db.migrate import alembic_config, upgrade
from tests.helpers import REPO, create_database, drop_database

# Every function in the schema except procrastinate's own, as PostgreSQL prints it back (its
# normalization of the header; the body is kept as written).
_FUNCTIONS = """
SELECT p.proname, pg_get_functiondef(p.oid)
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = current_schema() AND p.proname NOT LIKE 'procrastinate%%'
ORDER BY 1, 2
"""
TO_DO = (
    "add a migration that applies app/db/sql (`sql.apply(op.get_bind())`, as "
    "migrations/versions/2026_12_03_0010_sql_functions.py does) with SQL_DIGEST = {digest!r} "
    "and a downgrade that restores the previous text of the functions you changed"
)


def functions_in(url: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    with psycopg.connect(url) as conn:
        for name, definition in conn.execute(_FUNCTIONS):
            found.setdefault(name, []).append(definition)
    return found


def functions_of_files(server_url: str) -> dict[str, list[str]]:
    """The files' functions as PostgreSQL prints them, from an empty database (bodies are not
    checked there: they name tables and types only a migrated database has)."""
    url = create_database(server_url, prefix="softlabels_sqlfiles")
    try:
        with psycopg.connect(url) as conn:
            conn.execute("SET check_function_bodies = off")
            for statement in sql.definitions().values():
                conn.execute(statement)  # no parameters: '%' in the SQL stays literal
        return functions_in(url)
    finally:
        drop_database(server_url, url)


def test_a_database_migrated_from_scratch_has_the_functions_of_app_db_sql(
    server_url: str, database_url: str
) -> None:
    migrated = functions_in(database_url)
    files = functions_of_files(server_url)
    assert set(files) == set(sql.definitions())  # one function per file, named as the file
    problems = []
    for name in sorted(set(migrated) - set(files)):
        problems.append(f"{name}: a migration defines it, app/db/sql has no {name}.sql")
    for name in sorted(set(files) - set(migrated)):
        problems.append(f"app/db/sql/{name}.sql: a database migrated from scratch lacks it")
    for name in sorted(set(files) & set(migrated)):
        if migrated[name] != files[name]:
            diff = difflib.unified_diff(
                "\n".join(files[name]).splitlines(),
                "\n".join(migrated[name]).splitlines(),
                f"app/db/sql/{name}.sql",
                "a database migrated from scratch",
                lineterm="",
            )
            problems.append("\n".join(diff))
    assert not problems, (
        "The functions a migrated database has are not app/db/sql's. To change a function, "
        "edit its file and " + TO_DO.format(digest=sql.digest()) + ".\n\n" + "\n\n".join(problems)
    )


def test_the_newest_migration_applying_app_db_sql_was_written_for_its_text() -> None:
    """A database migrated before a file was edited keeps the old function unless a migration
    applies the file again: an edit without a migration fails here."""
    script = ScriptDirectory.from_config(alembic_config("postgresql://unused"))
    newest = next(r for r in script.walk_revisions() if hasattr(r.module, "SQL_DIGEST"))
    written_for, now = newest.module.SQL_DIGEST, sql.digest()
    assert written_for == now, (
        f"app/db/sql has changed since migration {newest.revision} applied it, and databases "
        f"migrated before would keep the old functions: {TO_DO.format(digest=now)}."
    )


def test_downgrade_restores_the_functions_of_before(server_url: str) -> None:
    url = create_database(server_url, prefix="softlabels_sqldown")
    try:
        upgrade(url, "0009")
        before = functions_in(url)
        upgrade(url)
        assert functions_in(url) != before  # the migrations since change something
        command.downgrade(alembic_config(url), "0009")
        assert functions_in(url) == before
    finally:
        drop_database(server_url, url)


def test_version_slots_is_the_slot_count_of_every_function(database_url: str) -> None:
    """The slot count is written once, as VERSION_SLOTS: the files say `{VERSION_SLOTS}`, and
    the database's functions pick a slot below it."""
    raw = {
        f.name: f.read_text()
        for f in resources.files("app.db.sql").iterdir()
        if f.name.endswith(".sql")
    }
    bare = [name for name, text in raw.items() if re.search(r"random\(\) \* \d", text)]
    assert bare == [], f"write the slot count as {{VERSION_SLOTS}} in {bare}"
    with psycopg.connect(database_url) as conn:
        sources = dict(
            conn.execute(
                "SELECT proname, prosrc FROM pg_proc"
                " WHERE proname LIKE 'softlabels%%' AND prosrc LIKE '%%random() *%%'"
            ).fetchall()
        )
    assert set(sources) == {
        "softlabels_bump_votes_version",
        "softlabels_ingest_votes",
        "softlabels_ingest_ticks",
    }
    for name, source in sources.items():
        assert re.findall(r"random\(\) \* (\d+)", source) == [str(sql.VERSION_SLOTS)], name


def test_the_sql_files_are_package_data() -> None:
    """An installed wheel has the files the migrations read (setuptools ships only .py files
    unless told)."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["app.db.sql"]
    files = [p for p in (REPO / "app" / "db" / "sql").iterdir() if p.is_file()]
    data = [p for p in files if p.suffix != ".py"]
    assert data
    assert [p.name for p in data if not any(p.match(pattern) for pattern in patterns)] == []
