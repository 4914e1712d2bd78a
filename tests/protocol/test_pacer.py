"""The pacer: audio never leads wall time since the session began by more than one frame."""

from __future__ import annotations

import random

import pytest

from appliance.protocol.pacer import Pacer, PacingLimits

RATE = 16_000


def test_nothing_may_be_sent_before_the_session_begins() -> None:
    pacer = Pacer(RATE)
    assert pacer.allowance(5.0) == 0
    assert not pacer.take(5.0, 1)
    assert pacer.due(100) is None


def test_at_begin_one_maximum_frame_may_go_at_once_and_no_more() -> None:
    pacer = Pacer(RATE)
    pacer.begin(10.0)
    assert pacer.allowance(10.0) == RATE
    assert pacer.take(10.0, RATE)
    assert not pacer.take(10.0, 1)


def test_after_the_lead_is_spent_audio_goes_at_real_time() -> None:
    pacer = Pacer(RATE)
    pacer.begin(0.0)
    assert pacer.take(0.0, RATE)
    assert pacer.allowance(0.5) == RATE // 2
    assert pacer.due(1600) == pytest.approx(0.1)


def test_the_lead_never_exceeds_one_frame_whatever_is_asked() -> None:
    """A property: random frame sizes, random times, a greedy sender."""
    for seed in range(50):
        rng = random.Random(seed)
        lead = rng.uniform(0.05, 1.0)
        pacer = Pacer(RATE, PacingLimits(max_lead_seconds=lead))
        began = rng.uniform(0, 100)
        pacer.begin(began)
        now = began
        for _ in range(300):
            now += rng.choice([0.0, rng.uniform(0, 0.2)])
            pacer.take(now, rng.randrange(0, 2 * RATE))
            assert pacer.lead_seconds(now) <= lead + 1 / RATE


def test_a_new_begin_counts_from_zero_and_end_stops_everything() -> None:
    pacer = Pacer(RATE)
    pacer.begin(0.0)
    pacer.take(0.0, RATE)
    pacer.end()
    assert pacer.allowance(100.0) == 0
    pacer.begin(100.0)
    assert pacer.allowance(100.0) == RATE


def test_a_clock_that_steps_back_never_adds_allowance() -> None:
    pacer = Pacer(RATE)
    pacer.begin(10.0)
    assert pacer.allowance(9.0) == RATE


@pytest.mark.parametrize("lead", [0.0, -1.0, 1.5])
def test_a_lead_outside_one_frame_is_refused(lead: float) -> None:
    with pytest.raises(ValueError):
        PacingLimits(max_lead_seconds=lead)


@pytest.mark.parametrize("rate", [0, -16_000])
def test_a_rate_that_is_not_positive_is_refused(rate: int) -> None:
    with pytest.raises(ValueError):
        Pacer(rate)


def test_a_pacer_at_one_sample_a_second_still_paces() -> None:
    pacer = Pacer(1, PacingLimits(max_lead_seconds=1.0))
    pacer.begin(0.0)
    assert pacer.take(0.0, 1) and not pacer.take(0.0, 1)


def test_began_and_sent_say_where_the_connection_stands() -> None:
    pacer = Pacer(RATE)
    assert not pacer.began and pacer.sent_samples == 0
    pacer.begin(1.0)
    pacer.take(1.0, 800)
    assert pacer.began and pacer.sent_samples == 800
    pacer.end()
    assert not pacer.began and pacer.sent_samples == 0


def test_an_empty_frame_may_always_go_and_a_negative_one_never() -> None:
    pacer = Pacer(RATE)
    pacer.begin(0.0)
    pacer.take(0.0, RATE)
    assert pacer.take(0.0, 0)
    with pytest.raises(ValueError):
        pacer.take(0.0, -1)


def test_a_frame_within_the_lead_is_due_at_once() -> None:
    pacer = Pacer(RATE)
    pacer.begin(5.0)
    assert pacer.due(RATE // 2) == 5.0
    pacer.take(5.0, RATE)
    assert pacer.due(RATE // 2) == pytest.approx(5.5)


def test_the_lead_is_audio_sent_less_time_elapsed() -> None:
    pacer = Pacer(RATE)
    assert pacer.lead_seconds(3.0) == 0.0
    pacer.begin(2.0)
    pacer.take(2.0, RATE)
    assert pacer.lead_seconds(2.25) == pytest.approx(0.75)
    assert pacer.lead_seconds(1.0) == pytest.approx(1.0)  # a clock before begin: no credit
