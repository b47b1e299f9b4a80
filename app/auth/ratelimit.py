"""A token bucket per key."""

from __future__ import annotations

import math
import threading
import time

from app.auth.scopes import Caller
from app.errors import RateLimited


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
