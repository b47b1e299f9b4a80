"""One Settings class: every knob the service reads from the environment (prefix SOFTLABELS_)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import platformdirs
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("softlabels"))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SOFTLABELS_", extra="ignore")

    # DATABASE_URL is read without the prefix: it is the name every tool already uses.
    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    data_dir: Path = Field(default_factory=default_data_dir)
    host: str = "127.0.0.1"
    port: int = 8000

    max_votes_per_request: int = Field(default=50_000, ge=1)
    max_items_per_request: int = Field(default=50_000, ge=1)
    # Bytes; a larger body gets 413 before it is read whole (50k votes with 256-char ids fit).
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    export_chunk_rows: int = Field(default=5_000, ge=1)

    # Training jobs: a worker that stops heart-beating for this long is presumed dead.
    job_heartbeat_timeout_s: float = Field(default=60.0, gt=0)
    artifacts_dir: Path | None = None  # default: <data_dir>/artifacts

    @property
    def artifacts_path(self) -> Path:
        return self.artifacts_dir or (self.data_dir / "artifacts")


@lru_cache
def get_settings() -> Settings:
    return Settings()
