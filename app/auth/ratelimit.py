"""A token bucket per key, kept in each API process.

With N API processes (`softlabels serve --workers N`) each process enforces 1/N of the key's
rate and burst, so the limit holds over the whole server when a client's connections are spread
over the processes (the kernel spreads new connections). One long-lived connection stays on one
process and so gets 1/N of the budget: the defaults are sized so that is still far above what a
labeling tool sends. Moving the buckets into PostgreSQL would make them exact, at the price of a
row write per request on one hot row per key; not worth it at these rates.
"""

from __future__ import annotations

import math
import threading
import time

from app.auth.scopes import Caller
from app.errors import RateLimited


class RateLimiter:
    def __init__(self, per_s: float, burst: int, processes: int = 1) -> None:
        self.processes = max(1, processes)
        self.per_s, self.burst = per_s / self.processes, max(1, burst // self.processes)
        self._buckets: dict[object, tuple[float, float]] = {}  # key -> (tokens, last refill)
        self._lock = threading.Lock()

    def wait_s(self, who: object, per_s: float | None = None) -> float:
        """Take a token for `who`: 0 when one was there, else the seconds until one will be.
        `per_s`: this key's own rate over all processes (None: the default)."""
        rate, burst = self.per_s, float(self.burst)
        if per_s is not None:  # a key's own limit: burst of two seconds' worth
            rate = per_s / self.processes
            burst = max(1.0, 2 * rate)
        if rate <= 0:
            return 0.0
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(who, (burst, now))
            tokens = min(burst, tokens + (now - last) * rate)
            if tokens >= 1.0:
                self._buckets[who] = (tokens - 1.0, now)
                return 0.0
            self._buckets[who] = (tokens, now)
            return (1.0 - tokens) / rate

    def check(self, caller: Caller) -> None:
        who = caller.key_id if caller.key_id is not None else caller.name
        wait = self.wait_s(who, caller.rate_limit_per_s)
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            raise RateLimited(
                f"Too many requests for this key; retry in {seconds} s.",
                headers={"Retry-After": str(seconds)},
            )
