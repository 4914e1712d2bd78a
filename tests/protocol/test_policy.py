"""The reconnect policy both session kinds follow: quick once, then backoff, slow when refused."""

from __future__ import annotations

import random

import pytest

from appliance.protocol.failures import ConnectFailure, Failure
from appliance.protocol.policy import ReconnectLimits, ReconnectPolicy
from appliance.protocol.retry import RetryLimits

REFUSED = Failure(ConnectFailure.NETWORK, "refused")
LIMITS = ReconnectLimits(
    retry=RetryLimits(base_seconds=0.5, cap_seconds=8.0, floor_seconds=0.1),
    quick_reconnect_max_seconds=0.3,
    quick_reconnect_spacing_seconds=1.0,
    slow_retry_seconds=100.0,
    refusals_before_slow_retry=2,
    healthy_after_seconds=5.0,
)


def policy(seed: int = 1) -> ReconnectPolicy:
    return ReconnectPolicy(LIMITS, random.Random(seed))


def test_the_first_drop_after_fresh_audio_reconnects_soon_but_not_within_the_floor() -> None:
    p = policy()
    p.began(0.0)
    wait = p.after_drop(10.0, progressed=True)
    assert 0.1 <= wait.seconds <= 0.3 and not wait.slow
    assert p.backoff.attempt == 0


def test_a_drop_without_fresh_audio_backs_off() -> None:
    p = policy()
    p.began(0.0)
    p.after_drop(1.0, progressed=False)
    assert p.backoff.attempt == 1


def test_a_server_that_drops_every_connection_gets_one_quick_reconnect_then_backoff() -> None:
    p = policy()
    waits = []
    now = 0.0
    for _ in range(6):
        p.began(now)
        now += 2.0  # each connection lives two seconds: not healthy
        p.still_up(now)
        wait = p.after_drop(now, progressed=True)
        waits.append(wait.seconds)
        now += wait.seconds
    assert waits[0] <= 0.3
    assert p.backoff.attempt == 5  # every later drop took the backoff


def test_quick_reconnects_are_spaced() -> None:
    p = policy()
    p.began(0.0)
    p.after_drop(1.0, progressed=True)
    p.began(1.2)
    p.still_up(7.0)  # healthy: the backoff is clean again
    p.after_drop(1.5, progressed=True)  # but within a second of the last quick one
    assert p.backoff.attempt == 1


def test_a_connection_that_lasted_resets_the_backoff() -> None:
    p = policy()
    for _ in range(4):
        p.after_failure(Failure(ConnectFailure.NETWORK, "refused"))
    p.began(10.0)
    p.still_up(14.9)
    assert p.backoff.attempt == 4
    p.still_up(15.0)
    assert p.backoff.attempt == 0


def test_a_network_failure_honours_retry_after() -> None:
    wait = policy().after_failure(Failure(ConnectFailure.RATE_LIMITED, "HTTP 429", 7.0))
    assert 7.0 <= wait.seconds <= 7.1 and not wait.slow


def test_a_fatal_failure_is_retried_slowly() -> None:
    wait = policy().after_failure(Failure(ConnectFailure.FATAL, "HTTP 410"))
    assert wait.slow and 75.0 <= wait.seconds <= 100.0


def test_one_refusal_gets_a_new_token_soon_the_second_a_slow_retry() -> None:
    p = policy()
    first = p.after_failure(Failure(ConnectFailure.AUTH, "HTTP 401"))
    second = p.after_refusal()
    assert not first.slow and 0.1 <= first.seconds <= 0.3
    assert second.slow and 75.0 <= second.seconds <= 100.0
    assert p.refusals == 2
    p.began(0.0)
    assert p.refusals == 0  # a session that began proves the credential


def test_slow_retries_are_jittered() -> None:
    p = policy()
    waits = {p.after_failure(Failure(ConnectFailure.FATAL, "x")).seconds for _ in range(20)}
    assert len(waits) == 20


def test_a_quick_reconnect_below_the_floor_is_refused() -> None:
    with pytest.raises(ValueError):
        ReconnectLimits(retry=RetryLimits(), quick_reconnect_max_seconds=0.05)


def test_the_quick_reconnect_may_be_as_short_as_the_floor() -> None:
    ReconnectLimits(retry=RetryLimits(floor_seconds=0.1), quick_reconnect_max_seconds=0.1)
    with pytest.raises(ValueError):
        ReconnectLimits(retry=RetryLimits(floor_seconds=0.1), quick_reconnect_max_seconds=0.09)


def test_the_given_rng_draws_every_wait() -> None:
    waits = []
    for _ in range(2):
        p = ReconnectPolicy(LIMITS, random.Random(3))
        p.began(0.0)
        waits.append((p.after_drop(1.0, progressed=True).seconds, p.after_failure(REFUSED).seconds))
    assert waits[0] == waits[1]


def test_a_healthy_connection_earns_a_new_quick_reconnect() -> None:
    p = policy()
    p.began(0.0)
    p.after_drop(1.0, progressed=True)  # the quick one
    p.began(2.0)
    p.still_up(7.0)  # up 5 s: healthy
    wait = p.after_drop(8.0, progressed=True)
    assert wait.seconds <= 0.3 and p.backoff.attempt == 0
