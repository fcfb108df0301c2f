"""Per-API-key token buckets.

The buckets live in the process: with several gateway instances behind a balancer each
enforces the limit on its own share (a partner gets at most N x the limit across N
instances). Good enough to protect one instance; a shared limiter (Redis, PostgreSQL)
would be the next step if the contract ever needs a global limit.
"""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    #: Seconds until a token is available (0 when allowed).
    retry_after: float
    #: Seconds until the bucket is full again.
    reset: float

    def headers(self) -> dict[str, str]:
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(math.ceil(self.reset)),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return headers


class RateLimiter:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def take(self, key: str, rate: int, burst: int) -> Decision:
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(burst), now)
        bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return Decision(True, burst, int(bucket.tokens), 0.0, (burst - bucket.tokens) / rate)
        return Decision(
            False, burst, 0, (1.0 - bucket.tokens) / rate, (burst - bucket.tokens) / rate
        )
