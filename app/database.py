"""Which PostgreSQL to use: DATABASE_URL if set, else the embedded server in the data dir."""

from __future__ import annotations

from app.config import Settings
from app.db.embedded import start_embedded


def resolve_database_url(settings: Settings) -> str:
    if settings.database_url:
        return settings.database_url
    return start_embedded(settings.data_dir)


def with_database(settings: Settings) -> Settings:
    """Settings with database_url filled in (starting the embedded server if needed)."""
    return settings.model_copy(update={"database_url": resolve_database_url(settings)})
