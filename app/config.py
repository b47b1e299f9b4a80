"""One Settings class: every knob the service reads from the environment (prefix SOFTLABELS_)."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path

import platformdirs
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """`"127.0.0.0/8, ::1/128"` -> the networks; ValueError names a bad entry."""
    out = []
    for part in text.replace(";", ",").split(","):
        if part.strip():
            out.append(ipaddress.ip_network(part.strip(), strict=False))
    return tuple(out)


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("softlabels"))


class Settings(BaseSettings):
    """Every setting, with the description the docs' configuration table shows
    (docs/hooks.py builds it from these fields)."""

    model_config = SettingsConfigDict(env_prefix="SOFTLABELS_", extra="ignore")

    # DATABASE_URL is read without the prefix: it is the name every tool already uses.
    database_url: str | None = Field(
        default=None,
        validation_alias="DATABASE_URL",
        description="The PostgreSQL server; unset: an embedded one in the data dir.",
    )
    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="The embedded PostgreSQL, the first admin key (admin.key) and logs.",
    )
    host: str = Field(default="127.0.0.1", description="Address `serve` binds.")
    port: int = Field(default=8000, description="Port `serve` binds.")

    max_votes_per_request: int = Field(default=50_000, ge=1, description="Votes per request.")
    max_items_per_request: int = Field(default=50_000, ge=1, description="Items per request.")
    max_body_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=1024,
        description="A larger body gets 413 before it is read whole (50k votes with 256-char "
        "ids fit).",
    )
    max_event_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="An Argilla event sent without a key is read at most this far before its "
        "signature is checked (events are a few kB).",
    )
    export_chunk_rows: int = Field(default=5_000, ge=1, description="Rows per export chunk.")
    write_pool_size: int = Field(
        default=10,
        ge=1,
        description="Connections per API process for the vote write path's interactive lane "
        "(an async pool beside the engine's).",
    )
    group_commit_max_votes: int = Field(
        default=32,
        ge=1,
        description="Vote requests of at most this many votes are group-committed: those that "
        "arrive together in one API process share one statement and one commit "
        "(app/votes/group_commit.py; a group holds at most 256 votes).",
    )
    group_commit_wait_ms: float = Field(
        default=0.0,
        ge=0,
        le=1000,
        description="How long a group waits for more requests before it leaves; 0: none (a "
        "group leaves at the event loop's next turn, and grows while the previous one commits).",
    )
    batch_concurrency: int = Field(
        default=1,
        ge=1,
        description="Vote batches larger than a group and smaller than `bulk_min_votes` that "
        "one API process writes at once; the next waits its turn (app/votes/lanes.py).",
    )
    bulk_min_votes: int = Field(
        default=1000,
        ge=1,
        description="Vote requests of at least this many votes go through the bulk lane "
        "(app/votes/lanes.py): connections of their own, `bulk_concurrency` at a time.",
    )
    bulk_concurrency: int = Field(
        default=1,
        ge=1,
        description="Large vote batches one API process writes at once; the next waits.",
    )
    bulk_wait_s: float = Field(
        default=600.0,
        gt=0,
        description="How long a large batch waits for its turn in the bulk lane before 503.",
    )

    fit_sync_max_votes: int = Field(
        default=200_000,
        ge=0,
        description="Worker-model fits over more votes run in the worker; reads meanwhile get "
        "the last fit, marked stale. Smaller projects refit inside the request.",
    )
    fit_sync_max_work: float = Field(
        default=1.2e8,
        ge=0,
        description="... and only while the fit's estimated cost (votes x max_iter x starts, "
        "x Newton rounds for GLAD) is at most this (every method's defaults at 200k votes are).",
    )
    fit_sync_max_s: float = Field(
        default=20.0,
        gt=0,
        description="... and it ends within this many seconds; past it, the fit moves to the "
        "worker.",
    )
    fit_concurrency: int = Field(
        default=2,
        ge=1,
        description="In-request fits one API process runs at once; a request finding none "
        "free gets 503.",
    )

    job_heartbeat_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="A worker that stops heart-beating for this long is presumed dead.",
    )
    training_concurrency: int = Field(
        default=1, ge=1, description="Training jobs one worker runs at once."
    )
    background_concurrency: int = Field(
        default=2,
        ge=1,
        description="Background jobs (webhook deliveries, refits, connector syncs) one worker "
        "runs at once, beside its training jobs.",
    )
    training_max_epochs: int = Field(
        default=1000, ge=1, description="Largest `epochs` a training config may ask for."
    )
    training_max_steps: int = Field(
        default=1_000_000,
        ge=1,
        description="Largest number of optimizer steps (epochs x batches per epoch).",
    )
    training_max_params: int = Field(
        default=50_000_000, ge=1, description="Largest model, in parameters."
    )
    training_max_s: float = Field(
        default=3600.0,
        gt=0,
        description="Wall time after which a running job stops as if cancelled.",
    )
    training_max_active_per_project: int = Field(
        default=4, ge=1, description="Training jobs one project may have queued or running."
    )
    # Small models train fastest on one thread (measured: 2 threads were up to 10x slower on
    # a 2-core machine).
    torch_threads: int = Field(
        default=1, ge=0, description="Intra-op threads for training in a worker; 0 = torch's."
    )

    allowed_networks: str = Field(
        default="",
        description="Comma-separated networks the service may fetch from or post to although "
        'they are not public, e.g. "127.0.0.0/8,::1/128" for a Label Studio or webhook '
        "receiver on this machine (see Security).",
    )
    outbound_deadline_s: float = Field(
        default=60.0,
        gt=0,
        description="One deadline for a whole outbound exchange, redirects included.",
    )
    outbound_max_bytes: int = Field(
        default=100 * 1024 * 1024, ge=1024, description="The most an outbound reply may hold."
    )
    label_studio_export_deadline_s: float = Field(
        default=1800.0,
        gt=0,
        description="How long a sync waits for Label Studio's export: Label Studio builds the "
        "whole export before it sends a byte, which takes minutes on large projects (67-86 s "
        "for 20,000 tasks on a 2-core machine).",
    )
    label_studio_export_max_bytes: int = Field(
        default=1024 * 1024 * 1024,
        ge=1024,
        description="The largest Label Studio export a sync reads. About 2.1 KB per task with "
        "3 short annotations: 50,000 such tasks are over outbound_max_bytes (100 MiB), which "
        "capped the export before. The export is read whole and parsed: a sync holds about 5 "
        "times its size in memory (a 114 MB export, 150,000 annotations: +490 MB parsed).",
    )

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        parse_networks(value)  # ValueError names the bad entry
        return value

    auth: bool = Field(
        default=True,
        description="Require API keys. Off only for local experiments on a loopback address.",
    )
    admin_key: SecretStr | None = Field(
        default=None,
        description="Accepted as an admin key besides the keys in the database.",
    )
    # Each of `api_processes` enforces its share of a key's rate, so the total holds.
    rate_limit_per_s: float = Field(
        default=1000.0,
        ge=0,
        description="Requests a second per key on average (a key may have its own); 0 = off.",
    )
    rate_limit_burst: int = Field(default=2000, ge=1, description="Burst size per key.")
    api_processes: int = Field(
        default=1,
        ge=1,
        description="API processes sharing the port (set by `softlabels serve --workers N`).",
    )
    key_cache_ttl_s: float = Field(
        default=1.0,
        ge=0,
        description="A key revoked elsewhere (CLI, another replica) stops working within this "
        "many seconds; one revoked through this process's API, at once.",
    )


@lru_cache
def get_settings() -> Settings:
    return Settings()
