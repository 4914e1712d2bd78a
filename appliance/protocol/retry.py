"""When to try again: full-jitter backoff with a floor, and one ``Retry-After`` rule.

Both hold by construction, here and nowhere else:

* a retry is never sooner than ``floor_seconds`` after a failure, and two
  delays are never equal by design (each is drawn from a range, never a
  constant), so a fleet never retries in lockstep;
* a server's ``Retry-After`` is honoured and clamped to
  ``[floor_seconds, retry_after_cap_seconds]`` whatever it says: negative,
  zero, an HTTP date, ``1e9``, ``inf`` or garbage.

Every client that retries (token requests, the pre-recorded REST client,
WebSocket upgrades) takes its delays from :class:`Backoff`.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime


@dataclass(frozen=True)
class RetryLimits:
    """The retry policy's limits (httpx-style: one object, named fields)."""

    #: First ceiling of the full-jitter range; it doubles with each failure.
    base_seconds: float = 0.5
    #: Largest ceiling.
    cap_seconds: float = 30.0
    #: No retry sooner than this after a failure, whatever else says so.
    floor_seconds: float = 0.1
    #: The most a server's Retry-After can make us wait.
    retry_after_cap_seconds: float = 300.0

    def __post_init__(self) -> None:
        if not 0 < self.floor_seconds <= self.base_seconds <= self.cap_seconds:
            raise ValueError("need 0 < floor_seconds <= base_seconds <= cap_seconds")
        if self.retry_after_cap_seconds < self.floor_seconds:
            raise ValueError("retry_after_cap_seconds must be >= floor_seconds")


DEFAULT_RETRY_LIMITS = RetryLimits()


def retry_limits(
    base_seconds: float,
    cap_seconds: float,
    floor_seconds: float | None = None,
    retry_after_cap_seconds: float | None = None,
) -> RetryLimits:
    """Limits from configured base and cap, raised to the floor where they are below it."""
    default = DEFAULT_RETRY_LIMITS
    floor = default.floor_seconds if floor_seconds is None else floor_seconds
    base = max(floor, base_seconds)
    server_cap = default.retry_after_cap_seconds
    if retry_after_cap_seconds is not None:
        server_cap = max(floor, retry_after_cap_seconds)
    return RetryLimits(
        base_seconds=base,
        cap_seconds=max(base, cap_seconds),
        floor_seconds=floor,
        retry_after_cap_seconds=server_cap,
    )


def parse_retry_after(raw: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header value (delta-seconds or HTTP date).

    Unclamped: the caller passes it to :func:`clamp_retry_after` (or
    :meth:`Backoff.next_delay`). None when absent or unreadable.
    """
    if raw is None:
        return None
    text = raw.strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    wall = time.time() if now is None else now
    try:
        return when.timestamp() - wall
    except (OverflowError, OSError, ValueError):
        return None


def clamp_retry_after(
    seconds: float | None, limits: RetryLimits = DEFAULT_RETRY_LIMITS
) -> float | None:
    """``seconds`` within ``[floor, retry_after_cap]``; None stays None (NaN counts as absent)."""
    if seconds is None or math.isnan(seconds):
        return None
    return min(limits.retry_after_cap_seconds, max(limits.floor_seconds, seconds))


class Backoff:
    """Delays for successive retries: full jitter above a floor, capped, reset on success.

    ``delay = uniform(floor, max(2 * floor, min(cap, base * 2**attempt)))``; with a
    ``Retry-After``, at least its clamped value plus up to ``floor`` of jitter.
    """

    def __init__(
        self,
        limits: RetryLimits = DEFAULT_RETRY_LIMITS,
        rng: random.Random | None = None,
    ) -> None:
        self.limits = limits
        self.attempt = 0
        self._rng = rng or random.Random()

    def ceiling(self, attempt: int | None = None) -> float:
        """The most a delay can be after ``attempt`` failures (default: the next one's)."""
        lim = self.limits
        n = self.attempt if attempt is None else attempt
        # Never narrower than [floor, 2 * floor]: a range that collapsed onto the floor
        # would give every retry the same delay.
        grown = lim.base_seconds * 2.0 ** min(n, 32)
        return max(2 * lim.floor_seconds, min(lim.cap_seconds, grown))

    def next_delay(self, retry_after: float | None = None) -> float:
        """The delay before the next attempt; each call counts one more failure."""
        delay = self.delay_for(self.attempt, retry_after)
        self.attempt += 1
        return delay

    def delay_for(self, attempt: int, retry_after: float | None = None) -> float:
        """The delay after ``attempt`` earlier failures (for callers that keep the count)."""
        lim = self.limits
        delay = self._rng.uniform(lim.floor_seconds, self.ceiling(attempt))
        server = clamp_retry_after(retry_after, lim)
        if server is not None and server >= delay:
            delay = server + self._rng.uniform(0.0, lim.floor_seconds)
        return delay

    def reset(self) -> None:
        self.attempt = 0


class FailureGate:
    """No request of one product sooner than the floor (or a Retry-After) after a failure.

    Shared by every task that talks to one service, so a failure seen by one
    also spaces the others: the service never sees a request right after it
    refused one, whoever makes it.
    """

    def __init__(
        self, limits: RetryLimits = DEFAULT_RETRY_LIMITS, rng: random.Random | None = None
    ) -> None:
        self.limits = limits
        self._rng = rng or random.Random()
        self.not_before = 0.0  # monotonic seconds

    def failed(self, now: float, retry_after: float | None = None) -> None:
        """A request failed at ``now`` (with the server's Retry-After, if any)."""
        lim = self.limits
        wait = self._rng.uniform(lim.floor_seconds, 2 * lim.floor_seconds)
        server = clamp_retry_after(retry_after, lim)
        if server is not None:
            wait = max(wait, server + self._rng.uniform(0.0, lim.floor_seconds))
        self.not_before = max(self.not_before, now + wait)

    def wait_seconds(self, now: float) -> float:
        """How long a request must wait at ``now`` (0: go)."""
        return max(0.0, self.not_before - now)
