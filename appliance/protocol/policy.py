"""When a session connects again, for live and agent alike (sans I/O).

One :class:`ReconnectPolicy` per session, fed what happened and asked for the
wait before the next attempt:

* a drop of a connection that got fresh audio through, with no failure and no
  quick reconnect since the last healthy connection, is news: reconnect
  almost at once (a jitter above the retry floor, so a fleet does not land
  together), and never twice within ``quick_reconnect_spacing_seconds``;
* every other retry takes the full-jitter backoff, which only a connection
  that stayed up ``healthy_after_seconds`` resets, so a server that drops
  every connection costs one quick reconnect, not a cascade;
* a refused credential is retried soon once (a token can be spent in
  flight), then slowly (``slow_retry_seconds``, jittered); a fatal answer
  (410, 400, a reused token) is retried slowly too;
* a server's ``Retry-After`` is honoured within the retry rule's clamp.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from appliance.protocol.failures import ConnectFailure, Failure
from appliance.protocol.retry import Backoff, RetryLimits


@dataclass(frozen=True)
class ReconnectLimits:
    """The reconnect policy's limits, named, with their defaults in one place."""

    retry: RetryLimits = field(default_factory=RetryLimits)
    quick_reconnect_max_seconds: float = 0.3
    quick_reconnect_spacing_seconds: float = 1.0
    slow_retry_seconds: float = 300.0
    refusals_before_slow_retry: int = 2
    healthy_after_seconds: float = 5.0

    def __post_init__(self) -> None:
        if self.quick_reconnect_max_seconds < self.retry.floor_seconds:
            raise ValueError("quick_reconnect_max_seconds must be >= the retry floor")


#: The defaults every reconnect follows; settings (``reconnect:``) override them.
DEFAULT_RECONNECT_LIMITS = ReconnectLimits()


@dataclass(frozen=True)
class Wait:
    """How long to wait before the next attempt, and whether it is the slow retry."""

    seconds: float
    slow: bool = False


class ReconnectPolicy:
    """The waits between one session's connection attempts."""

    def __init__(
        self, limits: ReconnectLimits | None = None, rng: random.Random | None = None
    ) -> None:
        self.limits = limits or ReconnectLimits()
        self._rng = rng or random.Random()
        self.backoff = Backoff(self.limits.retry, self._rng)
        self._began_at: float | None = None
        self._last_quick: float | None = None
        self._quick_used = False  # a quick reconnect since the last healthy connection
        self.refusals = 0  # credential refusals in a row

    def began(self, now: float) -> None:
        """A session began (Begin / session.ready): credentials work."""
        self._began_at = now
        self.refusals = 0

    def still_up(self, now: float) -> None:
        """Called as a session runs: once it has lasted, the backoff starts over."""
        began = self._began_at
        if began is not None and now - began >= self.limits.healthy_after_seconds:
            self.backoff.reset()
            self._quick_used = False

    def after_drop(self, now: float, progressed: bool) -> Wait:
        """A connection that had begun ended unasked (``progressed``: fresh audio got through)."""
        self._began_at = None
        lim = self.limits
        last = self._last_quick
        spaced = last is None or now - last >= lim.quick_reconnect_spacing_seconds
        if progressed and spaced and not self._quick_used and self.backoff.attempt == 0:
            self._last_quick = now
            self._quick_used = True
            return Wait(self._quick())
        return Wait(self.backoff.next_delay())

    def after_failure(self, failure: Failure) -> Wait:
        """An attempt failed before its session began."""
        self._began_at = None
        if failure.kind is ConnectFailure.AUTH:
            return self.after_refusal()
        if failure.kind is ConnectFailure.FATAL:
            return Wait(self._slow(), slow=True)
        return Wait(self.backoff.next_delay(failure.retry_after))

    def after_refusal(self) -> Wait:
        """The credential was refused (a token endpoint's 401/403, a close 1008)."""
        self._began_at = None
        self.refusals += 1
        if self.refusals < self.limits.refusals_before_slow_retry:
            return Wait(self._quick())  # a token can be spent in flight: a new one, soon
        return Wait(self._slow(), slow=True)

    def _quick(self) -> float:
        lim = self.limits
        return self._rng.uniform(lim.retry.floor_seconds, lim.quick_reconnect_max_seconds)

    def _slow(self) -> float:
        return self._rng.uniform(0.75, 1.0) * self.limits.slow_retry_seconds
