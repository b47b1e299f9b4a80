"""One Settings class: every knob the service reads from the environment (prefix SOFTLABELS_)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import platformdirs
from pydantic import Field, SecretStr, field_validator
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
    # An Argilla event sent without a key is read at most this far before its signature is
    # checked (events are a few kB; the general limit above is for 50k-vote batches).
    max_event_bytes: int = Field(default=1024 * 1024, ge=1024)
    export_chunk_rows: int = Field(default=5_000, ge=1)
    # Connections per API process for the vote write path (an async pool beside the engine's).
    write_pool_size: int = Field(default=10, ge=1)

    # Worker-model fits over more votes than this run in the worker; reads meanwhile get the
    # last fit, marked stale (app/fits.py). Smaller projects refit inside the request.
    fit_sync_max_votes: int = Field(default=200_000, ge=0)
    # And only while the fit's estimated cost (votes x max_iter x starts, x Newton rounds for
    # GLAD) is at most this (every method's defaults at 200k votes are within it) ...
    fit_sync_max_work: float = Field(default=1.2e8, ge=0)
    # ... and it ends within this many seconds; past it, the fit moves to the worker.
    fit_sync_max_s: float = Field(default=20.0, gt=0)
    # In-request fits one API process runs at once; a request finding none free gets 503.
    fit_concurrency: int = Field(default=2, ge=1)

    # Training jobs: a worker that stops heart-beating for this long is presumed dead.
    job_heartbeat_timeout_s: float = Field(default=60.0, gt=0)
    # A worker runs training jobs and background work (webhook deliveries, refits, connector
    # syncs) side by side, each with its own concurrency (app/worker.py).
    training_concurrency: int = Field(default=1, ge=1)
    background_concurrency: int = Field(default=2, ge=1)
    # Training configs a client may ask for (checked when the job is created; an admin raises
    # them here): epochs, optimizer steps (epochs x batches per epoch), model parameters, and
    # the wall time after which a running job stops as if cancelled.
    training_max_epochs: int = Field(default=1000, ge=1)
    training_max_steps: int = Field(default=1_000_000, ge=1)
    training_max_params: int = Field(default=50_000_000, ge=1)
    training_max_s: float = Field(default=3600.0, gt=0)
    # Training jobs one project may have queued or running at once.
    training_max_active_per_project: int = Field(default=4, ge=1)
    # Intra-op threads for training in a worker. Small models train fastest on one thread
    # (measured: 2 threads were up to 10x slower on a 2-core machine); 0 = torch's default.
    torch_threads: int = Field(default=1, ge=0)

    # The address policy (app/outbound.py) for every URL the service fetches or posts to:
    # loopback, private, link-local and other non-public addresses are refused unless inside
    # one of these comma-separated networks, e.g. "127.0.0.0/8,::1/128" for a Label Studio or
    # webhook receiver on this machine.
    allowed_networks: str = ""
    # One deadline for a whole outbound exchange (redirects included) and a cap on the reply.
    outbound_deadline_s: float = Field(default=60.0, gt=0)
    outbound_max_bytes: int = Field(default=100 * 1024 * 1024, ge=1024)

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        from app.outbound import parse_networks

        parse_networks(value)  # ValueError names the bad entry
        return value

    # Access control (app/auth.py). Off only for local experiments on a loopback address.
    auth: bool = True
    # SOFTLABELS_ADMIN_KEY: accepted as an admin key besides the keys in the database.
    admin_key: SecretStr | None = None
    # Per-key token bucket (app/auth/ratelimit.py): `rate_limit_per_s` requests a second on
    # average, bursts of `rate_limit_burst`, over the whole server (each of `api_processes`
    # enforces its share). A labeling tool posting each annotation stays far below it; a key
    # can have its own rate (`rate_limit_per_s` when the key is made). 0 turns the limit off.
    rate_limit_per_s: float = Field(default=1000.0, ge=0)
    rate_limit_burst: int = Field(default=2000, ge=1)
    # How many API processes share the port (set by `softlabels serve --workers N`).
    api_processes: int = Field(default=1, ge=1)
    # Key lookups are cached this long: a key revoked elsewhere (CLI, another replica) stops
    # working within this many seconds; one revoked through this process's API, at once.
    key_cache_ttl_s: float = Field(default=1.0, ge=0)


@lru_cache
def get_settings() -> Settings:
    return Settings()
