"""Token buckets: a per-device rate and an overall cap. Pure: the caller passes the time.

A bucket holds up to ``burst`` requests and refills at ``rate`` per second; a
request that finds it empty is refused with the seconds until one is back,
which becomes the 429's ``Retry-After``.
"""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass
class Bucket:
    rate: float  # requests per second
    burst: int
    tokens: float = -1.0  # -1: full on first use
    stamp: float = 0.0

    def take(self, now: float) -> float:
        """0.0 if a request may go now (and count it); else the seconds until one may."""
        if self.tokens < 0:
            self.tokens, self.stamp = float(self.burst), now
        elapsed = max(0.0, now - self.stamp)
        self.tokens = min(float(self.burst), self.tokens + elapsed * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class KeyedLimiter:
    """One bucket per key (an authenticated device); at most ``max_keys`` remembered.

    Keys are enrolled device names, so the map is as big as the fleet; past
    ``max_keys`` the least recently used bucket is forgotten (that device
    starts again with a full bucket, the safe side for a fleet that large).
    """

    def __init__(self, rate: float, burst: int, max_keys: int) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: dict[str, Bucket] = {}

    def take(self, key: str, now: float) -> float:
        bucket = self._buckets.pop(key, None) or Bucket(self.rate, self.burst)
        self._buckets[key] = bucket  # most recently used last
        while len(self._buckets) > self.max_keys:
            self._buckets.pop(next(iter(self._buckets)))
        return bucket.take(now)


def retry_after_header(seconds: float) -> str:
    """Whole seconds, rounded up and at least 1 (Retry-After takes integers)."""
    return str(max(1, math.ceil(seconds)))
