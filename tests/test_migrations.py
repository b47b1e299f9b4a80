"""The migrations build exactly the schema the models describe, and run down and up again."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, pool

from app.db.base import Base
from app.db.migrate import upgrade
from app.db.session import sqlalchemy_url
from tests.helpers import create_database, drop_database


def _include(obj: object, name: str | None, type_: str, reflected: bool, other: object) -> bool:
    return not (name or "").startswith(("procrastinate_", "idx_procrastinate"))


def test_models_match_migrations_and_downgrade_works(server_url: str) -> None:
    url = create_database(server_url, prefix="softlabels_migr")
    try:
        upgrade(url)
        engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"include_object": _include})
            assert compare_metadata(ctx, Base.metadata) == []
        from alembic import command

        from app.db.migrate import alembic_config

        command.downgrade(alembic_config(url), "base")
        with engine.connect() as conn:
            tables = (
                conn.exec_driver_sql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                .scalars()
                .all()
            )
        assert set(tables) <= {"alembic_version"}
        upgrade(url)  # and back up again
        engine.dispose()
    finally:
        drop_database(server_url, url)
