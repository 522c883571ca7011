"""Rate limits per key: fixed windows, counted in memory (one process) or in the database (shared).

Every authenticated response carries X-RateLimit-Limit / -Remaining / -Reset (seconds until the window
resets) and the IETF fields `RateLimit-Policy: "default";q=<limit>;w=<window>` and
`RateLimit: "default";r=<remaining>;t=<reset>`; a request over the limit is a 429 with Retry-After.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import Engine, delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from easel.store.db import reading
from easel.store.tables import rate_counters


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int
    window_seconds: int

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_seconds),
            "RateLimit-Policy": f'"default";q={self.limit};w={self.window_seconds}',
            "RateLimit": f'"default";r={self.remaining};t={self.reset_seconds}',
        }


class RateLimiter(Protocol):
    def hit(self, bucket: str, limit: int, window: int) -> RateDecision: ...


def _decide(count: int, limit: int, window: int, window_start: int, now: float) -> RateDecision:
    reset = max(1, math.ceil(window_start + window - now))
    return RateDecision(count <= limit, limit, max(0, limit - count), reset, window)


class MemoryRateLimiter:
    """Counters in this process: right for the embedded one-process setup."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()

    def hit(self, bucket: str, limit: int, window: int) -> RateDecision:
        now = time.time()
        start = int(now // window * window)
        with self._lock:
            key = (bucket, start)
            count = self._counts.get(key, 0) + 1
            if count <= limit + 1:  # stop counting past the limit: rejected requests don't grow memory
                self._counts[key] = count
            if len(self._counts) > 10_000:
                self._counts = {k: v for k, v in self._counts.items() if k[1] >= start}
        return _decide(count, limit, window, start, now)


class DatabaseRateLimiter:
    """Counters in the shared database: one limit across every API process (SQLite or PostgreSQL)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._insert = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert
        self._last_prune = 0.0

    def hit(self, bucket: str, limit: int, window: int) -> RateDecision:
        now = time.time()
        start = int(now // window * window)
        upsert = (
            self._insert(rate_counters)
            .values(bucket=bucket, window_start=start, count=1)
            .on_conflict_do_update(
                index_elements=["bucket", "window_start"], set_={"count": rate_counters.c.count + 1}
            )
            .returning(rate_counters.c.count)
        )
        with self.engine.begin() as conn:
            count = int(conn.execute(upsert).scalar_one())
            if now - self._last_prune > 60:
                self._last_prune = now
                conn.execute(delete(rate_counters).where(rate_counters.c.window_start < start - 86400))
        return _decide(count, limit, window, start, now)

    def count(self, bucket: str, window: int) -> int:
        start = int(time.time() // window * window)
        with reading(self.engine) as conn:
            value = conn.execute(
                select(rate_counters.c.count).where(
                    rate_counters.c.bucket == bucket, rate_counters.c.window_start == start
                )
            ).scalar()
        return int(value or 0)
