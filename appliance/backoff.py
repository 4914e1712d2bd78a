"""Full-jitter exponential backoff, so a fleet never reconnects in lockstep.

``delay = uniform(0, min(cap, base * 2**attempt))``. One ``Backoff`` per
reconnect loop; ``reset()`` after a connection proved healthy.
"""

from __future__ import annotations

import random


class Backoff:
    """Delays for successive retries: full jitter, capped, reset on success."""

    def __init__(
        self, base: float = 0.5, cap: float = 30.0, rng: random.Random | None = None
    ) -> None:
        if base <= 0 or cap < base:
            raise ValueError("need 0 < base <= cap")
        self.base = base
        self.cap = cap
        self.attempt = 0
        self._rng = rng or random.Random()

    def ceiling(self) -> float:
        """The most the next delay can be."""
        return min(self.cap, self.base * (2 ** min(self.attempt, 32)))

    def next_delay(self) -> float:
        """The delay before the next attempt; each call counts one more failure."""
        delay = self._rng.uniform(0, self.ceiling())
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
