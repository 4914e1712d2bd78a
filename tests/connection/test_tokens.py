"""The token coordinator: one request at a time, spaced after failures, each token once."""

from __future__ import annotations

import asyncio
import contextlib
import random

import pytest

from appliance.cloud.tokens import TokenAuthError, TokenError, TokenTransientError
from appliance.connection.tokens import TokenCoordinator
from appliance.protocol.retry import RetryLimits
from appliance.secrets import Secret

LIMITS = RetryLimits(base_seconds=0.2, cap_seconds=2.0, floor_seconds=0.1)


class FakeClock:
    """A clock that only moves when the coordinator sleeps (no real waiting)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        for _ in range(3):  # whatever is ready runs first; a cancelled sleep takes no time
            await asyncio.sleep(0)
        self.now += seconds


class ScriptedSource:
    """Answers each fetch from a script: an exception to raise, or a fresh token."""

    lifetime_seconds = 60.0

    def __init__(self, clock: FakeClock, script: list[BaseException | None]) -> None:
        self.clock = clock
        self.script = list(script)
        self.request_times: list[float] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self._n = 0

    async def fetch(self) -> Secret:
        self.request_times.append(self.clock.now)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.001)
            outcome = self.script.pop(0) if self.script else None
            if outcome is not None:
                raise outcome
            self._n += 1
            return Secret(f"token-{self._n:04d}-xxxxxxxx")
        finally:
            self.in_flight -= 1


def coordinator(clock: FakeClock, source: ScriptedSource, **kw: object) -> TokenCoordinator:
    return TokenCoordinator(
        source,
        retry=LIMITS,
        clock=clock,
        sleep=clock.sleep,
        rng=random.Random(3),
        **kw,  # type: ignore[arg-type]
    )


async def test_the_keeper_and_connecting_sessions_share_one_request_at_a_time() -> None:
    clock = FakeClock()
    source = ScriptedSource(clock, [])
    tokens = coordinator(clock, source)
    tokens.start()
    try:
        got = await asyncio.gather(*(tokens.fetch() for _ in range(5)))
    finally:
        await tokens.aclose()
    assert source.most_in_flight == 1
    assert len({t.reveal() for t in got}) == 5


async def test_no_request_follows_a_failure_within_the_floor() -> None:
    clock = FakeClock()
    failure = TokenTransientError("HTTP 503", status=503)
    source = ScriptedSource(clock, [failure] * 6)
    tokens = coordinator(clock, source)
    for _ in range(6):
        with pytest.raises(TokenTransientError):
            await tokens.fetch()
    await tokens.fetch()
    gaps = [b - a for a, b in zip(source.request_times, source.request_times[1:], strict=False)]
    assert all(gap >= 0.1 for gap in gaps)
    assert len(set(gaps)) == len(gaps)  # jittered: never the same spacing twice


async def test_prefetch_and_connect_after_a_failure_make_one_spaced_request() -> None:
    clock = FakeClock()
    source = ScriptedSource(clock, [TokenTransientError("HTTP 503", status=503)])
    tokens = coordinator(clock, source)
    with pytest.raises(TokenTransientError):
        await tokens.fetch()
    failed_at = clock.now
    tokens.start()  # the keeper wants a token too
    token = await tokens.fetch()
    await tokens.aclose()
    assert token.reveal()
    # One request after the failure from the session, at most one more from the keeper,
    # and none within the floor of the failure.
    after = [t for t in source.request_times[1:]]
    assert after and all(t - failed_at >= 0.1 for t in after)
    assert source.most_in_flight == 1


@pytest.mark.parametrize(
    ("retry_after", "low", "high"),
    [(3.0, 3.0, 3.1), (-5.0, 0.1, 2.1), (1e9, 300.0, 300.1), (float("inf"), 300.0, 300.1)],
)
async def test_retry_after_is_honoured_within_its_clamp(
    retry_after: float, low: float, high: float
) -> None:
    clock = FakeClock()
    refusal = TokenTransientError("HTTP 429", status=429, retry_after=retry_after)
    source = ScriptedSource(clock, [refusal])
    tokens = coordinator(clock, source)
    with pytest.raises(TokenTransientError):
        await tokens.fetch()
    await tokens.fetch()
    wait = source.request_times[1] - source.request_times[0]
    assert low <= wait <= high


async def test_after_a_credential_refusal_the_keeper_asks_again_only_slowly() -> None:
    clock = FakeClock()
    source = ScriptedSource(clock, [TokenAuthError("HTTP 401", 401)] * 3)
    tokens = coordinator(clock, source, auth_retry_seconds=300.0)
    tokens.start()
    for _ in range(50):
        await asyncio.sleep(0)
    await tokens.aclose()
    assert len(source.request_times) == 1  # the keeper now waits about five minutes


async def test_a_ready_token_is_handed_out_once_and_a_stale_one_never() -> None:
    clock = FakeClock()
    source = ScriptedSource(clock, [])
    tokens = coordinator(clock, source, refresh_margin_seconds=10.0)
    tokens.start()
    while not tokens.has_ready_token:
        await asyncio.sleep(0)
    await tokens.aclose()  # the keeper stops; nothing refills
    tokens._ready = (Secret("kept-token-xxxxxxxx"), clock.now + 1.0)
    first = await tokens.fetch()
    assert first.reveal() == "kept-token-xxxxxxxx"
    second = await tokens.fetch()
    assert second.reveal() != first.reveal()
    tokens._ready = (Secret("stale-token-xxxxxxx"), clock.now - 1.0)
    third = await tokens.fetch()
    assert third.reveal() != "stale-token-xxxxxxx" and tokens.discarded >= 1


async def test_a_fatal_answer_reaches_the_caller() -> None:
    clock = FakeClock()
    source = ScriptedSource(clock, [TokenError("HTTP 400")])
    tokens = coordinator(clock, source)
    with pytest.raises(TokenError):
        await tokens.fetch()


async def test_the_keeper_refills_a_while_after_the_connection_ends_not_at_once() -> None:
    clock = FakeClock()
    source = ScriptedSource(clock, [])
    tokens = coordinator(clock, source, refill_delay_seconds=1.0)
    tokens.start()
    while not tokens.has_ready_token:
        await asyncio.sleep(0)
    await tokens.fetch()
    ended_at = clock.now
    tokens.note_connection_ended()
    while not tokens.has_ready_token:
        await asyncio.sleep(0)
    await tokens.aclose()
    assert source.request_times[-1] - ended_at >= 1.0


async def test_the_keeper_makes_no_request_while_a_connection_is_under_way() -> None:
    """The service may have ended it before the device read so: no request may follow."""
    clock = FakeClock()
    source = ScriptedSource(clock, [])
    tokens = coordinator(clock, source, refill_delay_seconds=1.0)
    tokens.start()
    while not tokens.has_ready_token:
        await asyncio.sleep(0)
    await tokens.fetch()
    assert tokens.connections_under_way == 1
    for _ in range(5):  # a long session: time passes, the keeper is woken by other news
        clock.now += 600.0
        tokens._wakeup.set()
        for _ in range(10):
            await asyncio.sleep(0)
    assert len(source.request_times) == 1 and not tokens.has_ready_token
    tokens.note_connection_ended()
    while not tokens.has_ready_token:
        await asyncio.sleep(0)
    await tokens.aclose()
    assert len(source.request_times) == 2 and tokens.connections_under_way == 0


async def test_the_refill_after_a_connection_is_never_sooner_than_the_retry_floor() -> None:
    clock = FakeClock()
    source = ScriptedSource(clock, [])
    tokens = coordinator(clock, source, refill_delay_seconds=0.0)
    tokens.start()
    while not tokens.has_ready_token:
        await asyncio.sleep(0)
    await tokens.fetch()
    ended_at = clock.now
    tokens.note_connection_ended()
    while not tokens.has_ready_token:
        await asyncio.sleep(0)
    await tokens.aclose()
    assert source.request_times[-1] >= ended_at + LIMITS.floor_seconds


async def test_a_refused_connection_spaces_the_keepers_next_request() -> None:
    """The service never sees a token request right after an upgrade it refused."""
    clock = FakeClock()
    source = ScriptedSource(clock, [])
    tokens = coordinator(clock, source, refill_delay_seconds=0.0)
    tokens.start()
    while not tokens.has_ready_token:
        await asyncio.sleep(0)
    await tokens.fetch()
    failed_at = clock.now
    tokens.note_failure(retry_after=2.0)  # the upgrade with that token was refused (429)
    tokens.note_connection_ended()
    while not tokens.has_ready_token:
        await asyncio.sleep(0)
    await tokens.aclose()
    first, refill = source.request_times  # the kept token, then the refill after the failure
    assert first <= failed_at and refill - failed_at >= 2.0


async def test_hand_outs_and_discards_are_counted_exactly() -> None:
    clock = FakeClock()
    source = ScriptedSource(clock, [])
    tokens = coordinator(clock, source)
    await tokens.fetch()
    tokens._ready = (Secret("expired-token-xxxxx"), clock.now - 1.0)
    await tokens.fetch()
    assert (tokens.handed_out, tokens.discarded) == (2, 1)


async def test_a_token_is_usable_until_its_lifetime_less_the_margin() -> None:
    clock = FakeClock()
    source = ScriptedSource(clock, [])
    tokens = coordinator(clock, source, lifetime_seconds=40.0, refresh_margin_seconds=10.0)
    tokens.start()
    while not tokens.has_ready_token:
        await asyncio.sleep(0)
    kept = tokens._ready
    assert kept is not None and kept[1] == source.request_times[0] + 30.0
    clock.now = kept[1]
    assert not tokens.has_ready_token  # at the margin it is no longer handed out
    await tokens.aclose()


def test_the_margin_is_a_quarter_of_a_short_lifetime() -> None:
    clock = FakeClock()
    short = coordinator(clock, ScriptedSource(clock, []), lifetime_seconds=20.0)
    long = coordinator(clock, ScriptedSource(clock, []), lifetime_seconds=600.0)
    assert (short.refresh_margin_seconds, long.refresh_margin_seconds) == (5.0, 30.0)


async def test_only_a_coordinator_is_told_of_a_connection_failure() -> None:
    from appliance.connection.tokens import note_connect_failure

    clock = FakeClock()
    source = ScriptedSource(clock, [])
    tokens = coordinator(clock, source)
    note_connect_failure(tokens, TokenTransientError("HTTP 503", 503), None)  # it knows
    assert tokens._gate.not_before == 0.0
    note_connect_failure(tokens, ConnectionResetError(), 3.0)
    assert tokens._gate.not_before >= clock.now + 3.0
    note_connect_failure(source, ConnectionResetError(), 3.0)  # a plain source: nothing


async def test_after_an_outage_a_connecting_session_waits_only_the_floor_not_the_keepers_backoff():
    """Sessions space their own attempts; the coordinator only keeps the floor between them."""
    clock = FakeClock()
    failure = TokenTransientError("connection reset")
    source = ScriptedSource(clock, [failure] * 8)
    tokens = coordinator(clock, source)
    for _ in range(8):
        with pytest.raises(TokenTransientError):
            await tokens.fetch()
    failed_at = clock.now
    await tokens.fetch()  # the network is back
    assert 0.1 <= source.request_times[-1] - failed_at <= 0.2


async def test_a_kept_token_handed_out_is_counted_once() -> None:
    clock = FakeClock()
    source = ScriptedSource(clock, [])
    tokens = coordinator(clock, source)
    tokens.start()
    while not tokens.has_ready_token:
        await asyncio.sleep(0)
    kept = tokens._ready
    assert kept is not None and (await tokens.fetch()) is kept[0]  # the kept one
    await tokens.aclose()  # (closing drops a kept token uncounted)
    assert (tokens.handed_out, tokens.discarded) == (1, 0)
    await tokens.fetch()  # a fresh request
    assert (tokens.handed_out, tokens.discarded) == (2, 0)


async def test_a_kept_token_at_the_end_of_its_use_is_not_handed_out() -> None:
    clock = FakeClock()
    source = ScriptedSource(clock, [])
    tokens = coordinator(clock, source)
    tokens._ready = (Secret("ending-token-xxxxxx"), clock.now)
    assert (await tokens.fetch()).reveal() != "ending-token-xxxxxx"
    assert tokens.discarded == 1


async def test_after_a_refusal_the_keeper_waits_most_of_the_slow_retry() -> None:
    clock = FakeClock()
    source = ScriptedSource(clock, [TokenAuthError("HTTP 401", 401)])
    tokens = coordinator(clock, source, auth_retry_seconds=300.0)
    tokens.start()
    while not clock.sleeps:
        await asyncio.sleep(0)
    await tokens.aclose()
    assert 225.0 <= clock.sleeps[0] <= 300.0


async def test_the_keeper_sleeps_until_its_token_stops_being_usable() -> None:
    clock = FakeClock()
    source = ScriptedSource(clock, [])
    tokens = coordinator(clock, source, lifetime_seconds=40.0, refresh_margin_seconds=10.0)
    tokens.start()
    while not clock.sleeps:
        await asyncio.sleep(0)
    await tokens.aclose()
    assert clock.sleeps[0] == 30.0


async def test_a_kept_token_that_ends_unused_is_counted_and_replaced() -> None:
    clock = FakeClock()
    source = ScriptedSource(clock, [])
    tokens = coordinator(clock, source, lifetime_seconds=40.0, refresh_margin_seconds=10.0)
    tokens.start()
    while len(source.request_times) < 2:
        await asyncio.sleep(0)
    await tokens.aclose()
    assert tokens.discarded == 1 and tokens.handed_out == 0
    assert source.request_times[1] - source.request_times[0] == 30.0


async def test_a_coordinator_never_started_closes_cleanly() -> None:
    clock = FakeClock()
    tokens = coordinator(clock, ScriptedSource(clock, []))
    await tokens.aclose()
    assert not tokens.has_ready_token


@pytest.mark.parametrize("ticks", range(6))
async def test_closing_ends_the_keeper_even_while_it_tidies_up_after_a_wake_up(ticks) -> None:
    """A cancel that lands while the keeper puts away its sleep is not swallowed."""
    source = ScriptedSource(FakeClock(), [])
    tokens = TokenCoordinator(source, retry=LIMITS, rng=random.Random(3))  # real sleeps
    tokens.start()
    while not tokens.has_ready_token:
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)  # the keeper sleeps until its token stops being usable
    tokens._wakeup.set()  # news: it wakes, and puts its sleeper and waker away
    for _ in range(ticks):
        await asyncio.sleep(0)
    closing = asyncio.create_task(tokens.aclose())
    done, _ = await asyncio.wait({closing}, timeout=2.0)  # not: sleep out the token's life
    assert closing in done


class SwallowingSource:
    """A source whose request swallows a cancel once, as 3.11's ``wait_for`` can."""

    lifetime_seconds = 60.0

    def __init__(self) -> None:
        self.asked = asyncio.Event()

    async def fetch(self) -> Secret:
        self.asked.set()
        with contextlib.suppress(asyncio.CancelledError):  # lost: the answer comes anyway
            await asyncio.sleep(10)
        return Secret("token-swallowed-xxxxxxxx")


async def test_closing_ends_the_keeper_even_when_a_request_swallows_the_cancel() -> None:
    source = SwallowingSource()
    tokens = TokenCoordinator(source, retry=LIMITS, rng=random.Random(3))
    tokens.start()
    await source.asked.wait()
    closing = asyncio.create_task(tokens.aclose())
    done, _ = await asyncio.wait({closing}, timeout=2.0)  # not: the kept token's 45 s
    assert closing in done and not tokens.has_ready_token
