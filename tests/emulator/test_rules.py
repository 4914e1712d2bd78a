"""Unit tests of the client rules the emulator judges, and of the retry timeline."""

from __future__ import annotations

import json
import math
import time
from email.utils import formatdate

import pytest

from appliance.emulator import garble, rules
from appliance.emulator.config import EmulatorConfig
from appliance.emulator.retries import RetryJudge, product_of
from appliance.emulator.violations import (
    IDENTICAL_RETRY_DELAYS,
    IGNORED_RETRY_AFTER,
    RETRY_TOO_SOON,
    RULES,
    Violation,
    count_by_rule,
)

# --- pacing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("received", "elapsed", "exceeded"),
    [
        (1.0, 0.0, False),  # one maximum-size frame at Begin
        (1.05, 0.0, True),
        (3.4, 2.4, False),
        (3.5, 2.4, True),  # a 1.25x catch-up with a 500 ms first frame, after ~2.4 s
        (61.0, 60.0, False),
        (61.2, 60.0, True),  # the lead never grows with the session's age
    ],
)
def test_pacing_allows_one_frame_of_lead_at_real_time(received, elapsed, exceeded):
    assert rules.pacing_exceeded(received, elapsed, 1.0, 1.0) is exceeded


def test_loose_allowance_lets_a_backlog_catch_up():
    assert rules.pacing_exceeded(3.5, 2.4, 1.0, 1.0)
    assert not rules.pacing_exceeded(3.5, 2.4, 1.5, 1.0)


# --- retries -------------------------------------------------------------------------------


def test_retry_too_soon_is_under_the_gap():
    assert rules.retry_too_soon(0.009, 0.1)
    assert rules.retry_too_soon(0.0999, 0.1)
    assert not rules.retry_too_soon(0.1, 0.1)


def test_identical_retry_delays_are_a_run_within_the_tolerance():
    # A fixed 5 s retry, as a timer loop makes it: caught.
    assert rules.identical_retry_delays([5.013, 5.008, 5.007, 5.011], 4, 0.001, 0.005)
    assert rules.identical_retry_delays([0.1, 0.1, 0.1, 0.1], 4, 0.001, 0.005)
    # Too few to tell, or jittered: not.
    assert not rules.identical_retry_delays([5.013, 5.008, 5.007], 4, 0.001, 0.005)
    assert not rules.identical_retry_delays([0.2174, 0.2165, 0.15, 0.19], 4, 0.001, 0.005)


def test_a_jittered_client_is_practically_never_flagged():
    import random

    rng = random.Random(1)
    delays = [rng.uniform(0.1, 0.2) for _ in range(5000)]
    flagged = sum(
        rules.identical_retry_delays(delays[: i + 1], 4, 0.001, 0.005) for i in range(len(delays))
    )
    assert flagged == 0


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("3", 3.0),
        (" 2.5 ", 2.5),
        ("1e9", 1e9),
        ("inf", math.inf),
        ("0", None),
        ("-5", None),
        ("nan", None),
        ("soon", None),
        ("", None),
    ],
)
def test_retry_after_seconds_reads_delta_seconds(value, seconds):
    assert rules.retry_after_seconds(value, time.time()) == seconds


def test_retry_after_seconds_reads_an_http_date():
    now = 1_700_000_000.0
    assert rules.retry_after_seconds(formatdate(now + 30, usegmt=True), now) == 30.0
    assert rules.retry_after_seconds(formatdate(now - 30, usegmt=True), now) is None


def test_only_sane_retry_after_waits_are_judged():
    assert rules.judged_retry_after(3.0, 60.0) == 3.0
    assert rules.judged_retry_after(60.0, 60.0) == 60.0
    assert rules.judged_retry_after(61.0, 60.0) is None  # left to the client's cap
    assert rules.judged_retry_after(math.inf, 60.0) is None
    assert rules.judged_retry_after(None, 60.0) is None


def test_ignored_retry_after_is_a_request_before_the_deadline():
    assert rules.ignored_retry_after(9.99, 10.0)
    assert not rules.ignored_retry_after(10.0, 10.0)


# --- abandoned sessions --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("established", "goodbye", "by_client", "abandoned"),
    [
        (True, False, True, True),
        (True, True, True, False),  # Terminate / session.end, then the client closed
        (True, False, False, False),  # the server closed or dropped it
        (False, False, True, False),  # never began (refused, or closed before Begin)
    ],
)
def test_abandoned_session(established, goodbye, by_client, abandoned):
    assert rules.abandoned_session(established, goodbye, by_client) is abandoned


# --- the retry timeline ------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.rules: list[str] = []
        self.data: list[dict] = []

    def __call__(self, rule: str, product: str, detail: str, data: dict) -> None:
        assert product in ("streaming", "agent", "rest") and detail
        self.rules.append(rule)
        self.data.append(data)


def judge(**config) -> tuple[RetryJudge, Recorder]:
    recorder = Recorder()
    return RetryJudge(EmulatorConfig(**config), recorder), recorder


def test_product_of_paths():
    assert product_of("/v3/token") == product_of("/v3/ws") == "streaming"
    assert product_of("/v1/token") == product_of("/v1/ws") == "agent"
    assert product_of("/v2/upload") == product_of("/v2/transcript/x") == "rest"
    assert product_of("/_emulator/state") is None


def test_every_request_soon_after_a_failure_is_judged():
    j, rec = judge()
    j.on_failure("streaming", now=10.0)
    j.on_request("streaming", "/v3/token", now=10.009)
    j.on_request("streaming", "/v3/token", now=10.02)
    j.on_request("streaming", "/v3/ws", now=10.2)
    assert rec.rules == [RETRY_TOO_SOON, RETRY_TOO_SOON]
    assert rec.data[0]["since_failure_s"] == pytest.approx(0.009)


def test_products_are_judged_apart():
    j, rec = judge()
    j.on_failure("streaming", now=10.0)
    j.on_request("agent", "/v1/token", now=10.01)
    j.on_request("rest", "/v2/upload", now=10.01)
    assert rec.rules == []


def test_a_success_does_not_excuse_a_request_right_after_a_failure():
    j, rec = judge()
    j.on_failure("agent", now=1.0)
    j.on_success("agent")
    j.on_request("agent", "/v1/token", now=1.05)
    assert rec.rules == [RETRY_TOO_SOON]


def test_identical_delays_between_successive_failures():
    j, rec = judge()
    now = 0.0
    for delay in (5.013, 5.008, 5.0075, 5.011):
        j.on_failure("streaming", now=now)
        now += delay
        j.on_request("streaming", "/v3/token", now=now)
    assert rec.rules == [IDENTICAL_RETRY_DELAYS]
    assert rec.data[0]["delays_s"] == pytest.approx([5.013, 5.008, 5.0075, 5.011])


def test_jittered_delays_and_a_success_between_are_fine():
    j, rec = judge()
    j.on_failure("rest", now=0.0)
    j.on_request("rest", "/v2/upload", now=0.4)
    j.on_failure("rest", now=0.5)
    j.on_request("rest", "/v2/upload", now=1.3)  # 0.4 then 0.8 s
    j.on_success("rest")
    j.on_failure("rest", now=2.0)
    j.on_request("rest", "/v2/upload", now=2.8)  # 0.8 s again, but a new failure run
    assert rec.rules == []


def test_retry_after_is_enforced_per_product():
    j, rec = judge()
    j.on_failure("streaming", retry_after="3", now=100.0)
    j.on_request("agent", "/v1/token", now=101.0)
    j.on_request("streaming", "/v3/token", now=102.4)
    j.on_request("streaming", "/v3/token", now=103.0)
    assert rec.rules == [IGNORED_RETRY_AFTER]
    assert rec.data[0]["retry_after"] == "3"
    assert rec.data[0]["early_s"] == pytest.approx(0.6)


@pytest.mark.parametrize("value", ["-5", "0", "1e9", "inf", "nan", "later"])
def test_absurd_retry_after_values_are_not_enforced(value):
    j, rec = judge()
    j.on_failure("rest", retry_after=value, now=0.0)
    j.on_request("rest", "/v2/upload", now=0.2)
    assert rec.rules == []


def test_clear_forgets_the_history():
    j, rec = judge()
    j.on_failure("rest", retry_after="5", now=0.0)
    j.clear()
    j.on_request("rest", "/v2/upload", now=0.01)
    assert rec.rules == []


def test_counts_list_every_rule():
    v = Violation(RETRY_TOO_SOON, "rest", "x", 0.0)
    counts = count_by_rule([v, v])
    assert set(counts) == set(RULES)
    assert counts[RETRY_TOO_SOON] == 2 and sum(counts.values()) == 2
    assert json.loads(json.dumps(v.as_dict()))["rule"] == RETRY_TOO_SOON


# --- malformed frames ----------------------------------------------------------------------

TURN = {
    "type": "Turn",
    "turn_order": 0,
    "end_of_turn": False,
    "transcript": "one",
    "words": [{"text": "one", "start": 100, "end": 220, "confidence": 0.9}],
}


def test_deep_nesting_defeats_json_loads():
    frames, keep = garble.garbled_frames("deep_nesting", TURN, 100_000, 10)
    assert keep and len(frames[0]) == 200_000
    with pytest.raises(RecursionError):
        json.loads(frames[0])


@pytest.mark.parametrize(("mode", "check"), [("nan", math.isnan), ("infinity", math.isinf)])
def test_word_times_modes_copy_the_turn(mode, check):
    frames, keep = garble.garbled_frames(mode, TURN, 10, 10)
    assert keep
    bad = json.loads(frames[0])  # Python's json reads NaN / Infinity; strict parsers do not
    assert bad["transcript"] == "one"
    assert check(bad["words"][0]["start"]) and check(bad["words"][0]["end"])
    assert TURN["words"][0]["start"] == 100  # the real message is untouched


def test_word_times_modes_only_apply_to_turns_with_words():
    assert garble.applies_to("nan", TURN)
    assert not garble.applies_to("nan", {"type": "Begin"})
    assert not garble.applies_to("infinity", dict(TURN, words=[]))
    assert garble.applies_to("deep_nesting", {"type": "Begin"})


def test_huge_string_stays_under_the_clients_frame_limit():
    frames, keep = garble.garbled_frames("huge_string", TURN, 10, 900_000)
    assert keep and 900_000 < len(frames[0]) < 2**20
    assert json.loads(frames[0])["type"] == garble.UNKNOWN_TYPE


def test_invalid_json_replaces_the_message():
    frames, keep = garble.garbled_frames("invalid_json", TURN, 10, 10)
    assert not keep
    with pytest.raises(json.JSONDecodeError):
        json.loads(frames[0])
