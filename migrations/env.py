"""Alembic environment: the URL comes from the caller's config or, failing that, Settings."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from app.db import models  # noqa: F401  (registers tables on the metadata)
from app.db.base import Base
from app.db.session import sqlalchemy_url

config = context.config


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from app.config import get_settings

    settings = get_settings()
    if not settings.database_url:
        raise SystemExit(
            "DATABASE_URL is not set; use `softlabels migrate` for the embedded server"
        )
    return settings.database_url


def include_object(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    # procrastinate's tables are created from its own schema file, not from our models.
    return not (
        type_ in ("table", "index")
        and name is not None
        and name.startswith(("procrastinate_", "idx_procrastinate"))
    )


def run_migrations_online() -> None:
    engine = create_engine(sqlalchemy_url(_url()), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection, target_metadata=Base.metadata, include_object=include_object
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    context.configure(url=sqlalchemy_url(_url()), target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
