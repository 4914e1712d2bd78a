"""The stream-loss rule: a slow start or a start-up pause is not a dead device."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from appliance.audio.watchdog import Health, StreamLimits, StreamWatchdog, Verdict

POLL = 0.25  # the supervisor's period
OUT_BLOCK = 0.010  # the speaker's 10 ms blocks
MIC_BLOCK = 0.100  # the microphone's 100 ms blocks


def steady(start: float, end: float, period: float) -> list[float]:
    n = round((end - start) / period)
    return [start + i * period for i in range(n)]


def watch(
    callbacks: Iterable[float],
    until: float,
    block: float = OUT_BLOCK,
    limits: StreamLimits | None = None,
    inactive_from: float = float("inf"),
) -> list[tuple[float, Verdict]]:
    """Poll a watchdog every POLL seconds over callbacks at the given times, opened at 0.

    Stops at the first LOST verdict (the supervisor closes the stream there).
    """
    times = sorted(callbacks)
    dog = StreamWatchdog(block, limits)
    dog.opened(0.0, blocks=0)
    seen: list[tuple[float, Verdict]] = []
    now = 0.0
    while now < until:
        now = round(now + POLL, 6)
        delivered = [t for t in times if t <= now]
        last = delivered[-1] if delivered else 0.0
        verdict = dog.observe(now, len(delivered), last, active=now < inactive_from)
        seen.append((now, verdict))
        if verdict.health is Health.LOST:
            break
    return seen


def health_at(seen: list[tuple[float, Verdict]], when: float) -> Health:
    return next(v.health for t, v in seen if t >= when)


def lost(seen: list[tuple[float, Verdict]]) -> tuple[float, str] | None:
    t, verdict = seen[-1]
    return (t, verdict.reason) if verdict.health is Health.LOST else None


def test_prefill_burst_then_a_two_second_pause_is_a_slow_start_not_a_loss() -> None:
    # Measured on PulseAudio's null sink with default arguments: three callbacks
    # at once, then none for 0.9-1.9 s, then one every 10 ms.
    callbacks = [0.002] * 3 + steady(1.95, 6.0, OUT_BLOCK)
    seen = watch(callbacks, until=6.0)
    assert lost(seen) is None
    assert health_at(seen, 1.75) is Health.STARTING
    assert health_at(seen, 3.0) is Health.RUNNING


def test_a_burst_of_many_blocks_at_one_instant_is_not_running() -> None:
    seen = watch([0.01] * 200, until=2.0)
    assert all(v.health is Health.STARTING for _, v in seen)


def test_microphone_whose_first_block_takes_one_and_a_half_seconds_is_not_missing() -> None:
    seen = watch(steady(1.5, 8.0, MIC_BLOCK), until=8.0, block=MIC_BLOCK)
    assert lost(seen) is None
    assert health_at(seen, 1.5) is Health.STARTING
    assert health_at(seen, 2.5) is Health.RUNNING


def test_stream_that_never_calls_back_is_lost_when_the_grace_ends() -> None:
    limits = StreamLimits(startup_grace=3.0)
    seen = watch([], until=10.0, limits=limits)
    assert lost(seen) == (3.25, "no callback in 3.0 s after opening")
    assert health_at(seen, 3.0) is Health.STARTING


def test_stream_that_only_prefills_is_lost_when_the_grace_ends() -> None:
    # Seen on a PipeWire that had just started: three callbacks, then nothing.
    seen = watch([0.02] * 3, until=10.0)
    assert lost(seen) == (5.25, "no steady callbacks in 5.0 s after opening")


def test_a_trickle_far_below_the_block_rate_never_counts_as_running() -> None:
    seen = watch(steady(0.0, 10.0, 0.3), until=10.0)
    assert lost(seen) == (5.25, "no steady callbacks in 5.0 s after opening")


def test_running_stream_that_goes_quiet_is_lost_after_the_stall_timeout() -> None:
    seen = watch(steady(0.0, 3.0, OUT_BLOCK), until=10.0)
    assert health_at(seen, 2.75) is Health.RUNNING
    assert lost(seen) == (4.0, "no callback for 1.0 s")  # the last block came at 2.99 s


def test_running_stream_may_pause_just_under_the_stall_timeout() -> None:
    callbacks = steady(0.0, 3.0, OUT_BLOCK) + steady(3.9, 6.0, OUT_BLOCK)
    assert lost(watch(callbacks, until=6.0)) is None


def test_stall_timeout_is_ten_blocks_when_blocks_are_long() -> None:
    dog = StreamWatchdog(0.2)
    assert dog.stall_seconds == pytest.approx(2.0)
    assert StreamWatchdog(OUT_BLOCK).stall_seconds == 1.0
    callbacks = steady(0.0, 3.0, 0.2) + steady(4.6, 8.0, 0.2)  # a 1.8 s pause
    assert lost(watch(callbacks, until=8.0, block=0.2)) is None


def test_a_stopped_stream_is_lost_at_once_while_starting_or_running() -> None:
    assert lost(watch([], until=5.0, inactive_from=0.5)) == (0.5, "stream stopped")
    seen = watch(steady(0.0, 5.0, OUT_BLOCK), until=5.0, inactive_from=2.0)
    assert health_at(seen, 1.75) is Health.RUNNING
    assert lost(seen) == (2.0, "stream stopped")


def test_a_reopened_stream_starts_over_with_a_fresh_grace() -> None:
    dog = StreamWatchdog(OUT_BLOCK)
    dog.opened(0.0, blocks=0)
    for i in range(1, 41):
        dog.observe(i * 0.025, blocks=i * 3, last_block_at=i * 0.025, active=True)
    assert dog.running
    dog.opened(10.0, blocks=120)  # after a loss: the block counter carries on
    assert not dog.running
    # The same pause after the reopen is a start again, not a stall.
    assert dog.observe(11.9, blocks=123, last_block_at=10.01, active=True).health is Health.STARTING
    verdict = dog.observe(15.5, blocks=123, last_block_at=10.01, active=True)
    assert verdict == Verdict(Health.LOST, "no steady callbacks in 5.0 s after opening")


def running_mic() -> StreamWatchdog:
    dog = StreamWatchdog(MIC_BLOCK)
    dog.opened(0.0, blocks=0)
    for i, t in enumerate(steady(0.1, 1.0, MIC_BLOCK), start=1):
        dog.observe(t, i, t, active=True)
    assert dog.running
    return dog


def test_a_starting_stream_is_looked_at_every_period() -> None:
    dog = StreamWatchdog(MIC_BLOCK)
    dog.opened(0.0, blocks=0)
    assert dog.next_look(0.5, 0.45, POLL) == POLL


def test_a_running_stream_is_looked_at_only_when_a_stall_could_be_due() -> None:
    dog = running_mic()
    assert dog.next_look(1.05, 1.0, POLL) == pytest.approx(1.0 + dog.stall_seconds - 1.05)
    assert dog.next_look(3.0, 1.0, POLL) == POLL  # overdue: no sooner than the period


def test_looks_spaced_by_next_look_still_find_a_hung_stream_within_a_period_of_the_stall() -> None:
    dog = running_mic()
    hung_at = 5.0  # blocks every 100 ms until then, none after
    now, looks = 1.0, 0
    while True:
        last = min(hung_at, round(now / MIC_BLOCK) * MIC_BLOCK)
        verdict = dog.observe(now, round(last / MIC_BLOCK), last, active=True)
        if verdict.health is Health.LOST:
            break
        now += dog.next_look(now, last, POLL)
        looks += 1
    assert hung_at + dog.stall_seconds < now <= hung_at + dog.stall_seconds + POLL
    assert looks <= 8  # about one a second while running, not four
