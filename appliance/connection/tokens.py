"""One token coordinator per product: single flight, shared by prefetch and connect.

A press should connect without waiting for a token round trip, so a token is
kept ready while idle; and a failure must never turn into a burst of
requests. Both hold here, for every caller of one product (streaming or the
agent):

* one request in flight at a time (the keeper and a connecting session wait
  for the same one, never make two);
* after a failed request, no request goes out before the retry floor (with
  jitter) or the server's clamped ``Retry-After`` has passed (a
  :class:`~appliance.protocol.retry.FailureGate`); connecting sessions
  space their own attempts (their reconnect policy), while the keeper, which
  nobody else paces, also backs off (full jitter, growing) and after a
  credential refusal waits the slow auth retry;
* each token is handed out at most once, and only while it is still usable;
* a connection that failed after its token was handed out (a refused
  upgrade) is reported with :meth:`TokenCoordinator.note_failure`;
* the keeper asks only while no connection of this product is under way:
  from a hand-out until :meth:`TokenCoordinator.note_connection_ended` (and
  ``refill_delay_seconds``, never less than the retry floor, after it) it
  makes no request. The service may end or refuse a connection before the
  device has read that it did, so a keeper that asked "a while after a
  hand-out" could ask just after a failure it had not yet seen; a keeper
  that asks only when no connection exists cannot.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable

from appliance.cloud.tokens import (
    DEFAULT_BROKER_TOKEN_LIFETIME_SECONDS,
    TokenAuthError,
    TokenError,
    TokenSource,
    TokenTransientError,
)
from appliance.protocol.policy import DEFAULT_RECONNECT_LIMITS
from appliance.protocol.retry import DEFAULT_RETRY_LIMITS, Backoff, FailureGate, RetryLimits
from appliance.secrets import Secret

log = logging.getLogger(__name__)

#: A kept token is replaced this long before it expires (or this fraction of its
#: lifetime for short-lived tokens), so what is handed out is still usable.
DEFAULT_REFRESH_MARGIN_SECONDS = 30.0
DEFAULT_REFRESH_MARGIN_FRACTION = 0.25
#: After the credential was refused, the keeper asks again only this rarely.
DEFAULT_AUTH_RETRY_SECONDS = DEFAULT_RECONNECT_LIMITS.slow_retry_seconds
#: The keeper refills this long after handing a token out, once its connection had
#: time to succeed or fail (a failure then pushes the refill past the backoff).
DEFAULT_REFILL_DELAY_SECONDS = 1.0
#: Closing cancels the keeper again this often until it has ended.
CLOSE_RETRY_SECONDS = 0.1


class TokenCoordinator:
    """Every token request of one product goes through here (it is a :class:`TokenSource`)."""

    def __init__(
        self,
        source: TokenSource,
        *,
        retry: RetryLimits = DEFAULT_RETRY_LIMITS,
        lifetime_seconds: float | None = None,
        refresh_margin_seconds: float | None = None,
        auth_retry_seconds: float = DEFAULT_AUTH_RETRY_SECONDS,
        refill_delay_seconds: float = DEFAULT_REFILL_DELAY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._source = source
        lifetime = lifetime_seconds
        if lifetime is None:
            lifetime = getattr(source, "lifetime_seconds", DEFAULT_BROKER_TOKEN_LIFETIME_SECONDS)
        self.lifetime_seconds = float(lifetime)
        if refresh_margin_seconds is None:
            refresh_margin_seconds = min(
                DEFAULT_REFRESH_MARGIN_SECONDS,
                self.lifetime_seconds * DEFAULT_REFRESH_MARGIN_FRACTION,
            )
        self.refresh_margin_seconds = refresh_margin_seconds
        self.auth_retry_seconds = auth_retry_seconds
        # Never sooner than the floor after a connection ended (however it ended).
        self.refill_delay_seconds = max(refill_delay_seconds, retry.floor_seconds)
        self._refill_at = 0.0  # the keeper makes no request before this
        self._connections = 0  # handed out and not yet ended: the keeper waits
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._gate = FailureGate(retry, self._rng)  # every request: floor or Retry-After
        self._keeper_backoff = Backoff(retry, self._rng)  # the keeper's own spacing
        self._keeper_not_before = 0.0
        self._lock = asyncio.Lock()
        self._ready: tuple[Secret, float] | None = None  # (token, usable until)
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.handed_out = 0  # tokens given to callers
        self.discarded = 0  # kept tokens that expired unused

    @property
    def has_ready_token(self) -> bool:
        ready = self._ready
        return ready is not None and self._clock() < ready[1]

    # ------------------------------------------------------------------ callers

    async def fetch(self) -> Secret:
        """A token never handed out before: the kept one, or the next request's."""
        token = self._take_ready()
        if token is not None:
            return token
        async with self._lock:
            token = self._take_ready()  # the keeper may have fetched one meanwhile
            if token is not None:
                return token
            token, _ = await self._request_locked()
        self.handed_out += 1
        self._handed_out()
        return token

    def note_failure(self, retry_after: float | None = None) -> None:
        """A connection made with one of our tokens failed: space the next request."""
        self._failed(retry_after)

    def note_connection_ended(self) -> None:
        """A connection made with a token handed out here is over (failed, closed, abandoned).

        Until every such connection has ended the keeper makes no request, and
        then only ``refill_delay_seconds`` later.
        """
        self._connections = max(0, self._connections - 1)
        self._refill_at = max(self._refill_at, self._clock() + self.refill_delay_seconds)
        self._wakeup.set()

    @property
    def connections_under_way(self) -> int:
        return self._connections

    def start(self) -> None:
        """Keep a token ready from now on (call on the running loop)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._keep_ready(), name="token-keeper"
            )

    async def aclose(self) -> None:
        task, self._task = self._task, None
        while task is not None and not task.done():
            # Again until it ends: a cancel can be lost inside a library's await (3.11's
            # wait_for drops one that meets a result), and the keeper then sleeps on.
            task.cancel()
            await asyncio.wait({task}, timeout=CLOSE_RETRY_SECONDS)
        if task is not None and not task.cancelled() and task.exception() is not None:
            log.warning("the token keeper ended with %r", task.exception())
        self._ready = None
        closer = getattr(self._source, "aclose", None)
        if closer is not None:
            await closer()

    # ----------------------------------------------------------------- internals

    def _take_ready(self) -> Secret | None:
        ready, self._ready = self._ready, None  # taken before any await: handed out once
        if ready is None:
            return None
        if self._clock() < ready[1]:
            self.handed_out += 1
            self._handed_out()
            return ready[0]
        self._wakeup.set()
        self.discarded += 1
        return None

    def _failed(self, retry_after: float | None) -> None:
        now = self._clock()
        self._gate.failed(now, retry_after)
        self._keeper_not_before = max(
            self._keeper_not_before, now + self._keeper_backoff.next_delay(retry_after)
        )

    def _handed_out(self) -> None:
        self._connections += 1
        self._refill_at = self._clock() + self.refill_delay_seconds
        self._wakeup.set()  # the keeper plans its refill

    async def _request_locked(self) -> tuple[Secret, float]:
        """One request, no sooner than the last failure allows; (token, usable until)."""
        wait = self._gate.wait_seconds(self._clock())
        if wait > 0:
            await self._sleep(wait)
        started = self._clock()
        try:
            token = await self._source.fetch()
        except TokenError as exc:
            retry_after = exc.retry_after if isinstance(exc, TokenTransientError) else None
            self._failed(retry_after)
            raise
        self._keeper_backoff.reset()
        self._keeper_not_before = 0.0
        return token, started + self.lifetime_seconds - self.refresh_margin_seconds

    async def _keep_ready(self) -> None:
        while True:
            if not self.has_ready_token:
                if self._ready is not None:
                    self.discarded += 1
                    self._ready = None
                if self._connections > 0:
                    await self._woken()  # a connection is under way: its end wakes us
                    continue
                not_before = max(self._refill_at, self._keeper_not_before)
                wait = max(not_before - self._clock(), self._gate.wait_seconds(self._clock()))
                if wait > 0:
                    await self._sleep_or_wake(wait)
                    continue  # a hand-out or failure meanwhile moves the time again
                try:
                    async with self._lock:
                        if not self.has_ready_token:
                            self._ready = await self._request_locked()
                except TokenAuthError as exc:
                    delay = self._rng.uniform(0.75, 1.0) * self.auth_retry_seconds
                    log.warning(
                        "could not keep a token ready (%s); asking again in %.0f s", exc, delay
                    )
                    await self._sleep_or_wake(delay)
                    continue
                except TokenError as exc:
                    log.warning(
                        "could not keep a token ready (%s); asking again in %.1f s",
                        exc,
                        max(0.0, self._keeper_not_before - self._clock()),
                    )
                    continue  # the next request waits for the backoff by itself
            ready = self._ready
            wait = ready[1] - self._clock() if ready is not None else 0.0
            await self._sleep_or_wake(max(0.0, wait))

    async def _woken(self) -> None:
        self._wakeup.clear()
        await self._wakeup.wait()

    async def _sleep_or_wake(self, seconds: float) -> None:
        """Sleep ``seconds`` on the coordinator's clock, or until woken."""
        self._wakeup.clear()
        sleeper = asyncio.ensure_future(self._sleep(seconds))
        waker = asyncio.ensure_future(self._wakeup.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, waker):
                task.cancel()
            # Not `with suppress(CancelledError): await task`: a cancel of the keeper that
            # landed there was swallowed, and closing waited out the token's whole life.
            await asyncio.gather(sleeper, waker, return_exceptions=True)


def note_connect_failure(
    tokens: TokenSource, exc: BaseException, retry_after: float | None
) -> None:
    """Tell the product's coordinator that a connection failed after its token request.

    (A token request's own failure it knows already; a plain source needs no telling.)
    """
    if isinstance(tokens, TokenCoordinator) and not isinstance(exc, TokenError):
        tokens.note_failure(retry_after)


def note_connection_ended(tokens: TokenSource) -> None:
    """Tell the product's coordinator that a connection made with its token is over."""
    if isinstance(tokens, TokenCoordinator):
        tokens.note_connection_ended()
