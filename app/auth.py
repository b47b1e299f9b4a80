"""API keys: make, hash, look up (briefly cached), decide scopes, and rate-limit per key.

A key is `sl_` + 32 random bytes (256 bits, URL-safe base64). Only its sha256 is stored: a
password needs a slow, salted hash because it is guessable, but a 256-bit random key cannot be
brute-forced or looked up in a dictionary whatever the hash speed, and an unsalted,
deterministic hash lets a request find its key with one indexed equality lookup.

Scopes: `admin` (everything, every project, keys included), and per project `annotate` (items
and votes), `read` (soft labels, exports, stats) and `train` (read, plus training jobs).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import secrets
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy import Engine, func, select, text, update
from sqlalchemy.orm import Session

from app.db.models import ApiKey
from app.errors import AppError

KEY_PREFIX = "sl_"
SCOPES = ("admin", "annotate", "read", "train")
ALL_PROJECTS = "*"
# What holding a scope lets a key do.
IMPLIED: dict[str, frozenset[str]] = {
    "admin": frozenset(SCOPES),
    "train": frozenset({"train", "read"}),
    "read": frozenset({"read"}),
    "annotate": frozenset({"annotate"}),
}
KEY_FILE = "admin.key"


class Unauthorized(AppError):
    status = 401
    code = "unauthorized"


class Forbidden(AppError):
    status = 403
    code = "forbidden"


class RateLimited(AppError):
    status = 429
    code = "rate_limited"


@dataclass(frozen=True)
class Caller:
    """Who sent the request: a key's id, label, scopes and projects (None: every project)."""

    name: str
    scopes: frozenset[str]
    projects: frozenset[str] | None = None
    key_id: int | None = None

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes

    def has(self, scope: str) -> bool:
        return any(scope in IMPLIED.get(s, ()) for s in self.scopes)

    def covers(self, project: str | None) -> bool:
        """Every project (None) or this one; a cross-project request needs every project."""
        return self.projects is None or (project is not None and project in self.projects)

    def may(self, scope: str, project: str | None) -> bool:
        return self.is_admin or (self.has(scope) and self.covers(project))


ANONYMOUS_ADMIN = Caller(name="anonymous (auth off)", scopes=frozenset({"admin"}))
ENV_ADMIN = Caller(name="SOFTLABELS_ADMIN_KEY", scopes=frozenset({"admin"}))


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def bearer_token(header: str | None) -> str | None:
    """The key in `Authorization: Bearer <key>`, or None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


# --- the key table (used by the API and by `softlabels keys`) --------------------------------


def create_key(
    session: Session, label: str, scopes: Iterable[str], projects: Sequence[str] | None
) -> tuple[ApiKey, str]:
    """Store a new key; return its row and the secret, which is not kept anywhere."""
    secret = new_key()
    row = ApiKey(
        label=label,
        key_hash=hash_key(secret),
        scopes=sorted(set(scopes)),
        projects=None if projects is None else sorted(set(projects)),
    )
    session.add(row)
    session.flush()
    session.refresh(row)
    return row, secret


def active_keys(session: Session) -> list[ApiKey]:
    return list(
        session.scalars(select(ApiKey).where(ApiKey.revoked_at.is_(None)).order_by(ApiKey.id))
    )


def revoke_key(session: Session, key_id: int) -> bool:
    """Revoke (the row stays, for the record); False when no active key has this id."""
    done = session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=func.now())
        .returning(ApiKey.id)
    ).first()
    return done is not None


def count_active_keys(session: Session) -> int:
    q = select(func.count()).select_from(ApiKey).where(ApiKey.revoked_at.is_(None))
    return int(session.scalar(q) or 0)


def caller_for(row: ApiKey) -> Caller:
    return Caller(
        name=f"key {row.id} ({row.label})",
        scopes=frozenset(row.scopes),
        projects=None if row.projects is None else frozenset(row.projects),
        key_id=row.id,
    )


# --- the admin key file ------------------------------------------------------------------------


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


# --- lookups and rate limits, in-process -------------------------------------------------------


class KeyStore:
    """Resolve a presented key to a Caller, caching hits and misses for `ttl_s` seconds.

    The cache is cleared whenever this process creates or revokes a key, so a revocation through
    the API takes effect at once here; elsewhere (CLI, another replica) within `ttl_s`.
    """

    MAX_ENTRIES = 10_000

    def __init__(self, ttl_s: float, admin_key: str | None = None) -> None:
        self.ttl_s = ttl_s
        self.admin_hash = hash_key(admin_key) if admin_key else None
        self._cache: dict[str, tuple[float, Caller | None]] = {}
        self._lock = threading.Lock()

    def resolve(self, engine: Engine, key: str) -> Caller | None:
        digest = hash_key(key)
        if self.admin_hash is not None and hmac.compare_digest(digest, self.admin_hash):
            return ENV_ADMIN
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        with Session(engine) as session:
            row = session.scalars(
                select(ApiKey).where(ApiKey.key_hash == digest, ApiKey.revoked_at.is_(None))
            ).one_or_none()
            caller = None if row is None else caller_for(row)
        if self.ttl_s > 0:
            with self._lock:
                if len(self._cache) >= self.MAX_ENTRIES:
                    self._cache.clear()
                self._cache[digest] = (now + self.ttl_s, caller)
        return caller

    def invalidate(self) -> None:
        with self._lock:
            self._cache.clear()


class RateLimiter:
    """A token bucket per key, in this process (each API replica limits on its own)."""

    def __init__(self, per_s: float, burst: int) -> None:
        self.per_s, self.burst = per_s, burst
        self._buckets: dict[object, tuple[float, float]] = {}  # key -> (tokens, last refill)
        self._lock = threading.Lock()

    def wait_s(self, who: object) -> float:
        """Take a token for `who`: 0 when one was there, else the seconds until one will be."""
        if self.per_s <= 0:
            return 0.0
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(who, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.per_s)
            if tokens >= 1.0:
                self._buckets[who] = (tokens - 1.0, now)
                return 0.0
            self._buckets[who] = (tokens, now)
            return (1.0 - tokens) / self.per_s

    def check(self, caller: Caller) -> None:
        wait = self.wait_s(caller.key_id if caller.key_id is not None else caller.name)
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            raise RateLimited(
                f"Too many requests for this key; retry in {seconds} s.",
                headers={"Retry-After": str(seconds)},
            )


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
    from app.db.session import make_engine

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
