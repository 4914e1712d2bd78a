"""The outbox's rules: what an answer means, when the next attempt is, the key."""

from __future__ import annotations

import random

import pytest

from appliance.protocol.outbox import (
    Attempt,
    after_attempt,
    destination_id,
    http_verdict,
    idempotency_key,
)
from appliance.protocol.retry import Backoff, retry_limits

FLOOR = 5.0


def backoff() -> Backoff:
    return Backoff(retry_limits(10.0, 3600.0, FLOOR), random.Random(7))


@pytest.mark.parametrize(
    ("status", "verdict"),
    [(200, "delivered"), (201, "delivered"), (204, "delivered"), (408, "retry"),
     (429, "retry"), (500, "retry"), (503, "retry"), (599, "retry"), (301, "refused"),
     (307, "refused"), (400, "refused"), (401, "refused"), (404, "refused"),
     (409, "refused"), (422, "refused"), (100, "refused")],
)  # fmt: skip
def test_only_408_429_and_5xx_are_tried_again(status, verdict):
    assert http_verdict(status) == verdict


def test_a_retry_is_never_sooner_than_the_floor():
    box = backoff()
    for attempts in range(40):
        step = after_attempt(Attempt("retry", "HTTP 503"), attempts, 1000.0, box, None)
        assert step.outcome == "pending" and step.next_attempt_at >= 1000.0 + FLOOR


@pytest.mark.parametrize("retry_after", [-5.0, 0.0, 1.0])
def test_a_retry_after_below_the_floor_waits_for_the_floor(retry_after):
    step = after_attempt(Attempt("retry", "HTTP 429", retry_after), 0, 0.0, backoff(), None)
    assert step.next_attempt_at >= FLOOR


def test_a_retry_after_is_honoured():
    step = after_attempt(Attempt("retry", "HTTP 503", 120.0), 0, 50.0, backoff(), None)
    assert 170.0 <= step.next_attempt_at <= 170.0 + FLOOR


def test_max_attempts_turns_the_last_retry_into_a_failure():
    box = backoff()
    step = after_attempt(Attempt("retry", "HTTP 503"), 2, 0.0, box, 3)
    assert (step.outcome, step.attempts) == ("failed", 3)
    assert step.reason == "gave up after 3 attempts: HTTP 503"
    assert after_attempt(Attempt("retry", "HTTP 503"), 1, 0.0, box, 3).outcome == "pending"


def test_without_max_attempts_it_never_gives_up():
    step = after_attempt(Attempt("retry", "HTTP 503"), 10_000, 0.0, backoff(), None)
    assert step.outcome == "pending"


def test_a_refusal_fails_at_once_with_its_reason():
    step = after_attempt(Attempt("refused", "HTTP 422"), 0, 9.0, backoff(), None)
    assert (step.outcome, step.attempts, step.reason) == ("failed", 1, "refused: HTTP 422")


def test_the_key_is_stable_per_transcript_and_destination():
    a = destination_id("https://example.com/hook", ())
    b = destination_id("https://example.com/other", ())
    assert a == destination_id("https://example.com/hook", ())
    assert a != b != destination_id(None, ["deliver", "--to", "x"])
    key = idempotency_key("session", "ab12", a)
    assert key == idempotency_key("session", "ab12", a)
    assert len({key, idempotency_key("session", "ab12", b), idempotency_key("recording", "ab12", a),
                idempotency_key("session", "ab13", a)}) == 4  # fmt: skip
    assert "example.com" not in key
