"""Retries: full jitter above a floor, and one clamp for every Retry-After."""

from __future__ import annotations

import math
import random

import pytest

from appliance.protocol.retry import (
    Backoff,
    RetryLimits,
    clamp_retry_after,
    parse_retry_after,
)

LIMITS = RetryLimits(base_seconds=0.5, cap_seconds=8.0, floor_seconds=0.1)


def test_delays_stay_within_a_doubling_capped_ceiling_and_above_the_floor() -> None:
    backoff = Backoff(LIMITS, random.Random(1))
    ceilings = []
    for _ in range(8):
        ceiling = backoff.ceiling()
        delay = backoff.next_delay()
        assert 0.1 <= delay <= ceiling
        ceilings.append(ceiling)
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0]


def test_no_delay_is_ever_under_the_floor_whatever_the_draw() -> None:
    class Lowest(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return a

    backoff = Backoff(LIMITS, Lowest())
    assert all(backoff.next_delay(retry_after=ra) >= 0.1 for ra in (None, -5, 0, 0.01, math.nan))


def test_delays_are_jittered_not_lockstep() -> None:
    delays = {Backoff(LIMITS, random.Random(seed)).next_delay() for seed in range(20)}
    assert len(delays) == 20


def test_successive_delays_of_one_backoff_differ() -> None:
    backoff = Backoff(LIMITS, random.Random(4))
    delays = [backoff.next_delay() for _ in range(50)]
    assert len(set(delays)) == len(delays)


def test_reset_starts_small_again() -> None:
    backoff = Backoff(LIMITS)
    for _ in range(10):
        backoff.next_delay()
    backoff.reset()
    assert backoff.ceiling() == 0.5


@pytest.mark.parametrize(
    ("limits"),
    [
        dict(base_seconds=0.0, cap_seconds=1.0),
        dict(base_seconds=1.0, cap_seconds=0.5),
        dict(floor_seconds=0.0),
        dict(floor_seconds=1.0, base_seconds=0.5),
        dict(retry_after_cap_seconds=0.01),
    ],
)
def test_nonsense_limits_are_refused(limits: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryLimits(**limits)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("3", 3.0),
        (" 2.5 ", 2.5),
        ("-5", -5.0),
        ("1e9", 1e9),
        ("inf", math.inf),
        ("", None),
        (None, None),
        ("soon", None),
    ],
)
def test_retry_after_is_read_as_seconds(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds


def test_retry_after_as_an_http_date_is_seconds_from_now() -> None:
    now = 1_700_000_000.0  # Tue, 14 Nov 2023 22:13:20 GMT
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:30 GMT", now=now) == pytest.approx(10.0)


@pytest.mark.parametrize(
    ("seconds", "clamped"),
    [(-5.0, 0.1), (0.0, 0.1), (3.0, 3.0), (1e9, 300.0), (math.inf, 300.0), (math.nan, None)],
)
def test_retry_after_is_clamped_between_the_floor_and_the_cap(
    seconds: float, clamped: float | None
) -> None:
    assert clamp_retry_after(seconds, RetryLimits()) == clamped


@pytest.mark.parametrize("retry_after", [3.0, 1e9, math.inf, -5.0])
def test_a_retry_after_is_honoured_within_its_clamp(retry_after: float) -> None:
    backoff = Backoff(LIMITS, random.Random(2))
    delay = backoff.next_delay(retry_after=retry_after)
    clamped = clamp_retry_after(retry_after, LIMITS)
    assert clamped is not None
    assert clamped <= delay <= max(clamped, LIMITS.base_seconds) + LIMITS.floor_seconds
    assert delay <= LIMITS.retry_after_cap_seconds + LIMITS.floor_seconds


def test_a_base_on_the_floor_still_jitters() -> None:
    backoff = Backoff(RetryLimits(base_seconds=0.1, cap_seconds=0.1, floor_seconds=0.1))
    delays = {backoff.delay_for(0) for _ in range(20)}
    assert len(delays) == 20 and all(0.1 <= d <= 0.2 for d in delays)


def test_a_failure_gate_holds_every_request_for_the_floor_or_the_retry_after() -> None:
    from appliance.protocol.retry import FailureGate

    gate = FailureGate(LIMITS, random.Random(5))
    assert gate.wait_seconds(10.0) == 0.0
    gate.failed(10.0)
    assert 0.1 <= gate.wait_seconds(10.0) <= 0.2
    gate.failed(10.0, retry_after=3.0)
    assert 3.0 <= gate.wait_seconds(10.0) <= 3.1
    gate.failed(10.0, retry_after=-5.0)  # a nonsense header never shortens the wait
    assert gate.wait_seconds(10.0) >= 3.0
    assert gate.wait_seconds(14.0) == 0.0


def test_a_retry_after_cap_equal_to_the_floor_is_allowed() -> None:
    limits = RetryLimits(floor_seconds=0.1, retry_after_cap_seconds=0.1)
    assert clamp_retry_after(50.0, limits) == 0.1


def test_configured_limits_are_raised_to_an_explicit_floor() -> None:
    from appliance.protocol.retry import retry_limits

    limits = retry_limits(0.05, 0.08, floor_seconds=0.2)
    assert (limits.floor_seconds, limits.base_seconds, limits.cap_seconds) == (0.2, 0.2, 0.2)
    assert retry_limits(0.05, 10.0).floor_seconds == RetryLimits().floor_seconds
