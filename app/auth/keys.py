"""API keys: make, hash, store, revoke, and look up (briefly cached).

A key is `sl_` + 32 random bytes (256 bits, URL-safe base64). Only its sha256 is stored: a
password needs a slow, salted hash because it is guessable, but a 256-bit random key cannot be
brute-forced or looked up in a dictionary whatever the hash speed, and an unsalted,
deterministic hash lets a request find its key with one indexed equality lookup.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Iterable, Sequence

from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from app.auth.scopes import ENV_ADMIN, Caller
from app.db.models import ApiKey

KEY_PREFIX = "sl_"


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


def create_key(
    session: Session,
    label: str,
    scopes: Iterable[str],
    projects: Sequence[str] | None,
    rate_limit_per_s: float | None = None,
) -> tuple[ApiKey, str]:
    """Store a new key; return its row and the secret, which is not kept anywhere."""
    secret = new_key()
    row = ApiKey(
        label=label,
        key_hash=hash_key(secret),
        scopes=sorted(set(scopes)),
        projects=None if projects is None else sorted(set(projects)),
        rate_limit_per_s=rate_limit_per_s,
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
        rate_limit_per_s=row.rate_limit_per_s,
    )


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

    def cached(self, key: str) -> tuple[bool, Caller | None]:
        """(True, caller) when the answer for `key` is known without the database."""
        digest = hash_key(key)
        if self.admin_hash is not None and hmac.compare_digest(digest, self.admin_hash):
            return True, ENV_ADMIN
        with self._lock:
            hit = self._cache.get(digest)
        if hit is not None and hit[0] > time.monotonic():
            return True, hit[1]
        return False, None

    def resolve(self, engine: Engine, key: str) -> Caller | None:
        known, caller = self.cached(key)
        if known:
            return caller
        digest, now = hash_key(key), time.monotonic()
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
